"""Unsupervised Gum-Net training: pair datasets (STAR + reference, pairs.star, simulated), the training loop with
per-epoch checkpoints and exact resume, and validation against ground truth when the data carry it."""

from gumalign.train.data import PairSet, pairs_from_pairs_star, pairs_from_particles, simulated_pairs, zscore
from gumalign.train.loop import Evaluation, TrainOptions, evaluate, keras_decayed_lr, plot_history, train_model

__all__ = [
    "Evaluation",
    "PairSet",
    "TrainOptions",
    "evaluate",
    "keras_decayed_lr",
    "pairs_from_pairs_star",
    "pairs_from_particles",
    "plot_history",
    "simulated_pairs",
    "train_model",
    "zscore",
]
