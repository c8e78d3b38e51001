"""`gumalign average`: wedge-compensated average of aligned subtomograms, with gold-standard half maps.

Each particle is brought into the reference frame by undoing its STAR orientation and origin (RELION's meaning), and
the average is formed in Fourier space, dividing by the summed rotated missing-wedge weights, so the wedge is filled
by the other particles instead of smeared. Half maps come from rlnRandomSubset (assigned alternately when absent; an
empty half is an error) and are written unfiltered (a small constant regulariser, as RELION's _unfil half maps), so
`gumalign fsc avg_half1.mrc avg_half2.mrc` gives what `gumalign fsc --gold-standard` gives; the full map uses the
Wiener term of --regularisation.
With --iterations N, averaging is reference-free: every particle is realigned to its half's current map with
--method, N times; each iteration's map and STAR file are written.

Example usage:

    gumalign average --particles aligned.star --out avg.mrc
    gumalign average --particles sim/particles.star --tilt-range -60 60 --iterations 3 --method ht --out avg.mrc
    torchrun --nproc-per-node 4 $(which gumalign) average --particles aligned.star --out avg.mrc   # 4 ranks
    gumalign average --particles aligned.star --out avg.mrc --shard 2/8   # writes avg_shard2of8.npz
    gumalign merge avg_shard*of8.npz                                       # the maps of all 8 shards
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gumalign.cli._common import cli_runtime, handle_errors, print_summary
from gumalign.cli._options import (
    Symmetry,
    AlignBatchSize, AngularStep, Device, JsonOut, MaxFrequency, MaxShift, Method, PixelSize, Quiet, Refine, Threads,
    TiltRange,
)
from gumalign.cli._star_out import OptimisationSet, StarVersion, Tomograms


def parse_regularisation(text: str) -> float | str:
    """--regularisation 'auto' or a non-negative number."""
    from gumalign.errors import GumalignError

    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise GumalignError(f"--regularisation must be 'auto' or a number >= 0, got {text!r}")
    return value


@handle_errors
def command(
    particles: Annotated[Path, typer.Option("--particles", "-p", help="Aligned particles (RELION STAR file).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output map; half maps and a PNG go beside it.")],
    tilt_range: TiltRange = None,
    pixel_size: PixelSize = None,
    regularisation: Annotated[
        str,
        typer.Option(help="Wiener term: 'auto' (per shell, from the half maps' FSC) or a constant per particle."),
    ] = "auto",
    plain: Annotated[bool, typer.Option("--plain", help="Plain mean without wedge compensation.")] = False,
    iterations: Annotated[
        int, typer.Option(help="Reference-free realign-and-average rounds (0: average only).", min=0)
    ] = 0,
    method: Method = "gumnet",
    refine: Refine = False,
    ref: Annotated[
        Optional[Path], typer.Option(help="Starting reference for --iterations (default: the average).")
    ] = None,
    max_shift: MaxShift = None,
    max_frequency: MaxFrequency = None,
    angular_step: AngularStep = None,
    sym: Symmetry = "C1",
    batch_size: Annotated[
        Optional[int],
        typer.Option(help="Particles per batch, of the averaging (default 64) and of the aligner (default: the "
                          "method's own).", min=1),
    ] = None,
    device: Device = "auto",
    threads: Threads = None,
    shard: Annotated[
        Optional[str],
        typer.Option(help="Sum only shard I of N (1-based, e.g. 2/8; without torchrun) and write its sums to "
                          "--partial-out instead of the maps; `gumalign merge` writes the maps of all N.",
                     show_default=False),
    ] = None,
    partial_out: Annotated[
        Optional[Path],
        typer.Option("--partial-out", help="With --shard: the shard's sums (.npz; default <out>_shardIofN.npz).",
                     show_default=False),
    ] = None,
    star_version: StarVersion = None,
    tomograms: Tomograms = None,
    optimisation_set: OptimisationSet = False,
    json_out: JsonOut = None,
    quiet: Quiet = False,
) -> None:
    """Average aligned subtomograms with missing-wedge compensation; write the map, half maps and a slice montage."""
    from gumalign.align.spec import AlignerSpec
    from gumalign.distributed import current, parse_shard
    from gumalign.ops import AverageRequest, StarOutput, average

    request = AverageRequest(
        particles=particles, out=out, tilt_range=tuple(tilt_range) if tilt_range is not None else None,
        pixel_size=pixel_size, regularisation=parse_regularisation(regularisation), plain=plain,
        iterations=iterations,
        aligner=AlignerSpec(method=method, refine=refine, max_shift=max_shift, max_frequency=max_frequency,
                            angular_step_deg=angular_step, batch_size=batch_size, symmetry=sym),
        initial_reference=ref, batch_size=batch_size, star=StarOutput(star_version, tomograms, optimisation_set),
        shard=parse_shard(shard) if shard is not None else None, partial_out=partial_out,
    )
    report = average(request, cli_runtime(device, threads, quiet))
    if current().is_main:  # under torchrun, one summary for the run
        print_summary(report.summary(), json_out)
