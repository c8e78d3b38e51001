"""`gumalign simulate`, checked as issue 3 asks: SNR, ground truth, wedge, bad input, reproducibility.

References are independent of the simulator: the wedge and the CTF/MTF are written out here from their formulas,
correlations are computed with numpy, and poses are read back from the STAR file with the project's reader.
"""

from pathlib import Path

import numpy as np
import starfile
import pytest
import torch
from typer.testing import CliRunner

from gumalign.cli.main import app
from gumalign.geometry import random_rotations, transform_volumes
from gumalign.io.mrc import read_volume
from gumalign.io.star import read_star
from tests.conftest import smooth_blob

runner = CliRunner()
VOXEL = 12.0
BOX = 32


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel().astype(np.float64) - a.mean()
    b = b.ravel().astype(np.float64) - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def centred_frequencies(n: int) -> np.ndarray:
    """(3, n, n, n) integer frequencies (kx, ky, kz) on the fftshift grid of an [z, y, x] volume."""
    k = np.arange(n) - n // 2
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    return np.stack([kx, ky, kz]).astype(np.float64)


def observed(kx: np.ndarray, kz: np.ndarray, max_tilt_deg: float = 60.0) -> np.ndarray:
    """Fourier coefficients a symmetric ±max_tilt series about y observes: |kx| >= tan(90° - max)·|kz|."""
    return np.abs(kx) >= np.tan(np.deg2rad(90.0 - max_tilt_deg)) * np.abs(kz) - 1e-9


def transfer(k_angst: np.ndarray) -> np.ndarray:
    """CTF × MTF at the defaults (300 kV, 2 µm underfocus, Cs 2.7 mm, A = 0.07, envelope and MTF 0.4·Nyquist)."""
    volts = 300e3
    wavelength = 12.2643 / np.sqrt(volts * (1 + 0.97845e-6 * volts))  # Å, relativistic
    underfocus, cs, amp = 2.0e4, 2.7e7, 0.07
    chi = np.pi * wavelength * underfocus * k_angst**2 - 0.5 * np.pi * cs * wavelength**3 * k_angst**4
    nyquist = 1 / (2 * VOXEL)
    ctf = (np.sqrt(1 - amp**2) * np.sin(chi) + amp * np.cos(chi)) * np.exp(-((k_angst / (0.4 * nyquist)) ** 2))
    return ctf * np.exp(-0.5 * (k_angst / (0.4 * nyquist)) ** 2)


def fourier_filter(volume: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Multiply a volume's centred spectrum by real weights (symmetric under k -> -k)."""
    spectrum = np.fft.fftshift(np.fft.fftn(volume))
    return np.real(np.fft.ifftn(np.fft.ifftshift(spectrum * weights)))


def simulate_cli(out: Path, *extra: str) -> None:
    result = runner.invoke(app, ["simulate", "--out", str(out), "--quiet", *extra])
    assert result.exit_code == 0, result.output


# -- SNR -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("snr", [100.0, 0.1, 0.01])
def test_measured_snr_matches_target(snr):
    """Pearson c of aligned noisy copies of one pose (independent noise), SNR = c / (1 - c), within 25%.

    Each pose gets many copies and every pair of copies counts, which averages the noise's chance correlations
    down far enough to read an SNR of 0.01.
    """
    from gumalign.simulate import load_structure, simulate_subtomograms

    template = load_structure("builtin:proteasome").density
    gen = np.random.default_rng(7)
    poses, copies = 4, 24
    rotations = np.repeat(random_rotations(poses, gen), copies, axis=0)
    shifts = np.repeat(gen.uniform(-7, 7, (poses, 3)), copies, axis=0)
    volumes = simulate_subtomograms(template, rotations, shifts, snr=snr, rng=gen).reshape(poses, copies, -1)
    correlations = []
    for group in volumes.astype(np.float64):
        c = np.corrcoef(group)
        correlations.append(c[np.triu_indices(copies, 1)])
    c = float(np.mean(correlations))
    measured = c / (1 - c)
    assert measured == pytest.approx(snr, rel=0.25)


# -- ground truth ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def high_snr_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "set"
    # An asymmetric complex, so that a wrong rotation cannot land on a symmetry copy.
    simulate_cli(out, "--structure", "builtin:cand1_cul1_roc1", "--n", "8", "--snr", "100", "--seed", "3")
    return out


def _unrotated_correlations(out: Path, flip_origin: bool = False, transpose: bool = True) -> list[float]:
    """Correlation of each particle, un-rotated and un-shifted with its STAR values, with the template seen through
    the same (un-rotated) wedge and CTF·MTF."""
    table = read_star(out / "particles.star")
    template = read_volume(out / "reference.mrc").data
    k = centred_frequencies(BOX)
    k_angst = np.sqrt((k**2).sum(axis=0)) / (BOX * VOXEL)
    spectrum_weight = transfer(k_angst)
    scores = []
    for path, a, origin in zip(table.image_paths(), table.matrices(), table.origins_px()):
        particle = torch.from_numpy(read_volume(path).data)
        inverse = a.T if transpose else a
        shift = inverse @ origin * (-1 if flip_origin else 1)
        back = transform_volumes(particle, inverse[None], shift[None])[0].numpy()
        # The particle observes k where the wedge lets it through; in the template's frame that is W(A·q).
        rotated = np.einsum("ij,jzyx->izyx", a, k)
        expected = fourier_filter(template, observed(rotated[0], rotated[2]) * spectrum_weight)
        scores.append(pearson(back, expected))
    return scores


def test_ground_truth_undoes_each_particle(high_snr_set):
    scores = _unrotated_correlations(high_snr_set)
    print("ground truth correlations", np.round(scores, 3))
    assert min(scores) > 0.9, scores


def test_ground_truth_check_fails_with_a_wrong_sign(high_snr_set):
    from gumalign.geometry import rotation_error

    table = read_star(high_snr_set / "particles.star")
    shifts = np.linalg.norm(table.origins_px(), axis=1)
    a = table.matrices()
    far = rotation_error(a, np.swapaxes(a, 1, 2)) > 1.0  # A and Aᵀ differ by more than ~41°
    wrong_shift = np.array(_unrotated_correlations(high_snr_set, flip_origin=True))
    wrong_rotation = np.array(_unrotated_correlations(high_snr_set, transpose=False))
    assert shifts.max() > 3 and far.any()
    assert np.all(wrong_shift[shifts > 3] < 0.9), wrong_shift
    assert np.all(wrong_rotation[far] < 0.9), wrong_rotation


def test_star_holds_relion_columns(high_snr_set):
    table = read_star(high_snr_set / "particles.star")
    assert table.version == "3.1" and len(table) == 8
    assert table.pixel_sizes().tolist() == [VOXEL] * 8
    assert table.half_sets().tolist() == [1, 2] * 4
    assert set(table.particles["gumStructureName"]) == {"cand1_cul1_roc1"}
    assert read_volume(table.image_paths()[0]).voxel_size == pytest.approx(VOXEL)
    assert "--structure builtin:cand1_cul1_roc1" in (high_snr_set / "README").read_text()
    # RELION's ObservationModel (src/jaz/single_particle/obs_model.cpp) stops without voltage and Cs; getBoxSize
    # needs rlnImageSize; Experiment::read (src/exp_model.cpp) takes data as 2D without rlnImageDimensionality 3.
    optics = starfile.read(high_snr_set / "particles.star", always_dict=True)["optics"]
    assert optics[["rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"]].iloc[0].tolist() == [300, 2.7, 0.07]
    assert optics["rlnImageSize"].tolist() == [BOX] and optics["rlnImageDimensionality"].tolist() == [3]


# -- wedge -----------------------------------------------------------------------------------------------------------
def test_missing_wedge_is_where_the_star_says(high_snr_set):
    table = read_star(high_snr_set / "particles.star")
    k = centred_frequencies(BOX)
    seen = observed(k[0], k[2])
    for path in table.weight_paths():
        np.testing.assert_array_equal(read_volume(path).data, seen.astype(np.float32))
    for path in table.image_paths():
        power = np.abs(np.fft.fftshift(np.fft.fftn(read_volume(path).data))) ** 2
        assert power[~seen].sum() < 0.01 * power[seen].sum()


def test_projector_leaves_the_wedge_empty_before_masking():
    """Without the final mask, the reconstruction's own missing region is the formula's, about y (not x).

    Cropping any wedge-filtered volume to its box spills ~2% of the power across the wedge's edge (the ideal
    FFT-filter-then-crop does the same), so this looks 5° in from the edge.
    """
    from gumalign.simulate import ImagingParams, simulate_subtomograms

    gen = np.random.default_rng(1)
    template = smooth_blob(sigma=1.5)
    volumes = simulate_subtomograms(template, random_rotations(2, gen), np.zeros((2, 3)), snr=None,
                                    params=ImagingParams(mask_missing_wedge=False))
    k = centred_frequencies(BOX)
    deep_inside = ~observed(k[0], k[2], max_tilt_deg=65.0)  # the wedge shrunk by 5° on each side
    about_x = ~observed(k[1], k[2], max_tilt_deg=65.0) & observed(k[0], k[2])  # where a wedge about x would be
    for volume in volumes:
        power = np.abs(np.fft.fftshift(np.fft.fftn(volume))) ** 2
        seen_power = power[observed(k[0], k[2])].sum()
        assert power[deep_inside].sum() < 0.01 * seen_power
        assert power[about_x].sum() > 0.05 * seen_power


def test_asymmetric_tilt_range_observes_the_weight_files_side():
    """-30..60 and -60..30 observe mirror-image regions; the projector must fill the one wedge_mask names."""
    from gumalign.fourier import wedge_mask
    from gumalign.simulate import ImagingParams, simulate_subtomograms

    volume = simulate_subtomograms(smooth_blob(sigma=1.5), np.eye(3)[None], np.zeros((1, 3)), snr=None,
                                   tilt_range=(-30, 60), params=ImagingParams(mask_missing_wedge=False))[0]
    power = np.abs(np.fft.fftshift(np.fft.fftn(volume))) ** 2
    named = wedge_mask((BOX,) * 3, (-30, 60), "centred").astype(bool)
    mirror = wedge_mask((BOX,) * 3, (-60, 30), "centred").astype(bool)
    assert power[mirror & ~named].sum() < 0.02 * power[named].sum()
    assert power[named & ~mirror].sum() > 0.1 * power[named].sum()


# -- pairs -----------------------------------------------------------------------------------------------------------
def test_pairs_star_holds_the_relative_transform(tmp_path):
    out = tmp_path / "pairs"
    simulate_cli(out, "--structure", "builtin:rubisco", "--pairs", "--n", "4", "--snr", "inf", "--max-shift", "4")
    pairs = read_star(out / "pairs.star")
    assert len(pairs) == 4 and len(read_star(out / "particles.star")) == 8
    k = centred_frequencies(BOX)
    seen_b = observed(k[0], k[2])
    base = out
    for row, s_b_path, a, origin in zip(range(4), pairs.image_paths(), pairs.matrices(), pairs.origins_px()):
        s_a = read_volume(base / pairs.particles["gumPairReference"].iloc[row]).data
        s_b = read_volume(s_b_path).data
        predicted = transform_volumes(torch.from_numpy(s_a), a[None], -origin[None])[0].numpy()
        assert pearson(fourier_filter(predicted, seen_b), s_b) > 0.9
    assert np.all(read_volume(out / pairs.particles["gumPairReferenceWeight"].iloc[0]).data == 1)


def test_simulate_pairs_is_seedable_and_carries_s_a_onto_s_b():
    from gumalign.simulate import load_structure, simulate_pairs

    template = load_structure("builtin:p97").density
    first = simulate_pairs(template, 3, snr=None, rng=np.random.default_rng(4), max_shift=4)
    again = simulate_pairs(template, 3, snr=None, rng=np.random.default_rng(4), max_shift=4)
    np.testing.assert_array_equal(first.s_b, again.s_b)
    k = centred_frequencies(BOX)
    np.testing.assert_array_equal(first.weight_b, observed(k[0], k[2]).astype(np.float32))
    assert np.all(first.weight_a == 1)
    for s_a, s_b, r, t in zip(first.s_a, first.s_b, first.rotations, first.shifts):
        predicted = transform_volumes(torch.from_numpy(s_a), r[None], t[None])[0].numpy()
        assert pearson(fourier_filter(predicted, first.weight_b), s_b) > 0.9


# -- bad input -------------------------------------------------------------------------------------------------------
def _fails(args: list[str], *needles: str) -> None:
    result = runner.invoke(app, ["simulate", *args])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    for needle in needles:
        assert needle in text, text


@pytest.mark.parametrize("snr", ["0", "-1"])
def test_snr_must_be_positive(tmp_path, snr):
    _fails(["--structure", "builtin:proteasome", "--snr", snr, "--out", str(tmp_path / "o")], "--snr")


def test_missing_model(tmp_path):
    _fails(["--structure", str(tmp_path / "nothing.pdb"), "--out", str(tmp_path / "o")], "nothing.pdb", "no such file")


def test_unreadable_model(tmp_path):
    bad = tmp_path / "broken.cif"
    bad.write_bytes(b"\x00\x01 definitely not mmCIF \xff" * 50)
    _fails(["--structure", str(bad), "--out", str(tmp_path / "o")], "broken.cif")


def test_empty_model(tmp_path):
    empty = tmp_path / "empty.pdb"
    empty.write_text("HEADER    NOTHING HERE\nREMARK   1 NO ATOMS\nEND\n")
    _fails(["--structure", str(empty), "--out", str(tmp_path / "o")], "empty.pdb", "no atoms")


def test_box_too_small(tmp_path):
    model = tmp_path / "rod.pdb"
    atoms = [f"ATOM  {i + 1:5d}  CA  ALA A{i + 1:4d}    {3.8 * i:8.3f}{0.0:8.3f}{0.0:8.3f}  1.00  0.00           C"
             for i in range(60)]  # a 224 Å rod: 20 voxels at 12 Å, blur included
    model.write_text("\n".join(atoms) + "\nEND\n")
    _fails(["--structure", str(model), "--box", "16", "--out", str(tmp_path / "o")], "rod.pdb", "--box", "--voxel-size")


def test_unknown_builtin_lists_the_available_ones(tmp_path):
    _fails(["--structure", "builtin:ribosomez", "--out", str(tmp_path / "o")], "ribosomez", "proteasome", "spliceosome")


def test_builtin_at_another_voxel_size_is_the_same_structure_magnified():
    """builtin:NAME at 9 Å voxels: the 12 Å map resampled about the box centre, so sizes in voxels scale by 12/9 and
    the centre of mass stays put (independent check: moments of the two maps); a voxel size at which the structure
    cannot fit fails loudly."""
    from gumalign.errors import GumalignError
    from gumalign.simulate.structures import load_structure

    def moments(density):
        d = np.clip(density, 0, None).astype(np.float64)
        grid = np.indices(d.shape).reshape(3, -1) - d.shape[0] // 2
        w = d.ravel() / d.sum()
        centre = grid @ w
        return centre, np.sqrt(((grid - centre[:, None]) ** 2).sum(axis=0) @ w)

    own = load_structure("builtin:clpb", voxel_size=12.0).density
    finer = load_structure("builtin:clpb", voxel_size=9.0)
    assert finer.voxel_size == 9.0 and finer.density.shape == (32, 32, 32)
    (c12, rg12), (c9, rg9) = moments(own), moments(finer.density)
    assert rg9 / rg12 == pytest.approx(12 / 9, rel=0.03)
    np.testing.assert_allclose(c9, c12 * 12 / 9, atol=0.2)
    with pytest.raises(GumalignError, match="spliceosome.*does not fit"):
        load_structure("builtin:spliceosome", voxel_size=9.0)
    with pytest.raises(GumalignError, match="atomic model"):  # a finer resolution than the shipped maps' 12 Å
        load_structure("builtin:clpb", voxel_size=9.0, resolution=9.0)


def test_list_structures():
    result = runner.invoke(app, ["simulate", "--list-structures"])
    assert result.exit_code == 0, result.output
    for name in ("proteasome", "spliceosome", "rubisco", "p97", "clpb"):
        assert name in result.output


# -- reproducibility -------------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_bytes_with_any_jobs(tmp_path):
    args = ["--structure", "builtin:p97", "--structure", "builtin:clpb", "--n", "20", "--snr", "0.1", "--seed", "5"]
    simulate_cli(tmp_path / "one", *args, "--jobs", "1")
    simulate_cli(tmp_path / "two", *args, "--jobs", "2")
    simulate_cli(tmp_path / "other", *args[:-1], "6")
    one = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(one) == 20 + 5  # particles, weight, two references, README, STAR
    for rel in one:
        a, b = (tmp_path / "one" / rel).read_bytes(), (tmp_path / "two" / rel).read_bytes()
        if rel.name == "README":
            a, b = a.replace(b"/one", b"/X"), b.replace(b"/two", b"/X")
        assert a == b, rel
    assert (tmp_path / "one/particles/particle_000001.mrc").read_bytes() != (
        tmp_path / "other/particles/particle_000001.mrc"
    ).read_bytes()
    classes = read_star(tmp_path / "one" / "particles.star").classes()
    assert sorted(np.bincount(classes)[1:].tolist()) == [10, 10]
