"""`gumalign simulate --ctf-images`: each particle's 3D CTF written as RELION does (one rlnCtfImage file per particle,
FFTW half layout, data not premultiplied), read back by gumalign equal to the transfer the simulation applied, and
usable by align and average.

The expected weight is rebuilt here from the physics, not from gumalign's helpers: the aitom/TOM wedge rule (observed
where |kx| >= tan(90° - 60°)·|kz| for ±60° tilts about y, beam z), the CTF √(1 - A²)·sin χ + A·cos χ with
χ = π·λ·Δf·k² - (π/2)·Cs·λ³·k⁴ and the envelope exp(-(k / (0.4·Ny))²), and the MTF exp(-½·(k / (0.4·Ny))²).
"""

import numpy as np
import pytest
from typer.testing import CliRunner

from gumalign.cli.main import app
from gumalign.io.ctf import read_ctf_image
from gumalign.io.mrc import read_volume
from gumalign.io.star import read_star

runner = CliRunner()
N, PIXEL = 32, 12.0


def expected_centred_weight(n=N, pixel=PIXEL, tilt=60.0, voltage_kv=300.0, defocus_um=-2.0, cs_mm=2.7, amp=0.07):
    """Wedge × CTF × MTF on the centred grid (frequency k at index n//2 + k), from the formulas alone."""
    k1 = np.arange(n) - n // 2
    kz, ky, kx = np.meshgrid(k1, k1, k1, indexing="ij")
    observed = (np.abs(kx) >= np.tan(np.radians(90.0 - tilt)) * np.abs(kz) - 1e-9) | ((kx == 0) & (kz == 0))
    k = np.sqrt(kz**2 + ky**2 + kx**2) / (n * pixel)  # Å⁻¹
    volts = voltage_kv * 1e3
    lam = np.sqrt(150.4 / (volts * (1 + volts / 1.022e6)))  # Å
    df, cs = -defocus_um * 1e4, cs_mm * 1e7  # Å
    chi = np.pi * lam * df * k**2 - 0.5 * np.pi * cs * lam**3 * k**4
    nyquist = 1 / (2 * pixel)
    ctf = (np.sqrt(1 - amp**2) * np.sin(chi) + amp * np.cos(chi)) * np.exp(-((k / (0.4 * nyquist)) ** 2))
    mtf = np.exp(-0.5 * (k / (0.4 * nyquist)) ** 2)
    return observed * ctf * mtf


@pytest.fixture(scope="module")
def ctf_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("ctfsim") / "sim"
    args = ["simulate", "--structure", "builtin:sse1_hsp70", "--n", "4", "--snr", "inf", "--max-shift", "2",
            "--ctf-images", "--seed", "3", "--out", str(out), "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def test_each_particle_names_its_own_half_layout_ctf(ctf_set):
    table = read_star(ctf_set / "particles.star")
    names = table.particles["rlnCtfImage"].tolist()
    assert names == [f"ctf/particle_{i:06d}.mrc" for i in range(1, 5)]
    assert table.ctf_premultiplied().tolist() == [False] * 4
    assert [int(v) for v in table.optics["rlnCtfDataAreCtfPremultiplied"]] == [0]
    for name in names:
        data = read_volume(ctf_set / name).data
        assert data.shape == (N, N, N // 2 + 1)  # [z, y, x]: RELION's (N/2+1) × N × N
    assert "--ctf-images" in (ctf_set / "README").read_text()


def test_ctf_images_read_back_equal_to_the_simulated_transfer(ctf_set):
    expected = expected_centred_weight()
    table = read_star(ctf_set / "particles.star")
    for path in table.weight_paths():
        ctf = read_ctf_image(path, N)
        assert ctf.layout == "half"
        np.testing.assert_allclose(ctf.values, expected, atol=2e-6)
    c = N // 2
    assert abs(ctf.values[c, c, c] - 0.07) < 1e-6  # the amplitude contrast at k = 0: a CTF, not a 0/1 wedge
    assert ctf.values[c + 4, c, c] == 0 and ctf.values[c, c, c + 4] > 0.07  # k along z is in the wedge


def test_the_written_ctf_is_signed_where_the_ctf_changes_sign():
    from gumalign.simulate.imaging import ImagingParams, particle_transfer

    # 6 µm underfocus at 4 Å pixels: the first zero lies inside the box.
    weight = particle_transfer(N, (-60.0, 60.0), ImagingParams(defocus_um=-6.0), 4.0)
    expected = expected_centred_weight(pixel=4.0, defocus_um=-6.0)
    assert expected.min() < -0.01
    np.testing.assert_allclose(np.fft.fftshift(_rfft_to_full(weight)), expected, atol=2e-6)


def test_weight_is_the_transfer_a_noise_free_particle_shows():
    """The physics: a particle's spectrum is the template's times the written weight (the tilt series' angular
    sampling and the box crop leave a few % of difference); a bare 0/1 wedge explains it worse."""
    from gumalign.simulate.imaging import ImagingParams, particle_transfer, simulate_subtomograms
    from gumalign.simulate.templates import load_builtin_template

    template = load_builtin_template("proteasome").density
    particle = simulate_subtomograms(template, np.eye(3)[None], np.zeros((1, 3)), snr=None, voxel_size=PIXEL)[0]
    weight = particle_transfer(N, (-60.0, 60.0), ImagingParams(), PIXEL)
    np.testing.assert_allclose(np.fft.fftshift(_rfft_to_full(weight)), expected_centred_weight(), atol=2e-6)
    measured, source = np.fft.rfftn(particle), np.fft.rfftn(template)

    def relative_error(w):
        scale = np.vdot(source * w, measured).real / np.vdot(source * w, source * w).real
        return np.linalg.norm(measured - scale * source * w) / np.linalg.norm(measured)

    assert relative_error(weight) < 0.15
    assert relative_error((weight != 0).astype(np.float32)) > 2 * relative_error(weight)


def _rfft_to_full(half):
    """(N, N, N//2+1) rfftn-layout even real weights -> (N, N, N) fftn layout, by w(-k) = w(k)."""
    full = np.zeros((N, N, N), np.float64)
    full[..., : N // 2 + 1] = half
    idx = (-np.arange(N)) % N
    full[..., N // 2 + 1 :] = half[idx][:, idx][..., idx[N // 2 + 1 :]]
    return full


def test_align_and_average_run_on_the_ctf_images(ctf_set):
    aligned = ctf_set / "aligned.star"
    result = runner.invoke(app, ["align", "--ref", str(ctf_set / "reference.mrc"), "--particles",
                                 str(ctf_set / "particles.star"), "--method", "ht", "--device", "cpu",
                                 "--out", str(aligned), "--quiet"])
    assert result.exit_code == 0, result.output
    table = read_star(aligned)
    assert table.particles["rlnCtfImage"].tolist() == [f"ctf/particle_{i:06d}.mrc" for i in range(1, 5)]
    truth = read_star(ctf_set / "particles.star")
    from gumalign.geometry import rotation_error

    assert np.median(rotation_error(truth.matrices(), table.matrices())) < 0.3

    # Averaging divides by the CTF (Σ CTF·P / (Σ CTF² + λ)): the same particles averaged with their real CTFs come
    # closer to the template than with the 0/1 wedge alone (weight.mrc). A small constant λ: the particles are
    # noise-free and the simulated transfer peaks near 0.1 (envelope and MTF), so λ = 0.01 would swamp it.
    from gumalign.io.star import write_star

    wedge_only = read_star(ctf_set / "particles.star")
    wedge_only.particles["rlnCtfImage"] = "weight.mrc"
    write_star(wedge_only, ctf_set / "wedge_only.star")
    reference = read_volume(ctf_set / "reference.mrc").data
    correlations = {}
    for name in ("particles", "wedge_only"):
        avg = ctf_set / f"avg_{name}.mrc"
        result = runner.invoke(app, ["average", "--particles", str(ctf_set / f"{name}.star"), "--out", str(avg),
                                     "--regularisation", "0.0001", "--quiet"])
        assert result.exit_code == 0, result.output
        correlations[name] = np.corrcoef(reference.ravel(), read_volume(avg).data.ravel())[0, 1]
    assert correlations["particles"] > 0.95
    assert correlations["particles"] > correlations["wedge_only"] + 0.005


def test_ctf_images_with_pairs_is_refused(tmp_path):
    result = runner.invoke(app, ["simulate", "--structure", "builtin:proteasome", "--n", "2", "--pairs",
                                 "--ctf-images", "--out", str(tmp_path / "p"), "--quiet"])
    assert result.exit_code == 2
    assert "--ctf-images" in result.output and "Traceback" not in result.output
