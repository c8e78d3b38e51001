"""Clustering of subtomograms by alignment scores: all pairs + complete linkage, or K class references (large N)."""

from gumalign.cluster.pairwise import Clustering, complete_linkage, pair_indices, pairwise_scores
from gumalign.cluster.reference_based import ReferenceClustering, reference_based_clustering

__all__ = [
    "Clustering",
    "ReferenceClustering",
    "complete_linkage",
    "pair_indices",
    "pairwise_scores",
    "reference_based_clustering",
]
