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
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional, Tuple

import typer

from gumalign.cli._common import (
    aligner_options,
    check_output_file,
    handle_errors,
    info,
    progress_bar,
    refuse_overwriting_inputs,
    require_particles,
    sibling,
    table_input_files,
)
from gumalign.cli._star_out import OptimisationSet, StarVersion, Tomograms, prepare_output, report_notes
from gumalign.devices import resolve_device


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
    tilt_range: Annotated[
        Optional[Tuple[float, float]],
        typer.Option(help="Tilt range (min max, degrees) for the missing wedge when the STAR has no rlnCtfImage."),
    ] = None,
    pixel_size: Annotated[
        Optional[float], typer.Option(help="Pixel size in Å when the STAR file has none.", min=0.0)
    ] = None,
    regularisation: Annotated[
        str,
        typer.Option(help="Wiener term: 'auto' (per shell, from the half maps' FSC) or a constant per particle."),
    ] = "auto",
    plain: Annotated[bool, typer.Option("--plain", help="Plain mean without wedge compensation.")] = False,
    iterations: Annotated[
        int, typer.Option(help="Reference-free realign-and-average rounds (0: average only).", min=0)
    ] = 0,
    method: Annotated[str, typer.Option(help="Aligner for --iterations: gumnet, ht or fa.")] = "gumnet",
    refine: Annotated[
        bool, typer.Option("--refine", help="Follow the method with a local search that can only raise scores.")
    ] = False,
    ref: Annotated[
        Optional[Path], typer.Option(help="Starting reference for --iterations (default: the average).")
    ] = None,
    max_shift: Annotated[
        Optional[float], typer.Option(help="Largest shift (voxels) the aligner may find.", min=0.0)
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Particles per batch.", min=1)] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed for aligners that draw random numbers.")] = 0,
    star_version: StarVersion = None,
    tomograms: Tomograms = None,
    optimisation_set: OptimisationSet = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or log output.")] = False,
) -> None:
    """Average aligned subtomograms with missing-wedge compensation; write the map, half maps and a slice montage."""
    import functools

    import numpy as np

    from gumalign.average.compensated import average_particles
    from gumalign.average.iterative import iterative_average
    from gumalign.average.stack import StarStack
    from gumalign.errors import GumalignError
    from gumalign.io.atomic import atomic_outputs
    from gumalign.io.mrc import read_volume, write_volume
    from gumalign.io.star import read_star, write_star

    reg = parse_regularisation(regularisation)
    if out.suffix.lower() not in (".mrc", ".map"):
        raise GumalignError(f"--out {out}: expected an .mrc file (half maps, PNG and STAR files are written beside it)")
    if ref is not None and iterations == 0:
        raise GumalignError("--ref is a starting reference for --iterations; add --iterations N")
    if plain and iterations > 0:
        raise GumalignError("--plain and --iterations cannot be combined")
    torch_device = resolve_device(device)
    check_output_file(out)
    refuse_overwriting_inputs([out], [particles, ref])
    table = prepare_output(read_star(particles), star_version, tomograms, optimisation_set)
    require_particles(table, "average")
    refuse_overwriting_inputs(_outputs(out, iterations), [particles, ref, *table_input_files(table)])
    report_notes(table, quiet)
    voxel_size = table.common_pixel_size(pixel_size)
    if table.has_angles():
        matrices = table.matrices()
    elif iterations > 0:
        info(f"{particles}: no orientations; starting every particle at the identity", quiet)
        matrices = np.tile(np.eye(3), (len(table), 1, 1))
    else:
        table.angles()  # raises the one-line error naming the missing column
    origins = table.shifts_px(pixel_size)
    stack = StarStack(table, tuple(tilt_range) if tilt_range is not None else None)
    halves = table.half_sets(require_both=True)
    info(
        f"{particles}: {len(table)} particles, box {stack.box}, {voxel_size:g} Å/px, "
        f"weights from {stack.weight_source}",
        quiet,
    )
    if halves is None:
        info("rlnRandomSubset absent: particles assigned to half sets alternately (1, 2, 1, 2, ...)", quiet)

    progress = functools.partial(progress_bar, quiet=quiet)
    if iterations == 0:
        with progress("averaging", len(table)) as advance:
            result = average_particles(
                stack, matrices, origins, halves=halves, batch_size=batch_size, device=torch_device,
                regularisation=reg, compensate=not plain, progress=advance,
            )
        _write_maps(result, out, voxel_size, quiet)
        return

    from gumalign.align.registry import get_aligner

    aligner = get_aligner(method, refine=refine, **aligner_options(torch_device, max_shift, seed))
    initial = None
    if ref is not None:
        reference = read_volume(ref)
        if reference.data.shape != (stack.box,) * 3:
            shape = "×".join(map(str, reference.data.shape[::-1]))
            raise GumalignError(f"{ref}: reference of {shape} voxels does not match the particles' box {stack.box}")
        if reference.voxel_size > 0 and abs(reference.voxel_size - voxel_size) > 1e-3 * voxel_size:
            raise GumalignError(
                f"{ref}: voxel size {reference.voxel_size:g} Å differs from the particles' {voxel_size:g} Å"
            )
        initial = reference.data

    def write_iteration(step) -> None:
        path = sibling(out, f"_it{step.iteration:02d}")
        shifts_angst = step.origins_px * voxel_size
        updated = table.with_alignment(
            step.matrices, shifts_angst, rlnRandomSubset=step.average.halves, gumAlignScore=step.scores
        )
        star = sibling(out, f"_it{step.iteration:02d}", ".star")
        with atomic_outputs([path, star]) as tmp:  # an iteration's map and STAR file together or not at all
            write_volume(tmp[path], step.average.full, voxel_size)
            write_star(updated, tmp[star], box_size=stack.box, default_pixel_size=voxel_size)
        info(f"iteration {step.iteration}: mean score {np.mean(step.scores):.4f}; wrote {path}", quiet)

    _, steps = iterative_average(
        stack, matrices, origins, aligner, iterations, halves=halves, initial_reference=initial,
        batch_size=batch_size, device=torch_device, regularisation=reg, progress=progress, on_iteration=write_iteration,
    )
    final = steps[-1]
    final_table = table.with_alignment(
        final.matrices, final.origins_px * voxel_size, rlnRandomSubset=final.average.halves, gumAlignScore=final.scores
    )
    _write_maps(final.average, out, voxel_size, quiet, star=(final_table, stack.box))


def _outputs(out: Path, iterations: int) -> list[Path]:
    """Every file `average` writes: the maps and PNG, and with --iterations each iteration's map and STAR file and
    the final STAR file."""
    files = [sibling(out, "_half1"), sibling(out, "_half2"), out, sibling(out, "", ".png")]
    if iterations:
        files.append(sibling(out, "", ".star"))
        for i in range(1, iterations + 1):
            files += [sibling(out, f"_it{i:02d}"), sibling(out, f"_it{i:02d}", ".star")]
    return files


def _write_maps(result, out: Path, voxel_size: float, quiet: bool, star=None) -> None:
    """The full map, both half maps, the PNG (and with ``star`` = (table, box) the STAR file): all or none."""
    from gumalign.io.atomic import atomic_outputs
    from gumalign.io.mrc import write_volume
    from gumalign.io.star import write_star
    from gumalign.plots import slice_montage

    half1, half2, png = sibling(out, "_half1"), sibling(out, "_half2"), sibling(out, "", ".png")
    star_path = sibling(out, "", ".star")
    with atomic_outputs([half1, half2, out, png] + ([star_path] if star is not None else [])) as tmp:
        # The half maps are RELION's unfiltered ones (constant λ), so `gumalign fsc half1 half2` compares what
        # `gumalign fsc --gold-standard` compares; the full map carries the Wiener λ.
        write_volume(tmp[half1], result.unfiltered_half1, voxel_size)
        write_volume(tmp[half2], result.unfiltered_half2, voxel_size)
        write_volume(tmp[out], result.full, voxel_size)
        slice_montage(
            tmp[png], {"full": result.full, "half 1": result.unfiltered_half1, "half 2": result.unfiltered_half2},
            title=out.name, voxel_size=voxel_size,
        )
        if star is not None:
            write_star(star[0], tmp[star_path], box_size=star[1], default_pixel_size=voxel_size)
    n1, n2 = result.counts
    info(f"wrote {out} ({n1 + n2} particles), {half1} ({n1}), {half2} ({n2}), {png}", quiet)
