#!/usr/bin/env bash
# One lent-GPU session (about 9.5 minutes), prepared so that every part is time-boxed and comes back even if a later
# part fails. Run from the repository root on a CUDA machine whose python3 holds torch (set-up: bench/device_env.sh).
#
#   bash bench/device_session.sh            # writes results under $OUT (default runs/device/out)
#
# 1. alone on the GPU, for clean timings: bench/bench_align.py --device cuda (Gum-Net, H-T, F&A, each ± refine) and
#    Gum-Net inference throughput at batch 1, 32, 256 (bench/paper_tables.py's throughput section, CUDA rows);
# 2. side by side on the GPU: the MP, AP and SC ablations trained with the shipped model's recipe (paper_tables
#    --train-missing --train-only), a longer run of scripts/train_shipped.sh (a candidate shipped model), and the
#    paper tables' cells (one process per structure; H-T, F&A and Gum-Net first, the ablations once trained) cached in
#    runs/device/cells; timings of this phase are shared-GPU timings and are not reported as speed;
# 3. the tables rendered from the cells (every method), and everything packed into at most 8 files under $OUT.
set -u
cd "$(dirname "$0")/.."
began=$(date +%s)
OUT=${OUT:-runs/device/out}
BUDGET=${BUDGET:-560}  # seconds until packing must start
WORK=runs/device
DEV=${DEV:-cuda}
N=${N:-100}
mkdir -p "$OUT" "$WORK/logs"
LOGS=$WORK/logs
left() { echo $((began + BUDGET - $(date +%s))); }
upto() { local t=$(($(left) - $1)); echo $((t < 5 ? 5 : t)); }  # seconds for a step that must end $1 s before packing

source bench/device_env.sh

# --- 1. clean timings ---------------------------------------------------------------------------------------------
timeout 100 "$PY" bench/bench_align.py --device "$DEV" --n 64 --batch-size 32 --skip-memory --threads 4 \
    > "$LOGS/bench_align_cuda.md" 2> "$LOGS/bench_align_cuda.err"
echo "bench_align: rc $? ($(left) s left)"; cat "$LOGS/bench_align_cuda.md"
timeout 100 "$PY" bench/paper_tables.py --methods gumnet --structures spliceosome --snrs 0.1 --n 32 --no-refine \
    --throughput-devices "$DEV" --device "$DEV" --threads 4 --out "$WORK/throughput/throughput.md" \
    > "$LOGS/throughput.log" 2>&1
echo "throughput: rc $? ($(left) s left)"

# --- 2. side by side ----------------------------------------------------------------------------------------------
ABL=$WORK/ablations
for name in mp ap sc; do
    timeout "$(upto 150)" "$PY" bench/paper_tables.py --methods "$name" --ablation-dir "$ABL" --train-missing \
        --train-only --device "$DEV" --threads 2 --out "$WORK/unused.md" > "$LOGS/train_$name.log" 2>&1 &
    eval "train_$name=$!"
done
(
    export GUMALIGN=/tmp/gumalign PYTHON=$PY RUN=$WORK/shipped_long DEVICE=$DEV THREADS=4 CHECK_PAIRS=20
    export PAIRS1=${PAIRS1:-6000} EPOCHS1=${EPOCHS1:-12} PAIRS2=${PAIRS2:-6000} EPOCHS2=${EPOCHS2:-8}
    timeout "$(upto 20)" bash scripts/train_shipped.sh
) > "$LOGS/train_shipped_long.log" 2>&1 &
shipped_pid=$!

CELLS=$WORK/cells
STRUCTURES=(spliceosome rubisco p97 clpb proteasome)
cells() {  # methods log-suffix: one process per structure
    local pids=()
    for s in "${STRUCTURES[@]}"; do
        timeout "$(upto 40)" "$PY" bench/paper_tables.py --methods "$1" --structures "$s" --ablation-dir "$ABL" \
            --cells "$CELLS" --n "$N" --throughput-devices none --device "$DEV" --threads 2 --out "$WORK/part_$2_$s.md" \
            > "$LOGS/cells_$2_$s.log" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}"
}
cells ht,fa,gumnet base
echo "base cells done ($(left) s left)"
wait "$train_mp" "$train_ap" "$train_sc"
echo "ablations trained ($(left) s left)"
cells mp,ap,sc ablations
echo "ablation cells done ($(left) s left)"

# --- 3. the report ------------------------------------------------------------------------------------------------
timeout "$(upto -10)" "$PY" bench/paper_tables.py --ablation-dir "$ABL" --cells "$CELLS" --n "$N" \
    --throughput-devices none --device "$DEV" --out "$WORK/tables/paper_tables.md" > "$LOGS/render.log" 2>&1
rc=$?
echo "render: rc $rc ($(left) s left)"
if [[ $rc != 0 ]]; then  # the classical rows and Gum-Net alone, which can be re-rendered anywhere from the cells
    timeout 15 "$PY" bench/paper_tables.py --methods ht,fa,gumnet --cells "$CELLS" --n "$N" --throughput-devices none \
        --device "$DEV" --out "$WORK/tables/paper_tables_base.md" > "$LOGS/render_base.log" 2>&1
    echo "base render: rc $?"
fi
kill "$shipped_pid" 2>/dev/null
sleep 2
tail -n 3 "$LOGS"/*.log

# At most 8 files back: logs, tables and cells, ablation records in one archive; the candidate model's weights alone.
tar czf "$OUT/results.tar.gz" -C "$WORK" logs throughput tables cells \
    $(cd "$WORK" && ls -d ablations/*/model.json ablations/*/stage*/model.json 2>/dev/null) \
    $(cd "$WORK" && ls -d shipped_long/*.json shipped_long/*.md shipped_long/stage*/model.json shipped_long/stage*/loss.png \
      shipped_long/stage*/checkpoint/state.json 2>/dev/null) 2>/dev/null
for f in "$WORK"/shipped_long/stage2/model.safetensors "$WORK"/shipped_long/stage2/checkpoint/model.safetensors \
         "$WORK"/shipped_long/stage1/model.safetensors "$WORK"/shipped_long/stage1/checkpoint/model.safetensors; do
    if [[ -f $f ]]; then
        split -b 15M "$f" "$OUT/shipped_long_weights.part_"
        echo "$f" > "$OUT/shipped_long_weights.txt"
        break
    fi
done
ls -la "$OUT"
echo "done in $(( $(date +%s) - began )) s"
