"""Single-axis tilt series of volume batches: projection and weighted (filtered) back-projection.

Geometry (the same as gumalign.fourier.wedge_mask): tilt axis y, beam z. At tilt θ the beam runs along
(sin θ, 0, cos θ) in the specimen's (x, y, z) frame, so that projection samples the central Fourier plane
kx·sin θ + kz·cos θ = 0, and its detector coordinate is u = x·cos θ - z·sin θ (voxels from the box centre N // 2).

Because the rotation is about y, each y-slice of a volume projects independently: one (z, x) plane -> one detector
row per tilt, a 2D Radon transform. The module precomputes that transform once as a sparse matrix P (linear
interpolation onto the detector: each voxel splits its value between the two nearest detector bins) and applies it to
every y-slice of every volume in one sparse product; back-projection is Pᵀ (linear interpolation from the detector),
the standard voxel-driven back-projector.

Filters of the 2D projections that couple y and the detector (CTF, MTF) are applied after a Fourier transform
along y, which commutes with P: volumes are transformed along y first, the complex (ky) planes are projected, filtered
along the detector, back-projected, and transformed back. Signals are zero-padded along y and along the detector so
the filters act as linear (not circular) convolutions.

Weighted back-projection: the detector rows are filtered with the Ram-Lak ramp (Kak & Slaney's spatial-domain
kernel, so the zero frequency is kept) and each tilt is weighted by the angular step Δθ in radians. A noise-free
series over ±90° then reconstructs the volume at its own scale; a limited range reconstructs the observed Fourier
region at full scale and leaves the missing wedge empty.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.fft as sfft
import scipy.sparse as sparse

_ANGLE_TOL_DEG = 1e-9


def tilt_angles(tilt_range: tuple[float, float], tilt_step: float) -> np.ndarray:
    """The tilt angles of a series, in degrees: min, min + step, ..., up to max.

    A range spanning 180° (e.g. -90..90, the seed's no-wedge s_a) drops its last angle, which repeats the first
    projection direction mirrored, so every direction counts once.

    Raises:
        ValueError: a range outside [-90, 90], min > max, or a step that is not positive.
    """
    lo, hi = float(tilt_range[0]), float(tilt_range[1])
    if not (-90.0 <= lo <= hi <= 90.0):
        raise ValueError(f"tilt range must satisfy -90 <= min <= max <= 90, got {lo:g} {hi:g}")
    if not tilt_step > 0:
        raise ValueError(f"tilt step must be positive, got {tilt_step:g}")
    count = int(math.floor((hi - lo) / tilt_step + 1e-9)) + 1
    angles = lo + tilt_step * np.arange(count, dtype=np.float64)
    if count > 1 and angles[-1] - angles[0] >= 180.0 - _ANGLE_TOL_DEG:
        angles = angles[:-1]
    return angles


def detector_size(box: int) -> int:
    """Detector bins that hold the projection of an N² slice at any tilt, with one bin to spare on each side (even)."""
    reach = math.ceil((box / 2.0) * math.sqrt(2.0)) + 2
    return 2 * reach


@functools.lru_cache(maxsize=8)
def _projector(box: int, angles_deg: tuple[float, ...]) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """P (T·Nd × N², rows (tilt, bin), columns (z, x)) and Pᵀ as float32 CSR matrices."""
    n_det = detector_size(box)
    centre, det_centre = box // 2, n_det // 2
    z, x = np.meshgrid(np.arange(box) - centre, np.arange(box) - centre, indexing="ij")
    z, x = z.ravel().astype(np.float64), x.ravel().astype(np.float64)
    pixels = np.arange(box * box)
    rows, cols, vals = [], [], []
    for t, theta in enumerate(np.deg2rad(np.asarray(angles_deg))):
        u = x * np.cos(theta) - z * np.sin(theta) + det_centre
        left = np.floor(u).astype(np.int64)
        frac = u - left
        assert left.min() >= 0 and left.max() + 1 < n_det, "detector too small for the box"
        rows += [t * n_det + left, t * n_det + left + 1]
        cols += [pixels, pixels]
        vals += [1.0 - frac, frac]
    shape = (len(angles_deg) * n_det, box * box)
    p = sparse.csr_matrix(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))), shape=shape
    )
    p.sum_duplicates()
    return p, p.T.tocsr()


def ramp_filter(length: int) -> np.ndarray:
    """Frequency response of the Ram-Lak ramp for a detector row of ``length`` samples (fftfreq order).

    Built from Kak & Slaney's spatial kernel h[0] = 1/4, h[n odd] = -1/(π·n)², h[n even] = 0, so it is ≈ |k| (cycles
    per sample) with a non-zero value at k = 0 that keeps the mean of the reconstruction right.
    """
    n = np.arange(length)
    n = np.where(n < (length + 1) // 2, n, n - length)
    kernel = np.zeros(length, dtype=np.float64)
    kernel[0] = 0.25
    odd = n % 2 == 1
    kernel[odd] = -1.0 / (np.pi * n[odd]) ** 2
    return np.real(np.fft.fft(kernel))


class TiltSeries:
    """Projection and back-projection of complex ky-planes for one box size and one set of tilt angles.

    Array layouts (B volumes, K frequencies along y, T tilts, Nd detector bins):
    - volume side: (B, N, K, N) complex64, axes [z, ky, x];
    - detector side: (T, Nd, B, K) complex64, axes [tilt, bin, volume, ky].
    """

    def __init__(self, box: int, angles_deg: np.ndarray):
        self.box = int(box)
        self.angles_deg = np.asarray(angles_deg, dtype=np.float64)
        self.n_tilts = len(self.angles_deg)
        self.n_det = detector_size(self.box)
        self._p, self._pt = _projector(self.box, tuple(self.angles_deg.tolist()))
        step = np.diff(self.angles_deg).mean() if self.n_tilts > 1 else 180.0
        # Each tilt stands for Δθ radians of the angular integral of the filtered back-projection.
        self.angular_weight = float(np.deg2rad(step))

    def project(self, planes: np.ndarray) -> np.ndarray:
        """(B, N, K, N) complex ky-planes [z, ky, x] -> (T, Nd, B, K) complex projections."""
        b, n, k, _ = planes.shape
        columns = np.ascontiguousarray(planes.transpose(1, 3, 0, 2), dtype=np.complex64)  # [z, x, volume, ky]
        flat = columns.view(np.float32).reshape(n * n, b * k * 2)
        out = self._p @ flat
        return out.view(np.complex64).reshape(self.n_tilts, self.n_det, b, k)

    def backproject(self, projections: np.ndarray) -> np.ndarray:
        """(T, Nd, B, K) complex projections -> (B, N, K, N) complex ky-planes [z, ky, x] (Pᵀ, no weighting)."""
        t, d, b, k = projections.shape
        flat = np.ascontiguousarray(projections, dtype=np.complex64).view(np.float32).reshape(t * d, b * k * 2)
        out = (self._pt @ flat).view(np.complex64).reshape(self.box, self.box, b, k)
        return out.transpose(2, 0, 3, 1)


def filter_detector(projections: np.ndarray, response: np.ndarray, padded_length: int) -> np.ndarray:
    """Filter every detector row: zero-pad to ``padded_length``, multiply by ``response``, crop back.

    Args:
        projections: (T, Nd, B, K) complex64, axes [tilt, bin, volume, ky].
        response: (padded_length, K) real response over (detector frequency in fftfreq order, ky).
        padded_length: FFT length along the detector (>= Nd).

    Returns:
        (T, Nd, B, K) complex64.
    """
    n_det = projections.shape[1]
    spectrum = sfft.fft(projections, n=padded_length, axis=1)
    spectrum *= response[None, :, None, :].astype(np.float32)
    return sfft.ifft(spectrum, axis=1)[:, :n_det]
