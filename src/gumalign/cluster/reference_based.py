"""Reference-based clustering for large N: align every particle to K class references, k-means style.

N·K alignments per round instead of N(N-1)/2. Start: K particles chosen farthest-first (the first at random from
``seed``, each next one the particle that scores lowest against every reference chosen so far), each particle its own
reference with its own weight. Each round: align every particle to every reference, assign it to the best-scoring class,
and replace each reference by the wedge-compensated average of its members in their alignment to it
(gumalign.average). A class left empty is re-seeded with the particle that fits its class worst. Stops when no
particle changes class, or after ``iterations`` rounds.

Under torchrun (``world``, gumalign.distributed) each rank aligns its contiguous share of the batches against every
reference and averages its shard of each class; the scores and poses are gathered and the class sums all-reduced, so
every rank follows the same rounds with the numbers of one process (alignments bit for bit, since every batch is the
single-process run's; class averages to float64 rounding of the summation order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gumalign.average.compensated import DEFAULT_REGULARISATION, average_particles
from gumalign.average.stack import ParticleStack, SubsetStack, iter_batches
from gumalign.cluster.pairwise import check_k, renumber_by_size
from gumalign.distributed import SINGLE, World
from gumalign.errors import GumalignError
from gumalign.progress import ProgressFactory, no_progress


@dataclass
class ReferenceClustering:
    """Result of reference-based clustering of n particles into K classes.

    Attributes:
        labels: (n,) class numbers 1..K (1 the largest).
        scores: (n, K) wedge-constrained correlation of each particle with each class reference of the last round
            (columns in class-number order).
        matrices: (n, 3, 3) RELION A of each particle against its own class reference.
        origins_px: (n, 3) RELION origins (x, y, z, pixels) against its own class reference.
        references: (K, N, N, N) float32 class averages of the final members (class-number order), each in the frame
            of the reference its members were aligned to, which is the frame ``matrices`` refer to.
        rounds: rounds run.
        converged: True when the last round changed no particle's class.
    """

    labels: np.ndarray
    scores: np.ndarray
    matrices: np.ndarray
    origins_px: np.ndarray
    references: np.ndarray
    rounds: int
    converged: bool

    @property
    def order(self) -> np.ndarray:
        """Particles sorted by class, then by decreasing score against their class."""
        own = self.scores[np.arange(len(self.labels)), self.labels - 1]
        return np.lexsort((-own, self.labels))


def _align_to_all(stack, references, aligner, batch_size, advance, world: World = SINGLE):
    """Align every particle to every reference: scores (n, K), matrices (n, K, 3, 3), origins (n, K, 3).

    With ``world`` each rank aligns its share of the batches (rows world.rows(n, batch_size)) and every rank gets
    all results."""
    n, k = len(stack), len(references)
    scores = np.zeros((n, k))
    matrices = np.zeros((n, k, 3, 3))
    origins = np.zeros((n, k, 3))
    mine = world.rows(n, batch_size)
    # Reference by reference, so the aligner sees one reference in a row (and can keep the work it did on it).
    for c, (reference, reference_weight) in enumerate(references):
        for batch in iter_batches(len(mine), batch_size):
            rows = mine[batch]
            volumes, weights = stack.load(rows)
            result = aligner.align(reference[None], reference_weight[None], volumes, weights)
            scores[rows, c] = result.scores
            matrices[rows, c] = result.rotations
            origins[rows, c] = -np.asarray(result.shifts)
            advance(len(rows))
    if world.size > 1:
        local = np.concatenate([scores[mine], matrices[mine].reshape(len(mine), -1), origins[mine].reshape(len(mine), -1)],
                               axis=1)
        gathered = world.gather_shards(local, n, batch_size)
        scores = gathered[:, :k]
        matrices = gathered[:, k : 10 * k].reshape(n, k, 3, 3)
        origins = gathered[:, 10 * k :].reshape(n, k, 3)
    return scores, matrices, origins


def _farthest_first(stack, aligner, k, rng, batch_size, advance, world: World = SINGLE) -> list[int]:
    n = len(stack)
    chosen = [int(rng.integers(n))]
    best = np.full(n, -np.inf)
    while len(chosen) < k:
        volume, weight = stack.load(np.array([chosen[-1]]))
        scores, _, _ = _align_to_all(stack, [(volume[0], weight[0])], aligner, batch_size, advance, world)
        best = np.maximum(best, scores[:, 0])
        best[chosen] = np.inf
        chosen.append(int(np.argmin(best)))
    return chosen


def reference_based_clustering(
    stack: ParticleStack,
    aligner,
    k: int,
    *,
    iterations: int = 5,
    seed: int = 0,
    batch_size: int = 32,
    device="cpu",
    regularisation: float | str = DEFAULT_REGULARISATION,
    progress: ProgressFactory | None = None,
    world: World = SINGLE,
) -> ReferenceClustering:
    """Cluster particles by alignment to K evolving class references (see module docstring).

    Args:
        stack: the particles and their centred weights.
        aligner: an object with the gumalign.align.base.Aligner ``align`` method.
        k: number of classes, 1 <= k <= n.
        iterations: most rounds of align-assign-average.
        seed: seeds the choice of the first reference.
        batch_size: particles per call to the aligner.
        device, regularisation: for the class averages (gumalign.average.average_particles).
        progress: ``progress(description, total)`` -> context manager yielding ``advance(n)``, or None (counting
            this rank's alignments and particles under torchrun).
        world: the ranks of a torchrun run (module docstring); every rank returns the whole clustering.
    """
    n = len(stack)
    check_k(k, n)
    if iterations < 1:
        raise GumalignError(f"--iterations must be at least 1, got {iterations}")
    progress = progress or no_progress
    rng = np.random.default_rng(seed)
    mine = len(world.rows(n, batch_size))
    with progress("choosing starting references", mine * (k - 1)) as advance:
        seeds = _farthest_first(stack, aligner, k, rng, batch_size, advance, world)
    volumes, weights = stack.load(np.array(seeds))
    references = [(volumes[c], weights[c] if len(weights) > 1 else weights[0]) for c in range(k)]

    labels = np.full(n, -1)
    converged = False
    rounds = 0
    for rounds in range(1, iterations + 1):
        with progress(f"round {rounds}/{iterations}: aligning to {k} references", mine * k) as advance:
            scores, matrices, origins = _align_to_all(stack, references, aligner, batch_size, advance, world)
        new_labels = np.argmax(scores, axis=1)
        for c in range(k):
            if not np.any(new_labels == c):
                # Re-seed an empty class with the particle that fits its own class worst.
                own = scores[np.arange(n), new_labels]
                counts = np.bincount(new_labels, minlength=k)
                movable = np.flatnonzero(counts[new_labels] > 1)
                new_labels[movable[np.argmin(own[movable])]] = c
        converged = bool(np.array_equal(new_labels, labels))
        labels = new_labels
        references = []
        averaging = sum(len(world.rows(int(np.sum(labels == c)), max(batch_size, 1))) for c in range(k))
        with progress(f"round {rounds}/{iterations}: averaging classes", averaging) as advance:
            for c in range(k):
                members = np.flatnonzero(labels == c)
                average = average_particles(
                    SubsetStack(stack, members),
                    matrices[members, c],
                    origins[members, c],
                    batch_size=max(batch_size, 1),
                    device=device,
                    regularisation=regularisation,
                    progress=advance,
                    world=world,
                )
                references.append((average.full, average.observed_weight()))
        if converged:
            break

    # Number classes by size; reorder the score columns and references to match.
    numbered = renumber_by_size(labels)
    column_of = {int(numbered[i]) - 1: int(labels[i]) for i in range(n)}
    columns = [column_of[c] for c in range(k)]
    rows = np.arange(n)
    return ReferenceClustering(
        labels=numbered,
        scores=scores[:, columns],
        matrices=matrices[rows, labels],
        origins_px=origins[rows, labels],
        references=np.stack([references[c][0] for c in columns]),
        rounds=rounds,
        converged=converged,
    )
