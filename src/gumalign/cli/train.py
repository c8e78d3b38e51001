"""`gumalign train`: train Gum-Net without labels, on particles + a reference, a pairs.star, or simulated pairs;
or, with `--supervised`, on simulated pairs with their ground-truth rotations (symmetry-aware).

The loss is 1 - Pearson(s_b, imputed T(s_a)); ground-truth orientations, when the data have them, only feed the
validation errors printed after each epoch. A checkpoint is written every epoch; `--resume` continues a killed run
with the same result as an uninterrupted one. DIR receives model.safetensors + model.json (usable wherever a model
name is: `gumalign align --model DIR`), loss.png and checkpoint/.

Example usage:

    gumalign train --particles sim/particles.star --ref sim/reference.mrc --out model/
    gumalign train --pairs sim/pairs.star --epochs 50 --out model/
    gumalign train --simulate builtin:proteasome --simulate 3j9i.pdb --snr 100,0.1 --n-pairs 2000 --out model/
    gumalign train --pairs sim/pairs.star --init gumnet-compact-sim32 --lr 1e-6 --decay 5e-9 --out finetuned/
    gumalign train ... --out model/ --resume        # after an interruption
    gumalign train --supervised --arch gumnet-so3 --simulate builtin:p97,builtin:rubisco --blobs 40 \
        --voxel-sizes 9,12 --snr 100,1,0.1 --n-pairs 4000 --data-cache pairs.npz --out so3/   # one-pass model
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional, Tuple

import typer

from gumalign.cli._common import cli_runtime, handle_errors, print_summary
from gumalign.architectures import arch_help_text
from gumalign.cli._options import JsonOut


def _split_list(values: list[str] | None) -> list[str]:
    """Repeated options and comma-separated values alike: ['a,b', 'c'] -> ['a', 'b', 'c']."""
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def _parse_snrs(values: list[str] | None) -> list[float]:
    from gumalign.errors import GumalignError

    out = []
    for text in _split_list(values):
        try:
            snr = float(text)
        except ValueError:
            raise GumalignError(f"--snr {text!r} is not a number") from None
        if not snr > 0:
            raise GumalignError(f"--snr must be positive, got {text}")
        out.append(snr)
    return out


@handle_errors
def command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (model, record, loss curve, checkpoint).")],
    particles: Annotated[Optional[Path], typer.Option(help="RELION STAR file of particles (with --ref).")] = None,
    ref: Annotated[Optional[Path], typer.Option("--ref", help="Reference MRC paired with every particle.")] = None,
    pairs: Annotated[Optional[Path], typer.Option(help="pairs.star from `gumalign simulate --pairs`.")] = None,
    simulate: Annotated[
        Optional[List[str]],
        typer.Option(help="Simulate pairs from these structures (PDB/mmCIF, MRC or builtin:NAME); repeat or comma-separate."),
    ] = None,
    snr: Annotated[Optional[List[str]], typer.Option(help="SNR(s) for --simulate; repeat or comma-separate.")] = None,
    n_pairs: Annotated[int, typer.Option(help="Total simulated pairs (spread over structures × SNRs).", min=1)] = 1000,
    voxel_size: Annotated[float, typer.Option(help="Voxel size in Å for --simulate.", min=0.1)] = 12.0,
    max_shift: Annotated[float, typer.Option(help="Random shift per axis of each simulated subtomogram, voxels.", min=0)] = 7.0,
    max_angle: Annotated[
        Optional[float],
        typer.Option(help="Largest relative rotation of simulated pairs, degrees (default: any); the shipped model "
                          "uses 50 for multi-start alignment.", min=1, max=180),
    ] = None,
    tilt_range: Annotated[
        Optional[Tuple[float, float]],
        typer.Option(help="Tilt range (degrees): the wedge of simulated s_b, or of particles without rlnCtfImage."),
    ] = None,
    arch: Annotated[
        Optional[str],
        typer.Option(help="Architecture (default gumnet-compact; gumnet-so3 with --supervised). " + arch_help_text()),
    ] = None,
    supervised: Annotated[
        bool,
        typer.Option("--supervised", help="Supervised pre-training on the ground truth of simulated pairs "
                                          "(symmetry-aware; cross-entropy on anchors + residual for one-pass heads)."),
    ] = False,
    blobs: Annotated[
        int, typer.Option(help="Add this many procedurally generated asymmetric shapes to --simulate.", min=0)
    ] = 0,
    voxel_sizes: Annotated[
        Optional[str],
        typer.Option(help="Comma-separated voxel sizes (Å) to simulate every structure at (overrides --voxel-size)."),
    ] = None,
    data_cache: Annotated[
        Optional[Path],
        typer.Option(help="Keep the simulated pairs in this .npz and reuse them when the simulation options match "
                          "(resumed runs and design comparisons skip the simulation)."),
    ] = None,
    max_cpu_minutes: Annotated[
        Optional[float],
        typer.Option(help="Stop after the epoch in which training has used this much CPU time (resume continues).",
                     min=0),
    ] = None,
    max_minutes: Annotated[
        Optional[float],
        typer.Option(help="Stop before an epoch that would end later than this many minutes after the command "
                          "started (wall clock, data simulation included; resume continues).", min=0),
    ] = None,
    init: Annotated[Optional[str], typer.Option(help="Start from a trained model (built-in name or path) to fine-tune.")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs (total, including those of a resumed run).", min=1)] = 20,
    batch_size: Annotated[int, typer.Option(help="Pairs per optimizer step.", min=1)] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate (the seed: 1e-5; fine-tuning 1e-6).", min=0)] = 1e-5,
    decay: Annotated[float, typer.Option(help="Keras time decay: lr/(1 + decay·step) (the seed: 2e-8).", min=0)] = 2e-8,
    val_fraction: Annotated[float, typer.Option(help="Share of pairs held out for validation.", min=0, max=0.9)] = 0.1,
    shift_search: Annotated[
        bool,
        typer.Option(
            "--shift-search/--no-shift-search",
            help="Add a loss term at the network's rotation with the FFT's best shift (ours; speeds up learning "
            "rotations; the shipped recipe uses it).",
        ),
    ] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    allow_unverified: Annotated[
        bool, typer.Option("--allow-unverified", help="Use an --init model file that has no record or does not match it.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch (default: all available cores).", min=1)] = None,
    json_out: JsonOut = None,
    seed: Annotated[int, typer.Option(help="Seed for the initialisation, data split, order and simulation.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or log output.")] = False,
) -> None:
    """Train a Gum-Net model without labels and write it to --out (model.safetensors + model.json + loss.png)."""
    import shlex
    import sys

    from gumalign.ops.train import TrainRequest, train

    request = TrainRequest(
        out=out, particles=particles, ref=ref, pairs=pairs, simulate=tuple(_split_list(simulate)),
        snrs=tuple(_parse_snrs(snr)), n_pairs=n_pairs, voxel_size=voxel_size, max_shift=max_shift,
        max_angle=max_angle, tilt_range=tuple(tilt_range) if tilt_range else None, arch=arch, supervised=supervised,
        blobs=blobs, voxel_sizes=_parse_voxel_sizes(voxel_sizes), data_cache=data_cache,
        max_cpu_minutes=max_cpu_minutes, max_minutes=max_minutes, init=init, epochs=epochs, batch_size=batch_size,
        lr=lr, decay=decay, val_fraction=val_fraction, shift_search=shift_search, resume=resume,
        allow_unverified=allow_unverified, seed=seed,
        # The record names the command that made the model (a resumed run's as if it had not been interrupted).
        command=shlex.join(["gumalign"] + [a for a in sys.argv[1:] if a != "--resume"]),
    )
    report = train(request, cli_runtime(device, threads, quiet))
    print_summary(report.summary(), json_out)


def _parse_voxel_sizes(text: str | None) -> tuple[float, ...] | None:
    from gumalign.errors import GumalignError

    if not text:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise GumalignError(f"--voxel-sizes {text!r} is not a comma-separated list of numbers") from None
