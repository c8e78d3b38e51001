#!/usr/bin/env python
"""Benchmark `gumalign simulate`: subtomograms per second (32³, 121 tilts) and peak memory.

Each measurement runs in a fresh Python process, so peak memory (ru_maxrss) belongs to that run alone. It writes
the full data set (MRC files and STAR) to a temporary folder, as the command does.

Usage:
    .venv/bin/python bench/bench_simulate.py                 # rates for --jobs 1 and 2, memory at 500 and 2000
    .venv/bin/python bench/bench_simulate.py --memory-n 10000 # measure the 10,000-particle peak directly
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def worker(n: int, jobs: int, pairs: bool) -> dict:
    """Simulate n particles (or pairs) of builtin:proteasome at SNR 0.1, ±60° in 1° steps; report rate and memory."""
    import resource

    import torch

    from gumalign.simulate import ImagingParams, SimulationPlan, load_structure, write_dataset

    torch.set_num_threads(1)
    structure = load_structure("builtin:proteasome")
    plan = SimulationPlan([structure], n=n, snr=0.1, params=ImagingParams(), seed=0, pairs=pairs)
    def cpu_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    with tempfile.TemporaryDirectory() as out:
        start, cpu_start = time.perf_counter(), cpu_seconds()
        write_dataset(plan, out, jobs=jobs)
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"n": n, "jobs": jobs, "pairs": pairs, "seconds": seconds, "per_second": n / seconds,
            "per_cpu_second": n / cpu, "peak_mb": peak_mb}


def run(n: int, jobs: int, pairs: bool = False) -> dict:
    command = [sys.executable, __file__, "--worker", "--n", str(n), "--jobs", str(jobs)]
    command += ["--pairs"] if pairs else []
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=400, help="particles per speed measurement")
    parser.add_argument("--jobs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--pairs", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-n", type=int, nargs="*", default=[500, 2000], help="particle counts for memory")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.n, args.jobs, args.pairs)))
        return

    print("gumalign simulate benchmark: builtin:proteasome, 32³, 12 Å, SNR 0.1, tilts -60..60 step 1 (121), CTF+MTF")
    print(f"  load average before: {os.getloadavg()[0]:.2f} (other work on the machine slows the wall-clock rates)")
    for jobs in (1, 2):
        r = run(args.n, jobs)
        print(f"  --jobs {jobs}: {r['per_second']:6.1f} subtomograms/s wall clock ({r['n']} in {r['seconds']:.1f} s, "
              f"files included); {r['per_cpu_second']:.1f} per CPU-second")
    r = run(args.n // 2, 2, pairs=True)
    print(f"  --pairs --jobs 2: {r['per_second']:6.1f} pairs/s (s_a: 180 tilts, s_b: 121) -> the seed's 10,500 pairs "
          f"in {10500 / r['per_second'] / 60:.1f} min")
    peaks = []
    for n in args.memory_n:
        r = run(n, 2)
        peaks.append((n, r["peak_mb"]))
        print(f"  peak memory, {n} particles, --jobs 2: {r['peak_mb']:.0f} MB")
    if len(peaks) >= 2 and max(n for n, _ in peaks) < 10000:
        (n1, m1), (n2, m2) = peaks[0], peaks[-1]
        slope = (m2 - m1) / (n2 - n1)
        print(f"  extrapolated peak for 10,000 particles: {m2 + slope * (10000 - n2):.0f} MB "
              f"({slope * 1000:.1f} MB per 1000 particles: the output is streamed)")


if __name__ == "__main__":
    main()
