"""Wedge-constrained correlation, FFT translation search and --refine against known transforms."""

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from gumalign.align.base import AlignmentResult
from gumalign.align.refine import refine_alignment
from gumalign.align.scoring import constrained_correlation, translation_search
from gumalign.fourier import wedge_mask
from gumalign.geometry import rotation_error, transform_volumes
from tests.conftest import smooth_blob

N = 32


def apply_wedge(volumes: torch.Tensor, weight: np.ndarray) -> torch.Tensor:
    """Multiply each volume's centred spectrum by the weight (an independent, direct FFT route)."""
    spectrum = np.fft.fftshift(np.fft.fftn(volumes.numpy(), axes=(-3, -2, -1)), axes=(-3, -2, -1)) * weight
    return torch.from_numpy(np.fft.ifftn(np.fft.ifftshift(spectrum, axes=(-3, -2, -1)), axes=(-3, -2, -1)).real.astype(np.float32))


def make_particles(n, seed, noise=0.0):
    gen = np.random.default_rng(seed)
    ref = smooth_blob(seed=seed)
    rots = Rotation.random(n, random_state=seed).as_matrix()
    shifts = gen.uniform(-5, 5, (n, 3))
    wedge = wedge_mask((N,) * 3, (-60, 60), "centred")
    parts = apply_wedge(transform_volumes(torch.from_numpy(ref), rots, shifts), wedge)
    if noise:
        parts = parts + noise * parts.std() * torch.from_numpy(gen.standard_normal(parts.shape).astype(np.float32))
    return ref, rots, shifts, wedge, parts


def test_translation_search_finds_known_subvoxel_shifts():
    ref, rots, shifts, wedge, parts = make_particles(4, seed=1)
    found, scores = translation_search(ref[None], np.ones((1, N, N, N), np.float32), parts, wedge[None], rots)
    np.testing.assert_allclose(found.numpy(), shifts, atol=0.15)
    assert torch.all(scores > 0.98)


def test_translation_search_respects_max_shift():
    ref, rots, shifts, wedge, parts = make_particles(3, seed=2)
    found, _ = translation_search(ref[None], np.ones((1, N, N, N), np.float32), parts, wedge[None], rots, max_shift=2.0)
    assert torch.all(torch.linalg.norm(found, dim=1) <= 2.0 + 0.5 * np.sqrt(3))


def test_constrained_correlation_peaks_at_truth_and_ignores_the_wedge():
    ref, rots, shifts, wedge, parts = make_particles(2, seed=3)
    ones = np.ones((1, N, N, N), np.float32)
    truth = constrained_correlation(ref[None], ones, parts, wedge[None], rots, shifts)
    # The particle lacks the wedge; a constrained score ignores that and is ~1 at the truth.
    assert torch.all(truth > 0.99)
    wrong = constrained_correlation(ref[None], ones, parts, wedge[None], rots, shifts + 2.0)
    assert torch.all(wrong < truth - 0.2)
    # Unconstrained (claiming the particle is fully observed) is lower: the missing wedge counts against it.
    unconstrained = constrained_correlation(ref[None], ones, parts, ones, rots, shifts)
    assert torch.all(unconstrained < truth)


def test_refine_never_lowers_the_score_and_recovers_rotations():
    ref, rots, shifts, wedge, parts = make_particles(4, seed=4, noise=0.5)
    gen = np.random.default_rng(0)
    start_rot = Rotation.from_rotvec(gen.normal(0, 1, (4, 3)) * np.deg2rad(6)).as_matrix() @ rots
    start = AlignmentResult(start_rot, shifts + gen.normal(0, 1, (4, 3)), np.zeros(4))
    ones = np.ones((1, N, N, N), np.float32)
    before = constrained_correlation(ref[None], ones, parts, wedge[None], start.rotations, start.shifts)
    refined = refine_alignment(ref[None], ones, parts, wedge[None], start, steps_deg=(4.0, 2.0))
    assert np.all(refined.scores >= before.numpy() - 1e-6)
    assert rotation_error(rots, refined.rotations).mean() < 0.5 * rotation_error(rots, start_rot).mean()
    # Started at the truth, it stays there.
    exact = AlignmentResult(rots, shifts, np.zeros(4))
    stay = refine_alignment(ref[None], ones, parts, wedge[None], exact, steps_deg=(2.0,))
    assert rotation_error(rots, stay.rotations).max() < 0.06
