"""Iterative (reference-free) averaging: average, realign every particle to the average, re-average, N times.

Gold standard throughout: each half set is realigned only to its own half map (or, in the first iteration, to the
reference given), so the two halves never see each other's particles and their FSC stays an honest resolution
estimate. Any aligner of gumalign.align works (gumalign.align.registry.get_aligner); its result rotations are RELION's
A and its shifts are -origin in pixels, so the new origins are -shifts.

Under torchrun (``world``, gumalign.distributed) each rank realigns its share of every half's batches and averages its
shard of the rows; the alignments are gathered and the sums all-reduced, so every rank holds every iteration's full
result, the same as one process's (alignments bit for bit: every batch is the single-process run's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from gumalign.align.base import AlignmentResult
from gumalign.average.compensated import DEFAULT_REGULARISATION, AverageResult, assign_halves, average_particles
from gumalign.average.stack import ParticleStack, iter_batches
from gumalign.distributed import SINGLE, World
from gumalign.errors import GumalignError
from gumalign.progress import Advance, ProgressFactory, no_progress


@dataclass
class IterationResult:
    """One iteration of iterative averaging.

    Attributes:
        iteration: 1-based.
        average: the maps made from this iteration's alignment.
        matrices: (n, 3, 3) RELION matrices A found in this iteration.
        origins_px: (n, 3) RELION origins (x, y, z) in pixels (= -aligner shifts).
        scores: (n,) the aligner's wedge-constrained correlation of each particle with its half's reference.
    """

    iteration: int
    average: AverageResult
    matrices: np.ndarray
    origins_px: np.ndarray
    scores: np.ndarray


def realign(
    stack: ParticleStack,
    references: dict[int, tuple[np.ndarray, np.ndarray]],
    halves: np.ndarray,
    aligner,
    *,
    batch_size: int = 64,
    progress: Advance | None = None,
    prior: tuple[np.ndarray, np.ndarray] | None = None,
    world: World = SINGLE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Align every particle to the reference of its half set.

    Args:
        stack: the particles and their weights.
        references: half set (1, 2) -> (reference (N, N, N) float32 [z, y, x], its centred weight (N, N, N)).
        halves: (n,) half set of each particle.
        aligner: an object with the gumalign.align.base.Aligner ``align`` method.
        batch_size: particles per call to the aligner.
        progress: called with the number of particles done after each batch.
        prior: (matrices (n, 3, 3), origins_px (n, 3)) of the current alignment, passed to the aligner as each
            particle's prior pose (a local search starts there; global methods ignore it).
        world: the ranks of a torchrun run: each aligns its contiguous share of each half's batches; the results are
            gathered on every rank.

    Returns:
        matrices (n, 3, 3) RELION A, origins (n, 3) pixels (= -shifts), scores (n,).
    """
    n = len(stack)
    matrices = np.zeros((n, 3, 3))
    origins = np.zeros((n, 3))
    scores = np.zeros(n)
    # Half by half, so the aligner sees one reference in a row (and can keep the work it did on it).
    for half, (reference, reference_weight) in references.items():
        members = np.flatnonzero(halves == half)
        mine = members[world.rows(len(members), batch_size)]
        for batch in iter_batches(len(mine), batch_size):
            rows = mine[batch]
            volumes, weights = stack.load(rows)
            start = None
            if prior is not None:
                start = AlignmentResult(prior[0][rows], -np.asarray(prior[1])[rows], np.zeros(len(rows)))
            result = aligner.align(reference[None], reference_weight[None], volumes, weights, prior=start)
            matrices[rows] = result.rotations
            origins[rows] = -np.asarray(result.shifts)
            scores[rows] = result.scores
            if progress is not None:
                progress(len(rows))
        if world.size > 1:
            local = np.concatenate([matrices[mine].reshape(-1, 9), origins[mine], scores[mine, None]], axis=1)
            gathered = world.gather_shards(local, len(members), batch_size)
            matrices[members] = gathered[:, :9].reshape(-1, 3, 3)
            origins[members] = gathered[:, 9:12]
            scores[members] = gathered[:, 12]
    return matrices, origins, scores


def iterative_average(
    stack: ParticleStack,
    matrices: np.ndarray,
    origins_px: np.ndarray,
    aligner,
    iterations: int,
    *,
    halves: np.ndarray | None = None,
    initial_reference: np.ndarray | None = None,
    batch_size: int = 64,
    device="cpu",
    regularisation: float | str = DEFAULT_REGULARISATION,
    progress: ProgressFactory | None = None,
    on_iteration: Callable[[IterationResult], None] | None = None,
    world: World = SINGLE,
    symmetry: str = "C1",
) -> tuple[AverageResult | None, list[IterationResult]]:
    """Reference-free averaging: start from the average of the given alignment (or ``initial_reference``), then
    ``iterations`` times realign every particle to its half's current map and re-average.

    Args:
        stack: the particles and their weights.
        matrices, origins_px: (n, 3, 3) and (n, 3): the starting alignment (RELION A and origins in pixels).
        aligner: an object with the gumalign.align.base.Aligner ``align`` method.
        iterations: number of realign-and-average rounds (>= 1).
        halves: (n,) half sets or None to alternate (see assign_halves).
        initial_reference: (N, N, N) starting map for both halves (treated as fully observed), or None.
        batch_size, device, regularisation: as gumalign.average.average_particles.
        progress: ``progress(description, total)`` -> context manager yielding ``advance(n)`` (e.g. the CLI's
            progress_bar), or None.
        on_iteration: called with each IterationResult as soon as it is done (to write it out), on every rank.
        world: the ranks of a torchrun run (see the module docstring); progress counts this rank's particles.

    Returns:
        (the starting average or None when ``initial_reference`` was given, the list of IterationResults).
    """
    if iterations < 1:
        raise GumalignError(f"--iterations must be at least 1, got {iterations}")
    progress = progress or no_progress
    n = len(stack)
    halves, _ = assign_halves(n, halves)
    # symmetry: every average is symmetrised (gumalign.average.compensated.average_particles), so the references
    # the particles are realigned to are too.
    common = dict(batch_size=batch_size, device=device, regularisation=regularisation, halves=halves, world=world,
                  symmetry=symmetry)
    mine = len(world.rows(n, batch_size))  # this rank's share of the averaging

    start: AverageResult | None = None
    if initial_reference is not None:
        reference = np.asarray(initial_reference, dtype=np.float32)
        if reference.shape != (stack.box,) * 3:
            raise GumalignError(f"reference of shape {reference.shape} does not match particles of box {stack.box}")
        full_weight = np.ones_like(reference)
        references = {1: (reference, full_weight), 2: (reference, full_weight)}
    else:
        with progress("averaging (start)", mine) as advance:
            start = average_particles(stack, matrices, origins_px, progress=advance, **common)
        references = _half_references(start)

    results: list[IterationResult] = []
    for iteration in range(1, iterations + 1):
        aligning = sum(len(world.rows(int(np.sum(halves == h)), batch_size)) for h in references)
        with progress(f"iteration {iteration}/{iterations}: aligning", aligning) as advance:
            new_matrices, new_origins, scores = realign(
                stack, references, halves, aligner, batch_size=batch_size, progress=advance,
                prior=(matrices, origins_px), world=world,
            )
        with progress(f"iteration {iteration}/{iterations}: averaging", mine) as advance:
            average = average_particles(stack, new_matrices, new_origins, progress=advance, **common)
        result = IterationResult(iteration, average, new_matrices, new_origins, scores)
        results.append(result)
        if on_iteration is not None:
            on_iteration(result)
        references = _half_references(average)
        matrices, origins_px = new_matrices, new_origins
    return start, results


def _half_references(average: AverageResult) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each half map with the observed region of the full average as its weight."""
    weight = average.observed_weight()
    return {1: (average.half1, weight), 2: (average.half2, weight)}
