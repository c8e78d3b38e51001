"""Fourier cropping: the band a method uses, at the box that band needs.

A method that only looks at frequencies |k| <= f (cycles per box) can do its work on a Fourier-cropped copy of the
volumes: the M³ volume whose spectrum is the N³ volume's spectrum at |k_i| < M/2 (the M/2 planes set to zero), i.e.
the same object sampled on a grid N/M times coarser. Frequency indices (cycles per box) are the same in both boxes, so
a band limit in cycles per box carries over unchanged; the real-space centre N//2 maps to M//2, and one voxel of the
cropped box is N/M voxels of the original. Values are scaled by (M/N)³ so that means (and the real-space amplitude
of the band) are kept.

``band_box`` picks M: twice the band's Nyquist (M = 4·⌈f⌉, even), so a correlation peak of the band spans about as
many cropped voxels as it does at 32³ with f = 8, the gumalign default, where M = N and nothing is cropped.
"""

from __future__ import annotations

import math

import torch

OVERSAMPLING = 4  # M = OVERSAMPLING·⌈f⌉: the band's Nyquist (2f) sampled twice over


def band_box(box: int, max_frequency: float | None) -> int:
    """The (even) box size M <= ``box`` that a band |k| <= ``max_frequency`` (cycles per box) is worked at.

    Returns ``box`` itself when there is no band limit or cropping would not make the box smaller.
    """
    if max_frequency is None:
        return int(box)
    size = OVERSAMPLING * int(math.ceil(float(max_frequency)))
    size += size % 2
    return int(box) if size >= box else int(size)


def fourier_crop(volumes: torch.Tensor, size: int) -> torch.Tensor:
    """Fourier-crop real volumes to ``size``³ (see the module docstring).

    Args:
        volumes: (..., N, N, N) real float tensor [z, y, x].
        size: M, even, 2 <= M <= N.

    Returns:
        (..., M, M, M) real tensor of the same dtype and device: the input itself when M == N. Its rfftn equals
        (M/N)³ times the input's at every frequency with |k_i| < M/2 (and is 0 on the M/2 planes).
    """
    n = volumes.shape[-1]
    if size == n:
        return volumes
    if size % 2 or not 2 <= size < n:
        raise ValueError(f"crop size must be even and between 2 and the box {n}, got {size}")
    dims = (-3, -2, -1)
    spectrum = torch.fft.rfftn(volumes, dim=dims)
    h = size // 2
    idx = torch.cat([torch.arange(0, h), torch.arange(n - h, n)]).to(volumes.device)  # 0..h-1, then -h..-1
    cropped = spectrum.index_select(-3, idx).index_select(-2, idx)[..., : h + 1].clone()
    cropped[..., h, :, :] = 0  # the ±M/2 planes: outside every band the crop serves, and not Hermitian here
    cropped[..., :, h, :] = 0
    cropped[..., :, :, h] = 0
    return torch.fft.irfftn(cropped, s=(size,) * 3, dim=dims).to(volumes.dtype) * (size / n) ** 3


def crop_centred(weights: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size``³ of centred Fourier-space cubes (zero frequency at N//2 -> at M//2).

    Args:
        weights: (..., N, N, N) centred (e.g. observed-region weights, RELION's rlnCtfImage cube).
        size: M, even, <= N.

    Returns:
        (..., M, M, M) view: frequencies -M/2 .. M/2 - 1 on each axis.
    """
    n = weights.shape[-1]
    if size == n:
        return weights
    start = n // 2 - size // 2
    stop = start + size
    return weights[..., start:stop, start:stop, start:stop]
