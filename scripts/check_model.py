"""Evaluate a Gum-Net model the way `gumalign align --method gumnet` uses it, on held-out simulated pairs.

    .venv/bin/python scripts/check_model.py --model runs/shipped/stage2 --out runs/shipped/check.json \
        --structures builtin:clpb,builtin:proteasome --snrs 100,0.1,0.03,0.01 --pairs 6 --voxel-size 9

For every structure and SNR, ``--pairs`` pairs are simulated as in the seed's test (s_a without a wedge, s_b with the
±60° wedge, uniformly random relative rotation, shifts up to ``--max-shift`` voxels per axis and subtomogram) from a
seed that training never uses, and aligned with gumalign.align.gumnet.GumNetAligner (60 starts, FFT shift per
candidate). Errors are the seed's (rotation ||R - R̂||_F, translation ||t - t̂|| in voxels, unrounded), plain and
against the closest symmetry-equivalent transform of the declared/detected symmetry (bench/_common.py).
Writes a JSON summary {snr: {rotation_error, translation_error, ...}} and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # for _common

HELD_OUT_SEED = 990_001  # never a training seed (the recipe uses 1 and 2)


def _stats(values: np.ndarray) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model name or path")
    parser.add_argument("--out", type=Path, required=True, help="JSON summary")
    parser.add_argument("--structures", required=True, help="comma-separated structure specs (builtin:NAME, files)")
    parser.add_argument("--snrs", default="100,0.1,0.03,0.01")
    parser.add_argument("--pairs", type=int, default=6, help="pairs per structure and SNR")
    parser.add_argument("--voxel-size", type=float, default=9.0)
    parser.add_argument("--max-shift", type=float, default=2.5, help="shift per axis of each subtomogram, voxels")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--polish", type=int, default=1, help="polish passes of the aligner (its default: 1)")
    args = parser.parse_args(argv)

    import torch

    from _common import DECLARED_SYMMETRY, detect_symmetry, symmetric_errors
    from gumalign.align.gumnet import GumNetAligner
    from gumalign.geometry import rotation_error, translation_error
    from gumalign.simulate.imaging import simulate_pairs
    from gumalign.train.data import load_templates

    torch.set_num_threads(args.threads)
    templates = load_templates(args.structures.split(","), 32, args.voxel_size)
    aligner = GumNetAligner(args.model, device=args.device, batch_size=16, polish=args.polish)
    snrs = [float(s) for s in args.snrs.split(",")]
    summary: dict = {
        "model": str(args.model), "structures": list(templates), "pairs_per_structure": args.pairs,
        "voxel_size": args.voxel_size, "max_shift_per_subtomogram": args.max_shift, "relative_rotation": "uniform",
        "aligner": f"GumNetAligner (60 icosahedral starts, FFT shift per candidate, {args.polish} polish pass(es)), "
                   "no --refine",
        "per_snr": {},
    }
    began = time.monotonic()
    for si, snr in enumerate(snrs):
        plain_r, plain_t, sym_r, sym_t = [], [], [], []
        for ti, (name, density) in enumerate(templates.items()):
            pairs = simulate_pairs(
                density, args.pairs, snr=snr, rng=np.random.default_rng([HELD_OUT_SEED, ti, si]),
                max_shift=args.max_shift, voxel_size=args.voxel_size,
            )
            result = aligner.align(pairs.s_a, pairs.weight_a[None], pairs.s_b, pairs.weight_b[None])
            plain_r.append(rotation_error(pairs.rotations, result.rotations))
            plain_t.append(translation_error(pairs.shifts, result.shifts))
            group = detect_symmetry(density, DECLARED_SYMMETRY.get(name, "C1"))
            r, t, _ = symmetric_errors(pairs.rotations_a, pairs.shifts_a, pairs.rotations_b, pairs.shifts_b,
                                       group.operators, result.rotations, result.shifts)
            sym_r.append(r)
            sym_t.append(t)
        cell = {
            "n": int(sum(len(r) for r in plain_r)),
            "rotation_error": _stats(np.concatenate(plain_r)),
            "translation_error": _stats(np.concatenate(plain_t)),
            "rotation_error_symmetry_aware": _stats(np.concatenate(sym_r)),
            "translation_error_symmetry_aware": _stats(np.concatenate(sym_t)),
        }
        summary["per_snr"][f"{snr:g}"] = cell
        print(f"SNR {snr:g}: rotation {cell['rotation_error']['mean']:.3f} (symmetry-aware "
              f"{cell['rotation_error_symmetry_aware']['mean']:.3f}), translation "
              f"{cell['translation_error']['mean']:.2f} voxels, n={cell['n']} ({time.monotonic() - began:.0f} s)",
              flush=True)
    summary["seconds"] = time.monotonic() - began
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
