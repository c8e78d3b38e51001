#!/usr/bin/env python3
"""Seconds per particle of every alignment method on 32³, with and without --refine, measured in one run;
and the peak memory of `gumalign align` over 10,000 particles (streaming: it should not grow with N).

Usage:
    .venv/bin/python bench/bench_align.py [--n 16] [--snr 0.1] [--methods gumnet,ht,fa] [--skip-memory]

Prints a markdown table; docs/benchmarks.md records the numbers with the command and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_particles(n: int, snr: float, seed: int):
    from gumalign.simulate.imaging import random_poses, simulate_subtomograms
    from gumalign.simulate.templates import load_builtin_template

    template = load_builtin_template("proteasome").density
    rng = np.random.default_rng(seed)
    rotations, shifts = random_poses(n, 7.0, rng)
    particles = simulate_subtomograms(template, rotations, shifts, snr=snr, rng=rng)
    return template, rotations, shifts, particles


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def time_method(name, refine, template, particles, rotations, shifts, batch_size, device="cpu"):
    import torch

    from gumalign.align.spec import AlignerSpec
    from gumalign.devices import resolve_device
    from gumalign.fourier import wedge_mask
    from gumalign.geometry import rotation_error, translation_error

    n = len(particles)
    wedge = wedge_mask(template.shape, (-60, 60), "centred")[None]
    ones = np.ones((1,) + template.shape, np.float32)
    device = resolve_device(device)
    # What `gumalign align --method NAME [--refine]` builds (the refinement timed separately, from the method's answer).
    aligner = AlignerSpec(method=name, device=str(device), batch_size=batch_size).build()
    local = AlignerSpec(method="local", device=str(device), batch_size=batch_size).build()
    first = aligner.align(template[None], ones, particles[:1], wedge)  # warm-up (caches, model load, kernels)
    if refine:
        local.align(template[None], ones, torch.as_tensor(particles[:1], device=device), wedge, prior=first)
    _sync(device)
    start = time.perf_counter()
    results = []
    for i in range(0, n, batch_size):
        batch = particles[i : i + batch_size]
        result = aligner.align(template[None], ones, batch, wedge)
        if refine:
            result = local.align(template[None], ones, torch.as_tensor(batch, device=device), wedge, prior=result)
        results.append(result)
    _sync(device)
    seconds = (time.perf_counter() - start) / n
    from gumalign.align.base import AlignmentResult

    result = AlignmentResult.concatenate(results)
    rot_err = rotation_error(rotations, result.rotations).mean()
    trans_err = translation_error(shifts, result.shifts).mean()
    return seconds, rot_err, trans_err


def peak_memory_mb(n_rows: int, method: str, workdir: Path) -> float:
    """Peak RSS (MB) of a `gumalign align` child process over a STAR of ``n_rows`` rows (8 files reused)."""
    from gumalign.io.mrc import write_volume

    template, _, _, particles = make_particles(8, 0.1, seed=3)
    write_volume(workdir / "ref.mrc", template, 12.0)
    for i, vol in enumerate(particles):
        write_volume(workdir / f"p{i}.mrc", vol, 12.0)
    star = workdir / f"parts_{n_rows}.star"
    rows = "\n".join(f"p{i % 8}.mrc 1" for i in range(n_rows))
    star.write_text(
        "data_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnImagePixelSize #2\n_rlnImageDimensionality #3\n1 12.0 3\n\n"
        "data_particles\n\nloop_\n_rlnImageName #1\n_rlnOpticsGroup #2\n" + rows + "\n"
    )
    code = (
        "import resource, sys\n"
        "from gumalign.cli.main import app\n"
        "try:\n"
        f"    app(['align', '--ref', r'{workdir / 'ref.mrc'}', '--particles', r'{star}', '--out', r'{workdir / 'out.star'}',"
        f" '--method', '{method}', '--tilt-range', '-60', '60', '--quiet', '--device', 'cpu'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16, help="particles per method")
    parser.add_argument("--snr", type=float, default=0.1)
    parser.add_argument("--methods", default="gumnet,ht,fa")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--memory-rows", type=int, default=10000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-method", default=None, help="method for the memory run (default: gumnet if timed)")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (timing only; the memory run uses the CPU)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    names = args.methods.split(",")
    if not args.skip_timing:
        time_methods(args, names)
    if not args.skip_memory:
        method = args.memory_method or ("gumnet" if "gumnet" in names else names[0])
        with tempfile.TemporaryDirectory() as tmp:
            small = peak_memory_mb(500, method, Path(tmp))
            large = peak_memory_mb(args.memory_rows, method, Path(tmp))
        print(f"\npeak memory of `gumalign align --method {method}`: {small:.0f} MB for 500 particles, "
              f"{large:.0f} MB for {args.memory_rows} particles")


def time_methods(args, names) -> None:
    import torch

    template, rotations, shifts, particles = make_particles(args.n, args.snr, seed=1)
    from gumalign.devices import resolve_device

    device = resolve_device(args.device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{args.threads} threads, {platform.processor() or platform.machine()}")
    print(f"# bench_align: {args.n} particles of 32³ at SNR {args.snr}, batch {args.batch_size}, {where}, "
          f"torch {torch.__version__}\n")
    print("| method | refine | s / particle | mean rotation error | mean translation error (voxels) |")
    print("|---|---|---|---|---|")
    timings = {}
    for name in args.methods.split(","):
        for refine in (False, True):
            seconds, rot, trans = time_method(
                name, refine, template, particles, rotations, shifts, args.batch_size, device
            )
            timings[(name, refine)] = seconds
            print(f"| {name} | {'yes' if refine else 'no'} | {seconds:.4f} | {rot:.2f} | {trans:.2f} |", flush=True)
    if "gumnet" in names:
        for other in names:
            if other != "gumnet":
                ratio = timings[(other, False)] / timings[("gumnet", False)]
                print(f"\n{other} / gumnet seconds per particle (no refine): {ratio:.1f}x")
    for name in names:
        ratio = timings[(name, True)] / timings[(name, False)]
        print(f"{name}: --refine costs {ratio:.1f}x the plain method")


if __name__ == "__main__":
    main()
