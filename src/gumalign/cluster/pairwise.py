"""All-pairs alignment scores and complete-linkage hierarchical clustering.

For every pair i < j, particle j is aligned to particle i (references = particle i's, particles = particle j's, each
with its own observed-region weight) by any aligner (gumalign.align.base.Aligner); the pair's score is the aligner's
wedge-constrained correlation after alignment (AlignmentResult.scores). The matrix is symmetric with 1 on the diagonal.
Classes come from complete-linkage clustering (scipy.cluster.hierarchy) on the distance 1 - score, cut into K clusters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gumalign.average.stack import ParticleStack, iter_batches, load_all
from gumalign.distributed import SINGLE, World
from gumalign.errors import GumalignError
from gumalign.progress import Advance


def check_k(k: int, n: int) -> None:
    """K must be between 1 and the number of particles."""
    if k < 1:
        raise GumalignError(f"--k must be at least 1, got {k}")
    if k > n:
        raise GumalignError(f"--k {k} is larger than the number of particles ({n})")


def pair_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) of every pair i < j of n items, i-major order: n(n-1)/2 pairs."""
    i, j = np.triu_indices(n, k=1)
    return i.astype(int), j.astype(int)


def pairwise_scores(
    stack: ParticleStack,
    aligner,
    *,
    batch_size: int = 32,
    progress: Advance | None = None,
    world: World = SINGLE,
) -> np.ndarray:
    """Score every pair of particles by aligning one to the other.

    Args:
        stack: the particles and their centred weights (all are loaded into memory: N × N_box³ × 4 bytes).
        aligner: an object with the gumalign.align.base.Aligner ``align`` method.
        batch_size: pairs per call to the aligner.
        progress: called with the number of pairs done after each batch.
        world: under torchrun, each rank aligns its share of the pairs (whole batches of the single run, so the
            floats are the single run's: an aligner's result can depend on the other members of its batch) and the
            scores are gathered on every rank.

    Returns:
        (n, n) float64 symmetric score matrix, 1 on the diagonal.
    """
    volumes, weights = load_all(stack)
    n = len(volumes)
    first, second = pair_indices(n)
    mine = world.rows(len(first), batch_size)
    values = np.empty(len(mine), dtype=np.float64)
    shared = len(weights) == 1
    for batch in iter_batches(len(mine), batch_size):
        i, j = first[mine[batch]], second[mine[batch]]
        result = aligner.align(
            volumes[i],
            weights if shared else weights[i],
            volumes[j],
            weights if shared else weights[j],
        )
        values[batch] = np.asarray(result.scores, dtype=np.float64)
        if progress is not None:
            progress(len(batch))
    every = world.gather_shards(values, len(first), batch_size)  # rank order = pair order (shards are consecutive)
    scores = np.eye(n)
    scores[first, second] = every
    scores[second, first] = every
    return scores


@dataclass
class Clustering:
    """Classes of n particles.

    Attributes:
        labels: (n,) int class numbers 1..K (1 the largest class; ties by the smallest particle index).
        order: (n,) particle indices sorted by class, and within a class in dendrogram (or score) order, for plots.
    """

    labels: np.ndarray
    order: np.ndarray


def renumber_by_size(labels: np.ndarray) -> np.ndarray:
    """Class labels renumbered 1..K by decreasing size (ties: the class whose first member comes first)."""
    labels = np.asarray(labels)
    classes = list(dict.fromkeys(labels.tolist()))
    sizes = {c: int(np.sum(labels == c)) for c in classes}
    ranked = sorted(classes, key=lambda c: (-sizes[c], classes.index(c)))
    mapping = {c: rank + 1 for rank, c in enumerate(ranked)}
    return np.array([mapping[c] for c in labels.tolist()], dtype=int)


def complete_linkage(scores: np.ndarray, k: int) -> Clustering:
    """Complete-linkage hierarchical clustering of a symmetric score matrix into (at most) K classes.

    Args:
        scores: (n, n) symmetric similarity (e.g. constrained correlation), distance = 1 - score.
        k: number of classes, 1 <= k <= n.

    Returns:
        A Clustering; fewer than K classes only when ties in the distances leave no cut with exactly K.
    """
    from scipy.cluster.hierarchy import fcluster, leaves_list, linkage
    from scipy.spatial.distance import squareform

    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    check_k(k, n)
    if n == 1:
        return Clustering(labels=np.ones(1, dtype=int), order=np.zeros(1, dtype=int))
    distance = 1.0 - 0.5 * (scores + scores.T)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(np.clip(distance, 0.0, None), checks=False), method="complete")
    labels = renumber_by_size(fcluster(tree, t=k, criterion="maxclust"))
    leaves = leaves_list(tree)
    rank_in_tree = np.empty(n, dtype=int)
    rank_in_tree[leaves] = np.arange(n)
    order = np.lexsort((rank_in_tree, labels))
    return Clustering(labels=labels, order=order)
