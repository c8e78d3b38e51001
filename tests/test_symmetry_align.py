"""--sym (issue 17): a particle of a D7 complex rotated by a symmetry mate scores as the truth, every mate of one
orientation gets the same answer, and C1 leaves an aligner untouched."""

import numpy as np
import pytest
import torch

from gumalign.align.spec import AlignerSpec
from gumalign.errors import GumalignError
from gumalign.fourier import wedge_mask
from gumalign.geometry import rotation_error, transform_volumes
from gumalign.geometry.errors import rotation_error_sym
from gumalign.geometry.symmetry import point_group, symmetrise
from tests.conftest import smooth_blob
from tests.test_scoring import apply_wedge


@pytest.fixture(scope="module")
def d7_particles():
    """A D7 reference and, for one orientation A, particles at A·S for four of its 14 mates (30° wedge, shifted)."""
    from scipy.spatial.transform import Rotation

    ops = point_group("D7")
    # Symmetrise an off-axis blob: a D7 map with no extra symmetry.
    blob = smooth_blob(seed=11, radius=10.0)
    reference = symmetrise(torch.from_numpy(blob), ops).numpy()
    a = Rotation.from_euler("ZYZ", [40, 70, -25], degrees=True).as_matrix()
    mates = np.stack([a @ ops[k] for k in (0, 3, 8, 13)])
    shift = np.array([1.5, -2.0, 1.0])
    wedge = wedge_mask((32,) * 3, (-60, 60), "centred")
    particles = apply_wedge(transform_volumes(torch.from_numpy(reference), mates, np.tile(shift, (4, 1))), wedge)
    return reference, particles.numpy(), wedge, a, mates, shift, ops


def test_every_mate_scores_as_the_truth_and_gets_one_answer_with_sym_d7(d7_particles):
    reference, particles, wedge, a, mates, shift, ops = d7_particles
    ones = np.ones((1, 32, 32, 32), np.float32)
    aligner = AlignerSpec(method="fa", device="cpu", symmetry="d7").build()
    assert aligner.group == "D7"
    result = aligner.align(reference[None], ones, particles, wedge[None])
    # Each particle is the truth (up to the group): a symmetry-aware error of ~0, and the same written rotation.
    errors = rotation_error_sym(a[None], result.rotations, ops)
    assert errors.max() < 0.1, errors
    assert rotation_error(result.rotations[:1], result.rotations).max() < 0.1
    np.testing.assert_allclose(result.scores, result.scores[0], atol=0.01)
    np.testing.assert_allclose(result.shifts, np.tile(shift, (4, 1)), atol=0.6)
    # Without --sym the plain errors of the mates against A are large (the test would be empty otherwise).
    assert rotation_error(a[None], mates[1:]).min() > 1.0


def test_c1_is_the_method_itself_and_a_bad_group_is_one_line():
    plain = AlignerSpec(method="ht", device="cpu").build()
    assert type(plain).__name__ == "HTAligner"
    with pytest.raises(GumalignError, match="point group|symmetry"):
        AlignerSpec(method="ht", symmetry="Q5")
