"""The `cluster` operation: K classes from pairwise (or class-reference) alignment scores (see gumalign.cli.cluster).

    from gumalign.align.spec import AlignerSpec
    from gumalign.ops import ClusterRequest, cluster

    report = cluster(ClusterRequest(particles=Path("parts.star"), k=2, out=Path("classes.star"),
                                    aligner=AlignerSpec(method="ht")))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gumalign.align.spec import AlignerSpec
from gumalign.ops.average import sibling
from gumalign.ops.runtime import Runtime
from gumalign.ops.star_output import StarOutput


@dataclass(frozen=True)
class ClusterRequest:
    """What `gumalign cluster` is asked.

    Attributes:
        particles: RELION STAR (or Dynamo .tbl) of particles.
        k: number of classes.
        out: the STAR file with rlnClassNumber; _scores.npy/.csv, _heatmap.png (and _classNN.mrc) beside it.
        aligner: the aligner (its batch size is the pairs or particles per aligner call).
        ref_based: align to K class references (N·K alignments) instead of all pairs.
        iterations: rounds of the reference-based refinement.
        tilt_range, pixel_size: as for `average`.
        seed: picks the first class reference of ref_based.
        star: the RELION flavour written.
    """

    particles: Path
    k: int
    out: Path = Path("classes.star")
    aligner: AlignerSpec = field(default_factory=AlignerSpec)
    ref_based: bool = False
    iterations: int = 5
    tilt_range: tuple[float, float] | None = None
    pixel_size: float | None = None
    seed: int = 0
    star: StarOutput = field(default_factory=StarOutput)


@dataclass
class ClusterReport:
    labels: np.ndarray  # (n,) class numbers 1..K
    scores: np.ndarray  # (n, n) or (n, K)
    out: Path
    files: list[Path]
    rounds: int | None = None

    def summary(self) -> dict:
        sizes = np.bincount(self.labels, minlength=int(self.labels.max()) + 1)[1:]
        summary = {"particles": len(self.labels), "classes": len(sizes),
                   "sizes": ",".join(str(int(s)) for s in sizes), "out": str(self.out)}
        if self.rounds is not None:
            summary["rounds"] = self.rounds
        return summary


def output_files(out: Path, k: int, ref_based: bool) -> list[Path]:
    """Every file `cluster` writes."""
    files = [out, sibling(out, "_scores", ".npy"), sibling(out, "_scores", ".csv"), sibling(out, "_heatmap", ".png")]
    if ref_based and k > 0:
        files += [sibling(out, f"_class{c:02d}", ".mrc") for c in range(1, k + 1)]
    return files


def cluster(request: ClusterRequest, runtime: Runtime | None = None) -> ClusterReport:
    """Cluster ``request.particles`` into ``request.k`` classes and write every output (all or none)."""
    from gumalign.average.stack import StarStack
    from gumalign.cluster.pairwise import check_k, complete_linkage, pairwise_scores
    from gumalign.io.atomic import atomic_outputs, check_output_file, refuse_overwriting_inputs
    from gumalign.io.star import read_star, write_star
    from gumalign.ops.star_output import require_particles, table_input_files
    from gumalign.plots import heatmap_plot

    runtime = runtime or Runtime()
    out, k = Path(request.out), request.k
    check_output_file(out)
    refuse_overwriting_inputs([out], [request.particles])
    table = request.star.prepare(read_star(request.particles), runtime.log)
    require_particles(table, "cluster")
    outputs = output_files(out, k, request.ref_based)
    out, npy, csv, png, *class_maps = outputs
    refuse_overwriting_inputs(outputs, [request.particles, *table_input_files(table)])
    check_k(k, len(table))
    voxel_size = table.common_pixel_size(request.pixel_size)
    from gumalign import distributed

    # Under torchrun both paths split their alignments over the ranks (--ref-based its particles and class averages,
    # the pairwise path its pairs). Rank 0 writes; the others log only their rank line.
    world = distributed.init_if_launched(distributed.rank_device(runtime.device))
    rank_runtime, runtime = runtime, distributed.rank_runtime(runtime, world)
    with runtime.applied() as device:
        stack = StarStack(table, tuple(request.tilt_range) if request.tilt_range is not None else None)
        spec = request.aligner.with_device(device).for_data(voxel_size)
        aligner = spec.build()
        runtime.log(
            f"{request.particles}: {len(table)} particles, box {stack.box}, weights from {stack.weight_source}; "
            f"method {spec.label}"
        )
        if world.size > 1 and request.ref_based:
            rank_runtime.log(distributed.rank_line(world, len(world.rows(len(table), spec.effective_batch_size))))
        rounds = None
        if request.ref_based:
            from gumalign.cluster.reference_based import reference_based_clustering

            result = reference_based_clustering(
                stack, aligner, k, iterations=request.iterations, seed=request.seed,
                batch_size=spec.effective_batch_size, device=device, progress=runtime.progress, world=world,
            )
            labels, scores, order, rounds = result.labels, result.scores, result.order, result.rounds
            own = scores[np.arange(len(labels)), labels - 1]
            updated = table.with_alignment(
                result.matrices, result.origins_px * voxel_size, rlnClassNumber=labels, gumAlignScore=own
            )
            state = "converged" if result.converged else "stopped"
            runtime.log(f"{state} after {result.rounds} round(s); class averages: {sibling(out, '_classNN', '.mrc')}")
            heatmap_kwargs = dict(
                row_order=order, column_order=np.arange(k), row_groups=labels, xlabel="class reference",
                title=f"score against class references ({len(labels)} particles, {k} classes)",
                column_labels=[f"class {c}" for c in range(1, k + 1)],
            )
        else:
            n_pairs = len(table) * (len(table) - 1) // 2
            mine = len(world.rows(n_pairs, spec.effective_batch_size))
            if world.size > 1:
                rank_runtime.log(distributed.rank_line(world, mine, "pairs"))
            with runtime.progress(f"aligning {mine} pairs", mine) as advance:
                scores = pairwise_scores(stack, aligner, batch_size=spec.effective_batch_size, progress=advance,
                                         world=world)
            clustering = complete_linkage(scores, k)
            labels, order = clustering.labels, clustering.order
            updated = table.with_columns(rlnClassNumber=labels)
            heatmap_kwargs = dict(
                row_order=order, column_order=order, row_groups=labels,
                title=f"pairwise scores, {len(labels)} particles ordered by class ({len(np.unique(labels))} classes)",
                scale_ignores_diagonal=True,
            )

    if not world.is_main:  # rank 0 writes the outputs of the whole run
        return ClusterReport(labels, scores, out, outputs, rounds)
    with atomic_outputs(outputs) as tmp:  # all of them or none
        write_star(updated, tmp[out], box_size=stack.box, default_pixel_size=voxel_size)
        with open(tmp[npy], "wb") as handle:
            np.save(handle, scores)
        np.savetxt(tmp[csv], scores, delimiter=",", fmt="%.6f")
        heatmap_plot(tmp[png], scores, colorbar_label="constrained correlation", **heatmap_kwargs)
        if request.ref_based:
            from gumalign.io.mrc import write_volume

            for path, reference in zip(class_maps, result.references):
                write_volume(tmp[path], reference, voxel_size)
    sizes = np.bincount(labels, minlength=k + 1)[1:]
    runtime.log(f"classes: {', '.join(f'{c}: {s}' for c, s in enumerate(sizes, start=1))}")
    runtime.log(f"wrote {out}, {npy}, {csv}, {png}")
    return ClusterReport(labels, scores, out, outputs, rounds)
