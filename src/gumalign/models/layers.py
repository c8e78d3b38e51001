"""Gum-Net's parameter-free layers: channel-wise L2 normalisation and the feature correlation layer.

Feature maps are torch tensors (B, C, D, H, W), spatial axes in [z, y, x] order like the volumes they come from.
"""

from __future__ import annotations

import torch

# The original adds 1e-6 under the square root (aitom FeatureL2Norm.py), so an all-zero vector stays finite.
L2_EPSILON = 1e-6


def l2_normalise_channels(x: torch.Tensor) -> torch.Tensor:
    """Divide every voxel's channel vector by its L2 norm: (B, C, D, H, W) -> same shape.

    Computes x / sqrt(Σ_c x² + 1e-6), as the 2021 fix of the original (over channels, not a spatial axis).
    """
    return x / torch.sqrt(torch.sum(x * x, dim=1, keepdim=True) + L2_EPSILON)


def feature_correlation(f_a: torch.Tensor, f_b: torch.Tensor) -> torch.Tensor:
    """Correlation of every position of ``f_a`` with every position of ``f_b`` (aitom FeatureCorrelation.py).

    ``out[b, q, i, j, k] = Σ_c f_a[b, c, k, j, i] · f_b[b, c, q]`` where q is the raster (C-order) index of a position
    of ``f_b``'s (D, H, W) grid. The reversed (k, j, i) order of ``f_a``'s position is the original's
    (a transpose inherited from the 2D geometric-matching code); keeping it keeps the layer identical.

    Args:
        f_a: (B, C, D, H, W) features; D = H = W is required by the reversed indexing.
        f_b: (B, C, D', H', W') features.

    Returns:
        (B, D'·H'·W', D, H, W) correlation map: one channel per position of ``f_b``.
    """
    b, c, d, h, w = f_a.shape
    if not d == h == w:
        raise ValueError(f"feature correlation needs a cubic f_a grid, got {(d, h, w)}")
    if f_b.shape[:2] != (b, c):
        raise ValueError(f"f_a {tuple(f_a.shape)} and f_b {tuple(f_b.shape)} differ in batch or channels")
    a_flat = f_a.permute(0, 1, 4, 3, 2).reshape(b, c, d * h * w)  # position p = raster index of (k, j, i)
    b_flat = f_b.reshape(b, c, -1)
    corr = torch.einsum("bcp,bcq->bqp", a_flat, b_flat)
    return corr.reshape(b, b_flat.shape[-1], d, h, w)
