"""`gumalign align` end to end: known RELION angles and shifts come back, columns pass through, bad input stops early."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gumalign.cli.main import app
from gumalign.fourier import wedge_mask
from gumalign.geometry import euler_to_matrix, rotation_error, transform_volumes
from gumalign.io.mrc import write_volume
from gumalign.io.star import read_star
from tests.conftest import smooth_blob
from tests.test_scoring import apply_wedge

runner = CliRunner()
N = 32
PIXEL = 10.0
ANGLES = np.array([[30.0, 50.0, -70.0], [-100.0, 120.0, 15.0], [160.0, 80.0, 100.0]])
ORIGINS_PX = np.array([[2.0, -3.0, 1.0], [-1.5, 0.5, 2.5], [0.0, 4.0, -2.0]])


@pytest.fixture
def dataset(tmp_path):
    """Reference + particles made with RELION's meaning: particle = shift(rotate(ref, A), -origin), 30° wedge."""
    ref = smooth_blob(seed=7)
    write_volume(tmp_path / "ref.mrc", ref, PIXEL)
    a = euler_to_matrix(ANGLES)
    parts = apply_wedge(transform_volumes(torch.from_numpy(ref), a, -ORIGINS_PX), wedge_mask((N,) * 3, (-60, 60), "centred"))
    (tmp_path / "parts").mkdir()
    rows = []
    for i, vol in enumerate(parts.numpy()):
        write_volume(tmp_path / "parts" / f"p{i}.mrc", vol, PIXEL)
        rows.append(f"parts/p{i}.mrc 00255 {i % 2 + 1} 1")
    star = tmp_path / "parts.star"
    star.write_text(
        "data_optics\n\nloop_\n_rlnOpticsGroupName #1\n_rlnOpticsGroup #2\n_rlnImagePixelSize #3\n"
        "_rlnImageSize #4\n_rlnImageDimensionality #5\nopticsGroup1 1 10.0 32 3\n\n"
        "data_particles\n\nloop_\n_rlnImageName #1\n_rlnTomoName #2\n_rlnRandomSubset #3\n_rlnOpticsGroup #4\n"
        + "\n".join(rows) + "\n"
    )
    return tmp_path


def run_align(dataset, *extra):
    out = dataset / "aligned.star"
    args = ["align", "--ref", str(dataset / "ref.mrc"), "--particles", str(dataset / "parts.star"),
            "--out", str(out), "--tilt-range", "-60", "60", "--quiet", "--device", "cpu", *extra]
    return runner.invoke(app, args), out


@pytest.mark.parametrize("method", ["ht", "fa"])
def test_known_angles_and_shifts_come_back(dataset, method):
    result, out = run_align(dataset, "--method", method)
    assert result.exit_code == 0, result.output
    table = read_star(out)
    assert rotation_error(euler_to_matrix(ANGLES), table.matrices()).max() < 0.1
    np.testing.assert_allclose(table.origins_px(), ORIGINS_PX, atol=0.75)
    assert table.particles["rlnTomoName"].tolist() == ["00255"] * 3
    assert table.half_sets().tolist() == [1, 2, 1]
    assert np.all(table.numeric("gumAlignScore") > 0.9)


def test_gumnet_writes_known_angles_and_shifts(dataset):
    """The shipped Gum-Net (60 starts, FFT shift per candidate, a polish pass) alone lands within about 20° (0.35) of
    the known triples with the right shifts; with --refine it writes the triples themselves (< 0.1, as ht and fa)."""
    truth = euler_to_matrix(ANGLES)
    result, out = run_align(dataset, "--method", "gumnet")
    assert result.exit_code == 0, result.output
    table = read_star(out)
    assert rotation_error(truth, table.matrices()).max() < 0.35
    np.testing.assert_allclose(table.origins_px(), ORIGINS_PX, atol=0.75)
    result, out = run_align(dataset, "--method", "gumnet", "--refine")
    assert result.exit_code == 0, result.output
    table = read_star(out)
    assert rotation_error(truth, table.matrices()).max() < 0.1
    np.testing.assert_allclose(table.origins_px(), ORIGINS_PX, atol=0.75)
    assert table.particles["gumAlignMethod"].tolist() == ["gumnet+refine"] * 3


def test_resume_after_interruption_matches_a_straight_run(dataset):
    from gumalign.align.pipeline import align_table, partial_path
    from gumalign.align.spec import AlignerSpec
    from gumalign.io.mrc import read_volume

    table, ref = read_star(dataset / "parts.star"), read_volume(dataset / "ref.mrc")
    spec = AlignerSpec(method="ht", batch_size=1, device="cpu")
    options = dict(tilt_range=(-60, 60))
    straight = align_table(table, ref, dataset / "straight.star", spec, **options)
    calls = []

    def kill_after_first_batch(n):
        calls.append(n)
        if sum(calls) >= 1:
            raise KeyboardInterrupt

    out = dataset / "resumed.star"
    with pytest.raises(KeyboardInterrupt):
        align_table(table, ref, out, spec, progress=kill_after_first_batch, **options)
    assert not out.exists() and partial_path(out).exists()
    resumed = align_table(table, ref, out, spec, resume=True, **options)
    assert not partial_path(out).exists()
    np.testing.assert_allclose(resumed.angles(), straight.angles(), atol=1e-5)
    np.testing.assert_allclose(resumed.origins_angst(), straight.origins_angst(), atol=1e-5)


def test_missing_image_stops_before_writing(dataset):
    (dataset / "parts" / "p2.mrc").unlink()
    result, out = run_align(dataset, "--method", "ht")
    assert result.exit_code == 2 and "p2.mrc does not exist" in result.output
    assert not out.exists() and not (dataset / "aligned.star.partial").exists()


def test_box_and_voxel_size_mismatch(dataset):
    write_volume(dataset / "ref.mrc", np.zeros((24, 24, 24), np.float32), PIXEL)
    result, _ = run_align(dataset, "--method", "ht")
    assert result.exit_code == 2 and "differs from the reference" in result.output
    write_volume(dataset / "ref.mrc", smooth_blob(), 5.0)
    result, _ = run_align(dataset, "--method", "ht")
    assert result.exit_code == 2 and "pixel size" in result.output


def test_unknown_method(dataset):
    result, _ = run_align(dataset, "--method", "magic")
    assert result.exit_code == 2 and "unknown method 'magic'" in result.output


def test_average_of_the_aligned_output_reproduces_the_reference(dataset):
    from gumalign.io.mrc import read_volume

    result, out = run_align(dataset, "--method", "fa")
    assert result.exit_code == 0, result.output
    avg = dataset / "avg.mrc"
    result = runner.invoke(app, ["average", "--particles", str(out), "--out", str(avg), "--tilt-range", "-60", "60",
                                 "--regularisation", "0.01", "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    ref, mean = read_volume(dataset / "ref.mrc").data, read_volume(avg).data
    assert np.corrcoef(ref.ravel(), mean.ravel())[0, 1] > 0.95


def test_refine_lowers_rotation_error_at_snr_0_1_and_never_lowers_scores():
    from gumalign.align.refine import refine_alignment
    from gumalign.align.registry import get_aligner
    from gumalign.align.scoring import constrained_correlation
    from gumalign.simulate.imaging import random_poses, simulate_subtomograms
    from gumalign.simulate.templates import load_builtin_template

    template = load_builtin_template("clpb").density
    rng = np.random.default_rng(5)
    rotations, shifts = random_poses(8, 5.0, rng)
    particles = simulate_subtomograms(template, rotations, shifts, snr=0.1, rng=rng)
    wedge = wedge_mask((N,) * 3, (-60, 60), "centred")[None]
    ones = np.ones((1, N, N, N), np.float32)
    start = get_aligner("fa", device="cpu").align(template[None], ones, particles, wedge)
    before = constrained_correlation(template[None], ones, particles, wedge, start.rotations, start.shifts).numpy()
    refined = refine_alignment(template[None], ones, torch.from_numpy(particles), wedge, start)
    assert np.all(refined.scores >= before - 1e-6)
    assert rotation_error(rotations, refined.rotations).mean() < rotation_error(rotations, start.rotations).mean()
