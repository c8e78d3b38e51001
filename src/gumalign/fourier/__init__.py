"""Fourier-space helpers: frequency grids, missing-wedge weights, shells.

Layouts are explicit arguments because a wrong guess is silent:
- ``centred``: the fftshift layout, N³, the zero frequency at index N // 2 on every axis (RELION's rlnCtfImage cube).
- ``rfft``: torch/numpy ``rfftn`` layout, N × N × (N//2 + 1), unshifted, last axis (x) non-negative.
- ``full``: ``fftn`` layout, N³, unshifted.
Frequencies are in integer units (cycles per box) along (z, y, x).
"""

from gumalign.fourier.grids import frequency_grid, shell_index
from gumalign.fourier.layout import centred_to_rfft, rfft_to_centred, rotate_weights
from gumalign.fourier.wedge import wedge_mask

__all__ = ["frequency_grid", "shell_index", "wedge_mask", "centred_to_rfft", "rfft_to_centred", "rotate_weights"]
