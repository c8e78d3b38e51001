#!/usr/bin/env bash
# The small-budget design comparison of the two full-SO(3) one-pass heads (issue 13), on one CPU thread each:
#   A  gumnet-so3-small     60 icosahedral anchors, a score and a 6D residual each (EPN-style)
#   B  gumnet-so3-mh-small  4 free 6D hypotheses with confidences (winner-take-all)
# Same simulated pairs (one --data-cache, simulated once by A's run), same seed, same CPU-time budget.
#
#   nohup bash scripts/so3_compare.sh > /root/runs/so3_compare.log 2>&1 &
#   bash scripts/so3_compare.sh          # again after an interruption: each run resumes from its last epoch
#
# Then: .venv/bin/python bench/bench_so3.py --models /root/runs/so3-A,/root/runs/so3-B (held-out structures/draws).
set -uo pipefail
cd "$(dirname "$0")/.."
GUMALIGN=${GUMALIGN:-.venv/bin/gumalign}
RUNS=${RUNS:-/root/runs}
MINUTES=${MINUTES:-10}      # CPU minutes of training per design (the recorded comparison: 10)
PAIRS=${PAIRS:-4800}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$RUNS/so3data"
CACHE=$RUNS/so3data/pairs.npz
# Training structures: every built-in except the held-out spliceosome and ClpB, at 9 and 12 Å, plus 40 blobs.
TRAIN=builtin:cand1_cul1_roc1,builtin:hsp90_sba1,builtin:sse1_hsp70,builtin:proteasome,builtin:p97,builtin:rubisco
TRAIN=$TRAIN,builtin:hsp70_atpase,builtin:ssb1_atpase,builtin:get3,builtin:esterase
common=(--supervised --simulate "$TRAIN" --blobs 40 --voxel-sizes 9,12 --snr 100,1,0.1 --n-pairs "$PAIRS"
        --max-shift 3 --tilt-range -60 60 --data-cache "$CACHE" --epochs 200 --batch-size 16 --lr 5e-4 --decay 5e-4
        --val-fraction 0.05 --seed 11 --threads 1 --device cpu --max-cpu-minutes "$MINUTES" --quiet)

run() {  # name arch
    local out=$RUNS/$1
    if [[ -f $out/checkpoint/state.json ]]; then
        "$GUMALIGN" train "${common[@]}" --arch "$2" --out "$out" --resume
    else
        "$GUMALIGN" train "${common[@]}" --arch "$2" --out "$out"
    fi
    echo "$1 ($2) finished: rc $? at $(date)"
}
run so3-A gumnet-so3-small > "$RUNS/so3-A.log" 2>&1 &
a=$!
while [[ ! -f $CACHE ]] && kill -0 "$a" 2>/dev/null; do sleep 10; done
run so3-B gumnet-so3-mh-small > "$RUNS/so3-B.log" 2>&1 &
b=$!
wait "$a" "$b"
