"""RELION's ZYZ Euler angles <-> rotation matrices.

RELION (src/euler.cpp, Euler_angles2matrix) builds A from (rot, tilt, psi) in degrees, rotating about z, then the new
y, then the new z (intrinsic, right-handed). A rotates the reference into the particle and equals
``scipy.spatial.transform.Rotation.from_euler('ZYZ', [rot, tilt, psi], degrees=True).as_matrix().T``.
The tests pin this against the written-out formula, scipy and the eulerangles package.
"""

from __future__ import annotations

import numpy as np


def euler_to_matrix(angles_deg: np.ndarray) -> np.ndarray:
    """RELION's matrix A for ZYZ Euler angles.

    Args:
        angles_deg: (..., 3) float array of (rot, tilt, psi) in degrees.

    Returns:
        (..., 3, 3) float64 rotation matrices that left-multiply (x, y, z) column vectors.
    """
    angles = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    if angles.shape[-1] != 3:
        raise ValueError(f"Euler angles must have a last axis of 3, got shape {angles.shape}")
    ca, sa = np.cos(angles[..., 0]), np.sin(angles[..., 0])
    cb, sb = np.cos(angles[..., 1]), np.sin(angles[..., 1])
    cg, sg = np.cos(angles[..., 2]), np.sin(angles[..., 2])
    cc, cs = cb * ca, cb * sa
    sc, ss = sb * ca, sb * sa
    a = np.empty(angles.shape[:-1] + (3, 3), dtype=np.float64)
    a[..., 0, 0] = cg * cc - sg * sa
    a[..., 0, 1] = cg * cs + sg * ca
    a[..., 0, 2] = -cg * sb
    a[..., 1, 0] = -sg * cc - cg * sa
    a[..., 1, 1] = -sg * cs + cg * ca
    a[..., 1, 2] = sg * sb
    a[..., 2, 0] = sc
    a[..., 2, 1] = ss
    a[..., 2, 2] = cb
    return a


def matrix_to_euler(matrices: np.ndarray) -> np.ndarray:
    """RELION's (rot, tilt, psi) in degrees for rotation matrices A, as Euler_matrix2angles does.

    tilt lies in [0, 180]; at the gimbal lock (tilt 0 or 180) rot is set to 0 and psi carries the in-plane angle.

    Args:
        matrices: (..., 3, 3) rotation matrices (RELION's A).

    Returns:
        (..., 3) float64 angles in degrees, rot and psi in (-180, 180].
    """
    a = np.asarray(matrices, dtype=np.float64)
    if a.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrices must end in (3, 3), got shape {a.shape}")
    abs_sb = np.sqrt(a[..., 0, 2] ** 2 + a[..., 1, 2] ** 2)
    regular = abs_sb > 16 * np.finfo(np.float64).eps
    tilt = np.where(regular, np.arctan2(abs_sb, a[..., 2, 2]), np.where(a[..., 2, 2] > 0, 0.0, np.pi))
    psi = np.where(regular, np.arctan2(a[..., 1, 2], -a[..., 0, 2]), 0.0)
    rot = np.where(regular, np.arctan2(a[..., 2, 1], a[..., 2, 0]), 0.0)
    # Gimbal lock: only rot + psi (tilt 0) or psi - rot (tilt 180) is defined; RELION keeps rot = 0.
    lock_psi = np.where(a[..., 2, 2] > 0, np.arctan2(-a[..., 1, 0], a[..., 0, 0]), np.arctan2(a[..., 1, 0], -a[..., 0, 0]))
    psi = np.where(regular, psi, lock_psi)
    return np.rad2deg(np.stack([rot, tilt, psi], axis=-1))
