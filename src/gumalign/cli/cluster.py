"""`gumalign cluster`: separate structures by alignment scores.

Every pair of particles is aligned with --method (default gumnet) and scored by the wedge-constrained correlation after
alignment; complete-linkage hierarchical clustering on 1 - score cuts the set into K classes. For large N (N(N-1)/2
alignments), --ref-based aligns every particle to K class references instead and refines them k-means style.
Writes the STAR file with rlnClassNumber, the score matrix (.npy and .csv, no header; N×N, or N×K with --ref-based),
a heatmap PNG ordered by class, and with --ref-based the class averages and each particle's alignment to its class.

Example usage:

    gumalign cluster --particles parts.star --k 2 --out classes.star
    gumalign cluster --particles parts.star --k 4 --ref-based --method ht --tilt-range -60 60 --out classes.star
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gumalign.cli._common import cli_runtime, handle_errors, print_summary
from gumalign.cli._options import (
    AlignBatchSize, AngularStep, Device, JsonOut, MaxFrequency, MaxShift, Method, PixelSize, Quiet, Refine, Symmetry,
    Threads, TiltRange,
)
from gumalign.cli._star_out import OptimisationSet, StarVersion, Tomograms


@handle_errors
def command(
    particles: Annotated[Path, typer.Option("--particles", "-p", help="Particles (RELION STAR file).")],
    k: Annotated[int, typer.Option("--k", help="Number of classes.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output STAR file; scores and plots go beside it.")] = Path(
        "classes.star"
    ),
    method: Method = "gumnet",
    refine: Refine = False,
    ref_based: Annotated[
        bool, typer.Option("--ref-based", help="Align to K class references (N·K alignments) instead of all pairs.")
    ] = False,
    iterations: Annotated[int, typer.Option(help="Rounds of --ref-based refinement.", min=1)] = 5,
    tilt_range: TiltRange = None,
    pixel_size: PixelSize = None,
    max_shift: MaxShift = None,
    max_frequency: MaxFrequency = None,
    angular_step: AngularStep = None,
    batch_size: AlignBatchSize = None,
    sym: Symmetry = "C1",
    device: Device = "auto",
    threads: Threads = None,
    seed: Annotated[int, typer.Option(help="Seed of the first --ref-based class reference.")] = 0,
    star_version: StarVersion = None,
    tomograms: Tomograms = None,
    optimisation_set: OptimisationSet = False,
    json_out: JsonOut = None,
    quiet: Quiet = False,
) -> None:
    """Cluster subtomograms into K classes by pairwise (or class-reference) alignment scores."""
    from gumalign.align.spec import AlignerSpec
    from gumalign.ops import ClusterRequest, StarOutput, cluster

    request = ClusterRequest(
        particles=particles, k=k, out=out,
        aligner=AlignerSpec(method=method, refine=refine, max_shift=max_shift, max_frequency=max_frequency,
                            angular_step_deg=angular_step, batch_size=batch_size, symmetry=sym),
        ref_based=ref_based, iterations=iterations, tilt_range=tuple(tilt_range) if tilt_range is not None else None,
        pixel_size=pixel_size, seed=seed, star=StarOutput(star_version, tomograms, optimisation_set),
    )
    report = cluster(request, cli_runtime(device, threads, quiet))
    print_summary(report.summary(), json_out)
