"""The `align` operation: every particle of a STAR file aligned to one reference, written as a RELION STAR file.

    from gumalign.align.spec import AlignerSpec
    from gumalign.ops import AlignRequest, Runtime, align

    report = align(AlignRequest(reference=Path("ref.mrc"), particles=Path("parts.star"), out=Path("aligned.star"),
                                aligner=AlignerSpec(method="fa")), Runtime(device="cpu", threads=2))

Under torchrun every rank aligns its shard and rank 0 writes the STAR; with ``shard`` one process aligns one shard of a
SLURM array and writes its result for `gumalign merge` (gumalign.distributed, gumalign.align.pipeline).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from gumalign.align.spec import AlignerSpec
from gumalign.distributed import Shard
from gumalign.ops.runtime import Runtime
from gumalign.ops.star_output import StarOutput


@dataclass(frozen=True)
class AlignRequest:
    """What `gumalign align` is asked (see its --help for each option).

    Attributes:
        reference: reference MRC, the particles' box and voxel size.
        particles: RELION STAR (or Dynamo .tbl) of 3D particles.
        out: the STAR file written (once, atomically); ``<out>.partial`` holds finished batches meanwhile.
        aligner: the aligner (gumalign.align.spec.AlignerSpec; its device is replaced by the runtime's).
        tilt_range: (min, max) degrees: the wedge of particles without rlnCtfImage.
        resume: continue a killed run from ``<out>.partial``.
        allow_unverified: use a model file that has no record or does not match it.
        star: the RELION flavour written (gumalign.ops.star_output.StarOutput).
        shard: align only this shard of the rows (``--shard I/N``, without torchrun) and write
            ``<out>.shardIofN`` for `gumalign merge` instead of the STAR file.
    """

    reference: Path
    particles: Path
    out: Path
    aligner: AlignerSpec = field(default_factory=AlignerSpec)
    tilt_range: tuple[float, float] | None = None
    resume: bool = False
    allow_unverified: bool = False
    star: StarOutput = field(default_factory=StarOutput)
    shard: Shard | None = None


@dataclass
class AlignReport:
    """What `align` did: the aligned table and the figures its summary line prints."""

    table: object  # gumalign.io.star.ParticleTable
    out: Path
    method: str
    seconds: float

    def summary(self) -> dict:
        import numpy as np

        scores = self.table.numeric("gumAlignScore")
        n = len(self.table)
        mean, median = (float(scores.mean()), float(np.median(scores))) if n else (float("nan"), float("nan"))
        return {
            "particles": n, "method": self.method, "mean_score": round(mean, 6),
            "median_score": round(median, 6), "seconds": round(self.seconds, 2),
            "seconds_per_particle": round(self.seconds / max(n, 1), 4), "out": str(self.out),
        }


def _log_resampling(spec: AlignerSpec, box: int, log) -> None:
    """One line when Gum-Net will see the particles at another sampling than theirs (gumalign.fourier.resample)."""
    if spec.method != "gumnet" or spec.voxel_size is None:
        return
    from gumalign.errors import GumalignError
    from gumalign.fourier.resample import Resampling
    from gumalign.weights import DEFAULT_MODEL, model_record

    try:
        record = model_record(spec.model or DEFAULT_MODEL)
    except GumalignError:  # no record: the aligner itself says what it needs
        return
    model_box, model_voxel = int(record.get("box") or 32), float(record.get("voxel_size") or 0.0)
    if model_voxel > 0:
        plan = Resampling(box, spec.voxel_size, model_box, model_voxel)
        if not plan.is_identity:
            log(f"Gum-Net: {plan.describe()}; shifts and scores at the particles' own sampling")


# A reference in RELION's symmetry frame keeps nearly all of itself under its group's operators (0.997 for the
# built-in proteasome, which ships in the frame); one whose axes lie elsewhere falls well below (0.63 for the
# proteasome as deposited, 3J9I's 7-fold near (0.64, -0.76, -0.10)).
SYMMETRY_FRAME_MIN_CORRELATION = 0.8


def _check_symmetry_frame(symmetry: str, reference, log) -> None:
    """A note when the reference is not symmetric under RELION's operators of ``symmetry`` (its axes elsewhere):
    symmetrising it there would blur it."""
    if symmetry == "C1":
        return
    from gumalign.geometry.symmetry import point_group
    from gumalign.train.symmetry import self_correlations

    worst = float(self_correlations(reference, point_group(symmetry)[1:]).min())
    if worst < SYMMETRY_FRAME_MIN_CORRELATION:
        log(f"note: the reference keeps only {worst:.2f} of itself under {symmetry}'s operators: it may not be in "
            f"RELION's symmetry frame (n-fold axis on z, a 2-fold on x; relion_align_symmetry brings it there), and "
            "--sym symmetrises it about those axes")


def align(request: AlignRequest, runtime: Runtime | None = None) -> AlignReport:
    """Align every particle of ``request.particles`` to ``request.reference`` and write ``request.out``.

    Raises:
        GumalignError: bad input (one line naming the file and what is wrong), before any output is written.
    """
    from gumalign import distributed
    from gumalign.align.pipeline import align_table, partial_path, shard_result_path
    from gumalign.io.atomic import check_output_file, refuse_overwriting_inputs
    from gumalign.io.mrc import read_volume
    from gumalign.io.star import read_star
    from gumalign.weights import unverified_models_allowed

    runtime = runtime or Runtime()
    out = Path(request.out)
    check_output_file(out)
    shard = request.shard
    refuse_overwriting_inputs([out, partial_path(out)], [request.reference, request.particles])
    reference = read_volume(request.reference)
    table = request.star.prepare(read_star(request.particles), runtime.log)
    distributed.refuse_shard_under_torchrun(shard)
    world = distributed.init_if_launched(distributed.rank_device(runtime.device))
    ranked = distributed.rank_runtime(runtime, world)
    record = None
    if shard is not None or world.size > 1:  # what `gumalign merge` needs to write the STAR of the shards
        star = request.star
        record = {"out": str(out), "cwd": os.getcwd(), "star": {
            "version": star.version, "tomograms": None if star.tomograms is None else str(star.tomograms),
            "optimisation_set": bool(star.optimisation_set)}}
    with ranked.applied() as device, unverified_models_allowed(request.allow_unverified):
        # The particles' voxel size (the reference's: align_table refuses particles of another) lets Gum-Net bring
        # them to its model's sampling.
        spec = request.aligner.with_device(device).for_data(reference.voxel_size if reference.voxel_size > 0 else None)
        _log_resampling(spec, reference.data.shape[-1], ranked.log)
        _check_symmetry_frame(spec.symmetry, reference.data, ranked.log)
        part = world.shard if world.size > 1 else shard
        count = len(part.rows(len(table), spec.effective_batch_size)) if part is not None else len(table)
        if world.size > 1:
            runtime.log(distributed.rank_line(world, count))
        elif shard is not None:
            runtime.log(f"shard {shard}: {count} particles")
        began = time.perf_counter()
        with ranked.progress(f"align ({spec.label})", count) as advance:
            aligned = align_table(
                table, reference, out, spec, tilt_range=request.tilt_range, reference_name=str(request.reference),
                resume=request.resume, progress=advance, shard=shard, world=world, record=record,
            )
        elapsed = time.perf_counter() - began
    written = shard_result_path(out, shard) if shard is not None else out
    report = AlignReport(aligned, written, spec.label, elapsed)
    if len(aligned) == 0:  # an empty shard (more shards than batches)
        ranked.log(f"wrote {written}: no particles in shard {shard}")
        return report
    summary = report.summary()
    ranked.log(
        f"wrote {written}: {summary['particles']} particles, mean score {summary['mean_score']:.4f}, "
        f"{summary['seconds_per_particle']:.3f} s per particle"
    )
    if shard is not None:
        ranked.log(f"when all {shard.count} shards are done: gumalign merge {out}.shard*of{shard.count}")
    return report
