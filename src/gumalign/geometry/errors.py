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


def rotation_error_sym(r_true: np.ndarray, r_est: np.ndarray, group_or_ops) -> np.ndarray:
    """Rotation error against the nearest symmetry mate: min over k of ||R_true - R_est·S_k||_F (DESIGN.md, Metrics).

    For a reference with point group G the orientations A and A·S (S in G) make the same particle
    (gumalign.geometry.symmetry), so an estimate that is a mate of the truth scores 0. For 'C1' this is
    :func:`rotation_error`.

    Args:
        r_true, r_est: (..., 3, 3) RELION matrices A (broadcast against each other).
        group_or_ops: a group name ('C1', 'D7', 'I', ...) or (K, 3, 3) operators, identity first.

    Returns:
        (...) float64 errors, 0 to 2.83.
    """
    from gumalign.geometry.symmetry import symmetry_mates

    t = np.asarray(r_true, dtype=np.float64)
    mates = symmetry_mates(r_est, group_or_ops)  # (..., K, 3, 3)
    return rotation_error(t[..., None, :, :], mates).min(axis=-1)


def closest_mate(r_true: np.ndarray, r_est: np.ndarray, group_or_ops) -> np.ndarray:
    """The symmetry mate R_est·S_k of each estimate that is closest to R_true (the one rotation_error_sym scores).

    Deterministic: ties (within 1e-9) are broken as gumalign.geometry.symmetry.asymmetric_unit_mate does.

    Args:
        r_true, r_est: (..., 3, 3) rotation matrices (broadcast against each other).
        group_or_ops: a group name or (K, 3, 3) operators.

    Returns:
        (..., 3, 3) float64; ``rotation_error(r_true, closest_mate(...)) == rotation_error_sym(r_true, r_est, ...)``.
    """
    from gumalign.geometry.symmetry import asymmetric_unit_mate

    t = np.asarray(r_true, dtype=np.float64)
    e = np.asarray(r_est, dtype=np.float64)
    shape = np.broadcast_shapes(t.shape, e.shape)
    return asymmetric_unit_mate(np.broadcast_to(e, shape), group_or_ops, prior=np.broadcast_to(t, shape))
