"""`gumalign fsc`: Fourier shell correlation and resolution, as RELION postprocess reports them.

Three ways to give the maps: two half maps; --gold-standard --particles (the two halves of an aligned STAR file are
averaged independently, as `gumalign average` does); or one map and --ref, a known structure (reports FSC 0.5 as the
final resolution, 0.143 for half maps). By default both maps are multiplied by a soft spherical mask and the masked FSC
is corrected by phase randomisation beyond where the unmasked FSC first drops below 0.8 (Chen et al. 2013); --mask
gives your own mask and --no-mask skips masking. Writes a RELION-postprocess-style STAR file, an EMDB FSC XML file and
a PNG plot (and, with --gold-standard, the two half maps it names: <out>_half1.mrc, <out>_half2.mrc), and prints one
summary line on stdout:

    resolution_0.143=24.10 resolution_0.5=30.20 final_resolution=24.10 final_threshold=0.143 interpolated_0.143=23.62 ...

Resolutions are RELION's (box·voxel / the last shell at or above the threshold, rlnFinalResolution); the
interpolated_* values interpolate linearly to where the curve crosses it (RELION's --interpolate). Shell 0 is
written at 999 Å, as RELION writes it, and so is a curve that is below the threshold at shell 1. Empty or constant maps
and masks that are zero everywhere are refused. The half maps of --gold-standard are made exactly as `gumalign
average` makes its _half1/_half2 maps (the same constant regulariser), so both ways give the same curve.

Example usage:

    gumalign fsc avg_half1.mrc avg_half2.mrc --out fsc.star
    gumalign fsc --gold-standard --particles aligned.star --tilt-range -60 60
    gumalign fsc avg.mrc --ref template.mrc --no-mask
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional, Tuple

import typer

from gumalign.cli._common import handle_errors, info


def read_pair(path1: Path, path2: Path, pixel_size: float | None):
    """Two maps of the same cubic size and voxel size; returns (data1, data2, voxel size Å)."""
    from gumalign.errors import GumalignError
    from gumalign.io.mrc import read_volume

    first, second = read_volume(path1), read_volume(path2)
    if first.data.shape != second.data.shape:
        shape1, shape2 = (f"{'×'.join(map(str, v.data.shape[::-1]))}" for v in (first, second))
        raise GumalignError(f"{path1} ({shape1} voxels) and {path2} ({shape2} voxels) differ in size")
    if len(set(first.data.shape)) != 1:
        raise GumalignError(f"{path1}: FSC needs cubic maps, got {'×'.join(map(str, first.data.shape[::-1]))} voxels")
    v1, v2 = first.voxel_size, second.voxel_size
    if v1 > 0 and v2 > 0 and abs(v1 - v2) > 1e-3 * max(v1, v2):
        raise GumalignError(f"{path1} ({v1:g} Å/voxel) and {path2} ({v2:g} Å/voxel) differ in voxel size")
    voxel_size = pixel_size if pixel_size else (v1 if v1 > 0 else v2)
    if not voxel_size or voxel_size <= 0:
        raise GumalignError(f"{path1}: no voxel size in the header; pass --pixel-size")
    return first.data, second.data, float(voxel_size)


def gold_standard_halves(particles: Path, tilt_range, pixel_size, batch_size: int, device: str, quiet: bool):
    """Average the two half sets of a STAR (or .tbl) file independently: (half1, half2, voxel size).

    The half maps are `gumalign average`'s unfiltered half maps (the same estimator and constant regulariser), so
    this and ``gumalign fsc avg_half1.mrc avg_half2.mrc`` compare the same maps.
    """
    import functools

    from gumalign.average.compensated import CONSTANT_REGULARISATION, average_particles
    from gumalign.average.stack import StarStack
    from gumalign.cli._common import progress_bar
    from gumalign.cli._star_out import report_notes
    from gumalign.devices import resolve_device
    from gumalign.errors import GumalignError
    from gumalign.io.star import read_star

    table = read_star(particles)
    report_notes(table, quiet)
    voxel_size = table.common_pixel_size(pixel_size)
    matrices = table.matrices()
    halves = table.half_sets(require_both=True)
    if halves is None and len(table) < 2:
        raise GumalignError(f"{particles}: {len(table)} particle(s); gold-standard half maps need at least 2")
    stack = StarStack(table, tuple(tilt_range) if tilt_range is not None else None)
    if halves is None:
        info("rlnRandomSubset absent: particles assigned to half sets alternately (1, 2, 1, 2, ...)", quiet)
    with functools.partial(progress_bar, quiet=quiet)("averaging half sets", len(table)) as advance:
        # A constant, small λ: each half map depends on its own particles only (RELION's unfiltered half maps).
        result = average_particles(
            stack, matrices, table.shifts_px(pixel_size), halves=halves, batch_size=batch_size,
            device=resolve_device(device), regularisation=CONSTANT_REGULARISATION, progress=advance,
        )
    info(f"{particles}: half sets of {result.counts[0]} and {result.counts[1]} particles averaged", quiet)
    return result.unfiltered_half1, result.unfiltered_half2, voxel_size


@handle_errors
def command(
    maps: Annotated[
        Optional[List[Path]], typer.Argument(help="Two half maps, or one map with --ref.", show_default=False)
    ] = None,
    ref: Annotated[Optional[Path], typer.Option(help="Known structure to compare one map with (FSC 0.5).")] = None,
    gold_standard: Annotated[
        bool, typer.Option("--gold-standard", help="Average the two half sets of --particles and compare them.")
    ] = False,
    particles: Annotated[Optional[Path], typer.Option("--particles", "-p", help="Aligned particles (STAR).")] = None,
    mask: Annotated[Optional[Path], typer.Option(help="Mask (MRC, values 0..1) instead of the soft sphere.")] = None,
    no_mask: Annotated[bool, typer.Option("--no-mask", help="No mask, no phase randomisation.")] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output STAR file; .xml and .png go beside it.")] = Path(
        "fsc.star"
    ),
    pixel_size: Annotated[
        Optional[float], typer.Option(help="Voxel size in Å (overrides the headers).", min=0.0)
    ] = None,
    tilt_range: Annotated[
        Optional[Tuple[float, float]],
        typer.Option(help="Tilt range for --gold-standard when the STAR has no rlnCtfImage."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Particles per batch (--gold-standard).", min=1)] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (--gold-standard).")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the phase randomisation.")] = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No log output (the summary line is still printed).")
    ] = False,
) -> None:
    """Fourier shell correlation of half maps (0.143) or of a map against a reference (0.5), with resolution in Å."""
    import numpy as np

    from gumalign.errors import GumalignError
    from gumalign.io.mrc import read_volume
    from gumalign.metrics.fsc import check_mask, fsc_with_mask, soft_spherical_mask
    from gumalign.metrics.fsc_files import write_fsc_xml, write_postprocess_star
    from gumalign.io.star import read_star
    from gumalign.plots import fsc_plot

    from gumalign.cli._common import check_output_file, table_input_files
    from gumalign.io.atomic import atomic_outputs, refuse_overwriting_inputs

    maps = list(maps or [])
    if mask is not None and no_mask:
        raise GumalignError("--mask and --no-mask cannot be combined")
    # Every file this command writes, refused before any work when one of them would replace an input.
    xml, png = out.with_suffix(".xml"), out.with_suffix(".png")
    half_paths = (out.with_name(out.stem + "_half1.mrc"), out.with_name(out.stem + "_half2.mrc"))
    outputs = [out, xml, png, *(half_paths if gold_standard else ())]
    check_output_file(out)
    inputs = [*maps, ref, mask, particles]
    if gold_standard and particles is not None and Path(particles).is_file():
        inputs += table_input_files(read_star(particles))
    refuse_overwriting_inputs(outputs, inputs)
    if gold_standard:
        if particles is None:
            raise GumalignError("--gold-standard needs --particles aligned.star")
        if maps or ref is not None:
            raise GumalignError("--gold-standard takes no maps and no --ref")
        map1, map2, voxel_size = gold_standard_halves(particles, tilt_range, pixel_size, batch_size, device, quiet)
        # data_general names the half maps (rlnUnfilteredMapHalf1/2): they are written beside --out.
        names = tuple(str(p) for p in half_paths)
        versus_reference = False
    elif ref is not None:
        if len(maps) != 1:
            raise GumalignError(f"--ref compares one map with a reference; got {len(maps)} maps")
        map1, map2, voxel_size = read_pair(maps[0], ref, pixel_size)
        names = (str(maps[0]), str(ref))
        versus_reference = True
    else:
        if len(maps) != 2:
            raise GumalignError(
                f"give two half maps, one map with --ref, or --gold-standard --particles; got {len(maps)} maps"
            )
        map1, map2, voxel_size = read_pair(maps[0], maps[1], pixel_size)
        names = (str(maps[0]), str(maps[1]))
        versus_reference = False

    box = map1.shape[0]
    if no_mask:
        mask_data, mask_name = None, "none"
    elif mask is not None:
        mask_data = read_volume(mask).data
        if mask_data.shape != map1.shape:
            raise GumalignError(
                f"{mask}: mask of {mask_data.shape[::-1]} voxels does not match maps of {map1.shape[::-1]}"
            )
        check_mask(mask_data, str(mask))
        mask_data, mask_name = np.clip(mask_data, 0.0, 1.0), str(mask)
    else:
        mask_data, mask_name = soft_spherical_mask(box), "auto"

    result = fsc_with_mask(map1, map2, voxel_size, mask_data, seed=seed, names=names, mask_name=mask_name)
    at_0143, at_05 = result.resolution(0.143), result.resolution(0.5)
    unmasked_0143 = result.resolution(0.143, curve="unmasked")
    threshold = 0.5 if versus_reference else 0.143
    final = at_05 if versus_reference else at_0143

    general = {
        # RELION's value: the last shell at or above the threshold (postprocessing.cpp); the interpolated one beside.
        "rlnFinalResolution": final.relion_angstrom,
        "gumFinalResolutionInterpolated": final.angstrom,
        "rlnUnfilteredMapHalf1": names[0],
        "rlnUnfilteredMapHalf2": names[1],
        "rlnMaskName": mask_name,
        "rlnRandomiseFrom": float(result.resolution_angstrom[result.randomised_from])
        if result.randomised_from is not None and result.randomised_from < len(result.shells)
        else 0.0,
    }
    with atomic_outputs(outputs) as tmp:  # all of them or none
        if gold_standard:
            from gumalign.io.mrc import write_volume

            for path, data in zip(half_paths, (map1, map2)):
                write_volume(tmp[path], data, voxel_size)
        write_postprocess_star(result, tmp[out], general)
        write_fsc_xml(result, tmp[xml], title=f"{names[0]} vs {names[1]}")
        curves = {"corrected" if mask_data is not None else "FSC": result.corrected}
        if mask_data is not None:
            curves["unmasked"] = result.unmasked
            curves["masked"] = result.masked
            curves["phase-randomised masked"] = result.phase_randomised
        fsc_plot(
            tmp[png], result.resolution_inv_angstrom, curves, thresholds=(0.143, 0.5),
            resolutions={0.143: at_0143.angstrom, 0.5: at_05.angstrom},
            title=f"{Path(names[0]).name} vs {Path(names[1]).name}", headline=next(iter(curves)),
            n_particles=len(read_star(particles)) if gold_standard else None, pixel_size=voxel_size,
            mask="none" if mask_data is None else ("soft sphere (auto)" if mask is None else Path(mask_name).name),
        )
    info(f"wrote {out}, {xml}, {png}", quiet)
    if final.reached_nyquist:
        info(f"FSC stays above {threshold} up to Nyquist: the resolution is at least {final.angstrom:.2f} Å", quiet)
    if final.below_first_shell:
        info(
            f"note: the FSC is below {threshold} already at shell 1 ({box * voxel_size:g} Å, the box): the maps agree "
            f"at no resolution; reported as 999 Å, as RELION writes for shell 0",
            quiet,
        )
    typer.echo(
        f"resolution_0.143={at_0143.relion_angstrom:.2f} resolution_0.5={at_05.relion_angstrom:.2f} "
        f"final_resolution={final.relion_angstrom:.2f} final_threshold={threshold:g} "
        f"interpolated_0.143={at_0143.angstrom:.2f} interpolated_0.5={at_05.angstrom:.2f} "
        f"final_resolution_interpolated={final.angstrom:.2f} "
        f"unmasked_resolution_0.143={unmasked_0143.relion_angstrom:.2f} voxel_size={voxel_size:g} box={box} "
        f"mask={'none' if mask_data is None else ('auto' if mask is None else 'file')} "
        f"randomised_from_shell={result.randomised_from if result.randomised_from is not None else -1}"
    )
