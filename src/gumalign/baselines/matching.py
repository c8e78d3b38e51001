"""Wedge-constrained rotational matching of two spectra over SO(3), shared by H-T align and F&A align.

For a particle spectrum f with observed-region weight m1 and a reference spectrum g with weight m2, summed over
shells with weights w_r (the r² of the volume element),

    C12(R) = Σ_r w_r ∫ f·m1 · conj(Λ(R)(g·m2)),   C11(R) = Σ_r w_r ∫ |f|²·m1 · Λ(R)m2,   C22(R) = Σ_r w_r ∫ m1 · Λ(R)(|g|²·m2)

and the score Re C12 / sqrt(C11·C22) is the correlation of f and the rotated g over the overlap of both observed
regions (Xu et al. 2012 with f, g the amplitudes; Chen et al. 2013 with amplitudes for the coarse stage and the
complex spectra for the refinement). Λ(R) rotates a function on the sphere, (Λ(R)h)(u) = h(Rᵀu); the peak is at the
R that rotates the reference into the particle, RELION's A (gumalign.baselines.so3.grid_rotations maps grid indices
to it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gumalign.baselines.shells import FourierShells
from gumalign.baselines.so3 import cross_power, rotational_correlation


@dataclass
class ShellCoefficients:
    """Harmonic coefficients, each (B, R, L+1, 2L+1) complex, of the three functions one volume contributes."""

    signal: torch.Tensor  # f·m
    energy: torch.Tensor  # |f|²·m
    mask: torch.Tensor  # m


def sample_weights(shells: FourierShells, weights: torch.Tensor) -> torch.Tensor:
    """Observed-region weights on the shell points, (B, P), zero where the interpolation reaches an unobserved voxel.

    Without this, the wedge's edge would enter the correlation as a band of half-observed, damped samples that the
    rotated reference does not have, and pull the peak away from the true rotation (by several degrees in our tests
    with a 30° wedge).
    """
    sampled = shells.sample(weights[:, None])[:, 0]
    contaminated = shells.touches((weights <= 0).to(weights.dtype))
    return sampled * ~contaminated


def shell_coefficients(shells: FourierShells, spectra: torch.Tensor, weights: torch.Tensor) -> ShellCoefficients:
    """Sample spectra and weights on the shells and expand f·m, |f|²·m and m.

    Args:
        shells: the shells.
        spectra: (B, S, S, S) real or complex centred cubes (S = 2·shells.half + 1).
        weights: (B or 1, S, S, S) real centred cubes of the observed-region weights (already squared where the
            method squares them).

    Returns:
        ShellCoefficients; ``mask`` keeps the batch size of ``weights``.

    A shell point whose trilinear neighbourhood reaches into the unobserved region would mix observed values with
    the zeros of the missing wedge; such points get weight 0 (see :func:`sample_weights`).
    """
    if spectra.is_complex():
        parts = shells.sample(torch.stack([spectra.real, spectra.imag], dim=1))
        values = torch.complex(parts[:, 0], parts[:, 1])
    else:
        values = shells.sample(spectra[:, None])[:, 0]
    mask = sample_weights(shells, weights)
    products = torch.stack([values * mask, (values.abs() ** 2) * mask], dim=1)
    signal_energy = shells.analyse(products)
    return ShellCoefficients(signal_energy[:, 0], signal_energy[:, 1], shells.analyse(mask))


def signal_coefficients(shells: FourierShells, spectra: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Only the f·m coefficients (B, R, L+1, 2L+1), for re-matching a shifted spectrum whose energy is unchanged."""
    if spectra.is_complex():
        parts = shells.sample(torch.stack([spectra.real, spectra.imag], dim=1))
        values = torch.complex(parts[:, 0], parts[:, 1])
    else:
        values = shells.sample(spectra[:, None])[:, 0]
    return shells.analyse(values * sample_weights(shells, weights))


def normalisers(
    particle: ShellCoefficients, reference: ShellCoefficients, shell_weights: torch.Tensor, grid_size: int
) -> torch.Tensor:
    """sqrt(C11·C22) on the Euler grid, (B, n, n, n) (B = 1 when both sides are single), floored away from 0."""
    den1 = rotational_correlation(cross_power(particle.energy, reference.mask, shell_weights), grid_size)
    den2 = rotational_correlation(cross_power(particle.mask, reference.energy, shell_weights), grid_size)
    product = (den1 * den2).clamp_min(0)
    floor = 1e-12 * product.flatten(1).amax(dim=1).clamp_min(1e-30)
    return torch.sqrt(torch.maximum(product, floor[:, None, None, None]))


def constrained_score(
    particle_signal: torch.Tensor,
    reference_signal: torch.Tensor,
    normaliser: torch.Tensor,
    shell_weights: torch.Tensor,
    grid_size: int,
) -> torch.Tensor:
    """Re C12 / sqrt(C11·C22) on the n³ Euler grid.

    Args:
        particle_signal: (B, R, L+1, 2L+1) f·m coefficients; reference_signal: (B or 1, ...) g·m coefficients.
        normaliser: (B or 1, n, n, n) from :func:`normalisers`.

    Returns:
        (B, n, n, n) real scores.
    """
    numerator = rotational_correlation(cross_power(particle_signal, reference_signal, shell_weights), grid_size)
    return numerator / normaliser
