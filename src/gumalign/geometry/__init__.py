"""Rotations and rigid transforms in RELION's conventions.

Rotation matrices act on column vectors of (x, y, z) coordinates in voxels, about the box centre at index N // 2.
Volumes are indexed [z, y, x]. RELION's matrix A (from rlnAngleRot/Tilt/Psi) rotates the reference into the particle.
"""

from gumalign.geometry.euler import euler_to_matrix, matrix_to_euler
from gumalign.geometry.sampling import (
    aitom_rotations,
    best_constant_rotation,
    random_rotations,
    rotation_grid_near_identity,
)
from gumalign.geometry.transform import box_centre, transform_volumes
from gumalign.geometry.errors import rotation_error, translation_error

__all__ = [
    "euler_to_matrix",
    "matrix_to_euler",
    "random_rotations",
    "aitom_rotations",
    "best_constant_rotation",
    "rotation_grid_near_identity",
    "box_centre",
    "transform_volumes",
    "rotation_error",
    "translation_error",
]
