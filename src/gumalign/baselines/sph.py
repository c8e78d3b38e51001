"""Spherical harmonics on Gauss–Legendre grids and Wigner small-d matrices, for rotational matching.

Written here rather than taken from pyshtools: the two aligners need only a quadrature-based analysis on a fixed grid
(a φ-FFT and one Legendre contraction per shell, batched in torch so it runs on CPU or CUDA) and d^l(π/2), about 150
lines in all. pyshtools would add a compiled dependency whose defaults (real 4π-normalised harmonics, its own phase
and grid conventions, numpy only) would each need a conversion layer, and each such layer is a place for a silent sign
or conjugation error. The tests pin everything below against scipy's spherical harmonics and the closed-form Wigner
formula.

Conventions (used by every module of gumalign.baselines):
- Directions: θ polar angle from +z, φ azimuth from +x towards +y; u = (x, y, z) = (sinθ cosφ, sinθ sinφ, cosθ).
- Harmonics: complex, orthonormal over the sphere, Condon–Shortley phase, Y_lm(θ, φ) = N_lm P_l^m(cosθ) e^{imφ}
  (scipy.special.sph_harm_y).
- Coefficients of a function up to degree L: a (..., L+1, 2L+1) complex array indexed [l, m + L], zero where |m| > l.
- Rotating a function: (Λ(R) f)(u) = f(Rᵀ u) for a rotation matrix R acting on (x, y, z) column vectors. Then
  Λ(R) Y_lm = Σ_m' Y_lm' D^l_m'm(R) with D^l_m'm(Rz(α) Ry(β) Rz(γ)) = e^{-im'α} d^l_m'm(β) e^{-imγ}, Rz and Ry the
  usual right-handed (active) rotation matrices about z and y.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from scipy.special import sph_harm_y


def wigner_d(degree: int, beta: float) -> np.ndarray:
    """Wigner small-d matrix d^l(β) = <l m'| exp(-iβ J_y) |l m> for one degree l.

    Computed from the eigen-decomposition of the Hermitian matrix J_y (its eigenvalues are exactly -l..l), which is
    accurate to rounding for every degree this package uses (l < 128); no recursion whose errors grow with l.

    Args:
        degree: l >= 0.
        beta: rotation angle about y in radians.

    Returns:
        (2l+1, 2l+1) float64 array indexed [m' + l, m + l].
    """
    l = int(degree)
    m = np.arange(-l, l)  # J+ |l m> = sqrt(l(l+1) - m(m+1)) |l m+1>
    raise_elems = np.sqrt(l * (l + 1) - m * (m + 1.0))
    j_plus = np.diag(raise_elems, k=-1).astype(np.complex128)  # row m+1, column m
    j_y = (j_plus - j_plus.conj().T) / 2j
    eigvals, eigvecs = np.linalg.eigh(j_y)
    d = (eigvecs * np.exp(-1j * beta * eigvals)) @ eigvecs.conj().T
    return np.ascontiguousarray(d.real)


@lru_cache(maxsize=8)
def wigner_d_halfpi_table(max_degree: int) -> np.ndarray:
    """d^l(π/2) for l = 0..L, zero-padded into one (L+1, 2L+1, 2L+1) float64 array [l, m' + L, m + L]."""
    size = 2 * max_degree + 1
    table = np.zeros((max_degree + 1, size, size))
    for l in range(max_degree + 1):
        sl = slice(max_degree - l, max_degree + l + 1)
        table[l, sl, sl] = wigner_d(l, np.pi / 2)
    table.setflags(write=False)
    return table


@lru_cache(maxsize=64)
def _gauss_legendre(n_theta: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.legendre.leggauss(n_theta)  # nodes in cosθ, ascending
    return np.arccos(nodes[::-1]).copy(), weights[::-1].copy()


@lru_cache(maxsize=64)
def legendre_table(max_degree: int, theta: tuple[float, ...]) -> np.ndarray:
    """θ-part of the harmonics: Y_lm(θ_j, 0) for l <= L, |m| <= l, as a (L+1, 2L+1, J) float64 array (zero |m| > l)."""
    th = np.asarray(theta)
    table = np.zeros((max_degree + 1, 2 * max_degree + 1, th.size))
    for l in range(max_degree + 1):
        m = np.arange(-l, l + 1)
        table[l, max_degree - l : max_degree + l + 1] = sph_harm_y(l, m[:, None], th[None, :], 0.0).real
    table.setflags(write=False)
    return table


class SphereGrid:
    """A Gauss–Legendre × equispaced grid on the sphere and the harmonic analysis up to a degree L on it.

    The grid has ``grid_degree + 1`` polar nodes and ``2·grid_degree + 2`` azimuths, so the analysis is exact for any
    function of degree <= 2·grid_degree + 1 - L (in particular for functions band-limited to L when grid_degree >= L).
    Choosing grid_degree above L oversamples: content above L then aliases less into the coefficients.

    Attributes:
        degree: L, the highest degree of the analysis.
        theta: (J,) polar angles; phi: (K,) azimuths; both float64 radians.
        directions: (J·K, 3) float64 unit vectors (x, y, z), θ-major (the order of ``samples`` in :meth:`analyse`).
    """

    def __init__(self, degree: int, grid_degree: int | None = None):
        if degree < 0:
            raise ValueError(f"degree must be >= 0, got {degree}")
        self.degree = int(degree)
        self.grid_degree = max(int(grid_degree if grid_degree is not None else degree), self.degree)
        self.theta, self._gl_weights = _gauss_legendre(self.grid_degree + 1)
        n_phi = 2 * self.grid_degree + 2
        self.phi = 2 * np.pi * np.arange(n_phi) / n_phi
        st, ct = np.sin(self.theta)[:, None], np.cos(self.theta)[:, None]
        cp, sp = np.cos(self.phi)[None, :], np.sin(self.phi)[None, :]
        self.directions = np.stack(
            np.broadcast_arrays(st * cp, st * sp, ct * np.ones_like(cp)), axis=-1
        ).reshape(-1, 3)
        # Quadrature: ∫ f Ȳ dΩ = Σ_j w_j (2π/K) Σ_k f(θ_j, φ_k) e^{-imφ_k} N_lm P_l^m(cosθ_j).
        scaled = legendre_table(self.degree, tuple(self.theta)) * self._gl_weights * (2 * np.pi / n_phi)
        self._analysis_table = scaled  # (L+1, 2L+1, J)
        self._torch_tables: dict = {}

    @property
    def shape(self) -> tuple[int, int]:
        return (self.theta.size, self.phi.size)

    def _table(self, device, dtype) -> torch.Tensor:
        key = (str(device), dtype)
        if key not in self._torch_tables:
            self._torch_tables[key] = torch.as_tensor(self._analysis_table, device=device, dtype=dtype)
        return self._torch_tables[key]

    def analyse(self, samples: torch.Tensor) -> torch.Tensor:
        """Harmonic coefficients of functions sampled on this grid.

        Args:
            samples: (..., J, K) real or complex tensor, f(θ_j, φ_k) on the grid (J = len(theta), K = len(phi)).

        Returns:
            (..., L+1, 2L+1) complex tensor [l, m + L] (complex64 for float32 input, complex128 for float64).
        """
        big_l = self.degree
        if samples.is_complex():
            spectrum = torch.fft.fft(samples, dim=-1)  # Σ_k f e^{-2πi m k / K}
            m_index = torch.arange(-big_l, big_l + 1, device=samples.device) % samples.shape[-1]
            by_m = spectrum[..., m_index]  # (..., J, 2L+1)
        else:
            half = torch.fft.rfft(samples, dim=-1)[..., : big_l + 1]  # m = 0..L
            by_m = torch.cat([half[..., 1:].flip(-1).conj(), half], dim=-1)  # F(-m) = conj F(m) for real f
        real_dtype = torch.float64 if by_m.dtype == torch.complex128 else torch.float32
        table = self._table(samples.device, real_dtype)  # (L+1, 2L+1, J)
        # c[l, m] = Σ_j table[l, m, j] · F[j, m], on the real and imaginary parts at once.
        coeffs = torch.einsum("lmj,...jmc->...lmc", table, torch.view_as_real(by_m.contiguous()))
        return torch.view_as_complex(coeffs.contiguous())


def sh_synthesis(coefficients: np.ndarray, theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Evaluate Σ c_lm Y_lm(θ, φ) at arbitrary points (numpy, for checks; not used in the aligners' hot path).

    Args:
        coefficients: (L+1, 2L+1) complex [l, m + L].
        theta, phi: broadcastable arrays of polar and azimuthal angles in radians.

    Returns:
        complex array of the broadcast shape.
    """
    c = np.asarray(coefficients)
    big_l = c.shape[0] - 1
    theta, phi = np.broadcast_arrays(np.asarray(theta, dtype=np.float64), np.asarray(phi, dtype=np.float64))
    out = np.zeros(theta.shape, dtype=np.complex128)
    for l in range(big_l + 1):
        for m in range(-l, l + 1):
            coef = c[l, m + big_l]
            if coef != 0:
                out += coef * sph_harm_y(l, m, theta, phi)
    return out


def directions_to_angles(directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 3) unit vectors (x, y, z) -> polar θ in [0, π] and azimuth φ in [0, 2π)."""
    d = np.asarray(directions, dtype=np.float64)
    theta = np.arccos(np.clip(d[..., 2], -1.0, 1.0))
    phi = np.mod(np.arctan2(d[..., 1], d[..., 0]), 2 * np.pi)
    return theta, phi
