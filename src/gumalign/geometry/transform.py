"""Rigid transforms of batches of volumes with trilinear interpolation, on CPU or CUDA.

Convention (DESIGN.md): ``transform_volumes(v, R, s)`` rotates v about the box centre by R and then moves it by s:
``out(x) = v(Rᵀ·(x - c - s) + c)`` for (x, y, z) voxel coordinates x and centre c = (W//2, H//2, D//2).
So a particle made from a reference with RELION's matrix A and origin o (pixels) is
``transform_volumes(reference, A, -o)``; and ``transform_volumes(particle, Aᵀ, Aᵀ·o)`` undoes it.
Samples that fall outside the box are zero, as in the seed's transformer.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def box_centre(shape: tuple[int, ...]) -> np.ndarray:
    """Centre (x, y, z) in voxels of a [z, y, x] box: index N // 2 on every axis (RELION's convention)."""
    d, h, w = shape[-3:]
    return np.array([w // 2, h // 2, d // 2], dtype=np.float64)


def _voxel_grid_xyz(shape: tuple[int, int, int], device, dtype) -> torch.Tensor:
    """(D, H, W, 3) tensor of (x, y, z) coordinates relative to the box centre."""
    d, h, w = shape
    cx, cy, cz = box_centre(shape)
    z = torch.arange(d, device=device, dtype=dtype) - cz
    y = torch.arange(h, device=device, dtype=dtype) - cy
    x = torch.arange(w, device=device, dtype=dtype) - cx
    zz, yy, xx = torch.meshgrid(z, y, x, indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1)


def transform_volumes(
    volumes: torch.Tensor,
    rotations: torch.Tensor | np.ndarray,
    shifts: torch.Tensor | np.ndarray | None = None,
    outside: str = "zeros",
) -> torch.Tensor:
    """Rotate each volume about the box centre, then shift it; trilinear interpolation, zeros outside.

    Args:
        volumes: (B, D, H, W) or (D, H, W) float tensor, [z, y, x] order, on any device.
        rotations: (B, 3, 3) matrices acting on (x, y, z) column vectors. B may be 1 with B volumes or the reverse
            (broadcast).
        shifts: (B, 3) shifts in voxels, (x, y, z) order; None for no shift.
        outside: what a source outside the box takes: "zeros" (real-space volumes), or "border", the value of the
            nearest edge voxel (centred Fourier weights: gumalign.fourier.layout.rotate_centred).

    Returns:
        (B, D, H, W) tensor, same dtype and device as ``volumes``.
    """
    if volumes.ndim == 3:
        volumes = volumes[None]
    if volumes.ndim != 4:
        raise ValueError(f"volumes must be (B, D, H, W), got shape {tuple(volumes.shape)}")
    device, dtype = volumes.device, volumes.dtype
    rot = torch.as_tensor(rotations, dtype=dtype, device=device).reshape(-1, 3, 3)
    batch = max(volumes.shape[0], rot.shape[0])
    if shifts is None:
        sh = torch.zeros(1, 3, dtype=dtype, device=device)
    else:
        sh = torch.as_tensor(shifts, dtype=dtype, device=device).reshape(-1, 3)
    batch = max(batch, sh.shape[0])
    volumes = volumes.expand(batch, *volumes.shape[1:])
    rot = rot.expand(batch, 3, 3)
    sh = sh.expand(batch, 3)

    shape = tuple(volumes.shape[-3:])
    grid = _voxel_grid_xyz(shape, device, dtype)  # (D, H, W, 3)
    # Source position for each output voxel: Rᵀ (x - s), i.e. row-vector form (x - s) R.
    src = torch.einsum("dhwi,bij->bdhwj", grid, rot) - torch.einsum("bi,bij->bj", sh, rot)[:, None, None, None, :]
    d, h, w = shape
    centre = torch.as_tensor(box_centre(shape), dtype=dtype, device=device)
    sizes = torch.tensor([w, h, d], dtype=dtype, device=device)
    # align_corners=True maps -1 and +1 to the first and last voxel centres.
    norm = (src + centre) * (2.0 / (sizes - 1)) - 1.0
    if outside not in ("zeros", "border"):
        raise ValueError(f"outside must be 'zeros' or 'border', got {outside!r}")
    out = F.grid_sample(volumes[:, None], norm, mode="bilinear", padding_mode=outside, align_corners=True)
    return out[:, 0]
