"""Wedge-constrained correlation (Förster et al. 2008) and the FFT translation search every aligner shares.

Both volumes are compared only over Ω = R(w_ref)·w_particle, the overlap of the two observed regions, with the zero
frequency removed and each spectrum normalised to unit norm over Ω. For a reference rotated by A, the correlation at
every integer shift t comes from one inverse FFT: ``cc(t) = Σ_k Ω·P(k)·conj(R(k))·e^{+2πi k·t/N}`` peaks where
``particle ≈ shift(rotate(reference, A), t)``, the aligner convention of gumalign.align.base.

Weights are centred-layout observed-region weights; a rotation of a volume about the box centre rotates its Fourier
transform about the zero frequency by the same matrix, so the reference weight is rotated with the same transform
(without the shift: amplitude masks are shift-invariant), by gumalign.fourier.layout.rotate_weights.
"""

from __future__ import annotations

import numpy as np
import torch

from gumalign.fourier.layout import centred_to_rfft, rotate_weights
from gumalign.geometry.transform import transform_volumes


def as_tensor(array, device: torch.device | str | None = None, dtype=torch.float32) -> torch.Tensor:
    """numpy or torch -> torch tensor of ``dtype`` on ``device`` (no copy when already there)."""
    if isinstance(array, torch.Tensor):
        return array.to(device=device if device is not None else array.device, dtype=dtype)
    return torch.as_tensor(np.asarray(array), dtype=dtype, device=device)


def _batched(x: torch.Tensor) -> torch.Tensor:
    return x[None] if x.ndim == 3 else x


def _rfft_shift_phase(shape: tuple[int, int, int], shifts: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W//2+1) complex phase ramps e^{-2πi k·s/N} that move a volume by ``shifts`` (B, 3) xyz voxels."""
    d, h, w = shape
    dev, dt = shifts.device, shifts.dtype
    kz = torch.fft.fftfreq(d, device=dev, dtype=dt)[:, None, None]
    ky = torch.fft.fftfreq(h, device=dev, dtype=dt)[None, :, None]
    kx = torch.fft.rfftfreq(w, device=dev, dtype=dt)[None, None, :]
    sx, sy, sz = (shifts[:, i, None, None, None] for i in range(3))
    # Separable: the outer product of three 1D ramps (one 3D exp per call cost as much as the FFTs at 128³).
    two_pi_i = -2j * torch.pi
    return torch.exp(two_pi_i * kz * sz) * torch.exp(two_pi_i * ky * sy) * torch.exp(two_pi_i * kx * sx)


def _overlap_rfft(
    reference_weights: torch.Tensor,
    particle_weights: torch.Tensor,
    rotations: torch.Tensor,
    max_frequency: float | None,
) -> torch.Tensor:
    """Ω in rfft layout (B, D, H, W//2+1): rotated reference weight × particle weight, DC and beyond-band removed."""
    reference_weights = _batched(reference_weights)
    if bool(torch.all(reference_weights == 1.0)):
        # A fully observed reference (e.g. an average) stays fully observed under rotation: skip the resampling.
        rotated = reference_weights
    else:
        rotated = rotate_weights(reference_weights, rotations)
    omega = centred_to_rfft(rotated * _batched(particle_weights))
    d, h, w = omega.shape[-3:]
    kz = torch.fft.fftfreq(d, device=omega.device)[:, None, None] * d
    ky = torch.fft.fftfreq(h, device=omega.device)[None, :, None] * h
    kx = torch.fft.rfftfreq(2 * (w - 1), device=omega.device)[None, None, :] * 2 * (w - 1)
    radius = torch.sqrt(kz**2 + ky**2 + kx**2)
    keep = radius > 0
    if max_frequency is not None:
        keep = keep & (radius <= max_frequency)
    return omega * keep


def _hermitian_weights(shape: tuple[int, int, int], device) -> torch.Tensor:
    """rfft-layout multiplicities so that sums over the half spectrum equal sums over the full one."""
    w = shape[-1]
    mult = torch.full((w // 2 + 1,), 2.0, device=device)
    mult[0] = 1.0
    if w % 2 == 0:
        mult[-1] = 1.0
    return mult


def _normalise(spectrum: torch.Tensor, omega: torch.Tensor, mult: torch.Tensor) -> torch.Tensor:
    masked = spectrum * omega
    norm = torch.sqrt(torch.sum(mult * masked.abs() ** 2, dim=(-3, -2, -1), keepdim=True))
    return masked / norm.clamp_min(1e-20)


def _prepare(references, reference_weights, particles, particle_weights, rotations, max_frequency):
    particles = _batched(as_tensor(particles))
    device = particles.device
    references = _batched(as_tensor(references, device))
    rot = as_tensor(rotations, device).reshape(-1, 3, 3)
    rotated = transform_volumes(references, rot)
    omega = _overlap_rfft(as_tensor(reference_weights, device), as_tensor(particle_weights, device), rot, max_frequency)
    mult = _hermitian_weights(particles.shape[-3:], device)
    spec_p = _normalise(torch.fft.rfftn(particles, dim=(-3, -2, -1)), omega, mult)
    spec_r = _normalise(torch.fft.rfftn(rotated, dim=(-3, -2, -1)), omega, mult)
    return spec_p, spec_r, mult


def constrained_correlation(
    references,
    reference_weights,
    particles,
    particle_weights,
    rotations,
    shifts,
    *,
    max_frequency: float | None = None,
) -> torch.Tensor:
    """Wedge-constrained correlation of each particle with its reference rotated by A and then shifted.

    Args:
        references: (B, N, N, N) or (1, N, N, N) float [z, y, x].
        reference_weights: (B or 1, N, N, N) centred observed-region weights of the references.
        particles: (B, N, N, N) float [z, y, x]; their device is used for the computation.
        particle_weights: (B or 1, N, N, N) centred observed-region weights of the particles.
        rotations: (B, 3, 3) RELION matrices A.
        shifts: (B, 3) shifts in voxels (x, y, z), sub-voxel allowed (applied as a Fourier phase ramp).
        max_frequency: optional low-pass radius in cycles per box.

    Returns:
        (B,) float32 tensor of correlations in [-1, 1].
    """
    spec_p, spec_r, mult = _prepare(references, reference_weights, particles, particle_weights, rotations, max_frequency)
    return _score_at(spec_p, spec_r, mult, shifts)


def _score_at(spec_p, spec_r, mult, shifts) -> torch.Tensor:
    """Constrained correlation of prepared spectra (see :func:`_prepare`) at the given shifts (B, 3) voxels."""
    sh = as_tensor(shifts, spec_p.device).reshape(-1, 3)
    spec_r = spec_r * _rfft_shift_phase(tuple(spec_p.shape[-3:-1]) + (2 * (spec_p.shape[-1] - 1),), sh)
    return torch.sum(mult * (spec_p * spec_r.conj()).real, dim=(-3, -2, -1))


def _signed_index(index: torch.Tensor, n: int) -> torch.Tensor:
    return torch.where(index > n // 2, index - n, index)


def translation_search(
    references,
    reference_weights,
    particles,
    particle_weights,
    rotations,
    max_shift: float | None = None,
    *,
    max_frequency: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The best shift for each particle given its rotation, by FFT over all integer shifts plus a sub-voxel fit.

    Args: as :func:`constrained_correlation`, plus ``max_shift``: largest allowed shift length in voxels (None: half
    the box).

    Returns:
        shifts (B, 3) float32 (x, y, z) voxels and scores (B,) float32, the constrained correlation at that shift.
        The sub-voxel shift is kept only where it scores at least as well as the integer peak and stays within
        ``max_shift``.
    """
    spec_p, spec_r, mult = _prepare(references, reference_weights, particles, particle_weights, rotations, max_frequency)
    return _search_prepared(spec_p, spec_r, mult, max_shift)


def search_or_keep(
    references, reference_weights, particles, particle_weights, rotations, shifts, max_shift: float | None = None,
    *, max_frequency: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each particle the better (by constrained correlation, low-passed to ``max_frequency`` when given) of the
    FFT search's best shift and the given ``shifts`` (B, 3), with one rotation and one set of FFTs for both.
    Returns (shifts (B, 3), scores (B,))."""
    spec_p, spec_r, mult = _prepare(references, reference_weights, particles, particle_weights, rotations,
                                    max_frequency)
    found, found_score = _search_prepared(spec_p, spec_r, mult, max_shift)
    given = as_tensor(shifts, spec_p.device).reshape(-1, 3)
    given_score = _score_at(spec_p, spec_r, mult, given)
    keep = given_score > found_score
    return torch.where(keep[:, None], given, found), torch.where(keep, given_score, found_score)


def _search_prepared(spec_p, spec_r, mult, max_shift) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`translation_search` on prepared spectra (see :func:`_prepare`)."""
    d, h = spec_p.shape[-3:-1]
    w = 2 * (spec_p.shape[-1] - 1)
    n_vox = d * h * w
    cc = torch.fft.irfftn(spec_p * spec_r.conj(), s=(d, h, w), dim=(-3, -2, -1)) * n_vox
    # Shift of every index of the correlation volume (wrap-around -> signed).
    tz = _signed_index(torch.arange(d, device=cc.device), d)[:, None, None]
    ty = _signed_index(torch.arange(h, device=cc.device), h)[None, :, None]
    tx = _signed_index(torch.arange(w, device=cc.device), w)[None, None, :]
    limit = min(d, h, w) / 2 if max_shift is None else float(max_shift)
    allowed = (tx**2 + ty**2 + tz**2) <= limit**2 + 1e-6
    masked = torch.where(allowed, cc, torch.full_like(cc, -torch.inf))
    flat = masked.reshape(cc.shape[0], -1).argmax(dim=1)
    iz, iy, ix = flat // (h * w), (flat // w) % h, flat % w
    batch = torch.arange(cc.shape[0], device=cc.device)
    peak = cc[batch, iz, iy, ix]

    def parabola(minus, plus):
        denom = minus - 2 * peak + plus
        offset = torch.where(denom < 0, 0.5 * (minus - plus) / denom, torch.zeros_like(peak))
        return offset.clamp(-0.5, 0.5)

    dz = parabola(cc[batch, (iz - 1) % d, iy, ix], cc[batch, (iz + 1) % d, iy, ix])
    dy = parabola(cc[batch, iz, (iy - 1) % h, ix], cc[batch, iz, (iy + 1) % h, ix])
    dx = parabola(cc[batch, iz, iy, (ix - 1) % w], cc[batch, iz, iy, (ix + 1) % w])
    integer = torch.stack([_signed_index(ix, w), _signed_index(iy, h), _signed_index(iz, d)], dim=1).float()
    fine = integer + torch.stack([dx, dy, dz], dim=1)
    phase = _rfft_shift_phase((d, h, w), fine)
    fine_score = torch.sum(mult * (spec_p * (spec_r * phase).conj()).real, dim=(-3, -2, -1))
    better = (fine_score >= peak) & (fine.norm(dim=1) <= limit + 1e-6)  # the sub-voxel step may not leave max_shift
    shifts = torch.where(better[:, None], fine, integer)
    scores = torch.where(better, fine_score, peak)
    return shifts, scores
