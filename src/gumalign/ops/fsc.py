"""The `fsc` operation: Fourier shell correlation and resolution as RELION postprocess reports them (see
gumalign.cli.fsc for the three ways to give the maps and what is written).

    from gumalign.ops import FscRequest, fsc

    report = fsc(FscRequest(maps=(Path("avg_half1.mrc"), Path("avg_half2.mrc")), out=Path("fsc.star")))
    print(report.summary()["final_resolution"])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gumalign.errors import GumalignError
from gumalign.units import same_voxel_size
from gumalign.ops.runtime import Runtime


@dataclass(frozen=True)
class FscRequest:
    """What `gumalign fsc` is asked.

    Attributes:
        maps: two half maps, or one map with ``ref``; empty with ``gold_standard``.
        ref: a known structure to compare one map with (FSC 0.5 gives the final resolution).
        gold_standard: average the two half sets of ``particles`` and compare them.
        particles: aligned particles (STAR) for ``gold_standard``.
        mask: a mask (MRC, 0..1) instead of the soft sphere; ``no_mask``: none, no phase randomisation.
        out: the postprocess-style STAR file; .xml and .png (and _half1/_half2.mrc with gold_standard) beside it.
        pixel_size: Å per voxel, overriding the headers.
        tilt_range: the wedge of particles without rlnCtfImage (gold_standard).
        batch_size: particles per averaging batch (gold_standard; None: gumalign.ops.average.AVERAGE_BATCH_SIZE).
        seed: of the phase randomisation.
        symmetry: point group the gold-standard half maps are symmetrised over (each half on its own); C1 = none.
    """

    maps: tuple[Path, ...] = ()
    ref: Path | None = None
    gold_standard: bool = False
    particles: Path | None = None
    mask: Path | None = None
    no_mask: bool = False
    out: Path = Path("fsc.star")
    pixel_size: float | None = None
    tilt_range: tuple[float, float] | None = None
    batch_size: int | None = None
    seed: int = 0
    symmetry: str = "C1"


@dataclass
class FscReport:
    """The FSC result and the resolutions read from it."""

    result: object  # gumalign.metrics.fsc.FscResult
    at_0143: object
    at_05: object
    unmasked_0143: object
    final: object
    threshold: float
    voxel_size: float
    box: int
    mask_kind: str  # 'none', 'auto' or 'file'
    files: list[Path]

    def summary(self) -> dict:
        r = self.result
        return {
            "resolution_0.143": f"{self.at_0143.relion_angstrom:.2f}",
            "resolution_0.5": f"{self.at_05.relion_angstrom:.2f}",
            "final_resolution": f"{self.final.relion_angstrom:.2f}",
            "final_threshold": f"{self.threshold:g}",
            "interpolated_0.143": f"{self.at_0143.angstrom:.2f}",
            "interpolated_0.5": f"{self.at_05.angstrom:.2f}",
            "final_resolution_interpolated": f"{self.final.angstrom:.2f}",
            "unmasked_resolution_0.143": f"{self.unmasked_0143.relion_angstrom:.2f}",
            "voxel_size": f"{self.voxel_size:g}",
            "box": self.box,
            "mask": self.mask_kind,
            "randomised_from_shell": r.randomised_from if r.randomised_from is not None else -1,
        }


def read_pair(path1: Path, path2: Path, pixel_size: float | None):
    """Two maps of the same cubic size and voxel size; returns (data1, data2, voxel size Å)."""
    from gumalign.io.mrc import read_volume

    first, second = read_volume(path1), read_volume(path2)
    if first.data.shape != second.data.shape:
        shape1, shape2 = (f"{'×'.join(map(str, v.data.shape[::-1]))}" for v in (first, second))
        raise GumalignError(f"{path1} ({shape1} voxels) and {path2} ({shape2} voxels) differ in size")
    if len(set(first.data.shape)) != 1:
        raise GumalignError(f"{path1}: FSC needs cubic maps, got {'×'.join(map(str, first.data.shape[::-1]))} voxels")
    v1, v2 = first.voxel_size, second.voxel_size
    if v1 > 0 and v2 > 0 and not same_voxel_size(v1, v2):
        raise GumalignError(f"{path1} ({v1:g} Å/voxel) and {path2} ({v2:g} Å/voxel) differ in voxel size")
    voxel_size = pixel_size if pixel_size else (v1 if v1 > 0 else v2)
    if not voxel_size or voxel_size <= 0:
        raise GumalignError(f"{path1}: no voxel size in the header; pass --pixel-size")
    return first.data, second.data, float(voxel_size)


def gold_standard_halves(table, tilt_range, pixel_size, batch_size: int | None, device, runtime: Runtime,
                         symmetry: str = "C1"):
    """Average the two half sets of ``table`` independently: (half1, half2, voxel size).

    The half maps are `gumalign average`'s unfiltered half maps (the same loader, estimator and constant regulariser),
    so this and ``gumalign fsc avg_half1.mrc avg_half2.mrc`` compare the same maps.
    """
    from gumalign.average.compensated import CONSTANT_REGULARISATION, average_particles
    from gumalign.ops.average import AVERAGE_BATCH_SIZE, load_particles

    loaded = load_particles(table, tilt_range, pixel_size, runtime.log)
    if loaded.halves is None and len(table) < 2:
        raise GumalignError(f"{table.name}: {len(table)} particle(s); gold-standard half maps need at least 2")
    with runtime.progress("averaging half sets", len(table)) as advance:
        # A constant, small λ: each half map depends on its own particles only (RELION's unfiltered half maps).
        result = average_particles(
            loaded.stack, loaded.matrices, loaded.origins_px, halves=loaded.halves,
            batch_size=batch_size or AVERAGE_BATCH_SIZE, device=device, regularisation=CONSTANT_REGULARISATION,
            progress=advance, symmetry=symmetry,
        )
    runtime.log(f"{table.name}: half sets of {result.counts[0]} and {result.counts[1]} particles averaged")
    return result.unfiltered_half1, result.unfiltered_half2, loaded.voxel_size


def output_files(request: FscRequest) -> tuple[Path, Path, Path, tuple[Path, Path]]:
    """(STAR, XML, PNG, (half1, half2)) paths; the half maps are written only with gold_standard."""
    out = Path(request.out)
    half_paths = (out.with_name(out.stem + "_half1.mrc"), out.with_name(out.stem + "_half2.mrc"))
    return out, out.with_suffix(".xml"), out.with_suffix(".png"), half_paths


def fsc(request: FscRequest, runtime: Runtime | None = None) -> FscReport:
    """Compute the FSC of the request's maps, write the STAR, XML and PNG files (all or none) and return the report."""
    from gumalign.io.atomic import atomic_outputs, check_output_file, refuse_overwriting_inputs
    from gumalign.io.mrc import read_volume
    from gumalign.io.star import read_star
    from gumalign.metrics.fsc import check_mask, fsc_with_mask, soft_spherical_mask
    from gumalign.metrics.fsc_files import write_fsc_xml, write_postprocess_star
    from gumalign.ops.star_output import table_input_files
    from gumalign.plots import fsc_plot

    runtime = runtime or Runtime()
    maps, ref, mask, particles = list(request.maps), request.ref, request.mask, request.particles
    if mask is not None and request.no_mask:
        raise GumalignError("--mask and --no-mask cannot be combined")
    from gumalign.geometry.symmetry import parse_group

    if parse_group(request.symmetry) != "C1" and not request.gold_standard:
        raise GumalignError("--sym symmetrises the half maps --gold-standard makes; given maps are compared as they "
                            "are (symmetrise them when you make them: gumalign average --sym)")
    # Every file this command writes, refused before any work when one of them would replace an input.
    out, xml, png, half_paths = output_files(request)
    outputs = [out, xml, png, *(half_paths if request.gold_standard else ())]
    check_output_file(out)
    inputs = [*maps, ref, mask, particles]
    table = None
    if request.gold_standard and particles is not None and Path(particles).is_file():
        table = read_star(particles)
        inputs += table_input_files(table)
    refuse_overwriting_inputs(outputs, inputs)
    n_particles = None
    if request.gold_standard:
        if particles is None:
            raise GumalignError("--gold-standard needs --particles aligned.star")
        if maps or ref is not None:
            raise GumalignError("--gold-standard takes no maps and no --ref")
        table = table if table is not None else read_star(particles)
        for note in table.notes:
            runtime.log(note)
        with runtime.applied() as device:
            map1, map2, voxel_size = gold_standard_halves(
                table, request.tilt_range, request.pixel_size, request.batch_size, device, runtime, request.symmetry
            )
        # data_general names the half maps (rlnUnfilteredMapHalf1/2): they are written beside --out.
        names = tuple(str(p) for p in half_paths)
        versus_reference = False
        n_particles = len(table)
    elif ref is not None:
        if len(maps) != 1:
            raise GumalignError(f"--ref compares one map with a reference; got {len(maps)} maps")
        map1, map2, voxel_size = read_pair(maps[0], ref, request.pixel_size)
        names = (str(maps[0]), str(ref))
        versus_reference = True
    else:
        if len(maps) != 2:
            raise GumalignError(
                f"give two half maps, one map with --ref, or --gold-standard --particles; got {len(maps)} maps"
            )
        map1, map2, voxel_size = read_pair(maps[0], maps[1], request.pixel_size)
        names = (str(maps[0]), str(maps[1]))
        versus_reference = False

    box = map1.shape[0]
    if request.no_mask:
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

    result = fsc_with_mask(map1, map2, voxel_size, mask_data, seed=request.seed, names=names, mask_name=mask_name)
    at_0143, at_05 = result.resolution(0.143), result.resolution(0.5)
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
        if request.gold_standard:
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
            n_particles=n_particles, pixel_size=voxel_size,
            mask="none" if mask_data is None else ("soft sphere (auto)" if mask is None else Path(mask_name).name),
        )
    runtime.log(f"wrote {out}, {xml}, {png}")
    if final.reached_nyquist:
        runtime.log(f"FSC stays above {threshold} up to Nyquist: the resolution is at least {final.angstrom:.2f} Å")
    if final.below_first_shell:
        runtime.log(
            f"note: the FSC is below {threshold} already at shell 1 ({box * voxel_size:g} Å, the box): the maps agree "
            f"at no resolution; reported as 999 Å, as RELION writes for shell 0"
        )
    mask_kind = "none" if mask_data is None else ("auto" if mask is None else "file")
    return FscReport(result, at_0143, at_05, result.resolution(0.143, curve="unmasked"), final, threshold,
                     voxel_size, box, mask_kind, outputs)
