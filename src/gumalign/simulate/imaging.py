"""The imaging model: simulated subtomograms of a template at given poses, as in the seed's simulation (S3.2.1).

For each particle i:
1. the template is rotated by ``rotations[i]`` (RELION's A) about the box centre and shifted by ``shifts[i]``
   (x, y, z voxels) with gumalign.geometry.transform_volumes (trilinear);
2. it is projected over the tilt series (tilt axis y, beam z; see gumalign.simulate.tomography);
3. every 2D projection is filtered by the CTF (with amplitude contrast and envelope) and the detector MTF
   (gumalign.simulate.optics), both functions of the 2D frequency |(ky, k_detector)|;
4. Gaussian noise enters in two parts, as in the seed's code: projection noise before the CTF (it is filtered by the
   CTF) and detector noise after it; by default each carries half of the noise power reaching the detector; neither
   passes the MTF unless ``noise_mtf`` is set (a counting detector's noise spectrum is nearly flat);
5. the filtered projections are ramp-weighted and back-projected into the N³ box;
6. the subtomogram's Fourier coefficients in the missing wedge are set to zero (``mask_missing_wedge``), as aitom's
   simulation does after reconstruction. Cropping the reconstruction to the box convolves its spectrum with the
   box's sinc and spills about 2% of the power into the wedge at low frequency; the mask makes the missing region the
   one the weight file (rlnCtfImage) names.

Noise and SNR: everything above is linear, so signal and noise are reconstructed separately and the noise is
scaled per particle so that var(signal) / var(noise) over the final N³ subtomogram equals ``snr`` exactly. Two
copies of one pose with independent noise then have Pearson correlation c = snr / (1 + snr), i.e. the seed's
SNR = c / (1 - c). (Noise is Gaussian in each projection and enters the volume through the same filters and
back-projection as the signal; drawing the CTF-filtered projection noise and the detector noise as one Gaussian
field with power f·CTF²/<CTF²> + (1 - f) is the same distribution as drawing them apart.)

Scale and contrast: particles are on the template's scale and contrast. A noise-free ±90° series with CTF and MTF off
reconstructs the (rotated, shifted) template; with them on, each Fourier coefficient is multiplied by
CTF(|k|)·MTF(|k|), which is positive at low frequency (see optics.py), so particles correlate positively with the
template. No per-particle normalisation is applied (the mean follows the template's mean times the amplitude
contrast); normalise downstream if a method wants zero mean and unit variance.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft

from gumalign.errors import GumalignError
from gumalign.fourier import wedge_mask
from gumalign.simulate.optics import ctf_1d, mtf_1d
from gumalign.simulate.tomography import TiltSeries, filter_detector, ramp_filter, tilt_angles

# Particles simulated together; results do not depend on it (each particle's arithmetic is independent).
CHUNK_SIZE = 16


@dataclass(frozen=True)
class ImagingParams:
    """Electron-optical and noise settings of the imaging model (defaults: the seed's settings).

    Attributes:
        voltage_kv: acceleration voltage in kV.
        defocus_um: defocus in µm; negative is underfocus (the seed's -2 µm).
        cs_mm: spherical aberration in mm.
        amplitude_contrast: amplitude contrast fraction (0.07).
        envelope_sigma: CTF envelope exp(-(k / (σ·Nyquist))²), σ as a fraction of Nyquist (TOM's 0.4).
        mtf_sigma: detector MTF exp(-½·(k / (σ·Nyquist))²), σ as a fraction of Nyquist (the seed's roll-off, 0.4).
        ctf: apply the CTF (False: transfer 1 at every frequency).
        mtf: apply the detector MTF to the signal.
        noise_mtf: also pass the noise through the MTF. Off by default: a counting detector's noise power spectrum
            is close to flat while the signal is MTF-damped (DQE ∝ MTF²), and MTF-filtered noise after ramp-weighted
            back-projection left too little low-frequency SNR (bench/snr_study.py: at SNR 0.1 the oracle aligner
            found 25% of pairs with it, 66% without).
        projection_noise_fraction: the share of the noise power at the detector that enters before the CTF; the
            rest is detector noise added after it (the seed: 0.5).
        mask_missing_wedge: zero the reconstruction's Fourier coefficients outside the tilt range's observed region
            (step 6 of the model).
    """

    voltage_kv: float = 300.0
    defocus_um: float = -2.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    envelope_sigma: float = 0.4
    mtf_sigma: float = 0.4
    ctf: bool = True
    mtf: bool = True
    noise_mtf: bool = False
    projection_noise_fraction: float = 0.5
    mask_missing_wedge: bool = True

    def validate(self) -> None:
        """Raise GumalignError for settings outside their physical range."""
        if self.voltage_kv <= 0:
            raise GumalignError(f"voltage must be positive, got {self.voltage_kv:g} kV")
        if self.cs_mm < 0:
            raise GumalignError(f"spherical aberration must not be negative, got {self.cs_mm:g} mm")
        if not 0.0 <= self.amplitude_contrast < 1.0:
            raise GumalignError(f"amplitude contrast must be in [0, 1), got {self.amplitude_contrast:g}")
        if self.mtf and self.mtf_sigma <= 0:
            raise GumalignError(f"MTF width must be positive, got {self.mtf_sigma:g}")
        if not 0.0 <= self.projection_noise_fraction <= 1.0:
            raise GumalignError(f"projection noise fraction must be in [0, 1], got {self.projection_noise_fraction:g}")

    def transfer(self, k_angst: np.ndarray, voxel_size: float) -> np.ndarray:
        """CTF·MTF at spatial frequencies ``k_angst`` (Å⁻¹); the factors switched off count as 1."""
        out = np.ones_like(np.asarray(k_angst, dtype=np.float64))
        if self.ctf:
            out = out * self.ctf_values(k_angst, voxel_size)
        if self.mtf:
            out = out * mtf_1d(k_angst, mtf_sigma=self.mtf_sigma, voxel_size=voxel_size)
        return out

    def ctf_values(self, k_angst: np.ndarray, voxel_size: float) -> np.ndarray:
        """The CTF alone at ``k_angst`` (Å⁻¹), whether or not ``ctf`` is on."""
        return ctf_1d(
            k_angst,
            voltage_kv=self.voltage_kv,
            defocus_um=self.defocus_um,
            cs_mm=self.cs_mm,
            amplitude_contrast=self.amplitude_contrast,
            envelope_sigma=self.envelope_sigma,
            voxel_size=voxel_size,
        )


class _Operators:
    """Everything precomputed for one (box, tilt series, imaging parameters, voxel size).

    Attributes:
        series: the projector and back-projector.
        y_length, det_length: FFT lengths of the signal along y and along the detector (zero-padded so that the 2D
            filters act as linear, not circular, convolutions: y to 1.5 N, the detector to twice its width).
        signal_response: (det_length, y_length // 2 + 1) filter of the signal projections over (k_detector, ky):
            ramp × Δθ × CTF × MTF.
        noise_response: (n_det, y_length // 2 + 1) filter of white noise projections: ramp × Δθ × MTF × the square
            root of the noise power. Noise is stationary, so a circular filter over the unpadded detector is exact.
        weight: the observed-region weight in rfftn layout, or None when nothing is missing or masking is off.
    """

    def __init__(self, box: int, tilt_range: tuple[float, float], tilt_step: float, params: ImagingParams,
                 voxel_size: float):
        self.series = TiltSeries(box, tilt_angles(tilt_range, tilt_step))
        n_det, d_theta = self.series.n_det, self.series.angular_weight
        self.y_length = sfft.next_fast_len(box + box // 2, real=True)
        self.det_length = sfft.next_fast_len(2 * n_det)
        ky = np.fft.rfftfreq(self.y_length)[None, :]

        kd = np.fft.fftfreq(self.det_length)[:, None]
        k_signal = np.sqrt(ky**2 + kd**2) / voxel_size
        self.signal_response = ramp_filter(self.det_length)[:, None] * d_theta * params.transfer(k_signal, voxel_size)

        kd = np.fft.fftfreq(n_det)[:, None]
        k_noise = np.sqrt(ky**2 + kd**2) / voxel_size
        noise_mtf = params.mtf and params.noise_mtf
        mtf = mtf_1d(k_noise, mtf_sigma=params.mtf_sigma, voxel_size=voxel_size) if noise_mtf else 1.0
        power = self._noise_power(params, k_noise, voxel_size)
        self.noise_response = ramp_filter(n_det)[:, None] * d_theta * mtf * np.sqrt(power)

        weight = wedge_mask((box, box, box), tilt_range, "rfft")
        self.weight = weight if params.mask_missing_wedge and weight.min() < 1 else None

    def _noise_power(self, params: ImagingParams, k_noise: np.ndarray, voxel_size: float) -> np.ndarray:
        """Noise power per frequency before the MTF: f·CTF²/<CTF²> + (1 - f), <·> over the projection's 2D grid, so
        projection noise (through the CTF) and detector noise carry the shares f and 1 - f of the power."""
        if not params.ctf:
            return np.ones_like(k_noise)
        fraction = params.projection_noise_fraction
        ctf_sq = params.ctf_values(k_noise, voxel_size) ** 2
        full_ky = np.fft.fftfreq(self.y_length)[None, :]
        full_kd = np.fft.fftfreq(self.series.n_det)[:, None]
        mean_sq = np.mean(params.ctf_values(np.sqrt(full_ky**2 + full_kd**2) / voxel_size, voxel_size) ** 2)
        return fraction * ctf_sq / mean_sq + (1.0 - fraction)


@functools.lru_cache(maxsize=8)
def _operators(
    box: int, tilt_range: tuple[float, float], tilt_step: float, params: ImagingParams, voxel_size: float
) -> _Operators:
    return _Operators(box, tilt_range, tilt_step, params, voxel_size)


def precompute(
    box: int, tilt_range: tuple[float, float], tilt_step: float, params: ImagingParams, voxel_size: float
) -> None:
    """Build (and cache) the projector and filters for these settings, e.g. before threads share them."""
    _operators(int(box), (float(tilt_range[0]), float(tilt_range[1])), float(tilt_step), params, float(voxel_size))


def _mask_missing(volumes: np.ndarray, ops: _Operators) -> np.ndarray:
    """Zero the Fourier coefficients of (B, N, N, N) volumes in the missing wedge (no-op when nothing is missing)."""
    if ops.weight is None:
        return volumes
    spectrum = sfft.rfftn(volumes, axes=(1, 2, 3))
    spectrum *= ops.weight[None]
    return sfft.irfftn(spectrum, s=volumes.shape[1:], axes=(1, 2, 3)).astype(np.float32)


def _reconstruct_signal(volumes: np.ndarray, ops: _Operators) -> np.ndarray:
    """(B, N, N, N) volumes [z, y, x] -> their filtered tilt-series reconstructions, (B, N, N, N) float32."""
    box = volumes.shape[-1]
    planes = sfft.rfft(volumes, n=ops.y_length, axis=2)  # (B, z, ky, x)
    projections = filter_detector(ops.series.project(planes), ops.signal_response, ops.det_length)
    planes = ops.series.backproject(projections)
    return sfft.irfft(planes, n=ops.y_length, axis=2)[:, :, :box, :].astype(np.float32)


def _reconstruct_noise(count: int, box: int, ops: _Operators, rng: np.random.Generator) -> np.ndarray:
    """Reconstructions of ``count`` independent noise tilt series, (count, N, N, N) float32."""
    series = ops.series
    noise = rng.standard_normal((count, series.n_tilts, series.n_det, ops.y_length), dtype=np.float32)
    spectrum = sfft.rfft(noise, axis=3)  # (B, T, Nd, ky)
    spectrum = sfft.fft(spectrum, axis=2)
    spectrum *= ops.noise_response[None, None].astype(np.float32)
    projections = sfft.ifft(spectrum, axis=2).transpose(1, 2, 0, 3)  # (T, Nd, B, ky)
    planes = series.backproject(projections)
    return sfft.irfft(planes, n=ops.y_length, axis=2)[:, :, :box, :].astype(np.float32)


def _add_noise(signal: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    """signal + a·noise with a per particle such that var(signal) / var(a·noise) = snr."""
    axes = (1, 2, 3)
    scale = np.sqrt(signal.var(axis=axes, dtype=np.float64) / (snr * noise.var(axis=axes, dtype=np.float64)))
    return (signal + scale[:, None, None, None].astype(np.float32) * noise).astype(np.float32)


def _check_inputs(template: np.ndarray, rotations: np.ndarray, shifts: np.ndarray, snr: float | None) -> None:
    if template.ndim != 3 or len(set(template.shape)) != 1:
        raise ValueError(f"template must be a cube (N, N, N), got shape {template.shape}")
    if rotations.ndim != 3 or rotations.shape[1:] != (3, 3):
        raise ValueError(f"rotations must be (B, 3, 3), got shape {rotations.shape}")
    if shifts.shape != (rotations.shape[0], 3):
        raise ValueError(f"shifts must be ({rotations.shape[0]}, 3), got shape {shifts.shape}")
    if snr is not None and not (np.isfinite(snr) and snr > 0):
        raise GumalignError(f"SNR must be positive (or None for no noise), got {snr}")


def simulate_subtomograms(
    template: np.ndarray,
    rotations: np.ndarray,
    shifts: np.ndarray,
    *,
    snr: float | None,
    rng: np.random.Generator | None = None,
    tilt_range: tuple[float, float] = (-60.0, 60.0),
    tilt_step: float = 1.0,
    params: ImagingParams = ImagingParams(),
    voxel_size: float = 12.0,
) -> np.ndarray:
    """Simulated subtomograms of ``template`` at the given poses (see the module docstring for the model).

    Particle i is the tilt-series reconstruction of transform_volumes(template, rotations[i], shifts[i]), i.e. it
    equals the template rotated by RELION's A and shifted by -origin, filtered by wedge·CTF·MTF, plus noise.

    Args:
        template: (N, N, N) float32 density [z, y, x], protein positive.
        rotations: (B, 3, 3) RELION matrices A (rotate the template into the particle), acting on (x, y, z).
        shifts: (B, 3) shifts in voxels, (x, y, z), applied after the rotation (= -RELION origin in pixels).
        snr: target var(signal) / var(noise) per particle, > 0; None for noise-free particles.
        rng: the generator all noise comes from (required when ``snr`` is set). Same state, same output.
        tilt_range: (min, max) tilt in degrees; (-90, 90) leaves no missing wedge.
        tilt_step: tilt increment in degrees.
        params: CTF, MTF and noise settings.
        voxel_size: voxel (and detector pixel) size in Å.

    Returns:
        (B, N, N, N) float32 subtomograms [z, y, x].
    """
    template = np.asarray(template, dtype=np.float32)
    rotations = np.asarray(rotations, dtype=np.float64)
    shifts = np.asarray(shifts, dtype=np.float64)
    _check_inputs(template, rotations, shifts, snr)
    if snr is not None and rng is None:
        raise ValueError("rng is required when snr is set")
    if voxel_size <= 0:
        raise GumalignError(f"voxel size must be positive, got {voxel_size:g} Å")
    params.validate()
    box = template.shape[0]
    tilt_range = (float(tilt_range[0]), float(tilt_range[1]))
    try:
        ops = _operators(box, tilt_range, float(tilt_step), params, float(voxel_size))
    except ValueError as exc:
        raise GumalignError(str(exc)) from None

    import torch

    from gumalign.geometry import transform_volumes

    template_t = torch.from_numpy(template)[None]
    out = np.empty((len(rotations), box, box, box), dtype=np.float32)
    for start in range(0, len(rotations), CHUNK_SIZE):
        stop = min(start + CHUNK_SIZE, len(rotations))
        with torch.no_grad():
            posed = transform_volumes(template_t, rotations[start:stop], shifts[start:stop]).numpy()
        signal = _mask_missing(_reconstruct_signal(posed, ops), ops)
        if snr is None:
            out[start:stop] = signal
        else:
            noise = _mask_missing(_reconstruct_noise(stop - start, box, ops, rng), ops)
            out[start:stop] = _add_noise(signal, noise, snr)
    return out


def particle_transfer(
    box: int,
    tilt_range: tuple[float, float],
    params: ImagingParams,
    voxel_size: float,
) -> np.ndarray:
    """The 3D transfer of every simulated particle's signal: observed-region weight × CTF × MTF, rfftn layout.

    By the central-slice theorem the 2D filters of step 3 act on each 3D frequency k of the observed region as
    CTF(|k|)·MTF(|k|) (the factors switched off in ``params`` count as 1); step 6 (and the tilt series itself) leaves
    the missing wedge empty. A noise-free particle's spectrum is the posed template's times this array, up to the
    tilt series' angular sampling and the box's crop. The signed CTF: this is RELION's 3D CTF of data that are not
    CTF-premultiplied (rlnCtfDataAreCtfPremultiplied = 0), with the MTF folded in as part of the signal's transfer.

    Args:
        box: N, the real-space box (N³).
        tilt_range: (min, max) tilt in degrees.
        params: the imaging model's settings.
        voxel_size: voxel size in Å.

    Returns:
        (N, N, N//2 + 1) float32, FFTW/rfftn half layout [kz, ky, kx] (kx >= 0; kz, ky in FFT order), as RELION writes
        3D CTF images in Fourier layout.
    """
    from gumalign.fourier import frequency_grid

    shape = (int(box),) * 3
    kz, ky, kx = frequency_grid(shape, "rfft")
    k_angst = np.sqrt(kz**2 + ky**2 + kx**2) / (box * float(voxel_size))
    weight = wedge_mask(shape, (float(tilt_range[0]), float(tilt_range[1])), "rfft")
    return (weight * params.transfer(k_angst, float(voxel_size))).astype(np.float32)


def random_poses(n: int, max_shift: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniformly random rotations and shifts uniform in [-max_shift, max_shift] voxels per axis.

    Returns:
        ((n, 3, 3) float64 RELION matrices A, (n, 3) float64 shifts (x, y, z) in voxels).
    """
    from gumalign.geometry import random_rotations

    rotations = random_rotations(n, rng)
    shifts = rng.uniform(-max_shift, max_shift, size=(n, 3))
    return rotations, shifts


def rotations_within(n: int, max_angle_deg: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 3, 3) rotations drawn from the Haar measure restricted to angles <= ``max_angle_deg`` (by rejection)."""
    from scipy.spatial.transform import Rotation

    if not 0 < max_angle_deg <= 180:
        raise GumalignError(f"maximum rotation angle must be in (0, 180] degrees, got {max_angle_deg:g}")
    kept: list[np.ndarray] = []
    count = 0
    limit = np.deg2rad(max_angle_deg)
    while count < n:
        draws = Rotation.random(max(1024, 4 * n), random_state=rng)
        inside = draws[draws.magnitude() <= limit].as_matrix()
        kept.append(inside)
        count += len(inside)
    return np.concatenate(kept)[:n]


@dataclass
class SimulatedPairs:
    """The seed's pair dataset: s_a without a missing wedge and s_b with one, and the transform between them.

    Attributes:
        s_a: (n, N, N, N) float32 subtomograms from ``tilt_range_a`` (default ±90°, no wedge).
        s_b: (n, N, N, N) float32 subtomograms from ``tilt_range_b`` (default ±60°, a 30° wedge).
        rotations: (n, 3, 3) relative rotations R = R_b·R_aᵀ.
        shifts: (n, 3) relative shifts t = t_b - R·t_a, (x, y, z) voxels: s_b ≈ transform_volumes(s_a, R, t) without
            noise and wedge.
        rotations_a, shifts_a, rotations_b, shifts_b: each subtomogram's pose relative to the template
            (s = transform_volumes(template, R, t) before imaging).
        weight_a, weight_b: (N, N, N) float32 observed-region weights, centred layout (RELION's rlnCtfImage cube).
    """

    s_a: np.ndarray
    s_b: np.ndarray
    rotations: np.ndarray
    shifts: np.ndarray
    rotations_a: np.ndarray
    shifts_a: np.ndarray
    rotations_b: np.ndarray
    shifts_b: np.ndarray
    weight_a: np.ndarray
    weight_b: np.ndarray


def relative_transform(
    rotations_a: np.ndarray, shifts_a: np.ndarray, rotations_b: np.ndarray, shifts_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The transform carrying s_a = T(template, R_a, t_a) onto s_b = T(template, R_b, t_b).

    Returns:
        (R, t) with R = R_b·R_aᵀ and t = t_b - R·t_a, so that T(s_a, R, t) = s_b (T = transform_volumes).
    """
    rotations = rotations_b @ np.swapaxes(rotations_a, -1, -2)
    shifts = shifts_b - np.einsum("nij,nj->ni", rotations, shifts_a)
    return rotations, shifts


def simulate_pairs(
    template: np.ndarray,
    n: int,
    *,
    snr: float | None,
    rng: np.random.Generator,
    max_shift: float = 7.0,
    tilt_range_a: tuple[float, float] = (-90.0, 90.0),
    tilt_range_b: tuple[float, float] = (-60.0, 60.0),
    tilt_step: float = 1.0,
    params: ImagingParams = ImagingParams(),
    voxel_size: float = 12.0,
    identity_a: bool = False,
    max_relative_angle: float | None = None,
    relative_rotations: np.ndarray | None = None,
) -> SimulatedPairs:
    """``n`` pairs (s_a, s_b) of one template with independent random poses and noise, and their relative transforms.

    Draw order from ``rng`` (so the same state gives the same pairs): poses of a, poses of b, noise of a, noise of b.

    Args:
        template: (N, N, N) float32 density [z, y, x].
        n: number of pairs.
        snr: target SNR of each subtomogram (None: noise-free).
        rng: the generator every draw comes from.
        max_shift: shifts are uniform in [-max_shift, max_shift] voxels per axis for each subtomogram.
        tilt_range_a, tilt_range_b: tilt ranges of s_a and s_b in degrees.
        tilt_step: tilt increment in degrees.
        params: CTF, MTF and noise settings.
        voxel_size: voxel size in Å.
        identity_a: put every s_a at the template's own pose (R_a = I, t_a = 0), so the relative transform is s_b's
            pose.
        max_relative_angle: when set (degrees), s_b's rotation is R_b = ΔR·R_a with ΔR Haar-distributed within this
            angle of the identity (a training curriculum for Gum-Net's multi-start alignment); None: independent
            uniformly random rotations.
        relative_rotations: (n, 3, 3) rotations ΔR drawn elsewhere (e.g. under another rotation prior,
            gumalign.geometry.aitom_rotations): s_b's rotation is R_b = ΔR·R_a, so ΔR is the pair's relative rotation.
            The generator's draws are the same as without it (s_b's own rotations are drawn and replaced), so only
            R_b changes. Not combinable with ``max_relative_angle``.

    Returns:
        A :class:`SimulatedPairs`.
    """
    if relative_rotations is not None:
        if max_relative_angle is not None:
            raise GumalignError("relative_rotations and max_relative_angle are alternatives: pass one")
        relative_rotations = np.asarray(relative_rotations, dtype=np.float64)
        if relative_rotations.shape != (n, 3, 3):
            raise GumalignError(f"relative_rotations must be ({n}, 3, 3), got {relative_rotations.shape}")
    if identity_a:
        rotations_a, shifts_a = np.repeat(np.eye(3)[None], n, axis=0), np.zeros((n, 3))
    else:
        rotations_a, shifts_a = random_poses(n, max_shift, rng)
    rotations_b, shifts_b = random_poses(n, max_shift, rng)
    if max_relative_angle is not None:
        rotations_b = rotations_within(n, max_relative_angle, rng) @ rotations_a
    elif relative_rotations is not None:
        rotations_b = relative_rotations @ rotations_a
    common = dict(snr=snr, rng=rng, tilt_step=tilt_step, params=params, voxel_size=voxel_size)
    s_a = simulate_subtomograms(template, rotations_a, shifts_a, tilt_range=tilt_range_a, **common)
    s_b = simulate_subtomograms(template, rotations_b, shifts_b, tilt_range=tilt_range_b, **common)
    rotations, shifts = relative_transform(rotations_a, shifts_a, rotations_b, shifts_b)
    shape = np.asarray(template).shape
    return SimulatedPairs(
        s_a=s_a,
        s_b=s_b,
        rotations=rotations,
        shifts=shifts,
        rotations_a=rotations_a,
        shifts_a=shifts_a,
        rotations_b=rotations_b,
        shifts_b=shifts_b,
        weight_a=wedge_mask(shape, tilt_range_a, "centred"),
        weight_b=wedge_mask(shape, tilt_range_b, "centred"),
    )
