#!/usr/bin/env bash
# The demo `make demo` runs. It grows with the pipeline: simulate -> align -> average -> fsc.
set -euo pipefail
out=${DEMO_OUT:-demo_out}
mkdir -p "$out"
gumalign --version
gumalign wedge --box 32 --tilt-range -60 60 --voxel-size 12 --out "$out/wedge.mrc"
gumalign info "$out/wedge.mrc"
echo "demo outputs in $out/:"
ls -l "$out"
