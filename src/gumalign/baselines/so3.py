"""Fast rotational matching: the correlation of two functions on the sphere over all of SO(3) by one 3D FFT.

For f, g with harmonic coefficients f_lm, g_lm (conventions in gumalign.baselines.sph), the correlation

    C(R) = ∫ f(u) · conj(g(Rᵀ u)) du = Σ_l Σ_m'm f_lm' conj(g_lm) conj(D^l_m'm(R))

peaks at the rotation R that carries g onto f. Writing R = Rz(α) Ry(β) Rz(γ) and factoring Ry(β) through rotations
by π/2 (Kovacs & Wriggers 2002), Ry(β) = Rz(-π/2) Ry(-π/2) Rz(β) Ry(π/2) Rz(π/2), gives with Δ^l = d^l(π/2)

    d^l_m'm(β) = i^(m'-m) Σ_h Δ^l_hm' Δ^l_hm e^{-ihβ}
    C(α, β, γ) = Σ_m'hm T(m', h, m) e^{i(m'α - hβ + mγ)},   T(m', h, m) = Σ_l i^(m'-m) Δ^l_hm' Δ^l_hm I_l(m', m)

with I_l(m', m) = f_lm' conj(g_lm) (summed over shells with their weights). So an inverse FFT of T gives C on the
n³ Euler grid α_i = 2πi/n, β_j = 2πj/n, γ_k = 2πk/n, all three periodic on [0, 2π): β in (π, 2π) describes the same
rotations again (R(α, β, γ) = R(α + π, 2π - β, γ + π)), which keeps the grid a torus for peak finding.
Grid index -> rotation: :func:`grid_rotations` (R = Rz(α)·Ry(β)·Rz(γ), the matrix that rotates g onto f).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from gumalign.baselines.sph import wigner_d_halfpi_table
from gumalign.geometry.axes import zyz_matrix


def fft_friendly_size(minimum: int) -> int:
    """Smallest n >= minimum whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    n = max(int(minimum), 1)
    while True:
        rest = n
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return n
        n += 1


def euler_grid_size(max_degree: int, minimum: int | None = None) -> int:
    """Euler grid size n for degree L: FFT-friendly, >= 2L+1 (no aliasing of |m| <= L) and >= ``minimum``."""
    return fft_friendly_size(max(2 * max_degree + 1, minimum or 0))


def cross_power(c1: torch.Tensor, c2: torch.Tensor, shell_weights: torch.Tensor) -> torch.Tensor:
    """I_l(m', m) = Σ_r w_r · c1[r, l, m'] · conj(c2[r, l, m]).

    Args:
        c1, c2: (B, R, L+1, 2L+1) complex coefficients per shell (either may have B = 1: broadcast).
        shell_weights: (R,) real weights (r² quadrature over the radius).

    Returns:
        (B, L+1, 2L+1, 2L+1) complex tensor [b, l, m' + L, m + L].
    """
    weighted = c1 * shell_weights.to(device=c1.device, dtype=c1.real.dtype)[:, None, None]
    batch = max(c1.shape[0], c2.shape[0])
    weighted = weighted.expand(batch, *weighted.shape[1:])
    c2 = c2.expand(batch, *c2.shape[1:])
    return torch.einsum("brlp,brlm->blpm", weighted, c2.conj())


@lru_cache(maxsize=16)
def _delta_tensor(max_degree: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(wigner_d_halfpi_table(max_degree), device=device, dtype=dtype)


# Largest (2L+1)²(L+1)² table of Wigner products kept for the matrix-product path (L = 36 needs 7.3 M entries).
_MAX_PRODUCT_TABLE = 40_000_000


@lru_cache(maxsize=4)
def _wigner_products(max_degree: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """W[m', m, l, h] = Δ^l_hm' · Δ^l_hm for m >= 0, as a (2L+1, L+1, L+1, 2L+1) tensor."""
    delta = torch.tensor(wigner_d_halfpi_table(max_degree), dtype=torch.float64)
    table = torch.einsum("lhp,lhm->pmlh", delta, delta[:, :, max_degree:])
    return table.to(device=device, dtype=dtype).contiguous()


def _euler_half_spectrum(cross: torch.Tensor) -> torch.Tensor:
    """T(m', h, m) = Σ_l i^(m'-m) Δ^l_hm' Δ^l_hm I_l(m', m) for m >= 0, as (B, 2L+1, 2L+1, L+1) [m'+L, h+L, m].

    C is real (the shell functions of real volumes are Hermitian, f(-u) = conj f(u)), so T(-k) = conj T(k) and the
    m < 0 half carries nothing new: a real inverse FFT over m needs only m >= 0, halving this work and the FFT.
    For each (m', m) the sum over l is one real matrix product, batched over (m', m) with a cached table of the Wigner
    products; for very high degrees (a table over ~160 MB) a loop over l does the same sum.
    """
    batch, n_l, size, _ = cross.shape
    big_l = n_l - 1
    real_dtype = cross.real.dtype
    m = torch.arange(-big_l, big_l + 1, device=cross.device)
    powers_of_i = torch.tensor([1, 1j, -1, -1j], dtype=cross.dtype, device=cross.device)
    phase = powers_of_i[(m[:, None] - m[None, big_l:]) % 4]  # i^(m'-m) for m >= 0, exact
    weighted = cross[:, :, :, big_l:] * phase  # [b, l, m', m >= 0]
    if size * size * n_l * n_l <= _MAX_PRODUCT_TABLE:
        table = _wigner_products(big_l, cross.device, real_dtype)  # [m', m, l, h]
        # (m', m) batches of (b·re/im, l) @ (l, h)
        lhs = torch.view_as_real(weighted).permute(2, 3, 0, 4, 1).reshape(size * n_l, batch * 2, n_l)
        product = torch.bmm(lhs, table.reshape(size * n_l, n_l, size))  # (m'·m, b·2, h)
        product = product.reshape(size, n_l, batch, 2, size).permute(2, 0, 4, 1, 3).contiguous()
        return torch.view_as_complex(product)
    delta = _delta_tensor(big_l, cross.device, real_dtype)
    spectrum = torch.zeros(batch, size, size, big_l + 1, dtype=cross.dtype, device=cross.device)
    for l in range(big_l + 1):
        sl = slice(big_l - l, big_l + l + 1)
        d = delta[l, sl, sl]  # [h, m]
        outer = d.T[:, :, None] * d[None, :, l:]  # [m', h, m >= 0] = Δ_hm' Δ_hm
        spectrum[:, sl, sl, : l + 1] += weighted[:, l, sl, : l + 1][:, :, None, :] * outer
    return spectrum


def rotational_correlation(cross: torch.Tensor, grid_size: int) -> torch.Tensor:
    """C(α_i, β_j, γ_k) on the n³ Euler grid from the cross power I (see :func:`cross_power`).

    Args:
        cross: (B, L+1, 2L+1, 2L+1) complex, the cross power of Hermitian shell functions (those of real volumes).
        grid_size: n >= 2L+1.

    Returns:
        (B, n, n, n) real tensor.
    """
    big_l = cross.shape[1] - 1
    n = int(grid_size)
    if n < 2 * big_l + 1:
        raise ValueError(f"Euler grid of {n} points aliases degree {big_l}; need at least {2 * big_l + 1}")
    spectrum = _euler_half_spectrum(cross)
    m = torch.arange(-big_l, big_l + 1, device=cross.device)
    placed = torch.zeros(cross.shape[0], n, n, n // 2 + 1, dtype=cross.dtype, device=cross.device)
    # e^{+im'α} and e^{+imγ} are inverse-DFT kernels; e^{-ihβ} is one too at index -h.
    placed[:, (m % n)[:, None], (-m % n)[None, :], : big_l + 1] = spectrum
    return torch.fft.irfftn(placed, s=(n, n, n), dim=(-3, -2, -1), norm="forward")


def grid_rotations(indices: np.ndarray, grid_size: int) -> np.ndarray:
    """Rotation matrices of (possibly fractional) Euler-grid indices (i, j, k).

    Index (i, j, k) of an n³ grid means α = 2πi/n, β = 2πj/n, γ = 2πk/n and R = Rz(α)·Ry(β)·Rz(γ), acting on (x, y, z)
    column vectors: the rotation that carries the second function of the correlation onto the first.

    Args:
        indices: (..., 3) float array of grid indices.
        grid_size: n.

    Returns:
        (..., 3, 3) float64 rotation matrices.
    """
    angles = 2 * np.pi * np.asarray(indices, dtype=np.float64) / grid_size
    return zyz_matrix(angles[..., 0], angles[..., 1], angles[..., 2])


def local_maxima(score: torch.Tensor, window: int) -> torch.Tensor:
    """Grid points that are the maximum of their periodic window³ neighbourhood.

    Args:
        score: (B, n, n, n) real.
        window: odd neighbourhood width.

    Returns:
        (B, n, n, n) bool.
    """
    half = window // 2
    dilated = score
    for dim in (1, 2, 3):  # a box maximum is separable: one periodic running maximum per axis
        moved = dilated.movedim(dim, -1)
        shape = moved.shape
        rows = moved.reshape(-1, 1, shape[-1])
        wrapped = torch.cat([rows[..., shape[-1] - half :], rows, rows[..., :half]], dim=-1)
        dilated = F.max_pool1d(wrapped, window, stride=1).reshape(shape).movedim(-1, dim)
    return score >= dilated


def refine_peaks(score: torch.Tensor, batch: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-grid peak positions by a quadratic fit to the 3³ periodic neighbourhood of each grid peak.

    The full quadratic (gradient and Hessian by central differences, as PyTom's find_subpixel_peak_position) is used
    where it is negative definite and moves the peak by less than one grid step on every axis; elsewhere (e.g. along
    the α-γ ridge near β = 0, where only α + γ matters) each axis gets its own parabola, clamped to half a step.

    Args:
        score: (B, n, n, n) real.
        batch: (K,) long, which score volume each peak is in.
        index: (K, 3) long grid indices of the peaks.

    Returns:
        (K, 3) float fractional indices and (K,) interpolated peak values.
    """
    n = score.shape[-1]

    def at(di, dj, dk):
        return score[batch, (index[:, 0] + di) % n, (index[:, 1] + dj) % n, (index[:, 2] + dk) % n]

    centre = at(0, 0, 0)
    unit = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    plus = [at(*u) for u in unit]
    minus = [at(*(-x for x in u)) for u in unit]
    grad = torch.stack([(p - q) / 2 for p, q in zip(plus, minus)], dim=-1)
    hess = torch.zeros(index.shape[0], 3, 3, dtype=score.dtype, device=score.device)
    for a in range(3):
        hess[:, a, a] = plus[a] + minus[a] - 2 * centre
        for b in range(a + 1, 3):
            ua, ub = np.array(unit[a]), np.array(unit[b])
            mixed = (at(*(ua + ub)) + at(*(-ua - ub)) - at(*(ua - ub)) - at(*(ub - ua))) / 4
            hess[:, a, b] = hess[:, b, a] = mixed
    hess64, grad64 = hess.double(), grad.double()
    eig = torch.linalg.eigvalsh(hess64)
    definite = eig[:, -1] < 0
    safe = torch.where(definite[:, None, None], hess64, -torch.eye(3, dtype=torch.float64, device=score.device))
    offset = torch.linalg.solve(safe, -grad64[..., None])[..., 0]
    full_ok = definite & (offset.abs() < 1).all(dim=-1)

    diag = torch.diagonal(hess64, dim1=-2, dim2=-1)
    axis = torch.where(diag < 0, -grad64 / diag.clamp(max=-1e-30), torch.zeros_like(grad64)).clamp(-0.5, 0.5)
    offset = torch.where(full_ok[:, None], offset, axis)
    value = centre.double() + (grad64 * offset).sum(-1) + 0.5 * torch.einsum("ki,kij,kj->k", offset, hess64, offset)
    value = torch.maximum(value, centre.double())
    return index.double() + offset, value.to(score.dtype)


def rotation_angle_deg(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Angle in degrees of the rotation r1ᵀ·r2 (broadcast over leading axes)."""
    trace = np.einsum("...ij,...ij->...", np.asarray(r1), np.asarray(r2))
    return np.degrees(np.arccos(np.clip((trace - 1) / 2, -1.0, 1.0)))


def distinct_peaks(rotations: np.ndarray, values: np.ndarray, count: int | None, min_separation_deg: float) -> np.ndarray:
    """Indices of the best peaks, in decreasing value, skipping any within ``min_separation_deg`` of a better one.

    Args:
        rotations: (K, 3, 3); values: (K,); count: how many to keep at most (None: all).

    Returns:
        (k,) int array of indices into the inputs.
    """
    order = np.argsort(-np.asarray(values), kind="stable")
    kept: list[int] = []
    for i in order:
        if kept and np.min(rotation_angle_deg(rotations[kept], rotations[i])) < min_separation_deg:
            continue
        kept.append(int(i))
        if count is not None and len(kept) >= count:
            break
    return np.asarray(kept, dtype=np.int64)
