"""Rotations about the coordinate axes, and the ZYZ product built from them: the one implementation.

Convention: right-handed rotations acting on (x, y, z) column vectors (left-multiply), angles in radians:
    Rx(a) = [[1, 0, 0], [0, cos a, -sin a], [0, sin a, cos a]]
    Ry(a) = [[cos a, 0, sin a], [0, 1, 0], [-sin a, 0, cos a]]
    Rz(a) = [[cos a, -sin a, 0], [sin a, cos a, 0], [0, 0, 1]]
A torch tensor in gives a torch tensor out (same dtype and device, differentiable: the network's output mapping uses
it); anything else is computed in numpy float64 (the samplers and the baselines' Euler grids, which are numpy by
design). Both follow the same formula, element for element.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["rotation_about_axis", "zyz_matrix"]


def rotation_about_axis(axis: str, angles_rad):
    """Right-handed rotations about one coordinate axis.

    Args:
        axis: 'x', 'y' or 'z'.
        angles_rad: (...) angles in radians: a torch tensor, or anything numpy reads.

    Returns:
        (..., 3, 3) rotation matrices on (x, y, z) column vectors: a torch tensor like ``angles_rad``, else float64
        numpy.
    """
    if isinstance(angles_rad, torch.Tensor):
        xp, a = torch, angles_rad
    else:
        xp, a = np, np.asarray(angles_rad, dtype=np.float64)
    c, s = xp.cos(a), xp.sin(a)
    one, zero = xp.ones_like(a), xp.zeros_like(a)
    if axis == "x":
        rows = ((one, zero, zero), (zero, c, -s), (zero, s, c))
    elif axis == "y":
        rows = ((c, zero, s), (zero, one, zero), (-s, zero, c))
    elif axis == "z":
        rows = ((c, -s, zero), (s, c, zero), (zero, zero, one))
    else:
        raise ValueError(f"axis must be 'x', 'y' or 'z', got {axis!r}")
    return xp.stack([xp.stack(row, -1) for row in rows], -2)


def zyz_matrix(phi, theta, psi):
    """R = Rz(φ)·Ry(θ)·Rz(ψ) (right-handed, on (x, y, z) column vectors).

    Args:
        phi, theta, psi: (...) angles in radians, all torch tensors or all numpy-readable.

    Returns:
        (..., 3, 3) matrices, torch or float64 numpy as :func:`rotation_about_axis`.

    Note: RELION's matrix of Euler angles (rot, tilt, psi) is the transpose, (Rz(rot)·Ry(tilt)·Rz(psi))ᵀ
    (gumalign.geometry.euler).
    """
    return rotation_about_axis("z", phi) @ rotation_about_axis("y", theta) @ rotation_about_axis("z", psi)
