"""`gumalign align`: align particles to a reference with Gum-Net, H-T align or F&A align, optionally refined.

Example usage:

    gumalign align --ref ref.mrc --particles parts.star --method gumnet --refine --out aligned.star
    gumalign align --ref ref.mrc --particles parts.star --method ht --tilt-range -60 60 --out aligned.star
    gumalign align ... --continue        # resume a killed run from what it wrote
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional, Tuple

import typer

from gumalign.cli._common import handle_errors, info, progress_bar
from gumalign.cli._star_out import OptimisationSet, StarVersion, Tomograms, prepare_output, report_notes


@handle_errors
def command(
    ref: Annotated[Path, typer.Option("--ref", help="Reference volume (MRC), same box and voxel size as the particles.")],
    particles: Annotated[Path, typer.Option("--particles", help="RELION STAR file of 3D particles.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output STAR file (RELION 3.1).")],
    method: Annotated[str, typer.Option(help="Alignment method: gumnet, ht or fa.")] = "gumnet",
    refine: Annotated[bool, typer.Option("--refine", help="Local rotation/translation search after the method.")] = False,
    model: Annotated[Optional[str], typer.Option(help="Gum-Net model: a built-in name or a path.")] = None,
    batch_size: Annotated[int, typer.Option(help="Particles per batch.", min=1)] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    tilt_range: Annotated[
        Optional[Tuple[float, float]],
        typer.Option(help="Tilt range (degrees) for the wedge when the STAR has no rlnCtfImage."),
    ] = None,
    max_shift: Annotated[Optional[float], typer.Option(help="Largest shift searched, in voxels.", min=0)] = None,
    max_frequency: Annotated[
        Optional[float], typer.Option(help="Low-pass radius (cycles per box) used by --refine.", min=1)
    ] = None,
    resume: Annotated[bool, typer.Option("--continue", help="Resume a killed run from its .partial file.")] = False,
    allow_unverified: Annotated[
        bool, typer.Option("--allow-unverified", help="Use a --model file that has no record or does not match it.")
    ] = False,
    star_version: StarVersion = None,
    tomograms: Tomograms = None,
    optimisation_set: OptimisationSet = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or log output.")] = False,
) -> None:
    """Align every particle to the reference and write their orientations and shifts in RELION's meaning
    (particle ≈ shift(rotate(reference, A), -origin)), keeping every input column and adding gumAlignScore."""
    import time

    from gumalign.align.pipeline import AlignOptions, align_table, partial_path
    from gumalign.align.registry import METHODS
    from gumalign.cli._common import check_output_file, refuse_overwriting_inputs
    from gumalign.errors import GumalignError
    from gumalign.io.mrc import read_volume
    from gumalign.io.star import read_star
    from gumalign.weights import unverified_models_allowed

    if method not in METHODS:
        raise GumalignError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    check_output_file(out)
    refuse_overwriting_inputs([out, partial_path(out)], [ref, particles])
    reference = read_volume(ref)
    table = prepare_output(read_star(particles), star_version, tomograms, optimisation_set)
    report_notes(table, quiet)
    options = AlignOptions(
        method=method, refine=refine, model=model, batch_size=batch_size, device=device,
        tilt_range=tuple(tilt_range) if tilt_range else None, max_shift=max_shift, max_frequency=max_frequency,
    )
    start = time.perf_counter()
    with unverified_models_allowed(allow_unverified), progress_bar(
        f"align ({method}{'+refine' if refine else ''})", len(table), quiet
    ) as advance:
        aligned = align_table(
            table, reference, out, options, reference_name=str(ref), resume=resume, progress=advance
        )
    elapsed = time.perf_counter() - start
    scores = aligned.numeric("gumAlignScore")
    info(
        f"wrote {out}: {len(aligned)} particles, mean score {scores.mean():.4f}, "
        f"{elapsed / max(len(aligned), 1):.3f} s per particle",
        quiet,
    )
