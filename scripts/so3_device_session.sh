#!/usr/bin/env bash
# One lent-GPU session (about 9.5 minutes in all) for issue 13: train the one-pass full-SO(3) Gum-Net (gumnet-so3:
# compact widths, 60 icosahedral anchors with a 6D residual each) with `gumalign train --supervised`, at the test's
# sampling (12 Å, shifts up to 7 voxels per axis and subtomogram) and with the 9 Å recipe (MAX_SHIFT9, default 7),
# side by side on the GPU; validate both on held-out structures and draws (bench/bench_so3.py, beside F&A on the same
# pairs); and pack the weights (safetensors + JSON record with sha256) to bring back. Every step is time-boxed, so
# what finished comes back even when a later step fails.
#
#   bash scripts/so3_device_session.sh                 # on the device machine, from the repository root
#
# From a session with a lent H200 (the device tool; the .whl wheels for mrcfile, starfile, gemmi carried as in
# bench/device_session.sh, e.g. carry [".whl"]):
#   run(command="OUT=$OUT bash scripts/so3_device_session.sh", carry=[".whl"], timeout_s=600)
# Then, here: reassemble the weights (cat so3_12A_weights.part_* > model.safetensors; the record is so3_12A.json),
# check `sha256sum` against the record, and compare with bench/bench_align.py before shipping anything.
#
# Before the first call, here (the H200 image has torch but not these; README of the device tool):
#   echo /.whl/ >> .git/info/exclude
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       mrcfile==1.5.4 starfile==0.5.13 gemmi==0.7.5 dynamotable==0.3.0
# A CPU dry run of the plumbing (minutes): DEV=cpu NO_WHEELS=1 PY=.venv/bin/python ARCH=gumnet-so3-tiny \
#   BLOBS=2 EVAL_PAIRS=1 TRAIN_MINUTES=0.2 PAIRS=80 BATCH=8 WORK=/tmp/so3dev OUT=/tmp/so3dev/out \
#   bash scripts/so3_device_session.sh
# (run on 2026-12-01 on the 2-core CPU: 258 s, every step rc 0, 5 files packed; the CUDA path itself is untested.)
#
# Budget knobs (environment): BUDGET (seconds until packing, default 540), PAIRS (per model, default 16000),
# TRAIN_MINUTES (default 6, simulation included), BATCH (64), BLOBS (200), MAX_SHIFT12 (7), MAX_SHIFT9 (7), EVAL_PAIRS (16).
set -u
cd "$(dirname "$0")/.."
began=$(date +%s)
OUT=${OUT:-runs/so3_device/out}
BUDGET=${BUDGET:-540}
WORK=${WORK:-runs/so3_device}
DEV=${DEV:-cuda}
PAIRS=${PAIRS:-16000}
TRAIN_MINUTES=${TRAIN_MINUTES:-6}  # per training command, simulation included
BATCH=${BATCH:-64}
BLOBS=${BLOBS:-200}
MAX_SHIFT12=${MAX_SHIFT12:-7}
MAX_SHIFT9=${MAX_SHIFT9:-7}
EVAL_PAIRS=${EVAL_PAIRS:-16}
ARCH=${ARCH:-gumnet-so3}
mkdir -p "$OUT" "$WORK/logs"
LOGS=$WORK/logs
left() { echo $((began + BUDGET - $(date +%s))); }
upto() { local t=$(($(left) - $1)); echo $((t < 5 ? 5 : t)); }  # seconds for a step that must end $1 s before packing

source bench/device_env.sh  # wheels from .whl/, PYTHONPATH, PY, $LOGS/gpu.txt and smoke.txt
GUMALIGN="$PY -m gumalign.cli.main"
if ! "$PY" -c "import mrcfile, starfile, gemmi, dynamotable, safetensors, typer, rich" 2> "$LOGS/imports.txt"; then
    echo "missing Python packages (carry them as .whl, see this script's header):"; cat "$LOGS/imports.txt"
    cp "$LOGS/imports.txt" "$OUT/"
    exit 3
fi

# Training structures: every built-in except the held-out spliceosome and ClpB (bench/bench_so3.py's test set), plus
# procedurally generated asymmetric blobs; SNRs from 100 down to 0.03 in one model.
TRAIN=builtin:cand1_cul1_roc1,builtin:hsp90_sba1,builtin:sse1_hsp70,builtin:proteasome,builtin:p97,builtin:rubisco
TRAIN=$TRAIN,builtin:hsp70_atpase,builtin:ssb1_atpase,builtin:get3,builtin:esterase
common=(--supervised --arch "$ARCH" --simulate "$TRAIN" --blobs "$BLOBS" --snr 100,1,0.3,0.1,0.05,0.03
        --n-pairs "$PAIRS" --tilt-range -60 60 --epochs 400 --batch-size "$BATCH" --lr 1e-3 --decay 2e-4
        --val-fraction 0.05 --device "$DEV" --threads 8 --max-minutes "$TRAIN_MINUTES" --quiet)

train() {  # name voxel-size max-shift seed
    local out=$WORK/$1
    local resume=()
    [[ -f $out/checkpoint/state.json ]] && resume=(--resume)
    timeout "$(upto 110)" $GUMALIGN train "${common[@]}" --voxel-sizes "$2" --max-shift "$3" --seed "$4" \
        --data-cache "$WORK/$1_pairs.npz" --out "$out" "${resume[@]}" > "$LOGS/train_$1.log" 2>&1
    echo "train $1: rc $? ($(left) s left)"
}
train so3_12A 12 "$MAX_SHIFT12" 21 &
p12=$!
train so3_9A 9 "$MAX_SHIFT9" 22 &
p9=$!
wait "$p12" "$p9"

# A run stopped by its timeout before writing its model: export its last epoch checkpoint instead (record marked).
for name in so3_12A so3_9A; do
    if [[ ! -f $WORK/$name/model.json && -f $WORK/$name/checkpoint/state.json ]]; then
        timeout 30 "$PY" scripts/export_checkpoint.py "$WORK/$name" "$WORK/$name" > "$LOGS/export_$name.log" 2>&1
        echo "export $name from its checkpoint: rc $?"
    fi
done

# --- validation on held-out structures and draws, beside F&A on the same pairs -------------------------------------
models=()
for name in so3_12A so3_9A; do [[ -f $WORK/$name/model.json ]] && models+=("$WORK/$name"); done
if ((${#models[@]})); then
    list=$(IFS=,; echo "${models[*]}")
    timeout "$(upto 70)" "$PY" bench/bench_so3.py --models "$list" --methods fa --snrs 100,0.1,0.03 \
        --pairs "$EVAL_PAIRS" --max-shift 7 --device "$DEV" --threads 4 --batch-size 64 \
        --json "$WORK/bench_so3_shift7.json" > "$LOGS/bench_so3_shift7.md" 2>&1
    echo "bench_so3 (shift 7): rc $? ($(left) s left)"; cat "$LOGS/bench_so3_shift7.md"
    timeout "$(upto 15)" "$PY" bench/bench_so3.py --models "$list" --snrs 100,0.1 --pairs "$EVAL_PAIRS" \
        --max-shift 3 --device "$DEV" --threads 4 --batch-size 64 \
        --json "$WORK/bench_so3_shift3.json" > "$LOGS/bench_so3_shift3.md" 2>&1
    echo "bench_so3 (shift 3): rc $? ($(left) s left)"
fi

# --- pack: at most 8 files, 16 MiB each ----------------------------------------------------------------------------
tar czf "$OUT/so3_results.tar.gz" -C "$WORK" logs $(cd "$WORK" && ls bench_so3_*.json 2>/dev/null) \
    $(cd "$WORK" && ls -d so3_*/model.json so3_*/loss.png so3_*/checkpoint/state.json 2>/dev/null) 2>/dev/null
for name in so3_12A so3_9A; do
    if [[ -f $WORK/$name/model.safetensors ]]; then
        cp "$WORK/$name/model.json" "$OUT/$name.json"
        split -b 15M "$WORK/$name/model.safetensors" "$OUT/${name}_weights.part_"
    fi
done
ls -la "$OUT"
echo "done in $(( $(date +%s) - began )) s"
