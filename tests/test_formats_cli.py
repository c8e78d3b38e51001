"""Files other tools write, through the commands (issue 16): IMOD-style and gzipped MRC in `info`, --star-version on
a command that writes STAR, empty half sets, FSC refusals, RELION's resolution and one regularisation for
`fsc --gold-standard` and `average` + `fsc half1 half2`."""

import gzip
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile
from typer.testing import CliRunner

from gumalign.cli.main import app
from gumalign.io.mrc import write_volume
from gumalign.io.star import read_star
from gumalign.metrics import resolution_at

runner = CliRunner()


def _one_error_line(result, *fragments):
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_info_reads_an_ispg_0_volume_a_gzipped_one_and_a_dynamo_table(tmp_path, rng):
    data = rng.standard_normal((72, 72, 72)).astype(np.float32)
    path = tmp_path / "imod.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.header.ispg = 0  # what IMOD writes; mrcfile calls it an image stack
        mrc.voxel_size = 4.0
    gz = tmp_path / "imod.mrc.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    tbl = tmp_path / "parts.tbl"
    tbl.write_text(" ".join(["1", "1"] + ["0"] * 33 + ["4.0"]) + "\n")
    result = runner.invoke(app, ["info", str(path), str(gz), str(tbl)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps long lines
    assert text.count("72×72×72 (x×y×z) voxels of 4.000 Å") == 2
    assert "Dynamo table particle file, 1 particles, pixel size [4.0] Å" in text


def _dataset(tmp_path, halves):
    from tests.test_average import octahedral_particles, write_dataset

    template, group, a, origins, weight, particles = octahedral_particles()
    return write_dataset(tmp_path, particles, a, origins, halves=halves), template, group


def test_an_empty_half_set_is_one_line_and_exit_2(tmp_path):
    star, _, _ = _dataset(tmp_path, halves=[1] * 8)  # e.g. a RELION 3.0 file with half sets [8, 0]
    result = runner.invoke(app, ["average", "--particles", str(star), "--out", str(tmp_path / "avg.mrc"),
                                 "--device", "cpu"])
    _one_error_line(result, "half set 2 is empty", "8 particles in half 1, 0 in half 2")
    assert not (tmp_path / "avg.mrc").exists()
    result = runner.invoke(app, ["fsc", "--gold-standard", "--particles", str(star), "--out", str(tmp_path / "f.star"),
                                 "--device", "cpu"])
    _one_error_line(result, "half set 2 is empty")


def test_star_version_on_average_writes_that_flavour_or_refuses_before_the_work(tmp_path, monkeypatch):
    import gumalign.align.registry as registry
    from tests.test_average import ExhaustiveAligner

    star, template, group = _dataset(tmp_path, halves=[1, 2] * 4)
    write_volume(tmp_path / "ref.mrc", template, 10.0)
    monkeypatch.setattr(registry, "get_aligner", lambda name, **options: ExhaustiveAligner(group))
    base = ["average", "--particles", str(star), "--out", str(tmp_path / "avg.mrc"), "--iterations", "1",
            "--method", "ht", "--ref", str(tmp_path / "ref.mrc"), "--device", "cpu", "--quiet"]
    result = runner.invoke(app, base + ["--star-version", "5"])  # no coordinates to centre
    _one_error_line(result, "RELION 5 particles need rlnCenteredCoordinateX/Y/ZAngst")
    assert not (tmp_path / "avg_it01.mrc").exists()  # refused before any work
    result = runner.invoke(app, base + ["--star-version", "4"])
    assert result.exit_code == 0, result.output
    blocks = starfile.read(tmp_path / "avg.star", always_dict=True)
    optics = blocks["optics"]
    for column in ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnImageSize",
                   "rlnImageDimensionality", "rlnTomoTiltSeriesPixelSize"):
        assert column in optics.columns, column
    assert {"rlnTomoName", "rlnTomoParticleName"} <= set(blocks["particles"].columns)
    assert "# version 40000" in (tmp_path / "avg.star").read_text()


def test_fsc_refuses_empty_maps_and_masks(tmp_path, rng):
    good, empty = tmp_path / "good.mrc", tmp_path / "empty.mrc"
    write_volume(good, rng.standard_normal((16, 16, 16)).astype(np.float32), 5.0)
    write_volume(empty, np.zeros((16, 16, 16), np.float32), 5.0)
    result = runner.invoke(app, ["fsc", str(good), str(empty), "--out", str(tmp_path / "f.star")])
    _one_error_line(result, "empty.mrc: the map is empty")
    mask = tmp_path / "mask.mrc"
    write_volume(mask, np.zeros((16, 16, 16), np.float32), 5.0)
    result = runner.invoke(app, ["fsc", str(good), str(good), "--mask", str(mask), "--out", str(tmp_path / "f.star")])
    _one_error_line(result, "mask.mrc: the mask is zero everywhere")
    assert not (tmp_path / "f.star").exists()


def test_resolution_is_relions_last_shell_and_never_coarser_than_the_box():
    # RELION (postprocessing.cpp): the last shell before the first one below 0.143, even if it rises again later.
    curve = np.array([1.0, 0.9, 0.6, 0.3, 0.1, 0.5, 0.05])  # box 12
    found = resolution_at(curve, 0.143, box=12, voxel_size=2.0)
    assert found.last_shell == 3 and found.relion_angstrom == pytest.approx(12 * 2.0 / 3)
    assert found.angstrom == pytest.approx(12 * 2.0 / (3 + (0.3 - 0.143) / (0.3 - 0.1)))
    # Below the threshold at shell 1: no resolution (999 Å, RELION's shell-0 value), not an extrapolation past the box.
    none = resolution_at(np.array([1.0, 0.05, 0.3, 0.1]), 0.143, box=6, voxel_size=2.0)
    assert none.below_first_shell and none.angstrom == 999.0 and none.relion_angstrom == 999.0


def test_random_half_maps_report_no_resolution_rather_than_one_coarser_than_the_box(tmp_path):
    gen = np.random.default_rng(5)
    a, b = tmp_path / "a.mrc", tmp_path / "b.mrc"
    box = 16
    # Independent noise, anti-correlated at shell 1 so that it is surely below 0.143 there.
    noise = gen.standard_normal((box, box, box)).astype(np.float32)
    write_volume(a, noise, 5.0)
    write_volume(b, -noise, 5.0)
    result = runner.invoke(app, ["fsc", str(a), str(b), "--no-mask", "--out", str(tmp_path / "f.star")])
    assert result.exit_code == 0, result.output
    summary = dict(item.split("=", 1) for item in result.stdout.strip().splitlines()[-1].split())
    assert float(summary["final_resolution"]) == 999.0 and float(summary["final_resolution_interpolated"]) == 999.0
    assert "agree at no resolution" in " ".join(result.output.split())
    general = starfile.read(tmp_path / "f.star", always_dict=True)["general"]
    assert float(general["rlnFinalResolution"]) == 999.0


def test_gold_standard_writes_the_half_maps_it_names_and_matches_average_then_fsc(tmp_path):
    from tests.test_fsc import gold_standard_dataset

    star = gold_standard_dataset(tmp_path / "d", 30)
    out = tmp_path / "gold.star"
    result = runner.invoke(app, ["fsc", "--gold-standard", "--particles", str(star), "--tilt-range", "-60", "60",
                                 "--out", str(out), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    general = starfile.read(out, always_dict=True)["general"]
    for key in ("rlnUnfilteredMapHalf1", "rlnUnfilteredMapHalf2"):
        assert Path(general[key]).is_file() and Path(general[key]).parent == tmp_path, general[key]
    gold = starfile.read(out, always_dict=True)["fsc"]["rlnFourierShellCorrelationCorrected"].to_numpy()

    avg = tmp_path / "avg.mrc"
    result = runner.invoke(app, ["average", "--particles", str(star), "--tilt-range", "-60", "60", "--out", str(avg),
                                 "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    out2 = tmp_path / "pair.star"
    result = runner.invoke(app, ["fsc", str(tmp_path / "avg_half1.mrc"), str(tmp_path / "avg_half2.mrc"),
                                 "--out", str(out2), "--quiet"])
    assert result.exit_code == 0, result.output
    pair = starfile.read(out2, always_dict=True)["fsc"]["rlnFourierShellCorrelationCorrected"].to_numpy()
    np.testing.assert_allclose(pair, gold, atol=1e-4)  # one estimator, one regulariser, the same maps
    assert read_star(star).half_sets().tolist() == [1, 2] * 6


def test_average_takes_a_dynamo_table_and_gives_the_stars_map(tmp_path):
    """The same particles, poses written once as RELION angles/origins and once as Dynamo tdrot/tilt/narot and dx:
    `average` gives the same map from both (same particle -> same matrix and shift)."""
    from gumalign.io.dynamo import relion_to_dynamo
    from gumalign.io.mrc import read_volume
    from tests.test_average import octahedral_particles, write_dataset

    template, group, a, origins, weight, particles = octahedral_particles()
    (tmp_path / "star").mkdir()
    star = write_dataset(tmp_path / "star", particles, a, origins, halves=[1, 2] * 4)
    dyn = tmp_path / "dyn"
    dyn.mkdir()
    angles = relion_to_dynamo(a)
    rows = []
    for i, volume in enumerate(particles):
        write_volume(dyn / f"particle_{i + 1:06d}.mrc", volume, 10.0)
        values = [0.0] * 36
        values[0], values[1] = i + 1, 1
        values[3:6] = -origins[i]  # Dynamo: centre = x + dx; RELION: centre = coordinate - origin
        values[6:9] = angles[i]
        values[19], values[21] = 1, i % 2 + 1
        values[35] = 10.0
        rows.append(" ".join(f"{v:.9g}" for v in values))
    (dyn / "parts.tbl").write_text("\n".join(rows) + "\n")
    maps = {}
    for name, particles_file in (("star", star), ("dyn", dyn / "parts.tbl")):
        out = tmp_path / name / "avg.mrc"
        result = runner.invoke(app, ["average", "--particles", str(particles_file), "--out", str(out),
                                     "--tilt-range", "-60", "60", "--device", "cpu", "--quiet",
                                     "--regularisation", "0.01"])
        assert result.exit_code == 0, result.output
        maps[name] = read_volume(out).data
    np.testing.assert_allclose(maps["dyn"], maps["star"], atol=1e-4 * np.abs(maps["star"]).max())
    from gumalign.metrics import pearson

    assert pearson(maps["dyn"], template) > 0.9


def test_info_notes_wrapped_angles_and_refuses_a_duplicate_column(tmp_path):
    from tests.test_star import STAR_31

    path = tmp_path / "wild.star"
    path.write_text(STAR_31.replace("p1.mrc 10.0 20.0 30.0", "p1.mrc 3867.0 20.0 30.0").lstrip())
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "angles outside ±180° (e.g. 3867°); wrapped" in " ".join(result.output.split())
    path.write_text(STAR_31.replace("_myLabNote #10", "_rlnClassNumber #10").lstrip())
    _one_error_line(runner.invoke(app, ["info", str(path)]), "column _rlnClassNumber appears twice")
