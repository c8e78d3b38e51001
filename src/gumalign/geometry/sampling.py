"""Rotation sampling: uniform over SO(3), aitom's non-uniform prior, small grids around the identity, a prior's best
constant guess."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from gumalign.geometry.axes import zyz_matrix


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


def aitom_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """Rotations drawn as aitom's sampler draws them: NOT Haar-uniform (see ../shared/REFERENCE.md, rotation priors).

    aitom/geometry/ang_loc.py (random_rotation_angle_zyz): U of numpy's SVD of a 3×3 matrix with entries uniform in
    [0, 1), turned into ZYZ angles (rotation_matrix_zyz_normalized_angle), and those angles back into a matrix
    (rotation_matrix_zyz: (Rz(φ)·Ry(θ)·Rz(ψ))ᵀ). With numpy on LAPACK/OpenBLAS, U has det +1 and an all-negative
    first column in ~99% of draws, so the draws crowd around a few orientations: the best constant guess scores a
    mean Frobenius error of ~1.32 instead of Haar's 2.40. Used to show how much of a table's low-SNR figure a prior
    alone explains; never to draw training or test rotations by default.

    Args:
        n: number of rotations.
        rng: the generator every draw comes from.

    Returns:
        (n, 3, 3) float64 rotation matrices (proper: det +1 whatever the sign of U's determinant, as aitom's angles).
    """
    u = np.linalg.svd(rng.random((n, 3, 3)))[0]
    cos_theta = np.clip(u[:, 2, 2], -1.0, 1.0)
    theta = np.arctan2(np.sqrt(1.0 - cos_theta**2), cos_theta)
    phi = np.arctan2(u[:, 2, 1], u[:, 2, 0])
    psi = np.arctan2(u[:, 1, 2], -u[:, 0, 2])
    pole = np.abs(cos_theta) >= 1.0 - 1e-10  # aitom's own guard against an ill-defined φ, ψ split
    theta[pole], phi[pole] = 0.0, 0.0
    psi[pole] = np.arctan2(u[pole, 0, 1], u[pole, 1, 1])
    matrices = zyz_matrix(phi, theta, psi)
    return np.ascontiguousarray(np.swapaxes(matrices, -1, -2))


def best_constant_rotation(rotations: np.ndarray) -> np.ndarray:
    """The one rotation C that minimises the mean Frobenius error ||R_i - C|| over a sample (a prior's best guess).

    Starts from the chordal mean (the rotation nearest to the sample's mean matrix, via SVD) and polishes it by
    Nelder–Mead on a rotation-vector perturbation; for a Haar-uniform sample every C is equally good (2.40).

    Args:
        rotations: (n, 3, 3) rotation matrices, a large sample of the prior (10⁴ draws pin the figure to ±0.01).

    Returns:
        (3, 3) float64 rotation matrix.
    """
    from scipy.optimize import minimize

    rotations = np.asarray(rotations, dtype=np.float64)
    u, _, vt = np.linalg.svd(rotations.mean(axis=0))
    start = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt

    def mean_error(rotvec: np.ndarray) -> float:
        guess = Rotation.from_rotvec(rotvec).as_matrix() @ start
        return float(np.sqrt(((rotations - guess) ** 2).sum(axis=(1, 2))).mean())

    best = minimize(mean_error, np.zeros(3), method="Nelder-Mead", options={"xatol": 1e-5, "fatol": 1e-7})
    return Rotation.from_rotvec(best.x).as_matrix() @ start
