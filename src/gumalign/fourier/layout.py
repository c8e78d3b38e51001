"""Fourier layouts and the rotation of centred Fourier weights: one implementation each (layouts: gumalign.fourier).

``centred_to_rfft`` and ``rfft_to_centred`` move weights between the centred N³ cube (RELION's rlnCtfImage layout)
and torch/numpy's rfftn half (N, N, N//2 + 1). ``rotate_weights`` rotates centred observed-region weights about the
zero frequency, the one boundary rule for every caller (the network's imputation, the wedge-constrained score, the
compensated average):

    out(k) = w(Rᵀk), trilinear; a source Rᵀk outside the N³ cube takes the value of the nearest cube edge.

A volume rotated by R about the box centre has its transform rotated by R about the zero frequency, so this is the
observed region of the rotated volume (a shift changes only phases, so weights take no translation). Rᵀk leaves the
cube only for |k| > N/2 - 1, the corners beyond the Nyquist sphere, which no rotation can fill with measured data;
what the rule decides is whether those corners count as observed. Replicating the edge (as the original Gum-Net's
index clipping does) keeps a fully observed volume fully observed at every rotation: a cube of ones stays a cube of
ones, which is what the callers' shortcuts for an all-ones weight (the imputation, the score) already assume. Zero
fill would mark the corners unobserved by an amount that depends on R (none at 0°, most near 45°): the network's
imputation would hand them to s_b and reward rotations that push more of the mask out of the cube, a compensated
average of fully observed particles would lose its corners while the plain mean keeps them, and a score would use
fewer frequencies at some rotations than at others. tests/test_kernels.py pins these properties.

Torch kernels; a numpy array given to :func:`centred_to_rfft` comes back as numpy. :func:`rfft_to_centred` is numpy
(it serves file readers and the averages' coverage map, which are numpy by design).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["centred_to_rfft", "rfft_to_centred", "rotate_centred", "rotate_weights"]


def centred_to_rfft(weights):
    """A centred N³ cube (zero frequency at index N // 2 on every axis) in rfftn layout (..., N, N, N//2 + 1).

    Args:
        weights: (..., N, N, N) torch tensor (any dtype or device) or numpy array.

    Returns:
        The same type: a view of the unshifted cube's first N//2 + 1 x-columns (numpy: a contiguous copy).
    """
    import torch

    if not isinstance(weights, torch.Tensor):
        return np.ascontiguousarray(centred_to_rfft(torch.from_numpy(np.asarray(weights))).numpy())
    unshifted = torch.fft.ifftshift(weights, dim=(-3, -2, -1))
    return unshifted[..., : weights.shape[-1] // 2 + 1]


def rfft_to_centred(weights: np.ndarray, width: int) -> np.ndarray:
    """An rfftn-layout weight array back to a centred cube with real-space width ``width``, using Hermitian symmetry.

    Weights are real and symmetric (w(k) = w(-k)), so the missing half is the mirror of the stored one.

    Args:
        weights: (..., D, H, width//2 + 1) numpy array.
        width: the real-space x size (the rfft half does not say whether it was even or odd).

    Returns:
        (..., D, H, width) centred numpy array of the same dtype.
    """
    d, h, half = weights.shape[-3:]
    full = np.zeros(weights.shape[:-3] + (d, h, width), dtype=weights.dtype)
    full[..., :half] = weights
    # Negative kx columns: w(kz, ky, -kx) = w(-kz, -ky, kx).
    neg = np.arange(half, width)
    src = width - neg
    mirrored = weights[..., src]
    mirrored = np.roll(np.flip(mirrored, axis=(-3, -2)), shift=(1, 1), axis=(-3, -2))
    full[..., half:] = mirrored
    return np.fft.fftshift(full, axes=(-3, -2, -1))


def rotate_centred(values: "torch.Tensor", rotations: "torch.Tensor") -> "torch.Tensor":
    """Rotate centred Fourier-space values about the zero frequency: out(k) = values(Rᵀk), trilinear, sources outside
    the cube taking the nearest edge value (the module docstring says why). No clamping: for signed values (a CTF).

    Args:
        values: (B or 1, N, N, N) real tensor, centred layout, any float dtype and device.
        rotations: (B, 3, 3) matrices R on (x, y, z) column vectors (the rotation applied to the volume in real space),
            or (3, 3); broadcast against ``values`` as in gumalign.geometry.transform_volumes.

    Returns:
        (B, N, N, N) tensor, dtype and device of ``values``; differentiable in both arguments.
    """
    from gumalign.geometry.transform import transform_volumes

    # grid_sample's 'border' clamps each source coordinate to the cube: for trilinear sampling that is the value of
    # the nearest edge voxel, the same as replicate-padding the cube first, without resampling a padded cube
    # (58³ for 32³: 6× the work).
    return transform_volumes(values, rotations, outside="border")


def rotate_weights(weights: "torch.Tensor", rotations: "torch.Tensor") -> "torch.Tensor":
    """Observed-region weights (B or 1, N, N, N), centred, rotated about the zero frequency by R: out(k) = w(Rᵀk).

    :func:`rotate_centred` clamped to [0, 1]: soft trilinear weights, not thresholded, so they stay differentiable
    in R (the network's transformer needs that). To bring a particle's weight into the reference frame of RELION's
    matrix A, pass Aᵀ.

    Returns:
        (B, N, N, N) tensor in [0, 1], dtype and device of ``weights``.
    """
    return rotate_centred(weights, rotations).clamp(0.0, 1.0)
