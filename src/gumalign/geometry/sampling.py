"""Rotation sampling: uniform over SO(3), and small grids around the identity for local refinement."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniformly distributed (Haar) random rotations.

    Args:
        n: number of rotations.
        rng: the generator every draw comes from (same seed, same rotations).

    Returns:
        (n, 3, 3) float64 rotation matrices.
    """
    return Rotation.random(n, random_state=rng).as_matrix()


def rotation_grid_near_identity(max_angle_deg: float, step_deg: float) -> np.ndarray:
    """Rotations within ``max_angle_deg`` of the identity on a cubic grid of rotation vectors.

    The grid has spacing ``step_deg`` in each rotation-vector component and always holds the identity first, so a
    local search over it can never do worse than where it started.

    Returns:
        (M, 3, 3) float64 rotation matrices, the identity at index 0.
    """
    if step_deg <= 0 or max_angle_deg < 0:
        raise ValueError("step must be positive and the maximum angle non-negative")
    n = int(np.floor(max_angle_deg / step_deg + 1e-9))
    ticks = np.arange(-n, n + 1) * np.deg2rad(step_deg)
    vecs = np.stack(np.meshgrid(ticks, ticks, ticks, indexing="ij"), axis=-1).reshape(-1, 3)
    vecs = vecs[np.linalg.norm(vecs, axis=1) <= np.deg2rad(max_angle_deg) + 1e-9]
    order = np.argsort(np.linalg.norm(vecs, axis=1), kind="stable")
    return Rotation.from_rotvec(vecs[order]).as_matrix()
