"""Frequency grids and shell indices in the three layouts (see package docstring)."""

from __future__ import annotations

from typing import Literal

import numpy as np

Layout = Literal["centred", "rfft", "full"]
LAYOUTS = ("centred", "rfft", "full")


def _axis_frequencies(n: int, layout: Layout, last: bool) -> np.ndarray:
    if layout == "centred":
        return np.arange(n) - n // 2
    if layout == "rfft" and last:
        return np.arange(n // 2 + 1).astype(np.int64)
    if layout in ("rfft", "full"):
        return np.round(np.fft.fftfreq(n) * n).astype(np.int64)
    raise ValueError(f"unknown Fourier layout {layout!r}; expected one of {LAYOUTS}")


def frequency_grid(shape: tuple[int, int, int], layout: Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer frequencies (kz, ky, kx) for a real-space box of ``shape`` [z, y, x], broadcastable.

    Returns:
        Three int64 arrays shaped (D, 1, 1), (1, H, 1), (1, 1, W') where W' = W for centred/full and W//2 + 1 for rfft.
    """
    d, h, w = shape
    kz = _axis_frequencies(d, layout, last=False)[:, None, None]
    ky = _axis_frequencies(h, layout, last=False)[None, :, None]
    kx = _axis_frequencies(w, layout, last=True)[None, None, :]
    return kz, ky, kx


def shell_index(shape: tuple[int, int, int], layout: Layout) -> np.ndarray:
    """Fourier shell of every coefficient: round(|k|) in cycles per box (box assumed cubic for FSC use).

    Returns:
        int64 array in the layout's shape; shell 0 is the zero frequency.
    """
    kz, ky, kx = frequency_grid(shape, layout)
    return np.round(np.sqrt(kz**2 + ky**2 + kx**2)).astype(np.int64)
