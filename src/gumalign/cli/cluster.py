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
from typing import Annotated, Optional, Tuple

import typer

from gumalign.cli._common import handle_errors, info, progress_bar
from gumalign.cli._star_out import OptimisationSet, StarVersion, Tomograms, prepare_output, report_notes


@handle_errors
def command(
    particles: Annotated[Path, typer.Option("--particles", "-p", help="Particles (RELION STAR file).")],
    k: Annotated[int, typer.Option("--k", help="Number of classes.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output STAR file; scores and plots go beside it.")] = Path(
        "classes.star"
    ),
    method: Annotated[str, typer.Option(help="Aligner: gumnet, ht or fa.")] = "gumnet",
    refine: Annotated[
        bool, typer.Option("--refine", help="Follow the method with a local search that can only raise scores.")
    ] = False,
    ref_based: Annotated[
        bool, typer.Option("--ref-based", help="Align to K class references (N·K alignments) instead of all pairs.")
    ] = False,
    iterations: Annotated[int, typer.Option(help="Rounds of --ref-based refinement.", min=1)] = 5,
    tilt_range: Annotated[
        Optional[Tuple[float, float]],
        typer.Option(help="Tilt range (min max, degrees) for the missing wedge when the STAR has no rlnCtfImage."),
    ] = None,
    pixel_size: Annotated[
        Optional[float], typer.Option(help="Pixel size in Å when the STAR has none.", min=0.0)
    ] = None,
    max_shift: Annotated[
        Optional[float], typer.Option(help="Largest shift (voxels) the aligner may find.", min=0.0)
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Pairs (or particles) per aligner call.", min=1)] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed (first --ref-based reference; aligners that draw numbers).")] = 0,
    star_version: StarVersion = None,
    tomograms: Tomograms = None,
    optimisation_set: OptimisationSet = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or log output.")] = False,
) -> None:
    """Cluster subtomograms into K classes by pairwise (or class-reference) alignment scores."""
    import functools

    import numpy as np

    from gumalign.align.registry import get_aligner
    from gumalign.average.stack import StarStack
    from gumalign.devices import resolve_device
    from gumalign.cli._common import aligner_options, sibling
    from gumalign.cluster.pairwise import check_k, complete_linkage, pairwise_scores
    from gumalign.cli._common import check_output_file, refuse_overwriting_inputs, require_particles, table_input_files
    from gumalign.io.atomic import atomic_outputs
    from gumalign.io.star import read_star, write_star
    from gumalign.plots import heatmap_plot

    check_output_file(out)
    refuse_overwriting_inputs([out], [particles])
    table = prepare_output(read_star(particles), star_version, tomograms, optimisation_set)
    require_particles(table, "cluster")
    npy, csv, png = sibling(out, "_scores", ".npy"), sibling(out, "_scores", ".csv"), sibling(out, "_heatmap", ".png")
    class_maps = [sibling(out, f"_class{c:02d}", ".mrc") for c in range(1, k + 1)] if ref_based and k > 0 else []
    outputs = [out, npy, csv, png, *class_maps]
    refuse_overwriting_inputs(outputs, [particles, *table_input_files(table)])
    report_notes(table, quiet)
    check_k(k, len(table))
    voxel_size = table.common_pixel_size(pixel_size)
    torch_device = resolve_device(device)
    stack = StarStack(table, tuple(tilt_range) if tilt_range is not None else None)
    aligner = get_aligner(method, refine=refine, **aligner_options(torch_device, max_shift, seed))
    info(
        f"{particles}: {len(table)} particles, box {stack.box}, weights from {stack.weight_source}; method {method}{'+refine' if refine else ''}",
        quiet,
    )
    progress = functools.partial(progress_bar, quiet=quiet)

    if ref_based:
        from gumalign.cluster.reference_based import reference_based_clustering

        result = reference_based_clustering(
            stack, aligner, k, iterations=iterations, seed=seed, batch_size=batch_size, device=torch_device,
            progress=progress,
        )
        labels, scores, order = result.labels, result.scores, result.order
        own = scores[np.arange(len(labels)), labels - 1]
        updated = table.with_alignment(
            result.matrices, result.origins_px * voxel_size, rlnClassNumber=labels, gumAlignScore=own
        )
        state = "converged" if result.converged else "stopped"
        info(f"{state} after {result.rounds} round(s); class averages: {sibling(out, '_classNN', '.mrc')}", quiet)
        heatmap_kwargs = dict(
            row_order=order, column_order=np.arange(k), row_groups=labels, xlabel="class reference",
            title=f"score against class references ({len(labels)} particles, {k} classes)",
            column_labels=[f"class {c}" for c in range(1, k + 1)],
        )
    else:
        n_pairs = len(table) * (len(table) - 1) // 2
        with progress(f"aligning {n_pairs} pairs", n_pairs) as advance:
            scores = pairwise_scores(stack, aligner, batch_size=batch_size, progress=advance)
        clustering = complete_linkage(scores, k)
        labels, order = clustering.labels, clustering.order
        updated = table.with_columns(rlnClassNumber=labels)
        heatmap_kwargs = dict(
            row_order=order, column_order=order, row_groups=labels,
            title=f"pairwise scores, {len(labels)} particles ordered by class ({len(np.unique(labels))} classes)",
            scale_ignores_diagonal=True,
        )

    with atomic_outputs(outputs) as tmp:  # all of them or none
        write_star(updated, tmp[out], box_size=stack.box, default_pixel_size=voxel_size)
        with open(tmp[npy], "wb") as handle:
            np.save(handle, scores)
        np.savetxt(tmp[csv], scores, delimiter=",", fmt="%.6f")
        heatmap_plot(tmp[png], scores, colorbar_label="constrained correlation", **heatmap_kwargs)
        if ref_based:
            from gumalign.io.mrc import write_volume

            for path, reference in zip(class_maps, result.references):
                write_volume(tmp[path], reference, voxel_size)
    sizes = np.bincount(labels, minlength=k + 1)[1:]
    info(f"classes: {', '.join(f'{c}: {s}' for c, s in enumerate(sizes, start=1))}", quiet)
    info(f"wrote {out}, {npy}, {csv}, {png}", quiet)
