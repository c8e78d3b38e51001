#!/usr/bin/env python3
"""Rotation errors of one-pass full-SO(3) Gum-Net models on held-out pairs (issue 13's design comparison).

    .venv/bin/python bench/bench_so3.py --models /root/runs/so3-A,/root/runs/so3-B --snrs 100,0.1 --pairs 12 \
        [--methods fa,gumnet] [--max-shift 3] [--threads 1] [--json out.json]

Held out: structures that training never saw (the spliceosome at 12 Å, ClpB at 12 and 9 Å; scripts/so3_compare.sh
trains on every other built-in) and procedurally generated blobs from a seed training never uses, each with pair
draws from a seed training never uses; uniformly random relative rotations, shifts up to --max-shift voxels per axis
and subtomogram, s_b with a 30° wedge. For every model it reports, per SNR:

- network: the top-scored hypothesis of one forward pass (the network alone);
- best of top-4: the best of its four top-scored hypotheses against the truth (an oracle; what the FFT scoring in the
  aligner could reach at best);
- aligner: `GumNetAligner` as `gumalign align --method gumnet --model M` runs it (top-4 hypotheses, one FFT
  translation search each, best constrained correlation, one polish pass), with seconds per pair.

``--methods`` adds registry aligners (e.g. fa, ht, gumnet = the shipped 60-start model) on the same pairs.
Rotation errors are ||R_true - R_est||_F (0 to 2.83) with the median and the shares within 15° and 30° beside the mean;
all held-out shapes are asymmetric, so no symmetry mates are involved.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

HELD_OUT_SEED = 770_013  # never a training seed
HELD_OUT_BLOB_SEED = 424_242
HELD_OUT_STRUCTURES = (("builtin:spliceosome", 12.0), ("builtin:clpb", 12.0), ("builtin:clpb", 9.0))


def held_out_templates(blobs: int) -> list[tuple[str, np.ndarray, float]]:
    """(name, density, voxel size) of every held-out template."""
    from gumalign.train.data import load_templates, random_blob_templates

    out = []
    for spec, size in HELD_OUT_STRUCTURES:
        for name, density in load_templates([spec], 32, size).items():
            out.append((f"{name}@{size:g}", density, size))
    for name, density in random_blob_templates(blobs, HELD_OUT_BLOB_SEED).items():
        out.append((name, density, 12.0))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated one-pass model paths or names")
    parser.add_argument("--methods", default="", help="comma-separated registry methods to run on the same pairs")
    parser.add_argument("--snrs", default="100,0.1")
    parser.add_argument("--pairs", type=int, default=12, help="pairs per template and SNR")
    parser.add_argument("--blobs", type=int, default=8, help="held-out blob shapes")
    parser.add_argument("--max-shift", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from _common import provenance
    from gumalign.align.gumnet import GumNetAligner
    from gumalign.align.spec import AlignerSpec
    from gumalign.geometry import rotation_error
    from gumalign.simulate.imaging import simulate_pairs
    from gumalign.train.data import zscore
    from gumalign.train.loop import rotation_stats

    torch.set_num_threads(args.threads)
    snrs = [float(s) for s in args.snrs.split(",")]
    templates = held_out_templates(args.blobs)
    data = {}
    for si, snr in enumerate(snrs):
        parts = [simulate_pairs(d, args.pairs, snr=snr, rng=np.random.default_rng([HELD_OUT_SEED, ti, si]),
                                max_shift=args.max_shift, voxel_size=size)
                 for ti, (_, d, size) in enumerate(templates)]
        data[snr] = dict(
            s_a=np.concatenate([p.s_a for p in parts]), s_b=np.concatenate([p.s_b for p in parts]),
            rotations=np.concatenate([p.rotations for p in parts]), w_a=parts[0].weight_a[None],
            w_b=parts[0].weight_b[None],
        )
    report = {"provenance": provenance(args.threads), "templates": [t[0] for t in templates], "pairs": args.pairs,
              "max_shift": args.max_shift, "rows": []}
    print(f"# held-out pairs: {len(templates)} templates ({', '.join(t[0] for t in templates)}) x {args.pairs} pairs "
          f"per SNR, shifts <= {args.max_shift:g} voxels per axis, 30° wedge on s_b\n")
    print("| model | how | SNR | n | mean | median | within 15° | within 30° | s / pair |")
    print("|---|---|---|---|---|---|---|---|---|")

    def row(label, how, snr, errors, seconds):
        stats = rotation_stats(errors)
        report["rows"].append(dict(model=label, how=how, snr=snr, n=len(errors), seconds_per_pair=seconds, **stats))
        sec = f"{seconds:.4f}" if seconds is not None else "-"
        print(f"| {label} | {how} | {snr:g} | {len(errors)} | {stats['mean']:.2f} | {stats['median']:.2f} | "
              f"{100 * stats['within_15deg']:.0f}% | {100 * stats['within_30deg']:.0f}% | {sec} |", flush=True)

    for model in [m for m in args.models.split(",") if m]:
        aligner = GumNetAligner(model, device=args.device, batch_size=args.batch_size)
        net = aligner.model
        label = Path(model).name
        for snr in snrs:
            d = data[snr]
            top1, best4 = [], []
            with torch.no_grad():
                for i in range(0, len(d["s_a"]), args.batch_size):
                    s_a = torch.as_tensor(zscore(d["s_a"][i : i + args.batch_size]), device=aligner.device)
                    s_b = torch.as_tensor(zscore(d["s_b"][i : i + args.batch_size]), device=aligner.device)
                    logits, hyps = net.hypotheses(net(s_a, s_b))
                    order = logits.argsort(dim=1, descending=True)[:, :4]
                    hyps = hyps[torch.arange(len(hyps))[:, None], order].double().cpu().numpy()
                    truth = d["rotations"][i : i + args.batch_size]
                    err = rotation_error(truth[:, None], hyps)
                    top1.append(err[:, 0])
                    best4.append(err.min(axis=1))
            row(label, "network (top-1)", snr, np.concatenate(top1), None)
            row(label, "best of top-4 (oracle)", snr, np.concatenate(best4), None)
            aligner.align(d["s_a"][:1], d["w_a"], d["s_b"][:1], d["w_b"])  # warm-up
            began = time.perf_counter()
            result = aligner.align(d["s_a"], d["w_a"], d["s_b"], d["w_b"])
            seconds = (time.perf_counter() - began) / len(d["s_a"])
            row(label, "aligner (top-4 + FFT + polish)", snr, rotation_error(d["rotations"], result.rotations), seconds)
    for method in [m for m in args.methods.split(",") if m]:
        aligner = AlignerSpec(method=method, device=args.device, batch_size=args.batch_size).build()
        for snr in snrs:
            d = data[snr]
            aligner.align(d["s_a"][:1], d["w_a"], d["s_b"][:1], d["w_b"])
            began = time.perf_counter()
            result = aligner.align(d["s_a"], d["w_a"], d["s_b"], d["w_b"])
            seconds = (time.perf_counter() - began) / len(d["s_a"])
            row(method, "aligner", snr, rotation_error(d["rotations"], result.rotations), seconds)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
