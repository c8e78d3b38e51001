"""When two voxel (pixel) sizes are the same: one tolerance for the whole package.

Voxel sizes arrive rounded: STAR files write them with four to six significant digits, MRC headers derive them from a
float32 cell size divided by the grid, EMDB maps are often given to three decimals. Two sizes within
:data:`VOXEL_SIZE_RTOL` (0.1 %) of each other are the same: the scale error that could hide is at most 0.06 voxels at
the edge of a 128-voxel box, well under the interpolation error of any alignment, while a real mismatch (a binned
reference, a wrong optics group: 1 % and up) is refused. Used for the optics groups of one STAR file, the three axes of
one MRC header, and particles against a reference.
"""

from __future__ import annotations

import numpy as np

__all__ = ["VOXEL_SIZE_RTOL", "same_voxel_size"]

VOXEL_SIZE_RTOL = 1e-3


def same_voxel_size(a, b):
    """Whether voxel sizes ``a`` and ``b`` (Å, any unit as long as it is one) are the same, elementwise.

    Symmetric and relative: ``|a - b| <= VOXEL_SIZE_RTOL · max(|a|, |b|)``, as ``math.isclose(a, b,
    rel_tol=VOXEL_SIZE_RTOL)``. Zero only equals zero (an unknown size is the caller's case to handle).

    Args:
        a, b: numbers or arrays that broadcast.

    Returns:
        A bool array of the broadcast shape (a numpy bool for two numbers).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.abs(a - b) <= VOXEL_SIZE_RTOL * np.maximum(np.abs(a), np.abs(b))
