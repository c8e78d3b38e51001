"""Real-space correlation of volumes and the seed's SNR measure."""

from __future__ import annotations

import numpy as np


def pearson(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray | float:
    """Pearson correlation of two volumes (or batches of them), optionally within a mask.

    Args:
        a, b: (..., D, H, W) float arrays [z, y, x], broadcastable; the last three axes are correlated.
        mask: optional (D, H, W) weights in [0, 1]; voxels are weighted by it (a binary mask selects them).

    Returns:
        A float for single volumes, else a (...,) float64 array. 0 where either volume is constant.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    w = np.ones(a.shape[-3:]) if mask is None else np.asarray(mask, dtype=np.float64)
    axes = (-3, -2, -1)
    total = w.sum()
    mean_a = (a * w).sum(axis=axes, keepdims=True) / total
    mean_b = (b * w).sum(axis=axes, keepdims=True) / total
    da, db = a - mean_a, b - mean_b
    num = (w * da * db).sum(axis=axes)
    den = np.sqrt((w * da**2).sum(axis=axes) * (w * db**2).sum(axis=axes))
    out = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return float(out) if out.ndim == 0 else out


def snr_from_correlation(c: np.ndarray | float) -> np.ndarray | float:
    """The seed's SNR of two aligned noisy copies of one structure: c / (1 - c), c their Pearson correlation.

    c >= 1 gives inf; negative c gives a negative value (no measurable signal).
    """
    c = np.asarray(c, dtype=np.float64)
    with np.errstate(divide="ignore"):
        out = np.where(c < 1.0, c / np.where(c < 1.0, 1.0 - c, 1.0), np.inf)
    return float(out) if out.ndim == 0 else out


def measured_snr(copy1: np.ndarray, copy2: np.ndarray, mask: np.ndarray | None = None) -> float:
    """SNR of one structure measured from two aligned copies with independent noise (the seed's check)."""
    return snr_from_correlation(pearson(copy1, copy2, mask))
