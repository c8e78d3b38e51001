"""Orthonormal DCT-II as matrices, and Gum-Net's DCT spectral pooling & filtering layer.

The DCT-II with ``norm='ortho'`` (scipy.fft.dct type 2) of a length-N signal x is ``X = D·x`` with
``D[k, n] = sqrt(2/N)·c_k·cos(π·(2n + 1)·k / (2N))``, c_0 = 1/sqrt(2) and c_k = 1 otherwise; D is orthogonal, so the
inverse (scipy.fft.idct type 2, ortho) is Dᵀ. A 3D transform applies D along each axis.

Spectral pooling (seed S2; aitom SpectralPooling.py) keeps the low-frequency corner [:t, :t, :t] of the 3D DCT, zero-pads
it at the high end to M³ and takes the inverse DCT of size M. Along one axis that whole chain is one linear map,
``P = D_M[:t]ᵀ · D_N[:t]`` (M × N), so the layer is three small matrix products with precomputed matrices: exact,
differentiable, and fast on CPU and GPU. There is no amplitude rescaling (as in the original; batch norm absorbs it).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def dct_matrix(n: int) -> np.ndarray:
    """(n, n) float64 orthonormal DCT-II matrix D: ``D @ x == scipy.fft.dct(x, type=2, norm='ortho')``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    d[0] /= np.sqrt(2.0)
    return d


def spectral_pool_matrix(n_in: int, n_out: int, keep: int) -> np.ndarray:
    """(n_out, n_in) float64 matrix of DCT -> keep the first ``keep`` coefficients -> zero-pad to n_out -> inverse DCT."""
    if not (1 <= keep <= min(n_in, n_out)):
        raise ValueError(f"keep must lie in [1, min(n_in, n_out)], got keep={keep}, n_in={n_in}, n_out={n_out}")
    return dct_matrix(n_out)[:keep].T @ dct_matrix(n_in)[:keep]


def apply_along_axes(x: torch.Tensor, matrices: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Multiply the last three axes of ``x`` (..., D, H, W) by one matrix each: out = M_d ⊗ M_h ⊗ M_w applied to x.

    Args:
        x: (..., D, H, W) tensor.
        matrices: (D', D), (H', H), (W', W) tensors of x's dtype and device.

    Returns:
        (..., D', H', W') tensor.
    """
    m_d, m_h, m_w = matrices
    x = x @ m_w.T  # (..., D, H, W')
    x = (x.transpose(-1, -2) @ m_h.T).transpose(-1, -2)  # (..., D, H', W')
    shape = x.shape
    x = m_d @ x.reshape(*shape[:-3], shape[-3], shape[-2] * shape[-1])  # (..., D', H'·W')
    return x.reshape(*shape[:-3], m_d.shape[0], shape[-2], shape[-1])


def dct3(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 3D DCT-II over the last three axes (= scipy.fft.dctn(x, type=2, norm='ortho', axes=(-3,-2,-1)))."""
    mats = tuple(torch.as_tensor(dct_matrix(n), dtype=x.dtype, device=x.device) for n in x.shape[-3:])
    return apply_along_axes(x, mats)


def idct3(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct3` (= scipy.fft.idctn(x, type=2, norm='ortho', axes=(-3,-2,-1)))."""
    mats = tuple(torch.as_tensor(dct_matrix(n).T, dtype=x.dtype, device=x.device) for n in x.shape[-3:])
    return apply_along_axes(x, mats)


class SpectralPool3d(nn.Module):
    """DCT spectral pooling & filtering: (B, C, N, N, N) -> (B, C, M, M, M), keeping the DCT corner [:t, :t, :t].

    The operator matrix is a non-persistent buffer: it moves with ``.to(device)`` but is not stored in weight files.
    """

    def __init__(self, n_in: int, n_out: int, keep: int):
        super().__init__()
        self.n_in, self.n_out, self.keep = n_in, n_out, keep
        self.register_buffer(
            "operator", torch.as_tensor(spectral_pool_matrix(n_in, n_out, keep), dtype=torch.float32), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-3:]) != (self.n_in,) * 3:
            raise ValueError(f"spectral pooling expects {self.n_in}³ input, got {tuple(x.shape[-3:])}")
        op = self.operator.to(dtype=x.dtype)
        return apply_along_axes(x, (op, op, op))

    def extra_repr(self) -> str:
        return f"{self.n_in}³ -> keep {self.keep}³ -> {self.n_out}³"
