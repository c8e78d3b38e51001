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


def test_symmetrised_averages_equal_their_own_symmetry_images():
    """average_particles with a point group: the map is its own image under every operator (C4: 90° about z
    permutes the grid, so exactly up to float error), and C1 gives the map of no symmetry."""
    from gumalign.average.compensated import average_particles
    from gumalign.geometry.symmetry import point_group

    volumes = np.stack([smooth_blob(seed=s, radius=9.0) for s in (1, 2, 3, 4)])
    eye = np.tile(np.eye(3), (4, 1, 1))
    wedge = wedge_mask((32,) * 3, (-60, 60), "centred")
    plain = average_particles(volumes, eye, np.zeros((4, 3)), weights=wedge, regularisation=0.01).full
    sym = average_particles(volumes, eye, np.zeros((4, 3)), weights=wedge, regularisation=0.01, symmetry="c4").full
    z, y, x = np.indices((32,) * 3) - 16
    inside = x**2 + y**2 + z**2 <= 15**2  # a 90° turn about N // 2 maps index 0 out of the box
    for op in point_group("C4")[1:]:
        image = transform_volumes(torch.from_numpy(sym), op[None])[0].numpy()
        assert np.abs(image - sym)[inside].max() < 1e-4 * np.abs(sym).max()
        plain_image = transform_volumes(torch.from_numpy(plain), op[None])[0].numpy()
        assert np.abs(plain_image - plain)[inside].max() > 0.1 * np.abs(plain).max()  # the test is not empty


def test_align_command_writes_one_orientation_for_every_mate_and_fsc_refuses_sym_without_half_sets(
        d7_particles, tmp_path):
    from typer.testing import CliRunner

    from gumalign.cli.main import app
    from gumalign.io.mrc import write_volume
    from gumalign.io.star import read_star

    reference, particles, wedge, a, mates, shift, ops = d7_particles
    write_volume(tmp_path / "ref.mrc", reference, 10.0)
    write_volume(tmp_path / "wedge.mrc", wedge, 10.0)
    rows = []
    for i, vol in enumerate(particles):
        write_volume(tmp_path / f"p{i}.mrc", vol, 10.0)
        rows.append(f"p{i}.mrc wedge.mrc 10.0")
    (tmp_path / "parts.star").write_text("data_particles\n\nloop_\n_rlnImageName #1\n_rlnCtfImage #2\n"
                                         "_rlnImagePixelSize #3\n" + "\n".join(rows) + "\n")
    runner = CliRunner()
    out = tmp_path / "aligned.star"
    result = runner.invoke(app, ["align", "--ref", str(tmp_path / "ref.mrc"), "--particles", str(tmp_path / "parts.star"),
                                 "--method", "fa", "--sym", "D7", "--device", "cpu", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    written = read_star(out).matrices()
    assert rotation_error(written[:1], written).max() < 0.1
    assert rotation_error_sym(a[None], written, ops).max() < 0.1
    result = runner.invoke(app, ["fsc", str(tmp_path / "ref.mrc"), str(tmp_path / "p0.mrc"), "--sym", "D7",
                                 "--out", str(tmp_path / "f.star")])
    assert result.exit_code == 2 and "--gold-standard" in result.output


def test_a_reference_outside_relions_symmetry_frame_gets_a_note(d7_particles):
    """A D7 map turned off RELION's axes (the deposited 3J9I's 7-fold lies near (0.64, -0.76, -0.10)) is not
    symmetric under RELION's D7 operators: align --sym D7 says so; a D7 map in the frame, the built-in proteasome
    among them, passes silently."""
    from scipy.spatial.transform import Rotation

    from gumalign.ops.align import _check_symmetry_frame
    from gumalign.simulate.templates import load_builtin_template

    notes = []
    _check_symmetry_frame("D7", d7_particles[0], notes.append)
    shipped = load_builtin_template("proteasome").density
    _check_symmetry_frame("D7", shipped, notes.append)
    assert notes == []
    off = Rotation.from_euler("ZYZ", [30, 50, -70], degrees=True).as_matrix()
    _check_symmetry_frame("D7", transform_volumes(torch.from_numpy(shipped), off)[0].numpy(), notes.append)
    assert len(notes) == 1 and "symmetry frame" in notes[0]


def _shell_power(volume: np.ndarray) -> np.ndarray:
    """(N//2,) power of each integer Fourier shell 0..N/2-1."""
    n = volume.shape[-1]
    power = np.abs(np.fft.fftshift(np.fft.fftn(volume))) ** 2
    z, y, x = np.indices(volume.shape) - n // 2
    shell = np.rint(np.sqrt(x**2 + y**2 + z**2)).astype(int)
    return np.array([power[shell == k].sum() for k in range(n // 2)])


def test_the_symmetrised_reference_keeps_its_power_and_equals_its_own_images():
    """--sym symmetrises the reference in Fourier space (fourier.symmetrise.symmetrise_map): a D7 map in RELION's frame
    (the built-in proteasome) comes back with the power of every shell below N/2 - 1 within 10% (the real-space mean
    of trilinear copies, geometry.symmetry.symmetrise, loses up to half of it), and a C4 map of a blob equals its
    images under 90° turns about z (grid permutations, so exact up to float error inside the sphere)."""
    from gumalign.fourier.symmetrise import symmetrise_map
    from gumalign.simulate.templates import load_builtin_template

    template = load_builtin_template("proteasome").density
    given = _shell_power(template)[: 32 // 2 - 1]
    fourier = _shell_power(symmetrise_map(template, "D7").numpy())[: 32 // 2 - 1]
    real = _shell_power(symmetrise(torch.from_numpy(template), "D7").numpy())[: 32 // 2 - 1]
    np.testing.assert_allclose(fourier / given, 1.0, atol=0.1)
    assert (real / given).min() < 0.6  # why the reference is not symmetrised in real space

    blob = smooth_blob(seed=3, radius=9.0)
    sym = symmetrise_map(blob, "C4").numpy()
    z, y, x = np.indices((32,) * 3) - 16
    inside = x**2 + y**2 + z**2 <= 14**2
    for op in point_group("C4")[1:]:
        image = transform_volumes(torch.from_numpy(sym), op[None])[0].numpy()
        assert np.abs(image - sym)[inside].max() < 1e-4 * np.abs(sym).max()
    assert np.abs(blob - sym)[inside].max() > 0.1 * np.abs(blob).max()  # the blob was not C4 to begin with
