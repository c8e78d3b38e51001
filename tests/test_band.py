"""The band each method uses sets its cost (issue 17): F&A, H-T (with max_freq) and refine (with max_frequency) work
at the Fourier-cropped box their band needs. The crop is checked against numpy's FFT of the full volume, the cropped
scores against the full-size ones, and the aligners on a 64³ particle against their uncropped selves."""

import numpy as np
import pytest
import torch

from gumalign.align.base import AlignmentResult
from gumalign.align.refine import refine_alignment
from gumalign.align.scoring import constrained_correlation
from gumalign.baselines.fa import FAAligner
from gumalign.baselines.ht import HTAligner
from gumalign.fourier import wedge_mask
from gumalign.fourier.crop import band_box, crop_centred, fourier_crop
from gumalign.geometry import random_rotations, rotation_error, transform_volumes, translation_error
from tests.conftest import smooth_blob


def wedged(volumes, weight):
    spectrum = np.fft.fftn(volumes, axes=(-3, -2, -1)) * np.fft.ifftshift(weight)
    return np.fft.ifftn(spectrum, axes=(-3, -2, -1)).real.astype(np.float32)


def test_band_box_is_four_times_the_band_and_never_grows_the_box():
    assert band_box(128, 8) == 32 and band_box(64, 8) == 32 and band_box(32, 8) == 32
    assert band_box(24, 8) == 24 and band_box(128, None) == 128 and band_box(100, 5.5) == 24


def test_cropped_spectrum_equals_the_full_one_below_the_crop():
    n, m = 48, 20
    volume = np.random.default_rng(0).standard_normal((2, n, n, n)).astype(np.float32)
    small = fourier_crop(torch.from_numpy(volume), m).numpy()
    assert small.shape == (2, m, m, m)
    full = np.fft.fftn(volume.astype(np.float64), axes=(1, 2, 3))
    part = np.fft.fftn(small.astype(np.float64), axes=(1, 2, 3)) * (n / m) ** 3
    k = np.arange(-(m // 2) + 1, m // 2)  # |k_i| < M/2 on every axis
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    np.testing.assert_allclose(part[:, kz, ky, kx], full[:, kz, ky, kx], rtol=1e-4, atol=1e-2)
    assert np.abs(part[:, m // 2]).max() < 1e-3 * np.abs(full).max()  # the ±M/2 planes are empty
    # The mean is kept, and the centred weights keep their frequencies (k at N//2 + k -> M//2 + k).
    np.testing.assert_allclose(small.mean(axis=(1, 2, 3)), volume.mean(axis=(1, 2, 3)), atol=1e-5)
    weight = wedge_mask((n,) * 3, (-60, 60), "centred")
    np.testing.assert_array_equal(crop_centred(torch.from_numpy(weight), m).numpy(),
                                  wedge_mask((m,) * 3, (-60, 60), "centred"))


def test_cropped_constrained_correlation_equals_the_full_one_in_the_band():
    n, m, f = 64, 32, 8
    gen = np.random.default_rng(1)
    reference = smooth_blob((n,) * 3, seed=3, radius=22.0, sigma=3.0)
    weight = wedge_mask((n,) * 3, (-60, 60), "centred")
    particle = wedged(np.roll(reference, (2, -3, 1), axis=(0, 1, 2)), weight)
    particle += 0.1 * gen.standard_normal(particle.shape).astype(np.float32)
    eye = torch.eye(3)[None]
    ones = torch.ones((1, n, n, n))
    shifts = torch.tensor([[1.0, -3.0, 2.0], [0.4, -2.6, 1.7], [-2.0, 0.0, 0.0]])
    full = [constrained_correlation(torch.from_numpy(reference)[None], ones, torch.from_numpy(particle)[None],
                                    torch.from_numpy(weight)[None], eye, s[None], max_frequency=f) for s in shifts]
    small = [constrained_correlation(fourier_crop(torch.from_numpy(reference)[None], m), crop_centred(ones, m),
                                     fourier_crop(torch.from_numpy(particle)[None], m),
                                     crop_centred(torch.from_numpy(weight)[None], m), eye, s[None] * m / n,
                                     max_frequency=f) for s in shifts]
    np.testing.assert_allclose(torch.cat(small).numpy(), torch.cat(full).numpy(), atol=1e-5)
    assert float(full[0]) > float(full[2]) + 0.1  # the scores compared do vary with the shift


def _particles(n, count, seed):
    gen = np.random.default_rng(seed)
    reference = smooth_blob((n,) * 3, seed=5, radius=11.0 * n / 32, sigma=1.5 * n / 32)
    weight = wedge_mask((n,) * 3, (-60, 60), "centred")
    rotations = random_rotations(count, gen)
    shifts = gen.uniform(-3, 3, size=(count, 3)) * n / 32
    posed = transform_volumes(torch.from_numpy(reference)[None], torch.as_tensor(rotations, dtype=torch.float32),
                              torch.as_tensor(shifts, dtype=torch.float32)).numpy()
    return reference, weight, rotations, shifts, wedged(posed, weight)


def test_at_32_cubed_and_the_default_band_nothing_is_cropped():
    reference, weight, rotations, shifts, particles = _particles(32, 2, seed=7)
    ones = np.ones((1, 32, 32, 32), np.float32)
    cropped, plain = FAAligner(device="cpu"), FAAligner(device="cpu", fourier_crop=False)
    assert cropped.working_box(32) == 32 and cropped.working_box(128) == 32 and plain.working_box(128) == 128
    a = cropped.align(reference[None], ones, particles, weight[None])
    b = plain.align(reference[None], ones, particles, weight[None])
    np.testing.assert_array_equal(a.rotations, b.rotations)
    np.testing.assert_array_equal(a.shifts, b.shifts)
    assert rotation_error(rotations, a.rotations).max() < 0.1


@pytest.fixture(scope="module")
def particles_64():
    return _particles(64, 2, seed=11)


def test_fa_on_64_cubed_aligns_as_well_cropped_as_uncropped(particles_64):
    reference, weight, rotations, shifts, particles = particles_64
    ones = np.ones((1, 64, 64, 64), np.float32)
    cropped = FAAligner(device="cpu").align(reference[None], ones, particles, weight[None])
    plain = FAAligner(device="cpu", fourier_crop=False).align(reference[None], ones, particles, weight[None])
    err_cropped, err_plain = rotation_error(rotations, cropped.rotations), rotation_error(rotations, plain.rotations)
    assert err_cropped.max() < 0.1 and err_plain.max() < 0.1
    assert np.abs(err_cropped - err_plain).max() < 0.05
    # Shifts at full sampling: as precise as the uncropped search's, not the cropped box's 2-voxel grid.
    assert translation_error(shifts, cropped.shifts).max() < 0.5
    assert translation_error(shifts, plain.shifts).max() < 0.5
    expected = constrained_correlation(reference[None], ones, particles, weight[None],
                                       torch.as_tensor(cropped.rotations, dtype=torch.float32),
                                       torch.as_tensor(cropped.shifts, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(cropped.scores, expected, atol=2e-3)  # the full-band score, as without cropping


def test_ht_with_a_band_and_refine_with_a_band_work_cropped_on_64_cubed(particles_64):
    reference, weight, rotations, shifts, particles = particles_64
    ones = np.ones((1, 64, 64, 64), np.float32)
    ht = HTAligner(device="cpu", max_freq=8, max_candidates=20)
    assert ht.working_box(64) == 32 and len(ht.shells(64).radii) == 8
    found = ht.align(reference[None], ones, particles, weight[None])
    assert rotation_error(rotations, found.rotations).max() < 0.15
    assert translation_error(shifts, found.shifts).max() < 0.75

    # Refine from a start 4° off: the cropped search comes back, and never lowers the band-limited score.
    gen = np.random.default_rng(3)
    axis = gen.normal(size=(2, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    from scipy.spatial.transform import Rotation

    off = Rotation.from_rotvec(np.radians(4.0) * axis).as_matrix() @ rotations
    start = AlignmentResult(rotations=off, shifts=shifts + 0.8, scores=np.zeros(2))
    refined = refine_alignment(reference[None], ones, particles, weight[None], start, max_frequency=8,
                               steps_deg=(3.0, 1.5), max_rounds_per_step=2)
    before = constrained_correlation(reference[None], ones, particles, weight[None],
                                     torch.as_tensor(off, dtype=torch.float32),
                                     torch.as_tensor(shifts + 0.8, dtype=torch.float32), max_frequency=8).numpy()
    assert np.all(refined.scores >= before - 1e-6)
    assert rotation_error(rotations, refined.rotations).max() < rotation_error(rotations, off).min() / 2
    assert translation_error(shifts, refined.shifts).max() < 0.5


def test_fa_on_128_cubed_takes_its_last_search_and_score_at_twice_the_band():
    """128³ at f = 8: matched at 32³, the winner's shift and score at 64³ (band_box(128, 16)); the score is the
    constrained correlation over |k| < 16 cycles per box, what a 32³ particle's full band covers."""
    reference, weight, rotations, shifts, particles = _particles(128, 2, seed=13)
    ones = np.ones((1, 128, 128, 128), np.float32)
    aligner = FAAligner(device="cpu")
    assert aligner.working_box(128) == 32 and aligner.final_box(128) == 64 and aligner.final_box(64) == 64
    result = aligner.align(reference[None], ones, particles, weight[None])
    assert rotation_error(rotations, result.rotations).max() < 0.1
    assert translation_error(shifts, result.shifts).max() < 1.5  # a fraction of the band's 16-voxel resolution
    m = 64
    expected = constrained_correlation(
        fourier_crop(torch.from_numpy(reference)[None], m), crop_centred(torch.from_numpy(ones), m),
        fourier_crop(torch.from_numpy(particles), m), crop_centred(torch.from_numpy(weight)[None], m),
        torch.as_tensor(result.rotations, dtype=torch.float32), torch.as_tensor(result.shifts * m / 128,
                                                                                 dtype=torch.float32)).numpy()
    np.testing.assert_allclose(result.scores, expected, atol=2e-3)
