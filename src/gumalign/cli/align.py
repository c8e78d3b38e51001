"""`gumalign align`: align particles to a reference with Gum-Net, H-T align or F&A align, optionally refined.

Example usage:

    gumalign align --ref ref.mrc --particles parts.star --method gumnet --refine --out aligned.star
    gumalign align --ref ref.mrc --particles parts.star --method ht --tilt-range -60 60 --out aligned.star
    gumalign align ... --continue        # resume a killed run from what it wrote
    torchrun --nproc-per-node 4 $(which gumalign) align ...   # 4 ranks (GPUs), one STAR written by rank 0
    gumalign align ... --shard 3/8       # shard 3 of a SLURM array of 8; then: gumalign merge aligned.star.shard*of8
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gumalign.cli._common import cli_runtime, handle_errors, print_summary
from gumalign.cli._options import (
    Symmetry,
    AlignBatchSize, AngularStep, Device, JsonOut, MaxFrequency, MaxShift, Method, Quiet, Refine, Threads, TiltRange,
)
from gumalign.cli._star_out import OptimisationSet, StarVersion, Tomograms


@handle_errors
def command(
    ref: Annotated[Path, typer.Option("--ref", help="Reference volume (MRC), same box and voxel size as the particles.")],
    particles: Annotated[Path, typer.Option("--particles", help="RELION STAR file of 3D particles.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output STAR file (RELION 3.1).")],
    method: Method = "gumnet",
    refine: Refine = False,
    model: Annotated[Optional[str], typer.Option(help="Gum-Net model: a built-in name or a path.")] = None,
    batch_size: AlignBatchSize = None,
    device: Device = "auto",
    threads: Threads = None,
    tilt_range: TiltRange = None,
    max_shift: MaxShift = None,
    max_frequency: MaxFrequency = None,
    angular_step: AngularStep = None,
    sym: Symmetry = "C1",
    resume: Annotated[bool, typer.Option("--continue", help="Resume a killed run from its .partial file.")] = False,
    allow_unverified: Annotated[
        bool, typer.Option("--allow-unverified", help="Use a --model file that has no record or does not match it.")
    ] = False,
    shard: Annotated[
        Optional[str],
        typer.Option(help="Align only shard I of N (1-based, e.g. 3/8; without torchrun) and write "
                          "<out>.shardIofN; `gumalign merge` writes the STAR of all N.", show_default=False),
    ] = None,
    star_version: StarVersion = None,
    tomograms: Tomograms = None,
    optimisation_set: OptimisationSet = False,
    json_out: JsonOut = None,
    quiet: Quiet = False,
) -> None:
    """Align every particle to the reference and write their orientations and shifts in RELION's meaning
    (particle ≈ shift(rotate(reference, A), -origin)), keeping every input column and adding gumAlignScore."""
    from gumalign.align.spec import AlignerSpec
    from gumalign.distributed import current, parse_shard
    from gumalign.ops import AlignRequest, StarOutput, align

    request = AlignRequest(
        reference=ref, particles=particles, out=out,
        aligner=AlignerSpec(method=method, refine=refine, model=model, max_shift=max_shift,
                            max_frequency=max_frequency, angular_step_deg=angular_step, batch_size=batch_size,
                            symmetry=sym),
        tilt_range=tuple(tilt_range) if tilt_range else None, resume=resume, allow_unverified=allow_unverified,
        star=StarOutput(star_version, tomograms, optimisation_set),
        shard=parse_shard(shard) if shard is not None else None,
    )
    report = align(request, cli_runtime(device, threads, quiet))
    if current().is_main:  # under torchrun, one summary for the run
        print_summary(report.summary(), json_out)
