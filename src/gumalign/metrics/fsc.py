"""Fourier shell correlation, resolution, and the masked-FSC correction RELION postprocess applies.

Shells are ``round(|k|)`` in cycles per box (gumalign.fourier.shell_index), 0 .. N//2; coefficients beyond N//2 (the
corners of the box) are left out. Sums run over the rfftn half spectrum without counting the Hermitian mirror twice,
as RELION's getFSC and torch-fourier-shell-correlation do. Shell 0 (the zero frequency) carries no resolution
information and is set to 1 by convention (as torch-fourier-shell-correlation does); a shell where either map has no
power is 0.

Masked maps (Chen et al. 2013, RELION src/postprocessing.cpp): the FSC of masked maps is inflated by the mask's own
correlation. Phases of both half maps are randomised (independently) beyond the shell where the unmasked FSC first
falls below 0.8 (|k| >= that shell); the same mask is applied; the FSC of these maps, FSC_n, measures the inflation,
and from that shell + 2 on the corrected curve is FSC_true = (FSC_t - FSC_n) / (1 - FSC_n), or 0 where FSC_n > FSC_t
(RELION's calculateFSCtrue; below it FSC_true = FSC_t).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gumalign.errors import GumalignError
from gumalign.fourier.grids import frequency_grid, shell_index

RANDOMISE_BELOW = 0.8  # RELION postprocess: randomise phases beyond where the unmasked FSC first drops below this
CORRECTION_OFFSET = 2  # ... and correct from that shell + 2 on (RELION's calculateFSCtrue)
NO_RESOLUTION = 999.0  # RELION writes 999 Å for shell 0 and for a curve that never reaches the threshold


def _check_pair(map1: np.ndarray, map2: np.ndarray) -> tuple[int, int, int]:
    if map1.ndim != 3 or map1.shape != map2.shape:
        raise GumalignError(f"FSC needs two 3D maps of the same size, got {map1.shape} and {map2.shape}")
    if len(set(map1.shape)) != 1:
        raise GumalignError(f"FSC needs cubic maps, got {map1.shape[2]}×{map1.shape[1]}×{map1.shape[0]} (x×y×z)")
    return map1.shape


def check_map(volume: np.ndarray, name: str) -> None:
    """A GumalignError when ``volume`` carries no information: all zeros, one value everywhere, or non-finite."""
    volume = np.asarray(volume)
    if not np.all(np.isfinite(volume)):
        raise GumalignError(f"{name}: the map holds NaN or Inf values")
    if not np.any(volume):
        raise GumalignError(f"{name}: the map is empty (every voxel is 0); an FSC of it means nothing")
    if float(volume.max()) == float(volume.min()):
        raise GumalignError(f"{name}: the map has one value ({float(volume.max()):g}) everywhere; it has no signal")


def check_mask(mask: np.ndarray, name: str) -> None:
    """A GumalignError when ``mask`` is zero everywhere (nothing would be compared) or outside 0..1."""
    mask = np.asarray(mask)
    if not np.all(np.isfinite(mask)):
        raise GumalignError(f"{name}: the mask holds NaN or Inf values")
    if mask.min() < -1e-3 or mask.max() > 1 + 1e-3:
        raise GumalignError(f"{name}: mask values must lie in 0..1, found {mask.min():.3g}..{mask.max():.3g}")
    if not np.any(mask > 1e-6):
        raise GumalignError(f"{name}: the mask is zero everywhere; nothing would be compared")


def fsc(map1: np.ndarray, map2: np.ndarray) -> np.ndarray:
    """Fourier shell correlation of two real maps.

    Args:
        map1, map2: (N, N, N) float arrays [z, y, x], same shape.

    Returns:
        (N//2 + 1,) float64: FSC per shell 0 .. N//2 (shell s holds the coefficients with round(|k|) = s, k in cycles
        per box). Shell 0 is 1 by convention; a shell where either map has no power is 0.
    """
    map1 = np.asarray(map1, dtype=np.float64)
    map2 = np.asarray(map2, dtype=np.float64)
    shape = _check_pair(map1, map2)
    f1 = np.fft.rfftn(map1)
    f2 = np.fft.rfftn(map2)
    return _fsc_of_spectra(f1, f2, shape)


def _fsc_of_spectra(f1: np.ndarray, f2: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    n_shells = shape[0] // 2 + 1
    shells = shell_index(shape, "rfft").ravel()
    inside = shells < n_shells
    shells = shells[inside]
    a, b = f1.ravel()[inside], f2.ravel()[inside]
    numerator = np.bincount(shells, weights=(a * b.conj()).real, minlength=n_shells)
    power1 = np.bincount(shells, weights=np.abs(a) ** 2, minlength=n_shells)
    power2 = np.bincount(shells, weights=np.abs(b) ** 2, minlength=n_shells)
    denominator = np.sqrt(power1 * power2)
    # Relative floor: a shell emptied by a low-pass holds only rounding noise.
    floor = 1e-24 * max(power1.max(), power2.max(), 1e-300)
    curve = np.where(denominator > floor, numerator / np.where(denominator > floor, denominator, 1.0), 0.0)
    curve[0] = 1.0
    return curve


def shell_voxel_counts(box: int) -> np.ndarray:
    """(box//2 + 1,) number of Fourier coefficients of a full N³ transform in each shell (for noise thresholds)."""
    shells = shell_index((box, box, box), "full").ravel()
    return np.bincount(shells[shells <= box // 2], minlength=box // 2 + 1)


def shell_resolution_angstrom(box: int, voxel_size: float) -> np.ndarray:
    """(box//2 + 1,) resolution in Å of each shell: box·voxel_size / shell; 999 for shell 0, as RELION writes it
    (postprocessing.cpp: ``res = (i > 0) ? XSIZE * angpix / i : 999.``)."""
    shells = np.arange(box // 2 + 1, dtype=np.float64)
    return np.where(shells > 0, box * voxel_size / np.where(shells > 0, shells, 1.0), NO_RESOLUTION)


@dataclass
class Resolution:
    """Where an FSC curve falls below a threshold, as RELION postprocess reports it.

    Attributes:
        angstrom: the interpolated resolution in Å = box·voxel_size / ``shell`` (RELION's --interpolate value):
            ``shell`` lies linearly between the last shell at or above the threshold and the next. At Nyquist
            (2·voxel_size) when the curve never falls below; NO_RESOLUTION (999 Å) when it is below at shell 1.
        shell: that fractional shell (cycles per box); 0 when the curve is below the threshold at shell 1.
        reached_nyquist: True when the curve stays at or above the threshold up to N//2.
        last_shell: the last shell s >= 1 such that every shell 1..s is at or above the threshold (0: none).
        relion_angstrom: RELION's rlnFinalResolution: box·voxel_size / last_shell (postprocessing.cpp: the last shell
            before the first one below the threshold), NO_RESOLUTION when last_shell is 0.
    """

    angstrom: float
    shell: float
    reached_nyquist: bool
    last_shell: int = 0
    relion_angstrom: float = NO_RESOLUTION

    @property
    def below_first_shell(self) -> bool:
        """True when the curve is below the threshold already at shell 1: the maps agree at no resolution."""
        return self.last_shell == 0


def resolution_at(curve: np.ndarray, threshold: float, box: int, voxel_size: float) -> Resolution:
    """Resolution where ``curve`` (per shell 0..N//2) first falls below ``threshold`` (searching from shell 1).

    The resolution is never coarser than the box: a curve below the threshold at shell 1 has none
    (:attr:`Resolution.below_first_shell`, 999 Å), rather than an extrapolation towards shell 0.
    """
    curve = np.asarray(curve, dtype=np.float64)
    below = np.flatnonzero(curve[1:] < threshold) + 1
    if len(below) == 0:
        shell = float(len(curve) - 1)
        angstrom = box * voxel_size / shell
        return Resolution(angstrom, shell, True, int(shell), angstrom)
    first = int(below[0])
    last = first - 1
    if last == 0:
        return Resolution(NO_RESOLUTION, 0.0, False, 0, NO_RESOLUTION)
    upper, lower = curve[last], curve[first]
    # Linear interpolation in shell between (last, upper >= threshold) and (first, lower < threshold).
    fraction = (upper - threshold) / (upper - lower) if upper != lower else 0.0
    shell = last + float(fraction)
    return Resolution(float(box * voxel_size / shell), shell, False, last, float(box * voxel_size / last))


def soft_spherical_mask(box: int, radius: float | None = None, edge_width: float | None = None) -> np.ndarray:
    """A spherical mask about the box centre (index N//2) with a raised-cosine edge.

    Args:
        box: N; the mask is (N, N, N) float32 [z, y, x].
        radius: radius in voxels where the edge starts (1 inside); default N/2 - edge_width, so it reaches 0 at N/2.
        edge_width: width of the cosine fall-off in voxels; default max(3, N/8).

    Returns:
        (N, N, N) float32 in [0, 1].
    """
    width = float(edge_width) if edge_width is not None else max(3.0, box / 8.0)
    inner = float(radius) if radius is not None else box / 2.0 - width
    c = box // 2
    z, y, x = np.ogrid[:box, :box, :box]
    r = np.sqrt((x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2)
    fall = 0.5 * (1.0 + np.cos(np.pi * np.clip((r - inner) / max(width, 1e-6), 0.0, 1.0)))
    return np.where(r <= inner, 1.0, fall).astype(np.float32)


def randomise_phases_beyond(volume: np.ndarray, shell: int, rng: np.random.Generator) -> np.ndarray:
    """``volume`` with the phase of every Fourier coefficient with |k| >= ``shell`` replaced by a uniform random one.

    Amplitudes are kept (RELION's randomizePhasesBeyond). Works in the rfftn layout; the inverse transform keeps the
    real part, so the result is a real (N, N, N) float64 map.
    """
    spectrum = np.fft.rfftn(np.asarray(volume, dtype=np.float64))
    kz, ky, kx = frequency_grid(volume.shape, "rfft")
    beyond = (kz**2 + ky**2 + kx**2) >= shell**2
    phases = rng.uniform(0.0, 2.0 * np.pi, size=int(beyond.sum()))
    spectrum[beyond] = np.abs(spectrum[beyond]) * np.exp(1j * phases)
    return np.fft.irfftn(spectrum, s=volume.shape, axes=(0, 1, 2))


@dataclass
class FSCResult:
    """The curves and numbers RELION postprocess reports, for one pair of maps.

    All curves are (N//2 + 1,) float64 per shell. Without a mask, ``masked``, ``phase_randomised`` are None,
    ``randomised_from`` is None and ``corrected`` equals ``unmasked``.
    """

    box: int
    voxel_size: float
    unmasked: np.ndarray
    masked: np.ndarray | None
    phase_randomised: np.ndarray | None
    corrected: np.ndarray
    randomised_from: int | None

    @property
    def shells(self) -> np.ndarray:
        return np.arange(self.box // 2 + 1)

    @property
    def resolution_inv_angstrom(self) -> np.ndarray:
        """(N//2 + 1,) spatial frequency of each shell in 1/Å: 1 / resolution_angstrom, so 1/999 for shell 0 (as
        RELION's rlnResolution)."""
        return 1.0 / self.resolution_angstrom

    @property
    def resolution_angstrom(self) -> np.ndarray:
        return shell_resolution_angstrom(self.box, self.voxel_size)

    def resolution(self, threshold: float, curve: str = "corrected") -> Resolution:
        return resolution_at(getattr(self, curve), threshold, self.box, self.voxel_size)


def corrected_fsc(masked: np.ndarray, phase_randomised: np.ndarray, randomised_from: int) -> np.ndarray:
    """Chen et al.'s FSC_true as RELION computes it: FSC_t below shell ``randomised_from`` + 2; from there on
    (FSC_t - FSC_n) / (1 - FSC_n), and 0 where FSC_n > FSC_t."""
    out = np.array(masked, dtype=np.float64)
    start = randomised_from + CORRECTION_OFFSET
    fsc_t, fsc_n = masked[start:], phase_randomised[start:]
    with np.errstate(divide="ignore", invalid="ignore"):
        true = np.where(fsc_n > fsc_t, 0.0, (fsc_t - fsc_n) / np.where(fsc_n < 1.0, 1.0 - fsc_n, 1.0))
    out[start:] = true
    return out


def first_shell_below(curve: np.ndarray, threshold: float) -> int:
    """First shell >= 1 where ``curve`` < threshold, or the last shell + 1 when it never is."""
    below = np.flatnonzero(np.asarray(curve)[1:] < threshold)
    return int(below[0]) + 1 if len(below) else len(curve)


def fsc_with_mask(
    map1: np.ndarray,
    map2: np.ndarray,
    voxel_size: float,
    mask: np.ndarray | None,
    *,
    seed: int = 0,
    names: tuple[str, str] = ("map 1", "map 2"),
    mask_name: str = "mask",
) -> FSCResult:
    """Unmasked, masked, phase-randomised and corrected FSC of two maps, as RELION postprocess computes them.

    Args:
        map1, map2: (N, N, N) float arrays [z, y, x] (half maps, or a map and a reference).
        voxel_size: Å per voxel.
        mask: (N, N, N) float mask in [0, 1] applied to both maps, or None for the unmasked FSC only.
        seed: seed of the random phases (same seed, same curve).
        names, mask_name: how errors name the maps and the mask.

    Raises:
        GumalignError: maps of different or non-cubic shapes, an empty (all-zero) or constant map, a mask that is
            zero everywhere or outside 0..1.
    """
    map1 = np.asarray(map1, dtype=np.float64)
    map2 = np.asarray(map2, dtype=np.float64)
    box = _check_pair(map1, map2)[0]
    check_map(map1, names[0])
    check_map(map2, names[1])
    unmasked = fsc(map1, map2)
    if mask is None:
        return FSCResult(box, voxel_size, unmasked, None, None, unmasked.copy(), None)
    mask = np.asarray(mask, dtype=np.float64)
    if mask.shape != map1.shape:
        raise GumalignError(f"{mask_name}: mask of shape {mask.shape} does not match maps of shape {map1.shape}")
    check_mask(mask, mask_name)
    masked = fsc(map1 * mask, map2 * mask)
    randomised_from = first_shell_below(unmasked, RANDOMISE_BELOW)
    if randomised_from >= len(unmasked):
        # The maps agree to Nyquist: there is nothing to randomise and no mask correlation to remove.
        return FSCResult(box, voxel_size, unmasked, masked, np.zeros_like(masked), masked.copy(), randomised_from)
    rng = np.random.default_rng(seed)
    random1 = randomise_phases_beyond(map1, randomised_from, rng)
    random2 = randomise_phases_beyond(map2, randomised_from, rng)
    phase_randomised = fsc(random1 * mask, random2 * mask)
    corrected = corrected_fsc(masked, phase_randomised, randomised_from)
    return FSCResult(box, voxel_size, unmasked, masked, phase_randomised, corrected, randomised_from)
