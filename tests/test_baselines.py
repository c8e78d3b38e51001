"""H-T align and F&A align: spherical harmonics, Wigner d, rotational matching and end-to-end recovery.

Independent references: scipy's spherical harmonics and rotations, the closed-form Wigner-d sum, direct quadrature of
rotated functions, gumalign.geometry.transform_volumes and gumalign.simulate for the particles.
"""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from scipy.special import sph_harm_y

from gumalign.align.scoring import constrained_correlation
from gumalign.baselines import FAAligner, HTAligner
from gumalign.baselines.sph import SphereGrid, directions_to_angles, sh_synthesis, wigner_d
from gumalign.baselines.so3 import (
    cross_power,
    grid_rotations,
    local_maxima,
    refine_peaks,
    rotation_angle_deg,
    rotational_correlation,
)
from gumalign.errors import GumalignError
from gumalign.fourier import wedge_mask
from gumalign.geometry import random_rotations, rotation_error, transform_volumes, translation_error
from tests.conftest import smooth_blob

BOX = 32


def posed_particles(reference, rotations, shifts, weight):
    """transform_volumes(reference, A, t), then the missing wedge applied by FFT."""
    posed = transform_volumes(
        torch.as_tensor(reference)[None], torch.as_tensor(rotations, dtype=torch.float32),
        torch.as_tensor(shifts, dtype=torch.float32),
    ).numpy()
    spectrum = np.fft.fftn(posed, axes=(1, 2, 3)) * np.fft.ifftshift(weight)
    return np.fft.ifftn(spectrum, axes=(1, 2, 3)).real.astype(np.float32)


def wigner_d_closed_form(l: int, mp: int, m: int, beta: float) -> float:
    """Wigner's explicit sum for d^l_m'm(β) (e.g. Sakurai, Modern Quantum Mechanics, eq. 3.8.33)."""
    total = 0.0
    for k in range(max(0, m - mp), min(l + m, l - mp) + 1):
        total += (-1) ** (mp - m + k) * math.cos(beta / 2) ** (2 * l + m - mp - 2 * k) * math.sin(beta / 2) ** (
            mp - m + 2 * k
        ) / (math.factorial(l + m - k) * math.factorial(k) * math.factorial(mp - m + k) * math.factorial(l - mp - k))
    return total * math.sqrt(
        math.factorial(l + mp) * math.factorial(l - mp) * math.factorial(l + m) * math.factorial(l - m)
    )


def random_real_coefficients(degree: int, rng) -> np.ndarray:
    """Harmonic coefficients of a random real function: c_l,-m = (-1)^m conj(c_lm)."""
    c = np.zeros((degree + 1, 2 * degree + 1), dtype=np.complex128)
    for l in range(degree + 1):
        c[l, degree] = rng.normal()
        for m in range(1, l + 1):
            c[l, degree + m] = rng.normal() + 1j * rng.normal()
            c[l, degree - m] = (-1) ** m * np.conj(c[l, degree + m])
    return c


# --- spherical harmonics and Wigner d ---------------------------------------------------------------------------------


def test_sh_expansion_is_exact_for_a_band_limited_function(rng):
    # A cubic polynomial in (x, y, z) restricted to the sphere has degree <= 3: the expansion must reproduce it anywhere.
    def poly(u):
        x, y, z = u[..., 0], u[..., 1], u[..., 2]
        return x**2 * y - 0.5 * z**3 + x * z + 0.3 - 2 * y

    grid = SphereGrid(3)
    coeffs = grid.analyse(torch.as_tensor(poly(grid.directions).reshape(grid.shape))).numpy()
    points = rng.standard_normal((200, 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    theta, phi = directions_to_angles(points)
    np.testing.assert_allclose(sh_synthesis(coeffs, theta, phi), poly(points), atol=1e-12)
    # The mean over the sphere, c_00 / sqrt(4π), is the constant term (every other term is odd in some coordinate).
    assert coeffs[0, 3].real / math.sqrt(4 * math.pi) == pytest.approx(0.3, abs=1e-12)


def test_sh_expansion_recovers_random_coefficients_on_an_oversampled_grid(rng):
    c = random_real_coefficients(6, rng)
    grid = SphereGrid(6, grid_degree=11)
    theta, phi = directions_to_angles(grid.directions)
    samples = sh_synthesis(c, theta, phi).real.reshape(grid.shape)
    np.testing.assert_allclose(grid.analyse(torch.as_tensor(samples)).numpy(), c, atol=1e-12)


@pytest.mark.parametrize("beta", [math.pi / 2, 0.7, 2.9])
def test_wigner_d_matches_the_closed_form(beta):
    for l in (0, 1, 2, 5, 10):
        expected = np.array([[wigner_d_closed_form(l, mp, m, beta) for m in range(-l, l + 1)] for mp in range(-l, l + 1)])
        np.testing.assert_allclose(wigner_d(l, beta), expected, atol=1e-12)


def test_wigner_d_rotates_scipy_harmonics(rng):
    # Y_lm(Rᵀu) = Σ_m' Y_lm'(u) e^{-im'α} d_m'm(β) e^{-imγ} for R = Rz(α)Ry(β)Rz(γ) (scipy's intrinsic 'ZYZ').
    alpha, beta, gamma = 0.4, 1.2, -2.1
    r = Rotation.from_euler("ZYZ", [alpha, beta, gamma]).as_matrix()
    points = rng.standard_normal((50, 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    theta, phi = directions_to_angles(points)
    theta_r, phi_r = directions_to_angles(points @ r)  # rows are Rᵀu
    l = 4
    d = wigner_d(l, beta)
    mp = np.arange(-l, l + 1)
    for m in range(-l, l + 1):
        rotated = sph_harm_y(l, m, theta_r, phi_r)
        big_d = np.exp(-1j * mp * alpha) * d[:, m + l] * np.exp(-1j * m * gamma)
        expansion = sph_harm_y(l, mp[:, None], theta[None], phi[None]).T @ big_d
        np.testing.assert_allclose(expansion, rotated, atol=1e-12)


# --- rotational matching -------------------------------------------------------------------------------------------


def test_rotational_correlation_equals_direct_quadrature_at_grid_rotations(rng):
    # C(R) = ∫ f(u) g(Rᵀu) du on the Euler grid, each grid index checked against its own rotation matrix.
    degree, n = 5, 16
    cf, cg = random_real_coefficients(degree, rng), random_real_coefficients(degree, rng)
    grid = SphereGrid(degree, grid_degree=2 * degree)
    corr = rotational_correlation(
        cross_power(torch.as_tensor(cf)[None, None], torch.as_tensor(cg)[None, None], torch.ones(1, dtype=torch.float64)),
        n,
    )[0].numpy()
    theta, phi = directions_to_angles(grid.directions)
    f_values = sh_synthesis(cf, theta, phi).real
    quad_weights = np.repeat(np.polynomial.legendre.leggauss(len(grid.theta))[1], len(grid.phi)) * 2 * np.pi / len(grid.phi)
    for index in rng.integers(0, n, size=(6, 3)):
        r = grid_rotations(index.astype(float), n)
        th_r, ph_r = directions_to_angles(grid.directions @ r)
        direct = np.sum(quad_weights * f_values * sh_synthesis(cg, th_r, ph_r).real)
        assert corr[tuple(index)] == pytest.approx(direct, abs=1e-9)


def test_rotational_correlation_peaks_at_the_rotation(rng):
    degree = 10
    cg = random_real_coefficients(degree, rng)
    true = Rotation.random(random_state=7).as_matrix()
    grid = SphereGrid(degree, grid_degree=degree + 4)
    theta, phi = directions_to_angles(grid.directions)
    g = sh_synthesis(cg, theta, phi).real.reshape(grid.shape)
    th_r, ph_r = directions_to_angles(grid.directions @ true)
    f = sh_synthesis(cg, th_r, ph_r).real.reshape(grid.shape)  # f(u) = g(Rᵀu)
    coeffs = [grid.analyse(torch.as_tensor(v))[None, None] for v in (f, g)]
    n = 32
    corr = rotational_correlation(cross_power(*coeffs, torch.ones(1, dtype=torch.float64)), n)
    flat = int(corr[0].argmax())
    index = torch.tensor([[flat // (n * n), (flat // n) % n, flat % n]])
    assert rotation_angle_deg(grid_rotations(index.numpy()[0].astype(float), n), true) < 360 / n
    fine, value = refine_peaks(corr, torch.zeros(1, dtype=torch.long), index)
    assert rotation_angle_deg(grid_rotations(fine.numpy()[0], n), true) < 2.0
    # The peak value is ∫ g² = Σ |c_lm|² (Parseval), up to the quadratic fit between grid points.
    assert float(value[0]) == pytest.approx(np.sum(np.abs(cg) ** 2), rel=0.05)


def test_local_maxima_wrap_around_the_periodic_euler_grid():
    score = torch.zeros(1, 12, 12, 12)
    score[0, 0, 5, 5] = 1.0  # beaten by its periodic neighbour across the grid edge
    score[0, 11, 5, 5] = 2.0
    score[0, 6, 6, 6] = 0.5  # alone in its window
    found = {tuple(i) for i in torch.nonzero(local_maxima(score, 3)[0] & (score[0] > 0)).tolist()}
    assert found == {(11, 5, 5), (6, 6, 6)}


def test_refined_peak_of_a_sampled_quadratic_is_exact():
    n = 16
    i, j, k = torch.meshgrid(*(torch.arange(n, dtype=torch.float64),) * 3, indexing="ij")
    centre = torch.tensor([4.3, 7.8, 10.45], dtype=torch.float64)
    score = (5 - (i - centre[0]) ** 2 - 2 * (j - centre[1]) ** 2 - 0.5 * (k - centre[2]) ** 2
             - 0.3 * (i - centre[0]) * (k - centre[2]))[None]
    fine, value = refine_peaks(score, torch.zeros(1, dtype=torch.long), torch.tensor([[4, 8, 10]]))
    np.testing.assert_allclose(fine.numpy()[0], centre.numpy(), atol=1e-9)
    assert float(value[0]) == pytest.approx(5.0, abs=1e-9)


# --- end to end ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ht_aligner():
    return HTAligner(device="cpu")


@pytest.fixture(scope="module")
def fa_aligner():
    return FAAligner(device="cpu")


@pytest.mark.parametrize("method", ["ht", "fa"])
def test_recovers_known_rotation_and_shift(method, ht_aligner, fa_aligner):
    aligner = ht_aligner if method == "ht" else fa_aligner
    gen = np.random.default_rng(2024)
    reference = smooth_blob(seed=1)
    weight = wedge_mask((BOX,) * 3, (-60, 60), "centred")
    rotations = random_rotations(4, gen)
    shifts = gen.uniform(-3, 3, size=(4, 3))
    particles = posed_particles(reference, rotations, shifts, weight)

    result = aligner.align(reference[None], np.ones((1, BOX, BOX, BOX), np.float32), particles, weight[None])

    assert result.rotations.shape == (4, 3, 3) and result.shifts.shape == (4, 3) and result.scores.shape == (4,)
    assert np.all(rotation_error(rotations, result.rotations) < 0.1)
    assert np.all(translation_error(shifts, result.shifts) < 1.0)
    # The answer is the reference -> particle transform, not its inverse: re-posing the reference reproduces them.
    repose = posed_particles(reference, result.rotations, result.shifts, weight)
    for a, b in zip(repose, particles):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.97
    # The score is the wedge-constrained correlation at the returned transform.
    expected = constrained_correlation(reference[None], np.ones((1, BOX, BOX, BOX), np.float32), particles, weight[None],
                                       torch.as_tensor(result.rotations, dtype=torch.float32),
                                       torch.as_tensor(result.shifts, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(result.scores, expected, atol=2e-3)


@pytest.mark.parametrize("method", ["ht", "fa"])
def test_accuracy_on_simulated_particles_at_snr_100(method, ht_aligner, fa_aligner):
    # Issue 5's check: the project's own simulation, SNR 100, ±60° tilts (a 30° wedge).
    from gumalign.simulate.imaging import random_poses, simulate_subtomograms

    aligner = ht_aligner if method == "ht" else fa_aligner
    gen = np.random.default_rng(5)
    reference = smooth_blob(seed=2)
    rotations, shifts = random_poses(6, 4.0, gen)
    particles = simulate_subtomograms(reference, rotations, shifts, snr=100.0, rng=gen, tilt_range=(-60, 60))
    weight = wedge_mask((BOX,) * 3, (-60, 60), "centred")

    result = aligner.align(reference[None], np.ones((1, BOX, BOX, BOX), np.float32), particles, weight[None])

    assert rotation_error(rotations, result.rotations).mean() < 0.2
    assert translation_error(shifts, result.shifts).mean() < 1.5


def test_batches_and_the_reference_cache_do_not_change_the_answer():
    gen = np.random.default_rng(3)
    reference = smooth_blob(seed=4)
    weight = wedge_mask((BOX,) * 3, (-60, 60), "centred")
    rotations, shifts = random_rotations(3, gen), gen.uniform(-2, 2, size=(3, 3))
    particles = posed_particles(reference, rotations, shifts, weight)
    ones = np.ones((1, BOX, BOX, BOX), np.float32)
    aligner = FAAligner(device="cpu", batch_size=3)
    together = aligner.align(reference[None], ones, particles, weight[None])
    one_by_one = FAAligner(device="cpu", batch_size=1).align(reference[None], ones, particles, weight[None])
    again = aligner.align(reference[None], ones, particles, weight[None])  # served from the cache
    per_particle_weights = aligner.align(np.repeat(reference[None], 3, 0), np.repeat(ones, 3, 0), particles,
                                         np.repeat(weight[None], 3, 0))
    for other in (one_by_one, again, per_particle_weights):
        np.testing.assert_allclose(other.rotations, together.rotations, atol=1e-4)
        np.testing.assert_allclose(other.shifts, together.shifts, atol=1e-3)
    # A different reference is not served from the cache: with the reference moved by +2 voxels along x, the particle
    # is the same reference rotated by A and moved by t - 2·A·x̂.
    moved = aligner.align(np.roll(reference, 2, axis=2)[None], ones, particles, weight[None])
    expected = together.shifts - 2 * together.rotations[:, :, 0]
    assert np.all(translation_error(expected, moved.shifts) < 0.5)


def test_mismatched_boxes_are_refused():
    with pytest.raises(GumalignError, match="box"):
        HTAligner(device="cpu").align(
            np.zeros((1, 24, 24, 24), np.float32), np.ones((1, 24, 24, 24), np.float32),
            np.zeros((2, BOX, BOX, BOX), np.float32), np.ones((1, BOX, BOX, BOX), np.float32),
        )
