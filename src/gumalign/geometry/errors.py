"""Alignment errors exactly as the seed defines them (DESIGN.md, Metrics)."""

from __future__ import annotations

import numpy as np


def rotation_error(r_true: np.ndarray, r_est: np.ndarray) -> np.ndarray:
    """Frobenius norm ||R_true - R_est|| = 2·sqrt(2)·sin(Δθ/2), from 0 to 2.83.

    Args:
        r_true, r_est: (..., 3, 3) rotation matrices (broadcast against each other).

    Returns:
        (...) float64 errors.
    """
    diff = np.asarray(r_true, dtype=np.float64) - np.asarray(r_est, dtype=np.float64)
    return np.sqrt(np.sum(diff**2, axis=(-2, -1)))


def translation_error(t_true: np.ndarray, t_est: np.ndarray) -> np.ndarray:
    """Euclidean distance between true and estimated shifts.

    Args:
        t_true, t_est: (..., 3) shifts in voxels (any consistent axis order).

    Returns:
        (...) float64 distances in voxels.
    """
    diff = np.asarray(t_true, dtype=np.float64) - np.asarray(t_est, dtype=np.float64)
    return np.sqrt(np.sum(diff**2, axis=-1))
