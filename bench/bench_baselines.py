#!/usr/bin/env python3
"""Seconds per particle-reference pair of H-T align and F&A align on 32³ simulated particles, with their errors.

Each aligner is warmed up on one particle first (harmonic tables, the reference's cached expansion), so the figure is
the steady-state cost of one more particle against a reference already in use, as in `gumalign align`.

Usage:
    .venv/bin/python bench/bench_baselines.py [--n 16] [--snr 100] [--template proteasome] [--device cpu]
                                              [--threads 1] [--batch-size 8] [--all-candidates]

Prints a markdown table (method, seconds per pair, mean rotation and translation errors). Rotation errors of
symmetric templates (proteasome, rubisco, p97, ...) count symmetry mates as errors; use an asymmetric one (clpb,
cand1_cul1_roc1, sse1_hsp70, spliceosome) to read accuracy.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def make_particles(n: int, snr: float, template_name: str, seed: int):
    from gumalign.simulate.imaging import random_poses, simulate_subtomograms
    from gumalign.simulate.templates import load_builtin_template

    template = load_builtin_template(template_name).density
    rng = np.random.default_rng(seed)
    rotations, shifts = random_poses(n, 4.0, rng)
    particles = simulate_subtomograms(template, rotations, shifts, snr=snr, rng=rng, tilt_range=(-60, 60))
    return template, rotations, shifts, particles


def time_aligner(label, aligner, template, particles, rotations, shifts):
    from gumalign.fourier import wedge_mask
    from gumalign.geometry import rotation_error, translation_error

    wedge = wedge_mask(template.shape, (-60, 60), "centred")[None]
    ones = np.ones((1,) + template.shape, np.float32)
    aligner.align(template[None], ones, particles[:1], wedge)  # warm-up: tables and the reference's expansion
    start = time.perf_counter()
    result = aligner.align(template[None], ones, particles, wedge)
    seconds = (time.perf_counter() - start) / len(particles)
    return {
        "method": label,
        "seconds": seconds,
        "rotation": float(np.mean(rotation_error(rotations, result.rotations))),
        "translation": float(np.mean(translation_error(shifts, result.shifts))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="particles to align")
    parser.add_argument("--snr", type=float, default=100.0)
    parser.add_argument("--template", default="proteasome", help="built-in template name")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--all-candidates", action="store_true",
                        help="also time H-T with every local maximum as a candidate (the original's behaviour)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from gumalign.baselines import FAAligner, HTAligner

    if args.threads:
        torch.set_num_threads(args.threads)
    template, rotations, shifts, particles = make_particles(args.n, args.snr, args.template, args.seed)
    runs = [
        ("ht", HTAligner(device=args.device, batch_size=args.batch_size)),
        ("fa", FAAligner(device=args.device, batch_size=args.batch_size)),
    ]
    if args.all_candidates:
        runs.append(("ht (all maxima)", HTAligner(device=args.device, batch_size=args.batch_size, max_candidates=None)))
    rows = [time_aligner(label, aligner, template, particles, rotations, shifts) for label, aligner in runs]

    print(f"# H-T / F&A align, 32³, builtin:{args.template}, SNR {args.snr:g}, ±60° tilts, {args.n} particles")
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"thread(s), device {args.device}, batch {args.batch_size}")
    print("| method | s per pair | mean rotation error | mean translation error (voxels) |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['seconds']:.3f} | {row['rotation']:.3f} | {row['translation']:.2f} |")


if __name__ == "__main__":
    main()
