"""Fourier spectra sampled on spherical shells and expanded in spherical harmonics, batched in torch.

Spectra here are centred cubes (zero frequency at index N // 2, RELION's rlnCtfImage layout) indexed [kz, ky, kx];
a shell of radius r holds the points r·u for the unit vectors u = (x, y, z) of a :class:`SphereGrid`. A rotation R
of a volume about its box centre rotates its spectrum by the same R, so the shell functions of a rotated volume are
Λ(R) of the original ones (gumalign.baselines.sph).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from gumalign.baselines.sph import SphereGrid


def centred_spectrum(volumes: torch.Tensor) -> torch.Tensor:
    """Fourier transform with the phase origin at the box centre, in the centred layout.

    fftshift(fftn(ifftshift(v))): a rotation about index N // 2 then rotates the complex spectrum itself (not only its
    amplitudes), which F&A's complex matching needs.

    Args:
        volumes: (B, N, N, N) real [z, y, x].

    Returns:
        (B, N, N, N) complex, [kz, ky, kx] centred.
    """
    dims = (-3, -2, -1)
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(volumes, dim=dims), dim=dims), dim=dims)


def amplitude_spectrum(volumes: torch.Tensor) -> torch.Tensor:
    """|FFT| in the centred layout with the zero frequency set to 0 (H-T's translation-invariant signal)."""
    dims = (-3, -2, -1)
    spectrum = torch.fft.fftn(volumes, dim=dims)
    spectrum[..., 0, 0, 0] = 0
    return torch.fft.fftshift(spectrum.abs(), dim=dims)


def centred_cube(spectra: torch.Tensor, half: int) -> torch.Tensor:
    """The (2h+1)³ cube of frequencies |k_i| <= h around the zero frequency, taken periodically.

    Periodic indexing both crops (h < N/2) and completes the +N/2 planes an even box lacks (they equal the -N/2 ones
    for a DFT), so every shell up to radius N/2 lies inside the cube.

    Args:
        spectra: (..., N, N, N) centred.
        half: h.

    Returns:
        (..., 2h+1, 2h+1, 2h+1), zero frequency at index h.
    """
    n = spectra.shape[-1]
    idx = (n // 2 + torch.arange(-half, half + 1, device=spectra.device)) % n
    return spectra[..., idx[:, None, None], idx[None, :, None], idx[None, None, :]]


def shell_phase_ramp(half: int, shifts: torch.Tensor, box: int) -> torch.Tensor:
    """e^{+2πi k·t/N} on the (2h+1)³ centred cube: multiplying a spectrum by it moves the volume by -t.

    Args:
        half: h of the cube; shifts: (B, 3) (x, y, z) voxels; box: N.

    Returns:
        (B, 2h+1, 2h+1, 2h+1) complex64.
    """
    k = torch.arange(-half, half + 1, device=shifts.device, dtype=torch.float32)
    tx, ty, tz = (shifts[:, i].float()[:, None, None, None] for i in range(3))
    # Cube axes are [kz, ky, kx].
    arg = k[None, None, None, :] * tx + k[None, None, :, None] * ty + k[None, :, None, None] * tz
    return torch.polar(torch.ones_like(arg), 2 * math.pi * arg / box)


def smooth_zero_frequency(cubes: torch.Tensor) -> torch.Tensor:
    """Replace the zero frequency of centred cubes by the mean of its six neighbours (a copy is returned).

    The zero frequency (the volume's mean) carries no orientation and is arbitrary in real data, so it is left out of
    the matching; setting it to 0 instead would leave a hole that the interpolation onto the shells r = 1 and 2 reads,
    differently for each orientation of the grid. Its neighbours' mean is what a smooth spectrum would have there.

    Args:
        cubes: (..., S, S, S) centred cubes, zero frequency at index S // 2.
    """
    h = cubes.shape[-1] // 2
    out = cubes.clone()
    neighbours = [out[..., h + dz, h + dy, h + dx] for dz, dy, dx in
                  ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))]
    out[..., h, h, h] = sum(neighbours) / 6
    return out


class FourierShells:
    """Spherical shells r = radii[i], each with its own harmonic degree and sampling grid.

    Args:
        radii: shell radii in cycles per box.
        degrees: harmonic degree L_r per shell (the coefficients of every shell are zero-padded to max(degrees)).
        grid_degrees: sampling grid degree per shell (>= L_r; see SphereGrid).

    Samples are trilinear. (Keys' cubic convolution was tried as well: it was no more accurate for either method on
    32³ test particles with a wedge, and its wider support excludes more samples next to the wedge.)
    """

    def __init__(self, radii, degrees, grid_degrees):
        if not (len(radii) == len(degrees) == len(grid_degrees)) or len(radii) == 0:
            raise ValueError("radii, degrees and grid_degrees must be non-empty and of one length")
        self.radii = np.asarray(radii, dtype=np.float64)
        self.degrees = [int(d) for d in degrees]
        self.max_degree = max(self.degrees)
        self.grids = [SphereGrid(d, g) for d, g in zip(self.degrees, grid_degrees)]
        self.half = int(math.ceil(self.radii.max())) + 1
        self._points = np.concatenate([r * g.directions for r, g in zip(self.radii, self.grids)])  # (P, 3) xyz
        self._sizes = [g.directions.shape[0] for g in self.grids]
        self._grid_cache: dict = {}

    @classmethod
    def integer_radii(cls, top: int, degree_of: Callable[[float], int]) -> FourierShells:
        """Shells at r = 1, 2, ..., ``top`` cycles per box, of degree ``degree_of(r)`` each, sampled on grids of degree
        max(L_r, ⌈π·r⌉): at least about one sample per voxel along the shell's circumference (2π·r voxels), so no
        voxel of the shell is skipped even where the harmonic degree is low. The one shell rule of H-T and F&A.
        """
        radii = np.arange(1, int(top) + 1, dtype=np.float64)
        degrees = [int(degree_of(r)) for r in radii]
        grid_degrees = [max(d, math.ceil(math.pi * r)) for d, r in zip(degrees, radii)]
        return cls(radii, degrees, grid_degrees)

    def _sample_grid(self, device) -> torch.Tensor:
        key = str(device)
        if key not in self._grid_cache:
            size = 2 * self.half + 1
            # grid_sample with align_corners=True: -1 and +1 are the centres of the first and last voxels.
            norm = (self._points + self.half) * (2.0 / (size - 1)) - 1.0
            self._grid_cache[key] = torch.as_tensor(norm, dtype=torch.float32, device=device)[None, None, None]
        return self._grid_cache[key]

    def sample(self, cubes: torch.Tensor) -> torch.Tensor:
        """Trilinear samples of real centred cubes on every shell point.

        Args:
            cubes: (B, C, S, S, S) real, S = 2·half + 1 (from :func:`centred_cube` with ``self.half``).

        Returns:
            (B, C, P) samples, shells one after another in ``radii`` order.
        """
        size = 2 * self.half + 1
        if tuple(cubes.shape[-3:]) != (size,) * 3:
            raise ValueError(f"cubes must be {size}³ centred cubes, got {tuple(cubes.shape[-3:])}")
        grid = self._sample_grid(cubes.device).expand(cubes.shape[0], -1, -1, -1, -1).to(cubes.dtype)
        out = F.grid_sample(cubes, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return out[:, :, 0, 0, :]

    def touches(self, indicator: torch.Tensor) -> torch.Tensor:
        """Whether each shell point's interpolation reaches a voxel where ``indicator`` is non-zero.

        Args:
            indicator: (B, S, S, S) real, non-negative.

        Returns:
            (B, P) bool.
        """
        # The trilinear weights are all positive inside the 2³ cell, so a zero sample means no touched voxel.
        grid = self._sample_grid(indicator.device).expand(indicator.shape[0], -1, -1, -1, -1)
        reach = F.grid_sample(indicator[:, None].float(), grid, mode="bilinear", padding_mode="zeros",
                              align_corners=True)[:, 0, 0, 0, :]
        return reach > 1e-6

    def analyse(self, samples: torch.Tensor) -> torch.Tensor:
        """Harmonic coefficients of shell samples.

        Args:
            samples: (..., P) real or complex, as returned by :meth:`sample` (or functions of those samples).

        Returns:
            (..., R, L+1, 2L+1) complex, L = max(degrees), [shell, l, m + L].
        """
        big_l = self.max_degree
        lead = samples.shape[:-1]
        out_dtype = torch.complex128 if samples.dtype in (torch.float64, torch.complex128) else torch.complex64
        out = torch.zeros(*lead, len(self.grids), big_l + 1, 2 * big_l + 1, dtype=out_dtype, device=samples.device)
        start = 0
        for i, (grid, size) in enumerate(zip(self.grids, self._sizes)):
            shell = samples[..., start : start + size].reshape(*lead, *grid.shape)
            start += size
            coeffs = grid.analyse(shell)
            deg = grid.degree
            out[..., i, : deg + 1, big_l - deg : big_l + deg + 1] = coeffs
        return out
