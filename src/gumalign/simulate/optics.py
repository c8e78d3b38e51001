"""Electron-optical transfer functions for simulated projections: the CTF (with amplitude contrast and an envelope)
and a detector MTF.

Frequencies are spatial frequencies in Å⁻¹ (cycles per Å). Both functions are radially symmetric, so they take the
frequency magnitude.

Sign conventions (stated once, here):
- ``defocus_um`` follows the seed and TOM/aitom: negative is underfocus (the seed's -2 µm). Internally the
  underfocus Δf = -defocus_um·10⁴ Å is positive.
- The phase shift is χ(k) = π·λ·Δf·k² - (π/2)·Cs·λ³·k⁴ (Scherzer's sign: Cs works against underfocus).
- The transfer is returned as +[√(1 - A²)·sin χ + A·cos χ]·E(k), positive at low frequency. A real micrograph carries
  the negative of this (protein dark); simulated particles therefore come out with the contrast of a
  contrast-inverted tomogram, protein positive like the template, which is what alignment to ``reference.mrc``
  needs. The aitom code behind the seed's data inverts the density before a CTF of the opposite sign: the product
  is the same.
"""

from __future__ import annotations

import numpy as np


def electron_wavelength_angst(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å at an acceleration voltage in kV (0.0197 Å at 300 kV).

    λ = sqrt(150.4 / (V·(1 + V/1 022 000))) Å with V in volts, as TOM's tom_create_ctf.
    """
    volts = float(voltage_kv) * 1e3
    return float(np.sqrt(150.4 / (volts * (1.0 + volts / 1.022e6))))


def ctf_1d(
    k_angst: np.ndarray,
    *,
    voltage_kv: float,
    defocus_um: float,
    cs_mm: float,
    amplitude_contrast: float,
    envelope_sigma: float,
    voxel_size: float,
) -> np.ndarray:
    """The contrast transfer at spatial frequencies ``k_angst``.

    Args:
        k_angst: frequency magnitudes in Å⁻¹, any shape.
        voltage_kv: acceleration voltage in kV.
        defocus_um: defocus in µm, negative is underfocus (seed/TOM convention).
        cs_mm: spherical aberration in mm.
        amplitude_contrast: fraction A of amplitude contrast (0.07).
        envelope_sigma: width of the Gaussian envelope exp(-(k / (σ·Ny))²) as a fraction σ of Nyquist (TOM's
            σ = 0.4); 0 or less switches the envelope off.
        voxel_size: pixel size in Å of the sampled image (sets Nyquist, 1 / (2·voxel_size)).

    Returns:
        float64 array shaped like ``k_angst``: √(1 - A²)·sin χ + A·cos χ, times the envelope.
    """
    k = np.asarray(k_angst, dtype=np.float64)
    wavelength = electron_wavelength_angst(voltage_kv)
    underfocus = -float(defocus_um) * 1e4
    cs = float(cs_mm) * 1e7
    chi = np.pi * wavelength * underfocus * k**2 - 0.5 * np.pi * cs * wavelength**3 * k**4
    a = float(amplitude_contrast)
    ctf = np.sqrt(1.0 - a * a) * np.sin(chi) + a * np.cos(chi)
    if envelope_sigma > 0:
        nyquist = 1.0 / (2.0 * voxel_size)
        ctf = ctf * np.exp(-((k / (envelope_sigma * nyquist)) ** 2))
    return ctf


def mtf_1d(k_angst: np.ndarray, *, mtf_sigma: float, voxel_size: float) -> np.ndarray:
    """A detector MTF modelled as a Gaussian roll-off exp(-½·(k / (σ·Ny))²), σ a fraction of Nyquist.

    The seed's simulation low-passes detector noise with such a Gaussian (width 0.2·box in Fourier pixels, i.e.
    σ = 0.4 of Nyquist); here the roll-off acts on everything that reaches the detector.

    Returns:
        float64 array shaped like ``k_angst``, 1 at k = 0.
    """
    k = np.asarray(k_angst, dtype=np.float64)
    nyquist = 1.0 / (2.0 * voxel_size)
    return np.exp(-0.5 * (k / (mtf_sigma * nyquist)) ** 2)
