"""RELION's 3D CTF images (rlnCtfImage) in every layout RELION reads, as one centred N³ array.

RELION (src/ml_optimiser.cpp, MlOptimiser::get3DCTFAndMulti) reads three layouts, numpy shapes [z, y, x]:

- (N, N, N): a centred cube, origin at index N//2; RELION takes the value for frequency k from index N//2 - k
  ("the origin in the ctf_img lies half a pixel to the right"). gumalign's centred layout holds k at N//2 + k, so the
  cube is mirrored through its origin on reading (for the even, k -> -k symmetric CTFs and wedges of practice this
  changes nothing).
- (N, N, N//2 + 1): the FFTW half transform (kx >= 0, ky and kz in FFT order); the other half is its Hermitian
  mirror (the CTF is real and even).
- (2N, N, N//2 + 1): RELION 4's weights: the first N z-slices the CTF² sums, the next N the multiplicity. RELION 4's
  default ("just use the sums") zeroes every frequency whose multiplicity is below 0.01 (--subtomo_multi_thr).

The values are RELION's: a CTF (signed or |CTF|) for data that are not CTF-premultiplied, CTF² (RELION's default
for premultiplied data, rlnCtfDataAreCtfPremultiplied = 1) otherwise. No rescaling.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gumalign.errors import GumalignError

MULTIPLICITY_THRESHOLD = 0.01  # RELION's --subtomo_multi_thr default


class Ctf3D(NamedTuple):
    """A 3D CTF image in gumalign's centred layout.

    Attributes:
        values: (N, N, N) float32 centred (frequency k at index N//2 + k): the file's CTF or CTF² values.
        observed: (N, N, N) float32 centred 0/1: where RELION 4's multiplicity reaches the threshold (all ones for
            the other layouts).
        layout: 'cube', 'half' or 'half+multiplicity'.
    """

    values: np.ndarray
    observed: np.ndarray
    layout: str


def mirror_centred(cube: np.ndarray) -> np.ndarray:
    """A centred cube mirrored through its origin (index N//2): out[N//2 + k] = cube[N//2 - k] (periodic)."""
    n = cube.shape[-1]
    flipped = np.flip(cube, axis=(-3, -2, -1))
    return np.roll(flipped, 1, axis=(-3, -2, -1)) if n % 2 == 0 else flipped


def ctf_from_array(data: np.ndarray, box: int, name: str = "rlnCtfImage") -> Ctf3D:
    """Interpret an array read from an rlnCtfImage file (see the module docstring) for particles of box ``box``."""
    from gumalign.fourier.layout import rfft_to_centred

    data = np.asarray(data, dtype=np.float32)
    n, half = box, box // 2 + 1
    ones = np.ones((n, n, n), dtype=np.float32)
    if data.shape == (n, n, n):
        return Ctf3D(np.ascontiguousarray(mirror_centred(data)), ones, "cube")
    if data.shape == (n, n, half):
        return Ctf3D(rfft_to_centred(data, n).astype(np.float32), ones, "half")
    if data.shape == (2 * n, n, half):
        values = rfft_to_centred(data[:n], n).astype(np.float32)
        multiplicity = data[n:]
        if np.any(multiplicity < 0):
            raise GumalignError(f"{name}: the multiplicity half holds negative values")
        observed = rfft_to_centred((multiplicity >= MULTIPLICITY_THRESHOLD).astype(np.float32), n)
        return Ctf3D(values * observed, observed.astype(np.float32), "half+multiplicity")
    x, y, z = data.shape[::-1]
    raise GumalignError(
        f"{name}: a 3D CTF of {x}×{y}×{z} (x×y×z) fits none of RELION's layouts for box {n}: {n}×{n}×{n} (centred), "
        f"{half}×{n}×{n} (half transform) or {half}×{n}×{2 * n} (CTF² and multiplicity)"
    )


def read_ctf_image(path: str | os.PathLike, box: int) -> Ctf3D:
    """Read an rlnCtfImage file in any of RELION's layouts for particles of box ``box``."""
    from gumalign.io.mrc import read_volume

    path = Path(path)
    if not path.is_file():
        raise GumalignError(f"weight file {path} (rlnCtfImage) does not exist")
    return ctf_from_array(read_volume(path).data, box, str(path))
