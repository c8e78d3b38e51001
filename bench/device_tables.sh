#!/usr/bin/env bash
# The paper tables' issue-12 rows at N = 100 on a lent GPU (about 8 minutes; every step time-boxed, results packed
# even if a step fails). Run from the repository root on a CUDA machine (set-up: bench/device_env.sh); docs/
# paper_tables.json and .csv.gz (the Haar/unseen pair table of the H200 session) must be in the tree.
#
#   bash bench/device_tables.sh        # results under $OUT (default runs/device_tables/out): one tar.gz
#
# Side by side on the GPU, each in its own process and cell cache:
#   refrows    the Haar pair table's reference rows (prior, floor, oracle) on its own pairs, merged into it;
#   aitom      the pair table under aitom's rotation prior (H-T, F&A, Gum-Net ± refine, prior, floor, oracle);
#   reference  reference alignment to the noise-free template (same methods, prior, floor);
#   seed       --protocol seed: Gum-Net fine-tuned on the table's structures (SEED_PAIRS, SEED_EPOCHS), then aligned;
#              its classical rows are merged in from the unseen table (same pairs, same methods).
set -u
cd "$(dirname "$0")/.."
began=$(date +%s)
OUT=${OUT:-runs/device_tables/out}
BUDGET=${BUDGET:-480}
WORK=runs/device_tables
DEV=${DEV:-cuda}
N=${N:-100}
SEED_PAIRS=${SEED_PAIRS:-6000}
SEED_EPOCHS=${SEED_EPOCHS:-8}
LOGS=$WORK/logs
mkdir -p "$OUT" "$WORK/tables"
left() { echo $((began + BUDGET - $(date +%s))); }
source bench/device_env.sh
gunzip -kf docs/paper_tables.csv.gz

T="$PY bench/paper_tables.py --n $N --device $DEV --threads 2 --throughput-devices none"
run() {  # name, then paper_tables arguments
    local name=$1; shift
    timeout "$(left)" $T --cells "$WORK/cells_$name" --out "$WORK/tables/$name.md" "$@" > "$LOGS/$name.log" 2>&1
    echo "$name: rc $? ($(left) s left)"
}
run refrows --methods none &
run aitom --rotation-prior aitom --methods ht,fa,gumnet &
run reference --task reference --methods ht,fa,gumnet &
run seed --protocol seed --methods gumnet --reference-rows none --seed-pairs "$SEED_PAIRS" \
    --seed-epochs "$SEED_EPOCHS" --seed-protocol-dir "$WORK/seed_models" &
wait
$PY bench/paper_tables.py --render-from docs/paper_tables.json --merge "$WORK/tables/refrows.json" \
    --out "$WORK/tables/paper_tables.md" > "$LOGS/merge_refrows.log" 2>&1
$PY bench/paper_tables.py --render-from "$WORK/tables/seed.json" --merge docs/paper_tables.json \
    --merge "$WORK/tables/refrows.json" --out "$WORK/tables/paper_tables_seed.md" > "$LOGS/merge_seed.log" 2>&1
tail -n 2 "$LOGS"/*.log
tar czf "$OUT/results.tar.gz" -C "$WORK" logs tables $(cd "$WORK" && ls -d seed_models/*/*/model.json 2>/dev/null)
ls -la "$OUT"
echo "done in $(( $(date +%s) - began )) s"
