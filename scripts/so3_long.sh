#!/usr/bin/env bash
# The longer CPU run of the chosen one-pass design (issue 13), one thread, in the background and resumable:
# supervised training at the issue's conditions (shifts up to 7 voxels per axis and subtomogram, 12 Å and 9 Å,
# SNR 100 to 0.03) on fresh pairs, starting from the comparison run's model (scripts/so3_compare.sh).
#
#   nohup bash scripts/so3_long.sh > /root/runs/so3-long.log 2>&1 &
#   nohup bash scripts/so3_long.sh > /root/runs/so3-long.log 2>&1 &     # again after an interruption: resumes
#
# The simulated pairs are kept in $RUNS/so3long_pairs.npz, so a resumed run skips the simulation; every epoch is
# checkpointed in $RUNS/so3-long/checkpoint. model.json / model.safetensors appear when EPOCHS epochs are done (or
# after CPU_MINUTES of training); the record holds the validation errors of every epoch.
set -uo pipefail
cd "$(dirname "$0")/.."
GUMALIGN=${GUMALIGN:-.venv/bin/gumalign}
RUNS=${RUNS:-/root/runs}
ARCH=${ARCH:-gumnet-so3-small}
INIT=${INIT:-$RUNS/so3-A}
PAIRS=${PAIRS:-12000}
EPOCHS=${EPOCHS:-60}
CPU_MINUTES=${CPU_MINUTES:-1440}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
TRAIN=builtin:cand1_cul1_roc1,builtin:hsp90_sba1,builtin:sse1_hsp70,builtin:proteasome,builtin:p97,builtin:rubisco
TRAIN=$TRAIN,builtin:hsp70_atpase,builtin:ssb1_atpase,builtin:get3,builtin:esterase
out=$RUNS/so3-long
args=(--supervised --arch "$ARCH" --init "$INIT" --simulate "$TRAIN" --blobs 80 --voxel-sizes 12,9
      --snr 100,1,0.3,0.1,0.03 --n-pairs "$PAIRS" --max-shift 7 --tilt-range -60 60
      --data-cache "$RUNS/so3long_pairs.npz" --epochs "$EPOCHS" --batch-size 16 --lr 3e-4 --decay 1e-4
      --val-fraction 0.05 --seed 31 --threads 1 --device cpu --max-cpu-minutes "$CPU_MINUTES" --out "$out")
if [[ -f $out/checkpoint/state.json ]]; then
    exec "$GUMALIGN" train "${args[@]}" --resume
fi
exec "$GUMALIGN" train "${args[@]}"
