"""The `average` operation: wedge-compensated average of aligned subtomograms with gold-standard half maps, and with
``iterations`` reference-free realign-and-average rounds (see gumalign.cli.average for the method in words).

    from gumalign.ops import AverageRequest, Runtime, average

    report = average(AverageRequest(particles=Path("aligned.star"), out=Path("avg.mrc")), Runtime(device="cpu"))

Under torchrun every rank sums its shard of the particles, the sums are all-reduced and rank 0 writes the maps; with
``shard`` one process writes one shard's sums (``partial_out``) for `gumalign merge` (gumalign.distributed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gumalign.align.spec import AlignerSpec
from gumalign.distributed import Shard
from gumalign.errors import GumalignError
from gumalign.units import same_voxel_size
from gumalign.ops.runtime import Runtime
from gumalign.ops.star_output import StarOutput

# Particles per batch of the averaging itself (not of an aligner: see AlignerSpec.batch_size).
AVERAGE_BATCH_SIZE = 64


@dataclass(frozen=True)
class AverageRequest:
    """What `gumalign average` is asked.

    Attributes:
        particles: aligned particles (RELION STAR or Dynamo .tbl).
        out: the full map (.mrc); _half1/_half2 maps, a PNG (and STAR files with iterations) are written beside it.
        tilt_range: the wedge of particles without rlnCtfImage.
        pixel_size: Å, when the STAR file has none.
        regularisation: Wiener term: 'auto' (per shell, from the half maps' FSC) or a constant >= 0.
        plain: a plain mean without wedge compensation.
        iterations: reference-free realign-and-average rounds (0: average only).
        aligner: the aligner of the iterations; its ``symmetry`` is also the point group every map is symmetrised
            over (C1: none).
        initial_reference: starting map of the iterations (None: the average of the given alignment).
        batch_size: particles per averaging batch (None: AVERAGE_BATCH_SIZE).
        star: the RELION flavour of the STAR files written with iterations.
        shard: sum only this shard of the particles (``--shard I/N``, without torchrun) and write its sums to
            ``partial_out`` instead of the maps; `gumalign merge` writes the maps of all N.
        partial_out: the shard's sums (.npz); None: :func:`partial_sums_path`.
    """

    particles: Path
    out: Path
    tilt_range: tuple[float, float] | None = None
    pixel_size: float | None = None
    regularisation: float | str = "auto"
    plain: bool = False
    iterations: int = 0
    aligner: AlignerSpec = field(default_factory=AlignerSpec)
    initial_reference: Path | None = None
    batch_size: int | None = None
    star: StarOutput = field(default_factory=StarOutput)
    shard: Shard | None = None
    partial_out: Path | None = None


def partial_sums_path(out: Path, shard: Shard) -> Path:
    """``avg.mrc`` -> ``avg_shardIofN.npz``: where ``average --shard I/N`` keeps its sums by default."""
    return sibling(out, f"_shard{shard.label}", ".npz")


@dataclass
class AverageReport:
    """What `average` wrote: the maps (and with iterations the final table and per-iteration mean scores)."""

    out: Path
    counts: tuple[int, int]
    voxel_size: float
    box: int
    files: list[Path]
    table: object | None = None
    iteration_scores: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        summary = {"particles": sum(self.counts), "half1": self.counts[0], "half2": self.counts[1],
                   "box": self.box, "voxel_size": self.voxel_size, "out": str(self.out)}
        if self.iteration_scores:
            summary["iterations"] = len(self.iteration_scores)
            summary["final_mean_score"] = round(self.iteration_scores[-1], 6)
        return summary


def sibling(path: Path, suffix: str, extension: str | None = None) -> Path:
    """``avg.mrc`` -> ``avg{suffix}{extension or .mrc}`` in the same folder."""
    path = Path(path)
    return path.with_name(path.stem + suffix + (extension if extension is not None else path.suffix or ".mrc"))


def output_files(out: Path, iterations: int) -> list[Path]:
    """Every file `average` writes: the maps and PNG, and with iterations each iteration's map and STAR file and the
    final STAR file."""
    files = [sibling(out, "_half1"), sibling(out, "_half2"), out, sibling(out, "", ".png")]
    if iterations:
        files.append(sibling(out, "", ".star"))
        for i in range(1, iterations + 1):
            files += [sibling(out, f"_it{i:02d}"), sibling(out, f"_it{i:02d}", ".star")]
    return files


@dataclass
class LoadedParticles:
    """A particle table ready to average: its stack, starting poses, half sets and voxel size."""

    table: object
    stack: object  # gumalign.average.stack.StarStack
    matrices: np.ndarray  # (n, 3, 3) RELION A
    origins_px: np.ndarray  # (n, 3) RELION origins (x, y, z) in pixels
    halves: np.ndarray | None
    voxel_size: float


def load_particles(table, tilt_range, pixel_size, log, *, identity_when_unaligned: bool = False) -> LoadedParticles:
    """The one way `average`, `fsc --gold-standard` read aligned particles for averaging.

    ``identity_when_unaligned``: particles without angles start at the identity (the iterations' starting point);
    otherwise they are an error naming the missing column.
    """
    from gumalign.average.stack import StarStack

    voxel_size = table.common_pixel_size(pixel_size)
    if table.has_angles():
        matrices = table.matrices()
    elif identity_when_unaligned:
        log(f"{table.name}: no orientations; starting every particle at the identity")
        matrices = np.tile(np.eye(3), (len(table), 1, 1))
    else:
        table.angles()  # raises the one-line error naming the missing column
    origins_px = table.origins_px(pixel_size)
    stack = StarStack(table, tuple(tilt_range) if tilt_range is not None else None)
    halves = table.half_sets(require_both=True)
    log(f"{table.name}: {len(table)} particles, box {stack.box}, {voxel_size:g} Å/px, weights from {stack.weight_source}")
    if halves is None:
        log("rlnRandomSubset absent: particles assigned to half sets alternately (1, 2, 1, 2, ...)")
    return LoadedParticles(table, stack, matrices, origins_px, halves, voxel_size)


def check_request(request: AverageRequest) -> None:
    """The request's own consistency, before any file is read."""
    if Path(request.out).suffix.lower() not in (".mrc", ".map"):
        raise GumalignError(
            f"--out {request.out}: expected an .mrc file (half maps, PNG and STAR files are written beside it)"
        )
    if request.initial_reference is not None and request.iterations == 0:
        raise GumalignError("--ref is a starting reference for --iterations; add --iterations N")
    if request.plain and request.iterations > 0:
        raise GumalignError("--plain and --iterations cannot be combined")
    reg = request.regularisation
    if not (reg == "auto" or (isinstance(reg, (int, float)) and reg >= 0)):
        raise GumalignError(f"--regularisation must be 'auto' or a number >= 0, got {reg!r}")
    if request.batch_size is not None and request.batch_size < 1:
        raise GumalignError(f"--batch-size must be at least 1, got {request.batch_size}")
    if request.shard is not None and request.iterations > 0:
        raise GumalignError(
            "--shard writes one shard's sums for `gumalign merge`; --iterations realigns every particle each round, "
            "so run it whole or under torchrun"
        )
    if request.partial_out is not None:
        if request.shard is None:
            raise GumalignError("--partial-out names the sums of a --shard run; add --shard I/N")
        if Path(request.partial_out).suffix.lower() != ".npz":
            raise GumalignError(f"--partial-out {request.partial_out}: expected an .npz file")


def average(request: AverageRequest, runtime: Runtime | None = None) -> AverageReport:
    """Average ``request.particles`` and write the maps (all of them or none); see AverageRequest."""
    from gumalign import distributed
    from gumalign.average.compensated import average_particles
    from gumalign.io.atomic import check_output_file, refuse_overwriting_inputs
    from gumalign.io.star import read_star
    from gumalign.ops.star_output import require_particles, table_input_files

    runtime = runtime or Runtime()
    check_request(request)
    out, ref, shard = Path(request.out), request.initial_reference, request.shard
    check_output_file(out)
    refuse_overwriting_inputs([out], [request.particles, ref])
    table = request.star.prepare(read_star(request.particles), runtime.log)
    require_particles(table, "average")
    if shard is not None:
        partial = Path(request.partial_out) if request.partial_out is not None else partial_sums_path(out, shard)
        check_output_file(partial, "--partial-out")
        refuse_overwriting_inputs([partial], [request.particles, *table_input_files(table)])
    else:
        refuse_overwriting_inputs(
            output_files(out, request.iterations), [request.particles, ref, *table_input_files(table)]
        )
    distributed.refuse_shard_under_torchrun(shard)
    world = distributed.init_if_launched(distributed.rank_device(runtime.device))
    ranked = distributed.rank_runtime(runtime, world)
    batch_size = request.batch_size or AVERAGE_BATCH_SIZE
    with ranked.applied() as device:
        loaded = load_particles(table, request.tilt_range, request.pixel_size, ranked.log,
                                identity_when_unaligned=request.iterations > 0)
        if shard is not None:
            return _average_shard(request, loaded, partial, device, batch_size, runtime)
        if world.size > 1:
            runtime.log(distributed.rank_line(world, len(world.rows(len(table), batch_size))))
        if request.iterations == 0:
            with ranked.progress("averaging", len(world.rows(len(table), batch_size))) as advance:
                result = average_particles(
                    loaded.stack, loaded.matrices, loaded.origins_px, halves=loaded.halves, batch_size=batch_size,
                    device=device, regularisation=request.regularisation, compensate=not request.plain,
                    progress=advance, world=world, symmetry=request.aligner.symmetry,
                )
            if world.is_main:
                files = write_maps(result, out, loaded.voxel_size, ranked.log)
            else:
                files = output_files(out, 0)
            return AverageReport(out, result.counts, loaded.voxel_size, loaded.stack.box, files)
        return _iterate(request, loaded, device, batch_size, ranked, world)


def _average_shard(request: AverageRequest, loaded: LoadedParticles, partial: Path, device, batch_size: int,
                   runtime: Runtime) -> AverageReport:
    """``--shard I/N``: the per-half sums of the shard's particles, written to ``partial`` for `gumalign merge`."""
    from gumalign.align.pipeline import files_fingerprint
    from gumalign.average.compensated import accumulate_halves, assign_halves, save_partial_sums
    from gumalign.ops.star_output import table_input_files

    shard, table = request.shard, loaded.table
    n = len(table)
    rows = shard.rows(n, batch_size)  # whole batches of the single run, as torchrun's ranks take them
    runtime.log(f"shard {shard}: {len(rows)} particles")
    halves, assigned = assign_halves(n, loaded.halves)
    with runtime.progress("averaging", len(rows)) as advance:
        sums = accumulate_halves(
            loaded.stack, loaded.matrices, loaded.origins_px, halves, rows=rows, batch_size=batch_size,
            device=device, compensate=not request.plain, progress=advance,
        )
    meta = {
        "particles": table.name, "n": n, "inputs": files_fingerprint([Path(table.name), *table_input_files(table)]),
        "tilt_range": list(request.tilt_range) if request.tilt_range is not None else None,
        "pixel_size": request.pixel_size, "plain": request.plain, "regularisation": request.regularisation,
        "halves_assigned": assigned, "box": loaded.stack.box, "voxel_size": loaded.voxel_size,
        # The group is applied by `gumalign merge` to the summed halves, as the single run does before its division.
        "symmetry": request.aligner.symmetry,
        "out": str(request.out), "cwd": os.getcwd(), "shard": [shard.index + 1, shard.count],
        "rows": [int(rows[0]), int(rows[-1]) + 1] if len(rows) else [0, 0],
    }
    save_partial_sums(partial, sums, halves, meta)
    counts = (sums[1].count, sums[2].count)
    runtime.log(f"wrote {partial}: the sums of {sum(counts)} particles (shard {shard}); when all {shard.count} "
                f"shards are done: gumalign merge {sibling(Path(request.out), '_shard*of' + str(shard.count), '.npz')}")
    return AverageReport(partial, counts, loaded.voxel_size, loaded.stack.box, [partial])


def _iterate(request: AverageRequest, loaded: LoadedParticles, device, batch_size: int, runtime: Runtime, world=None):
    """The iterations of :func:`average`: each round's map and STAR written as soon as it is done (by rank 0 of a
    torchrun world, whose ranks share the work of every round)."""
    from gumalign.average.iterative import iterative_average
    from gumalign.distributed import SINGLE
    from gumalign.io.atomic import atomic_outputs
    from gumalign.io.mrc import read_volume, write_volume
    from gumalign.io.star import write_star

    world = world or SINGLE
    out, voxel_size, stack, table = Path(request.out), loaded.voxel_size, loaded.stack, loaded.table
    spec = request.aligner
    if request.batch_size is not None and spec.batch_size is None:
        from dataclasses import replace

        spec = replace(spec, batch_size=request.batch_size)  # one --batch-size for the command
    aligner = spec.with_device(device).for_data(voxel_size).build()
    initial = None
    if request.initial_reference is not None:
        ref = request.initial_reference
        reference = read_volume(ref)
        if reference.data.shape != (stack.box,) * 3:
            shape = "×".join(map(str, reference.data.shape[::-1]))
            raise GumalignError(f"{ref}: reference of {shape} voxels does not match the particles' box {stack.box}")
        if reference.voxel_size > 0 and not same_voxel_size(reference.voxel_size, voxel_size):
            raise GumalignError(
                f"{ref}: voxel size {reference.voxel_size:g} Å differs from the particles' {voxel_size:g} Å"
            )
        initial = reference.data
    files: list[Path] = []

    def write_iteration(step) -> None:
        path, star = sibling(out, f"_it{step.iteration:02d}"), sibling(out, f"_it{step.iteration:02d}", ".star")
        if not world.is_main:
            files.extend([path, star])
            return
        origins_angst = step.origins_px * voxel_size
        updated = table.with_alignment(
            step.matrices, origins_angst, rlnRandomSubset=step.average.halves, gumAlignScore=step.scores
        )
        with atomic_outputs([path, star]) as tmp:  # an iteration's map and STAR file together or not at all
            write_volume(tmp[path], step.average.full, voxel_size)
            write_star(updated, tmp[star], box_size=stack.box, default_pixel_size=voxel_size)
        files.extend([path, star])
        runtime.log(f"iteration {step.iteration}: mean score {np.mean(step.scores):.4f}; wrote {path}")

    _, steps = iterative_average(
        stack, loaded.matrices, loaded.origins_px, aligner, request.iterations, halves=loaded.halves,
        initial_reference=initial, batch_size=batch_size, device=device, regularisation=request.regularisation,
        progress=runtime.progress, on_iteration=write_iteration, world=world, symmetry=spec.symmetry,
    )
    final = steps[-1]
    final_table = table.with_alignment(
        final.matrices, final.origins_px * voxel_size, rlnRandomSubset=final.average.halves,
        gumAlignScore=final.scores,
    )
    if world.is_main:
        files += write_maps(final.average, out, voxel_size, runtime.log, star=(final_table, stack.box))
    else:
        files += output_files(out, 0) + [sibling(out, "", ".star")]
    return AverageReport(out, final.average.counts, voxel_size, stack.box, files, final_table,
                         [float(np.mean(s.scores)) for s in steps])


def write_maps(result, out: Path, voxel_size: float, log, star=None) -> list[Path]:
    """The full map, both half maps, the PNG (and with ``star`` = (table, box) the STAR file): all or none."""
    from gumalign.io.atomic import atomic_outputs
    from gumalign.io.mrc import write_volume
    from gumalign.io.star import write_star
    from gumalign.plots import slice_montage

    half1, half2, png = sibling(out, "_half1"), sibling(out, "_half2"), sibling(out, "", ".png")
    star_path = sibling(out, "", ".star")
    files = [half1, half2, out, png] + ([star_path] if star is not None else [])
    with atomic_outputs(files) as tmp:
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
    log(f"wrote {out} ({n1 + n2} particles), {half1} ({n1}), {half2} ({n2}), {png}")
    return files
