"""The `align` operation: every particle of a STAR file aligned to one reference, written as a RELION STAR file.

    from gumalign.align.spec import AlignerSpec
    from gumalign.ops import AlignRequest, Runtime, align

    report = align(AlignRequest(reference=Path("ref.mrc"), particles=Path("parts.star"), out=Path("aligned.star"),
                                aligner=AlignerSpec(method="fa")), Runtime(device="cpu", threads=2))
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from gumalign.align.spec import AlignerSpec
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
    """

    reference: Path
    particles: Path
    out: Path
    aligner: AlignerSpec = field(default_factory=AlignerSpec)
    tilt_range: tuple[float, float] | None = None
    resume: bool = False
    allow_unverified: bool = False
    star: StarOutput = field(default_factory=StarOutput)


@dataclass
class AlignReport:
    """What `align` did: the aligned table and the figures its summary line prints."""

    table: object  # gumalign.io.star.ParticleTable
    out: Path
    method: str
    seconds: float

    def summary(self) -> dict:
        scores = self.table.numeric("gumAlignScore")
        n = len(self.table)
        return {
            "particles": n, "method": self.method, "mean_score": round(float(scores.mean()), 6),
            "median_score": round(float(_median(scores)), 6), "seconds": round(self.seconds, 2),
            "seconds_per_particle": round(self.seconds / max(n, 1), 4), "out": str(self.out),
        }


def _median(values):
    import numpy as np

    return np.median(values)


def align(request: AlignRequest, runtime: Runtime | None = None) -> AlignReport:
    """Align every particle of ``request.particles`` to ``request.reference`` and write ``request.out``.

    Raises:
        GumalignError: bad input (one line naming the file and what is wrong), before any output is written.
    """
    from gumalign.align.pipeline import align_table, partial_path
    from gumalign.io.atomic import check_output_file, refuse_overwriting_inputs
    from gumalign.io.mrc import read_volume
    from gumalign.io.star import read_star
    from gumalign.weights import unverified_models_allowed

    runtime = runtime or Runtime()
    out = Path(request.out)
    check_output_file(out)
    refuse_overwriting_inputs([out, partial_path(out)], [request.reference, request.particles])
    reference = read_volume(request.reference)
    table = request.star.prepare(read_star(request.particles), runtime.log)
    with runtime.applied() as device, unverified_models_allowed(request.allow_unverified):
        spec = request.aligner.with_device(device)
        began = time.perf_counter()
        with runtime.progress(f"align ({spec.label})", len(table)) as advance:
            aligned = align_table(
                table, reference, out, spec, tilt_range=request.tilt_range, reference_name=str(request.reference),
                resume=request.resume, progress=advance,
            )
        elapsed = time.perf_counter() - began
    report = AlignReport(aligned, out, spec.label, elapsed)
    summary = report.summary()
    runtime.log(
        f"wrote {out}: {summary['particles']} particles, mean score {summary['mean_score']:.4f}, "
        f"{summary['seconds_per_particle']:.3f} s per particle"
    )
    return report
