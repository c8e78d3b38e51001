#!/usr/bin/env python3
"""Seconds per particle of F&A align at 32³ and at 128³ with the same maximum frequency, in one process: the band
sets the cost (issue 17: at most 3× the 32³ time at 128³ with max frequency 8).

Particles are a smooth asymmetric blob (filtered noise in a sphere, scaled with the box) rotated by Haar-random
rotations, shifted by up to 3/32 of the box per axis and given a ±60° missing wedge; the reference is the blob. Each
aligner is warmed up on one particle first (harmonic tables, the reference's cached expansion), as in
bench_baselines.py. Rotation and translation errors are printed beside the times so a fast wrong answer shows.

Usage:
    .venv/bin/python bench/bench_band.py [--n 4] [--max-freq 8] [--boxes 32 128] [--threads 1] [--uncropped]

``--uncropped`` also times F&A at the full box (fourier_crop=False, the method before issue 17) at each size.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def make_particles(box: int, n: int, seed: int):
    import torch
    from scipy.ndimage import gaussian_filter

    from gumalign.fourier import wedge_mask
    from gumalign.geometry import random_rotations, transform_volumes

    gen = np.random.default_rng(seed)
    blob = gaussian_filter(np.random.default_rng(5).standard_normal((box,) * 3), 1.5 * box / 32)
    z, y, x = np.indices((box,) * 3) - box // 2
    blob = (blob * ((x**2 + y**2 + z**2) <= (11.0 * box / 32) ** 2)).astype(np.float32)
    weight = wedge_mask((box,) * 3, (-60, 60), "centred")
    rotations = random_rotations(n + 1, gen)
    shifts = gen.uniform(-3, 3, size=(n + 1, 3)) * box / 32
    posed = transform_volumes(torch.from_numpy(blob)[None], torch.as_tensor(rotations, dtype=torch.float32),
                              torch.as_tensor(shifts, dtype=torch.float32)).numpy()
    spectrum = np.fft.fftn(posed, axes=(1, 2, 3)) * np.fft.ifftshift(weight)
    particles = np.fft.ifftn(spectrum, axes=(1, 2, 3)).real.astype(np.float32)
    return blob, weight, rotations, shifts, particles


def time_fa(box: int, n: int, max_freq: int, crop: bool, seed: int) -> dict:
    from gumalign.baselines.fa import FAAligner
    from gumalign.geometry import rotation_error, translation_error

    blob, weight, rotations, shifts, particles = make_particles(box, n, seed)
    ones = np.ones((1,) + blob.shape, np.float32)
    aligner = FAAligner(device="cpu", max_freq=max_freq, fourier_crop=crop)
    aligner.align(blob[None], ones, particles[:1], weight[None])  # warm-up
    start = time.perf_counter()
    result = aligner.align(blob[None], ones, particles[1:], weight[None])
    seconds = (time.perf_counter() - start) / n
    return {
        "box": box,
        "working": aligner.working_box(box),
        "seconds": seconds,
        "rotation": float(np.mean(rotation_error(rotations[1:], result.rotations))),
        "translation": float(np.mean(translation_error(shifts[1:], result.shifts))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4, help="particles timed per box (after one warm-up particle)")
    parser.add_argument("--max-freq", type=int, default=8, help="F&A's maximum frequency, cycles per box")
    parser.add_argument("--boxes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--uncropped", action="store_true", help="also time the full-box method")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for box in args.boxes:
        rows.append(("cropped", time_fa(box, args.n, args.max_freq, True, args.seed)))
        if args.uncropped:
            rows.append(("full box", time_fa(box, args.n, args.max_freq, False, args.seed)))
    print(f"F&A align, max frequency {args.max_freq}, {args.n} particles per box, {args.threads} thread(s), "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
    print()
    print("| box | searched at | seconds per particle | mean rotation error | mean translation error (voxels) |")
    print("|---|---|---|---|---|")
    for label, row in rows:
        where = f"{row['working']}³" + ("" if label == "cropped" else " (full box)")
        print(f"| {row['box']}³ | {where} | {row['seconds']:.3f} | {row['rotation']:.3f} | {row['translation']:.2f} |")
    cropped = [row for label, row in rows if label == "cropped"]
    if len(cropped) >= 2:
        print()
        print(f"ratio {cropped[-1]['box']}³ / {cropped[0]['box']}³: "
              f"{cropped[-1]['seconds'] / cropped[0]['seconds']:.2f}")


if __name__ == "__main__":
    main()
