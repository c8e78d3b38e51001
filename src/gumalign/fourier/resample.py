"""Bring volumes of any box and voxel size to a model's sampling, and map results back.

A trained network sees an M³ box at voxel size m Å. Particles of N³ at v Å are brought there in two steps that keep
the box centre N // 2 on M // 2:

1. Fourier resizing to N' = the even integer nearest N·v/m (the same field of view N·v Å sampled at v' = N·v/N' Å):
   a crop of the spectrum when N' < N (gumalign.fourier.crop.fourier_crop), zero padding when N' > N. An even N'
   keeps the centre: index N // 2 at v Å and N' // 2 at v' Å are the same point, N·v/2.
2. A real-space crop or pad to M about the centre (padding with each volume's mean, so the z-score the network
   applies sees no step at the edge). The model then sees M·v' Å around the centre.

Centred Fourier weights (rlnCtfImage cubes, zero frequency at N // 2) follow the same frequencies: in cycles per Å a
weight at index k of the N³ cube lies at index k·M/N' of the M³ one; they are resampled trilinearly, and frequencies
beyond the particles' own Nyquist get weight 0 (nothing was observed there).

A shift of s voxels in the model's box is s·v'/v voxels of the particle's; rotations are the same at any sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gumalign.fourier.crop import fourier_crop


@dataclass(frozen=True)
class Resampling:
    """From particles of ``box``³ at ``voxel_size`` Å to a model's ``model_box``³ at ``model_voxel_size`` Å."""

    box: int
    voxel_size: float
    model_box: int
    model_voxel_size: float

    @property
    def resized_box(self) -> int:
        """N': the even box that holds the particle's field of view at (nearly) the model's voxel size."""
        size = self.box * self.voxel_size / self.model_voxel_size
        even = 2 * round(size / 2)
        return max(2, int(even))

    @property
    def working_voxel_size(self) -> float:
        """v' = N·v/N' Å: the voxel size the model actually sees (within half a voxel of N' of its own)."""
        return self.box * self.voxel_size / self.resized_box

    @property
    def shift_scale(self) -> float:
        """Particle voxels per model voxel."""
        return self.working_voxel_size / self.voxel_size

    @property
    def is_identity(self) -> bool:
        return self.box == self.model_box and self.resized_box == self.box

    def describe(self) -> str:
        return (f"{self.box}³ at {self.voxel_size:g} Å resampled to {self.resized_box}³ at "
                f"{self.working_voxel_size:.3g} Å and {'cropped' if self.resized_box > self.model_box else 'padded'} "
                f"to the model's {self.model_box}³ ({self.model_voxel_size:g} Å)")

    def volumes(self, volumes: torch.Tensor) -> torch.Tensor:
        """(B, N, N, N) -> (B, M, M, M) real volumes (steps 1 and 2 of the module docstring)."""
        return fit_box(fourier_resize(volumes, self.resized_box), self.model_box)

    def weights(self, weights: torch.Tensor) -> torch.Tensor:
        """(B or 1, N, N, N) centred Fourier weights -> (B or 1, M, M, M) at the same frequencies in cycles per Å."""
        return resample_centred(weights, self.model_box, self.resized_box / self.model_box, self.box)


def fourier_resize(volumes: torch.Tensor, size: int) -> torch.Tensor:
    """Real volumes (..., N, N, N) to (..., size, size, size) with the same field of view (``size`` even).

    Down: the spectrum's |k_i| < size/2 (fourier_crop). Up: the spectrum zero-padded, the N/2 planes set to zero
    (they are not Hermitian-split). Values scaled by (size/N)³ either way, so means are kept.
    """
    n = volumes.shape[-1]
    if size == n:
        return volumes
    if size % 2 or size < 2:
        raise ValueError(f"resize to an even box of at least 2, got {size}")
    if size < n:
        return fourier_crop(volumes, size)
    if n % 2:
        raise ValueError(f"Fourier padding needs an even box, got {n}")
    dims = (-3, -2, -1)
    spectrum = torch.fft.rfftn(volumes, dim=dims)
    h = n // 2
    padded = torch.zeros(*volumes.shape[:-3], size, size, size // 2 + 1, dtype=spectrum.dtype, device=volumes.device)
    low = torch.arange(0, h, device=volumes.device)
    high = torch.arange(n - h + 1, n, device=volumes.device)  # -h+1 .. -1 (the -h plane is dropped)
    src = torch.cat([low, high])
    dst = torch.cat([low, high - n + size])
    block = spectrum.index_select(-3, src).index_select(-2, src)[..., :h]
    padded[..., dst[:, None, None], dst[None, :, None], torch.arange(h, device=volumes.device)[None, None, :]] = block
    return torch.fft.irfftn(padded, s=(size,) * 3, dim=dims).to(volumes.dtype) * (size / n) ** 3


def fit_box(volumes: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop or pad (..., N, N, N) to (..., size³), keeping index N // 2 on size // 2; padding takes each
    volume's mean."""
    n = volumes.shape[-1]
    if size == n:
        return volumes
    if size < n:
        start = n // 2 - size // 2
        return volumes[..., start:start + size, start:start + size, start:start + size].contiguous()
    mean = volumes.mean(dim=(-3, -2, -1), keepdim=True)
    out = mean.expand(*volumes.shape[:-3], size, size, size).clone()
    start = size // 2 - n // 2
    out[..., start:start + n, start:start + n, start:start + n] = volumes
    return out


def resample_centred(weights: torch.Tensor, size: int, scale: float, source_box: int | None = None) -> torch.Tensor:
    """Centred cubes (..., N, N, N) sampled at index (k·scale) for every index k of a centred size³ cube (trilinear;
    0 beyond the source's frequencies, and beyond the Nyquist of ``source_box`` when given in the same units).

    ``scale`` = source indices per target index (N'/M for a crop to M of a box resized to N')."""
    n = weights.shape[-1]
    lead = weights.shape[:-3]
    w = weights.reshape(-1, 1, n, n, n).float()
    k = (torch.arange(size, device=weights.device, dtype=torch.float32) - size // 2) * scale
    # grid_sample's normalised coordinates: -1 and 1 are the centres of the first and last source voxels.
    coord = (k + n // 2) / (n - 1) * 2 - 1
    gz, gy, gx = torch.meshgrid(coord, coord, coord, indexing="ij")
    grid = torch.stack([gx, gy, gz], dim=-1)[None].expand(w.shape[0], size, size, size, 3)
    out = torch.nn.functional.grid_sample(w, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    out = out.reshape(*lead, size, size, size)
    if source_box is not None:
        # Indices of the resized box (k·scale) beyond the particle's own Nyquist (source_box/2) were never observed.
        kz, ky, kx = torch.meshgrid(k, k, k, indexing="ij")
        beyond = (kz.abs() > source_box / 2) | (ky.abs() > source_box / 2) | (kx.abs() > source_box / 2)
        out = out.masked_fill(beyond, 0.0)
    return out.to(weights.dtype)
