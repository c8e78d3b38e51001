"""FSC, resolution, the RELION-postprocess correction and `gumalign fsc`, against formulas and an independent package."""

import re
from xml.etree import ElementTree

import numpy as np
import pytest
import starfile
import torch
from typer.testing import CliRunner

from gumalign.cli.main import app
from gumalign.io.mrc import write_volume
from gumalign.metrics import fsc, fsc_with_mask, pearson, resolution_at, snr_from_correlation, soft_spherical_mask
from gumalign.metrics.fsc import corrected_fsc, randomise_phases_beyond
from tests.conftest import smooth_blob

runner = CliRunner()
N = 32


def full_radius(n: int) -> np.ndarray:
    """|k| (cycles per box) of every coefficient of an unshifted fftn, computed here from numpy's fftfreq."""
    k = np.fft.fftfreq(n) * n
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    return np.sqrt(kz**2 + ky**2 + kx**2)


def low_pass(volume: np.ndarray, cutoff: float) -> np.ndarray:
    """Zero every Fourier coefficient with |k| > cutoff (cycles per box)."""
    return np.fft.ifftn(np.fft.fftn(volume) * (full_radius(volume.shape[0]) <= cutoff)).real


# -- the curve ---------------------------------------------------------------------------------------------------------
def test_identical_maps_give_one_in_every_shell(rng):
    volume = rng.standard_normal((N, N, N))
    curve = fsc(volume, volume)
    assert curve.shape == (N // 2 + 1,)
    np.testing.assert_allclose(curve, 1.0, atol=1e-12)


def test_independent_noise_stays_within_three_sigma_of_zero(rng):
    a, b = rng.standard_normal((2, N, N, N))
    curve = fsc(a, b)
    shells = np.round(full_radius(N)).astype(int)
    voxels = np.array([np.sum(shells == s) for s in range(N // 2 + 1)])
    assert np.all(np.abs(curve[1:]) < 3.0 / np.sqrt(voxels[1:]))


def test_agrees_with_torch_fourier_shell_correlation():
    """torch-fourier-shell-correlation bins by linear interpolation between shells, gumalign by round(|k|) as RELION.
    On maps whose Fourier coefficients all lie at integer radii the two binnings coincide, so the curves must agree."""
    from torch_fourier_shell_correlation import fsc as reference_fsc

    gen = np.random.default_rng(3)
    on_integer_radius = np.isclose(full_radius(N), np.round(full_radius(N)), atol=1e-9) & (full_radius(N) <= N // 2)
    maps = []
    for _ in range(2):
        spectrum = (gen.standard_normal((N, N, N)) + 1j * gen.standard_normal((N, N, N))) * on_integer_radius
        maps.append(np.fft.ifftn(spectrum).real)  # the real part keeps the support (it is symmetric under k -> -k)
    assert on_integer_radius.sum() > 500
    ours = fsc(maps[0], maps[1])
    theirs = reference_fsc(torch.from_numpy(maps[0]), torch.from_numpy(maps[1])).numpy()
    assert np.abs(ours[1:]).max() > 0.05  # a non-trivial curve
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_low_passed_map_resolution_is_found_within_one_shell(rng):
    structure = rng.standard_normal((N, N, N))
    cutoff = 10
    # Map against its unfiltered reference: FSC 1 up to the cutoff, 0 beyond.
    curve = fsc(low_pass(structure, cutoff), structure)
    for threshold in (0.143, 0.5):
        found = resolution_at(curve, threshold, N, 4.0)
        assert abs(found.shell - cutoff) <= 1
        assert found.angstrom == pytest.approx(N * 4.0 / found.shell)
    # Two half maps: the shared low-passed signal plus weak independent noise.
    signal = low_pass(structure, cutoff)
    halves = [signal + 0.05 * signal.std() * rng.standard_normal(signal.shape) for _ in range(2)]
    found = resolution_at(fsc(*halves), 0.143, N, 4.0)
    assert abs(found.shell - cutoff) <= 1


def test_resolution_interpolates_linearly_between_shells():
    curve = np.array([1.0, 0.9, 0.6, 0.3, 0.1, 0.05])  # box 10
    found = resolution_at(curve, 0.143, box=10, voxel_size=2.0)
    shell = 3 + (0.3 - 0.143) / (0.3 - 0.1)
    assert found.shell == pytest.approx(shell)
    assert found.angstrom == pytest.approx(10 * 2.0 / shell)
    assert not found.reached_nyquist
    never = resolution_at(np.ones(6), 0.143, box=10, voxel_size=2.0)
    assert never.reached_nyquist and never.angstrom == pytest.approx(4.0)  # Nyquist = 2 voxels


# -- masking and phase randomisation ------------------------------------------------------------------------------------
def test_corrected_fsc_follows_relion_formula():
    masked = np.array([1.0, 0.99, 0.9, 0.7, 0.5, 0.4, 0.3, 0.2])
    noise = np.array([1.0, 0.99, 0.9, 0.5, 0.3, 0.2, 0.35, 0.1])
    out = corrected_fsc(masked, noise, randomised_from=3)
    np.testing.assert_allclose(out[:5], masked[:5])  # below randomised_from + 2: FSC_t
    assert out[5] == pytest.approx((0.4 - 0.2) / (1 - 0.2))
    assert out[6] == 0.0  # FSC_n > FSC_t
    assert out[7] == pytest.approx((0.2 - 0.1) / (1 - 0.1))


def test_phase_randomisation_keeps_amplitudes_and_low_frequencies(rng):
    volume = rng.standard_normal((N, N, N))
    out = randomise_phases_beyond(volume, 6, np.random.default_rng(0))
    f_in, f_out = np.fft.rfftn(volume), np.fft.rfftn(out)
    radius = full_radius(N)[..., : N // 2 + 1]
    low = (radius < 6) & (radius > 0)
    interior = radius >= 6
    # Amplitudes are kept everywhere except on the self-conjugate planes, where irfftn symmetrises the random phases.
    inner = interior.copy()
    inner[..., 0] = inner[..., -1] = False
    np.testing.assert_allclose(np.abs(f_out[inner]), np.abs(f_in[inner]), rtol=1e-8)
    np.testing.assert_allclose(f_out[low], f_in[low], atol=1e-8)
    assert abs(fsc(volume, out)[8:]).max() < 0.3


def test_mask_correction_removes_mask_induced_correlation():
    """Two half maps share a signal low-passed to shell 6 and carry independent noise: their true FSC is ~0 beyond
    shell 6. A sharp mask correlates the noise-dominated shells; the corrected curve must not."""
    gen = np.random.default_rng(5)
    signal = low_pass(smooth_blob((N,) * 3, seed=3, radius=9, sigma=2.0).astype(np.float64), 6)
    signal /= signal.std()
    halves = [signal + 0.3 * gen.standard_normal(signal.shape) for _ in range(2)]
    radius = np.sqrt(((np.indices((N,) * 3) - N // 2) ** 2).sum(axis=0))
    result = fsc_with_mask(*halves, 1.0, (radius <= 10).astype(float), seed=0)
    assert result.randomised_from == 7  # first shell where the unmasked FSC < 0.8
    beyond = slice(result.randomised_from + 2, None)
    assert result.masked[beyond].mean() > 0.15  # the inflation the correction is for
    assert abs(result.corrected[beyond].mean()) < 0.05
    assert abs(result.unmasked[beyond].mean()) < 0.05


def test_soft_spherical_mask():
    mask = soft_spherical_mask(N)
    assert mask[N // 2, N // 2, N // 2] == 1.0
    assert mask[0, 0, 0] == 0.0 and mask[N // 2, N // 2, 0] == pytest.approx(0.0, abs=1e-6)
    profile = mask[N // 2, N // 2, N // 2 :]
    assert np.all(np.diff(profile) <= 1e-7)
    assert 0.0 < mask[N // 2, N // 2, N // 2 + 14] < 1.0  # the soft edge


# -- other metrics ------------------------------------------------------------------------------------------------------
def test_pearson_and_snr_match_numpy(rng):
    a = rng.standard_normal((8, 8, 8))
    b = a + rng.standard_normal((8, 8, 8))
    assert pearson(a, b) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    assert snr_from_correlation(0.5) == pytest.approx(1.0)
    assert snr_from_correlation(1 / 11) == pytest.approx(0.1)
    batch = pearson(np.stack([a, -a]), b)
    np.testing.assert_allclose(batch, [pearson(a, b), -pearson(a, b)])


def test_snr_of_two_noisy_copies_matches_the_noise_level(rng):
    signal = smooth_blob((N,) * 3, seed=1).astype(np.float64)
    sigma = signal.std() / np.sqrt(0.5)  # SNR 0.5
    copies = [signal + sigma * rng.standard_normal(signal.shape) for _ in range(2)]
    from gumalign.metrics import measured_snr

    assert measured_snr(*copies) == pytest.approx(0.5, rel=0.1)


# -- the command --------------------------------------------------------------------------------------------------------
@pytest.fixture
def half_maps(tmp_path):
    gen = np.random.default_rng(11)
    signal = low_pass(smooth_blob((N,) * 3, seed=4).astype(np.float64), 8)
    signal /= signal.std()
    paths = []
    for i in range(2):
        path = tmp_path / f"half{i + 1}.mrc"
        write_volume(path, (signal + 0.2 * gen.standard_normal(signal.shape)).astype(np.float32), 5.0)
        paths.append(path)
    return paths


def parse_summary(output: str) -> dict[str, str]:
    line = [l for l in output.splitlines() if l.startswith("resolution_0.143=")][-1]
    return dict(item.split("=", 1) for item in line.split())


def test_cli_half_maps_writes_star_xml_png_and_a_summary_line(half_maps, tmp_path):
    out = tmp_path / "post.star"
    result = runner.invoke(app, ["fsc", str(half_maps[0]), str(half_maps[1]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = parse_summary(result.stdout)
    assert summary["final_threshold"] == "0.143" and summary["mask"] == "auto"
    final = float(summary["final_resolution"])
    assert final == pytest.approx(float(summary["resolution_0.143"]))
    assert 5.0 * N / 11 < final < 5.0 * N / 6  # signal up to shell 8
    blocks = starfile.read(out, always_dict=True)
    assert float(blocks["general"]["rlnFinalResolution"]) == pytest.approx(final, abs=0.01)
    # RELION's rlnFinalResolution: box·voxel / the last shell before the first one below 0.143 (postprocessing.cpp).
    corrected = blocks["fsc"]["rlnFourierShellCorrelationCorrected"].to_numpy()
    last = int(np.flatnonzero(corrected[1:] < 0.143)[0])  # shells 1..last are >= 0.143
    assert final == pytest.approx(N * 5.0 / last, abs=0.01)
    interpolated = float(summary["final_resolution_interpolated"])
    assert N * 5.0 / (last + 1) <= interpolated <= final
    assert float(blocks["general"]["gumFinalResolutionInterpolated"]) == pytest.approx(interpolated, abs=0.01)
    # Shell 0 at 999 Å, as RELION writes it.
    assert blocks["fsc"]["rlnAngstromResolution"].iloc[0] == 999.0
    assert blocks["fsc"]["rlnResolution"].iloc[0] == pytest.approx(1 / 999.0, abs=1e-6)
    table = blocks["fsc"]
    for column in ("rlnSpectralIndex", "rlnResolution", "rlnAngstromResolution",
                   "rlnFourierShellCorrelationCorrected", "rlnFourierShellCorrelationUnmaskedMaps",
                   "rlnFourierShellCorrelationMaskedMaps",
                   "rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps"):
        assert column in table.columns
    assert len(table) == N // 2 + 1
    np.testing.assert_allclose(table["rlnResolution"].to_numpy()[1:], np.arange(1, N // 2 + 1) / (N * 5.0), rtol=1e-4)
    xml = ElementTree.parse(out.with_suffix(".xml")).getroot()
    assert xml.tag == "fsc" and xml.get("xaxis") == "Resolution (A-1)"
    assert len(xml.findall("coordinate")) == N // 2 + 1
    assert out.with_suffix(".png").stat().st_size > 1000


def test_cli_map_against_reference_reports_fsc_half(half_maps, tmp_path):
    out = tmp_path / "vs_ref.star"
    result = runner.invoke(app, ["fsc", str(half_maps[0]), "--ref", str(half_maps[1]), "--no-mask", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = parse_summary(result.stdout)
    assert summary["final_threshold"] == "0.5" and summary["mask"] == "none"
    assert float(summary["final_resolution"]) == pytest.approx(float(summary["resolution_0.5"]))
    assert float(summary["resolution_0.5"]) >= float(summary["resolution_0.143"])


@pytest.mark.parametrize(
    "second, voxel, message",
    [((24, 24, 24), 5.0, "differ in size"), ((N, N, N), 6.0, "differ in voxel size")],
)
def test_cli_rejects_mismatched_half_maps(half_maps, tmp_path, second, voxel, message):
    other = tmp_path / "other.mrc"
    write_volume(other, np.zeros(second, dtype=np.float32), voxel)
    result = runner.invoke(app, ["fsc", str(half_maps[0]), str(other), "--out", str(tmp_path / "x.star")])
    assert result.exit_code == 2
    assert message in result.output and "other.mrc" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.star").exists()


def test_cli_needs_two_maps_or_a_reference(half_maps):
    result = runner.invoke(app, ["fsc", str(half_maps[0])])
    assert result.exit_code == 2
    assert re.search(r"two half maps", result.output)


def gold_standard_dataset(folder, second_half_structure_seed: int):
    """Six particles (noise-free, 30° wedge, known poses) of one structure in half 1 and of another (or the same
    when the seeds match) in half 2."""
    from gumalign.fourier import wedge_mask
    from gumalign.geometry import random_rotations, transform_volumes
    from tests.test_average import apply_weight, write_dataset

    box = 20
    a = random_rotations(12, np.random.default_rng(0))
    halves = [1, 2] * 6
    structures = {1: smooth_blob((box,) * 3, seed=30, radius=7.0),
                  2: smooth_blob((box,) * 3, seed=second_half_structure_seed, radius=7.0)}
    particles = np.stack([
        transform_volumes(torch.from_numpy(structures[h]), a[i][None])[0].numpy() for i, h in enumerate(halves)
    ])
    weight = wedge_mask((box,) * 3, (-60, 60), "centred")
    folder.mkdir()
    return write_dataset(folder, apply_weight(particles, weight), a, np.zeros((12, 3)), halves=halves)


def test_cli_gold_standard_keeps_the_halves_apart(tmp_path):
    """Half 1 and half 2 hold different structures: the FSC of honest half maps is ~0; mixing would raise it."""
    fscs = {}
    for name, seed in (("same", 30), ("different", 31)):
        star = gold_standard_dataset(tmp_path / name, seed)
        out = tmp_path / name / "fsc.star"
        result = runner.invoke(app, ["fsc", "--gold-standard", "--particles", str(star), "--tilt-range", "-60", "60",
                                     "--no-mask", "--out", str(out), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        fscs[name] = starfile.read(out, always_dict=True)["fsc"]["rlnFourierShellCorrelationUnmaskedMaps"].to_numpy()
    assert fscs["same"][1:8].min() > 0.9
    assert np.abs(fscs["different"][2:]).max() < 0.5 and fscs["different"][2:8].mean() < 0.2


def test_cli_gold_standard_needs_orientations(tmp_path):
    from tests.test_average import write_dataset

    (tmp_path / "d").mkdir()
    star = write_dataset(tmp_path / "d", np.zeros((2, 8, 8, 8), dtype=np.float32))
    result = runner.invoke(app, ["fsc", "--gold-standard", "--particles", str(star), "--out", str(tmp_path / "f.star")])
    assert result.exit_code == 2
    assert "rlnAngleRot" in result.output and len(result.output.strip().splitlines()) == 1
