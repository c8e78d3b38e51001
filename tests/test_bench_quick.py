"""bench/paper_tables.py: the quick run fills every method × SNR cell with numbers that agree with its raw CSV, its
t-tests agree with scipy on those raw errors; the seed's tables are embedded faithfully; symmetry-aware errors."""

import csv
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from scipy.stats import ttest_rel

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "paper_tables.py"
SNR_HEADERS = ["SNR 100", "SNR 0.1", "SNR 0.05", "SNR 0.03", "SNR 0.01"]
BASE_LABELS = ["H-T align", "F&A align", "Gum-Net MP", "Gum-Net AP", "Gum-Net SC", "Gum-Net"]
CELL = re.compile(r"^(\d+\.\d+)±(\d+\.\d+), (\d+\.\d+)±(\d+\.\d+)$")


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def paper_tables():
    return _load("paper_tables", SCRIPT)


@pytest.fixture(scope="module")
def bench_common():
    return _load("bench_common", ROOT / "bench" / "_common.py")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "quick.md"
    # Both cores: the suite's second-slowest fixture (104 s on the idle 2-core box with 2 threads, 195 s with 1).
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--threads", "2", "--quiet"],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return out


def _tables(markdown: str) -> dict[str, list[list[str]]]:
    """{heading or caption line before the table: rows (header first) as lists of cell texts}."""
    tables, caption, rows = {}, None, None
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if rows is None:
                rows = tables.setdefault(caption, [])
            if not all(set(c) <= set("-") for c in cells):
                rows.append(cells)
        else:
            rows = None
            if line.strip():
                caption = line.strip()
    return tables


REFERENCE_LABELS = ["Prior only (best constant guess)", "Floor (refine from the truth)",
                    "Template oracle (F&A + refine to the template, composed)"]
COMPACT = re.compile(r"^(\d+\.\d+) · (\d+)% · (\d+)% · (\d+\.\d+)$")


def _expected_labels(untrained: bool) -> list[str]:
    labels = []
    for label in BASE_LABELS:
        if label.startswith("Gum-Net") and untrained:
            label += " (untrained)"
        labels += [label, label + " + refine"]
    return labels + REFERENCE_LABELS


def _csv_rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_quick_table_has_every_method_and_snr_filled(quick_run):
    from gumalign.weights import DEFAULT_MODEL, available_models

    text = quick_run.read_text()
    assert "QUICK SMOKE TEST" in text
    tables = _tables(text)
    ours = tables["### spliceosome (3JB9)"]
    summary = next(rows for caption, rows in tables.items() if caption and caption.startswith("Ours: every pair"))
    # Gum-Net rows are labelled untrained exactly when no shipped model exists (the ablations are always untrained
    # in a quick run without --ablation-dir).
    shipped = DEFAULT_MODEL in available_models()
    expected = _expected_labels(untrained=True)
    if shipped:
        expected = [label.replace("Gum-Net (untrained)", "Gum-Net") for label in expected]
    for rows in (ours, summary):
        assert rows[0] == ["Method"] + SNR_HEADERS
        assert [r[0] for r in rows[1:]] == expected
        for row in rows[1:]:
            assert len(row) == 6 and all(CELL.match(cell) for cell in row[1:]), row
    seed = next(rows for caption, rows in tables.items() if caption and caption.startswith("Seed Table S1"))
    assert seed[1] == ["H-T align (seed)", "0.06±0.02, 1.03±0.63", "0.61±0.87, 2.64±3.55", "1.62±1.14, 6.08±4.92",
                       "2.15±0.88, 8.49±4.72", "2.38±0.56, 11.36±5.13"]
    speed = next(rows for rows in tables.values() if rows and rows[0][:2] == ["Method", "s / pair"])
    methods_only = expected[: -len(REFERENCE_LABELS)]
    assert [r[0] for r in speed[1:]] == methods_only and all(float(r[1]) > 0 for r in speed[1:])
    throughput = next(rows for rows in tables.values() if rows and rows[0][:2] == ["device", "batch size"])
    assert [r[1] for r in throughput[1:]] == ["1", "8"]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in throughput[1:])


def test_quick_cells_and_t_tests_agree_with_the_raw_errors(quick_run):
    rows = _csv_rows(quick_run.with_suffix(".csv"))
    summary = json.loads(quick_run.with_suffix(".json").read_text())
    assert len(rows) == 3 * 5 * 15 and summary["n"] == 3
    ours = _tables(quick_run.read_text())["### spliceosome (3JB9)"]
    keys = summary["rows"]
    for r_index, key in enumerate(keys, start=1):
        for s_index, snr in enumerate([100.0, 0.1, 0.05, 0.03, 0.01], start=1):
            pick = [r for r in rows if r["method"] == key and float(r["snr"]) == snr]
            rot = np.array([float(r["rotation_error"]) for r in pick])
            trans = np.array([float(r["translation_error"]) for r in pick])
            assert len(pick) == 3
            # Errors are Frobenius norms of rotation differences (0..2√2) and distances.
            assert np.all((rot >= 0) & (rot <= 2 * np.sqrt(2) + 1e-9)) and np.all(trans >= 0)
            values = [float(v) for v in CELL.match(ours[r_index][s_index]).groups()]
            np.testing.assert_allclose(values, [rot.mean(), rot.std(), trans.mean(), trans.std()], atol=0.0051)
    tests = summary["paired_tests"]
    assert {t["snr"] for t in tests} == {100.0, 0.1, 0.05, 0.03, 0.01}
    for t in tests:
        errors = {}
        for key in (t["ours"], t["other"]):
            pick = sorted((r for r in rows if r["method"] == key and float(r["snr"]) == t["snr"]),
                          key=lambda r: int(r["pair"]))
            errors[key] = np.array([float(r["rotation_error"]) for r in pick])
        expected = ttest_rel(errors[t["ours"]], errors[t["other"]])
        if np.isfinite(expected.pvalue):
            assert t["p"] == pytest.approx(expected.pvalue, rel=1e-6)
        # "ours" is the Gum-Net row with the lowest mean; "other" the lowest of its group.
        candidates = [k for k in keys if k.startswith("gumnet")]
        means = {k: np.mean([float(r["rotation_error"]) for r in rows
                             if r["method"] == k and float(r["snr"]) == t["snr"]]) for k in candidates}
        assert t["ours_mean"] == pytest.approx(min(means.values()))


def test_seed_tables_are_embedded_faithfully(paper_tables):
    tables = paper_tables.SEED_TABLES
    assert sorted(tables) == ["S1", "S2", "S3", "S4", "S5"]
    assert all(len(rows) == 6 and all(len(r) == 5 for r in rows.values()) for rows in tables.values())
    # Spot values read off the seed's supplement (Tables S1, S4, S5).
    assert tables["S1"]["ht"][0] == (0.06, 0.02, 1.03, 0.63)
    assert tables["S4"]["ap"][0] == (0.64, 0.9, 2.36, 3.22)
    assert tables["S4"]["gumnet"][4] == (1.76, 0.75, 10.46, 5.10)
    assert tables["S5"]["gumnet"][4] == (1.46, 0.78, 6.22, 3.38)


def test_seed_pooling_equals_the_std_of_the_mixed_samples(paper_tables):
    # Equal-size samples with exactly the tables' means and stds: the pooled numbers are their concatenation's.
    base = np.random.default_rng(0).standard_normal(1000)
    base = (base - base.mean()) / base.std()
    tables = ["S1", "S2", "S3"]
    rot = np.concatenate([m + s * base for m, s, _, _ in (paper_tables.SEED_TABLES[t]["fa"][1] for t in tables)])
    got = paper_tables.seed_pooled(tables, "fa", 1)
    assert got[0] == pytest.approx(rot.mean()) and got[1] == pytest.approx(rot.std())


def test_symmetry_aware_errors_forgive_exactly_the_symmetry(bench_common):
    gen = np.random.default_rng(4)
    axis = Rotation.random(random_state=5).apply([0.0, 0.0, 1.0])
    operators = Rotation.from_rotvec(np.outer(2 * np.pi * np.arange(4) / 4, axis)).as_matrix()  # C4 about axis
    rot_a, rot_b = Rotation.random(6, random_state=1).as_matrix(), Rotation.random(6, random_state=2).as_matrix()
    t_a, t_b = gen.uniform(-7, 7, (6, 3)), gen.uniform(-7, 7, (6, 3))
    g = operators[[0, 1, 2, 3, 1, 2]]
    # An estimate equal to a symmetry-equivalent truth R_b·g·R_aᵀ, t_b - R·t_a has zero error ...
    est_rot = rot_b @ g @ np.swapaxes(rot_a, 1, 2)
    est_shift = t_b - np.einsum("bij,bj->bi", est_rot, t_a)
    rot_err, trans_err, chosen = bench_common.symmetric_errors(rot_a, t_a, rot_b, t_b, operators, est_rot, est_shift)
    np.testing.assert_allclose(rot_err, 0, atol=1e-9)
    np.testing.assert_allclose(trans_err, 0, atol=1e-9)
    assert chosen.tolist() == [0, 1, 2, 3, 1, 2]
    # ... and an estimate off by a 90° rotation about another axis is charged the full 2√2·sin(45°) = 2.
    off = Rotation.from_rotvec(np.pi / 2 * np.cross(axis, [1.0, 0, 0]) / np.linalg.norm(np.cross(axis, [1.0, 0, 0])))
    rot_err, _, _ = bench_common.symmetric_errors(rot_a, t_a, rot_b, t_b, np.eye(3)[None],
                                                  off.as_matrix() @ (rot_b @ np.swapaxes(rot_a, 1, 2)), est_shift)
    np.testing.assert_allclose(rot_err, 2.0, atol=1e-9)


def test_detect_symmetry_finds_a_c4_axis_and_refuses_a_wrong_group(bench_common):
    n = 32
    z, y, x = np.indices((n, n, n)) - n // 2
    axis = np.array([1.0, 2.0, 2.0]) / 3.0
    u = np.cross(axis, [1.0, 0, 0])
    u /= np.linalg.norm(u)
    density = np.zeros((n, n, n), np.float32)
    # Four copies of an asymmetric pair of blobs, 90° apart about ``axis``, plus a blob on the axis: C4, not D4.
    for k in range(4):
        turn = Rotation.from_rotvec(axis * k * np.pi / 2)
        blobs = ((turn.apply(6 * u + 2 * axis), 1.5), (turn.apply(3 * u + 3 * np.cross(axis, u) - 2 * axis), 1.2))
        for centre, width in blobs:
            density += np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) / (2 * width**2))
    density += np.exp(-((x - 3 * axis[0]) ** 2 + (y - 3 * axis[1]) ** 2 + (z - 3 * axis[2]) ** 2) / 4.0)
    group = bench_common.detect_symmetry(density, "C4")
    assert group.name == "C4" and len(group.operators) == 4
    assert abs(group.axis @ axis) > np.cos(np.radians(2))
    assert group.min_self_correlation > 0.95
    with pytest.raises(ValueError, match="D4"):
        bench_common.detect_symmetry(density, "D4")
    with pytest.raises(ValueError, match="C3"):
        bench_common.detect_symmetry(density, "C3")


def test_bad_options_exit_2_with_one_line(paper_tables, tmp_path, capsys):
    assert paper_tables.main(["--quick", "--methods", "ht,xx", "--out", str(tmp_path / "a.md")]) == 2
    assert "--methods" in capsys.readouterr().err
    assert paper_tables.main(["--quick", "--structures", "nonesuch", "--out", str(tmp_path / "b.md")]) == 2
    assert "nonesuch" in capsys.readouterr().err
    assert paper_tables.main(["--quick", "--n", "1", "--out", str(tmp_path / "c.md")]) == 2
    assert not any(tmp_path.iterdir())


def _run_tables(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done


def test_cells_cache_resumes_and_render_from_reproduces_the_report(tmp_path):
    cells = tmp_path / "cells"
    common = ["--methods", "ht,fa", "--structures", "spliceosome", "--snrs", "100,0.1", "--no-refine",
              "--throughput-devices", "none", "--threads", "1", "--cells", str(cells), "--reference-rows", "none"]
    _run_tables(*common, "--n", "2", "--out", str(tmp_path / "first.md"))
    assert sorted(p.name for p in cells.iterdir()) == [
        "spliceosome_snr0.1_fa.json", "spliceosome_snr0.1_ht.json",
        "spliceosome_snr100_fa.json", "spliceosome_snr100_ht.json",
    ]
    again = _run_tables(*common, "--n", "2", "--out", str(tmp_path / "again.md"))
    assert again.stderr.count("every row read from") == 2
    assert _csv_rows(tmp_path / "again.csv") == _csv_rows(tmp_path / "first.csv")
    # The note on cached timings sits outside the speed table, which keeps a row per method.
    again_md = (tmp_path / "again.md").read_text()
    assert "cells were read from" in again_md
    speed = next(rows for rows in _tables(again_md).values() if rows and rows[0][:2] == ["Method", "s / pair"])
    assert [r[0] for r in speed[1:]] == ["H-T align", "F&A align"]
    # Other settings (here N) do not reuse the cached cells.
    other = _run_tables(*common, "--n", "3", "--out", str(tmp_path / "other.md"))
    assert "read from" not in other.stderr and len(_csv_rows(tmp_path / "other.csv")) == 3 * 2 * 2

    # Re-rendering from the JSON and CSV gives the same tables, with throughput rows of another run appended.
    first = json.loads((tmp_path / "first.json").read_text())
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"throughput": [
        {"device": "NVIDIA Test", "batch_size": 32, "network_pairs_per_s": 123.4, "aligner_pairs_per_s": 5.6}]}))
    _run_tables("--render-from", str(tmp_path / "first.json"), "--add-throughput", str(extra),
                "--out", str(tmp_path / "rendered.md"))
    rendered = (tmp_path / "rendered.md").read_text()
    original = (tmp_path / "first.md").read_text()
    tables, tables_original = _tables(rendered), _tables(original)
    assert tables["### spliceosome (3JB9)"] == tables_original["### spliceosome (3JB9)"]
    assert "| NVIDIA Test | 32 | 123.4 | 5.6 |" in rendered and "Re-rendered" in rendered
    assert json.loads((tmp_path / "rendered.json").read_text())["cells"] == first["cells"]


def _angle_deg(errors: np.ndarray) -> np.ndarray:
    """Angle of R_trueᵀ·R_est from a Frobenius error, by way of the matrices: e² = 2·(3 - trace) = 4·(1 - cos θ)·...
    computed independently of the bench: 3 - trace = e²/2 and cos θ = (trace - 1)/2."""
    trace = 3.0 - errors**2 / 2.0
    return np.degrees(np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0)))


def test_quick_medians_shares_and_reference_rows_agree_with_the_raw_errors(quick_run):
    rows = _csv_rows(quick_run.with_suffix(".csv"))
    summary = json.loads(quick_run.with_suffix(".json").read_text())
    assert summary["reference_rows"] == ["prior", "floor", "oracle"]
    assert summary["rotation_prior"] == "haar" and summary["task"] == "pairs" and summary["protocol"] == "unseen"
    for key in summary["rows"] + summary["reference_rows"]:
        for snr in [100.0, 0.1, 0.05, 0.03, 0.01]:
            pick = [r for r in rows if r["method"] == key and float(r["snr"]) == snr]
            rot = np.array([float(r["rotation_error"]) for r in pick])
            trans = np.array([float(r["translation_error"]) for r in pick])
            cell = summary["cells"][f"spliceosome|{snr:g}|{key}"]
            assert cell["rotation_error"]["median"] == pytest.approx(np.median(rot))
            assert cell["translation_error"]["median"] == pytest.approx(np.median(trans))
            for limit in (15, 30):
                assert cell["rotation_error"][f"within_{limit}"] == pytest.approx(np.mean(_angle_deg(rot) <= limit))
            pooled = summary["pooled"][f"{snr:g}|{key}"]["rotation_error"]
            assert pooled["mean"] == pytest.approx(rot.mean()) and pooled["median"] == pytest.approx(np.median(rot))
    # The floor starts at the truth and only climbs the constrained correlation: at SNR 100 it stays on the truth.
    floor = np.array([float(r["rotation_error"]) for r in rows if r["method"] == "floor" and float(r["snr"]) == 100])
    assert floor.max() < 0.05
    # Haar prior: the constant guess is the identity, the answer of every prior row.
    prior = [r for r in rows if r["method"] == "prior"]
    assert all(float(r["rotation_error_raw"]) > 0.3 for r in prior)  # random rotations are far from one constant
    # Search failures: of the refine rows' answers more than 30° off, those scoring below the floor's score.
    score = {(r["method"], float(r["snr"]), int(r["pair"])): (float(r["score"]), float(r["rotation_error"]))
             for r in rows}
    for entry in summary["search_failures"]:
        wrong = [(s, score[("floor", entry["snr"], p)][0]) for (m, snr, p), (s, e) in score.items()
                 if m == entry["row"] and snr == entry["snr"] and _angle_deg(np.array(e)) > 30]
        assert entry["wrong"] == len(wrong) and entry["below_floor"] == sum(a < b for a, b in wrong)
    assert {e["row"] for e in summary["search_failures"]} == {k for k in summary["rows"] if k.endswith("+refine")}
    checks = summary["order_checks"]
    assert {c["snr"] for c in checks} == {100.0, 0.1, 0.05, 0.03, 0.01}
    assert all(c["holds"] == (c["left"] <= c["right"] + 1e-12) for c in checks)
    text = quick_run.read_text()
    tables = _tables(text)
    compact = next(rows for caption, rows in tables.items() if caption and caption.startswith("Medians and shares, "
                                                                                            "every pair pooled"))
    assert [r[0] for r in compact[1:]] == [r[0] for r in tables["### spliceosome (3JB9)"][1:]]
    assert all(COMPACT.match(cell) for row in compact[1:] for cell in row[1:])
    assert "Order checks (pooled means)" in text


def test_aitom_prior_reference_task_and_seed_protocol_fill_their_tables(paper_tables, tmp_path):
    from gumalign.geometry import rotation_error

    out = tmp_path / "ref.md"
    _run_tables("--quick", "--rotation-prior", "aitom", "--task", "reference", "--protocol", "seed",
                "--methods", "fa,gumnet", "--snrs", "100,0.1", "--n", "3", "--no-refine", "--throughput-devices",
                "none", "--threads", "1", "--seed-protocol-dir", str(tmp_path / "models"), "--out", str(out))
    summary = json.loads(out.with_suffix(".json").read_text())
    assert (summary["rotation_prior"], summary["task"], summary["protocol"]) == ("aitom", "reference", "seed")
    assert summary["rows"] == ["fa", "gumnet"] and summary["reference_rows"] == ["prior", "floor"]
    # --protocol seed: one fine-tuned Gum-Net per SNR, written where asked, the SNR-100 one first.
    models = {m["snr"]: m["model"] for m in summary["protocol_models"]}
    assert sorted(models) == [0.1, 100.0] and models[100.0] != models[0.1]
    assert all((Path(p) / "model.safetensors").is_file() for p in models.values())
    text = out.read_text()
    assert text.startswith("# Reference alignment to the noise-free template") and "Seed Table" not in text
    rows = _csv_rows(out.with_suffix(".csv"))
    assert len(rows) == 3 * 2 * 4
    # The truth of the reference task is the particle's own pose, drawn from aitom's prior: the prior row's raw
    # errors are exactly those of the prior's constant guess against those draws.
    guess = paper_tables.prior_guess("aitom", 0)
    for snr in (100.0, 0.1):
        draws = paper_tables.aitom_rotations_for_cell(3, 0, "spliceosome", snr)
        expected = rotation_error(draws, guess)
        got = [float(r["rotation_error_raw"]) for r in sorted(
            (r for r in rows if r["method"] == "prior" and float(r["snr"]) == snr), key=lambda r: int(r["pair"]))]
        np.testing.assert_allclose(got, expected, atol=1e-9)
    # Aligned to the noise-free template at SNR 100, F&A finds the particle's pose (the template is the reference).
    fa = [float(r["rotation_error"]) for r in rows if r["method"] == "fa" and float(r["snr"]) == 100]
    assert np.median(fa) < 0.2


def test_merge_adds_rows_computed_later_on_the_same_pairs(tmp_path):
    common = ["--structures", "spliceosome", "--snrs", "100", "--n", "2", "--no-refine", "--throughput-devices",
              "none", "--threads", "1"]
    _run_tables(*common, "--methods", "ht", "--reference-rows", "none", "--out", str(tmp_path / "ht.md"))
    _run_tables(*common, "--methods", "none", "--reference-rows", "prior,floor", "--out", str(tmp_path / "refs.md"))
    _run_tables("--render-from", str(tmp_path / "ht.json"), "--merge", str(tmp_path / "refs.json"),
                "--out", str(tmp_path / "merged.md"))
    merged = _tables((tmp_path / "merged.md").read_text())["### spliceosome (3JB9)"]
    assert [r[0] for r in merged[1:]] == ["H-T align", REFERENCE_LABELS[0], REFERENCE_LABELS[1]]
    assert merged[1] == _tables((tmp_path / "ht.md").read_text())["### spliceosome (3JB9)"][1]
    assert merged[2:] == _tables((tmp_path / "refs.md").read_text())["### spliceosome (3JB9)"][1:]
    _run_tables(*common[:4], "--n", "3", *common[6:], "--methods", "none", "--reference-rows", "prior",
                "--out", str(tmp_path / "other.md"))
    done = subprocess.run([sys.executable, str(SCRIPT), "--render-from", str(tmp_path / "ht.json"), "--merge",
                           str(tmp_path / "other.json"), "--out", str(tmp_path / "bad.md")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "not the same test pairs (n differ)" in done.stderr
    assert not (tmp_path / "bad.md").exists()
