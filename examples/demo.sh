#!/usr/bin/env bash
# The whole pipeline on a built-in structure, as `make demo` runs it:
#   simulate -> align (Gum-Net + local refinement) -> average (wedge-compensated, half maps) -> fsc.
# The proteasome is D7 and its built-in template lies in RELION's symmetry frame, so every step takes --sym D7 as a
# lab would give it (DEMO_SYM=C1 runs the same pipeline without symmetry).
# Environment: DEMO_OUT (folder, default demo_out), DEMO_N (particles, default 200), DEMO_METHOD (default gumnet),
# DEMO_SYM (default D7).
set -euo pipefail
out=${DEMO_OUT:-demo_out}
n=${DEMO_N:-200}
method=${DEMO_METHOD:-gumnet}
sym=${DEMO_SYM:-D7}
start=$(date +%s)

gumalign --version
mkdir -p "$out"  # gumalign writes into folders that exist (a mistyped --out is refused, not created)
echo "== simulate: $n proteasome subtomograms, SNR 0.1, tilts -60..60 (30° wedge)"
gumalign simulate --structure builtin:proteasome --n "$n" --snr 0.1 --tilt-range -60 60 \
    --seed 1 --overwrite --out "$out/sim"

echo "== align: $method + refine against the noise-free template, symmetry $sym"
gumalign align --ref "$out/sim/reference.mrc" --particles "$out/sim/particles.star" \
    --method "$method" --refine --sym "$sym" --out "$out/aligned.star"

echo "== average: wedge-compensated, gold-standard half maps, symmetry $sym"
gumalign average --particles "$out/aligned.star" --sym "$sym" --out "$out/average.mrc"

echo "== fsc: gold standard (independent halves) and against the template"
gumalign fsc --gold-standard --particles "$out/aligned.star" --sym "$sym" --out "$out/fsc_gold.star"
gumalign fsc "$out/average.mrc" --ref "$out/sim/reference.mrc" --out "$out/fsc_template.star"

echo "== done in $(( $(date +%s) - start )) s; outputs in $out/:"
ls -l "$out"
