"""Clustering accuracy on a simulated two-structure set (issue check: >= 90% with gumnet+refine), and its time.

    .venv/bin/python bench/bench_cluster.py [--per-class 50] [--snr 0.1] [--max-shift 3] [--method gumnet]
                                            [--no-refine] [--iterations 3] [--pairwise] [--threads 2]

Simulates ``--per-class`` particles of each of two built-in structures (default proteasome and spliceosome) at
``--snr`` with a 30° wedge and shifts up to ``--max-shift`` voxels per axis (`gumalign simulate`), clusters them with
`gumalign cluster --k 2` (class references by default, all pairs with ``--pairwise``) and prints the accuracy (the
better of the two label matchings) and the wall time. The seed's real-data figure is 92%. Not in CI (tests/test_cluster.py runs 12 + 12); see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--structures", default="proteasome,spliceosome")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--snr", type=float, default=0.1)
    parser.add_argument("--max-shift", type=float, default=3.0,
                        help="particle shifts up to this many voxels per axis (picked particles are roughly centred)")
    parser.add_argument("--method", default="gumnet")
    parser.add_argument("--no-refine", action="store_true")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--pairwise", action="store_true", help="all N(N-1)/2 pairs instead of class references")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch
    from typer.testing import CliRunner

    from gumalign.cli.main import app
    from gumalign.io.star import read_star

    torch.set_num_threads(args.threads)
    runner = CliRunner()
    names = args.structures.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        simulate = ["simulate", "--n", str(args.per_class * len(names)), "--snr", str(args.snr), "--seed",
                    str(args.seed), "--max-shift", str(args.max_shift), "--out", str(folder / "sim"), "--quiet"]
        for name in names:
            simulate += ["--structure", f"builtin:{name}"]
        result = runner.invoke(app, simulate)
        if result.exit_code != 0:
            print(result.output, file=sys.stderr)
            return 1
        cluster = ["cluster", "--particles", str(folder / "sim" / "particles.star"), "--k", str(len(names)),
                   "--method", args.method, "--out", str(folder / "classes.star"), "--quiet", "--device", "cpu",
                   "--iterations", str(args.iterations)]
        cluster += [] if args.no_refine else ["--refine"]
        cluster += [] if args.pairwise else ["--ref-based"]
        began = time.monotonic()
        result = runner.invoke(app, cluster)
        seconds = time.monotonic() - began
        if result.exit_code != 0:
            print(result.output, file=sys.stderr)
            return 1
        table = read_star(folder / "classes.star")
        truth = np.array([names.index(n) + 1 for n in table.particles["gumStructureName"]])
        labels = table.classes()
    if len(names) != 2:
        raise SystemExit("accuracy is computed for two structures")
    accuracy = max(np.mean(labels == truth), np.mean((3 - labels) == truth))
    mode = "all pairs" if args.pairwise else f"class references, {args.iterations} round(s)"
    method = args.method + ("" if args.no_refine else "+refine")
    print(f"{' vs '.join(names)}, {args.per_class} each, SNR {args.snr:g}, 30° wedge, shifts ≤ {args.max_shift:g} "
          f"voxels; {method}, {mode}, "
          f"{args.threads} threads: accuracy {accuracy:.1%} in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
