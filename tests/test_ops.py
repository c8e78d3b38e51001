"""The operations layer (issue 14): one aligner specification for every command, process settings restored, the
Python API and the CLI give the same bytes, and batch-job habits (issue 17: progress lines and one summary line
without a terminal)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gumalign.align.spec import METHOD_BATCH_SIZES, AlignerSpec
from gumalign.cli.main import app
from gumalign.errors import GumalignError
from gumalign.ops import AlignRequest, AverageRequest, FscRequest, Runtime, align, average, fsc
from tests.test_align_cli import dataset, run_align  # noqa: F401  (the fixture)

runner = CliRunner()


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class _Built(Exception):
    """Raised by the recording build() so a command stops once its aligner is specified."""


@pytest.fixture
def recorded_specs(monkeypatch):
    specs = []

    def record(self):
        specs.append(self)
        raise _Built()

    monkeypatch.setattr(AlignerSpec, "build", record)
    return specs


def test_align_average_and_cluster_build_the_same_aligner_from_the_same_options(dataset, recorded_specs):
    """The options that describe the aligner reach one AlignerSpec, equal in all three commands."""
    common = ["--method", "fa", "--max-shift", "5", "--batch-size", "3", "--device", "cpu", "--tilt-range", "-60",
              "60", "--quiet"]
    star = str(dataset / "parts.star")
    commands = [
        ["align", "--ref", str(dataset / "ref.mrc"), "--particles", star, "--out", str(dataset / "a.star"), *common],
        ["average", "--particles", star, "--out", str(dataset / "avg.mrc"), "--iterations", "1", *common],
        ["cluster", "--particles", star, "--k", "2", "--ref-based", "--out", str(dataset / "c.star"), *common],
    ]
    for args in commands:
        result = runner.invoke(app, args)
        assert isinstance(result.exception, _Built), (args[0], result.output, result.exception)
    assert len(recorded_specs) == 3
    assert recorded_specs[0] == recorded_specs[1] == recorded_specs[2]
    spec = recorded_specs[0]
    assert (spec.method, spec.max_shift, spec.batch_size, spec.device) == ("fa", 5.0, 3, "cpu")


def test_the_spec_reaches_the_aligner_it_builds():
    """max_shift, batch size and device arrive in the method's constructor (no signature filtering), the defaults
    are the spec's (the method's batch size, half the box for the shift)."""
    fa = AlignerSpec(method="fa", max_shift=4.0, batch_size=2, device="cpu").build()
    assert (fa.max_shift, fa.batch_size, str(fa.device)) == (4.0, 2, "cpu")
    ht = AlignerSpec(method="ht", device="cpu", angular_step_deg=10.0).build()
    assert ht.batch_size == METHOD_BATCH_SIZES["ht"] and ht.max_shift is None and ht.sh_degree == 18
    refined = AlignerSpec(method="ht", refine=True, device="cpu", max_frequency=6, angular_step_deg=4).build()
    assert refined.name == "ht+refine" and refined.steps_deg == (4.0, 2.0, 1.0) and refined.max_frequency == 6


@pytest.mark.parametrize("fields, words", [
    ({"method": "nonesuch"}, "unknown method"),
    ({"method": "fa", "model": "gumnet-compact-sim32"}, "--model"),
    ({"method": "fa", "angular_step_deg": 5.0}, "--angular-step"),
    ({"method": "local", "refine": True}, "--method local"),
    ({"method": "ht", "batch_size": 0}, "--batch-size"),
])
def test_a_spec_that_cannot_work_is_one_clear_error(fields, words):
    with pytest.raises(GumalignError, match=words):
        AlignerSpec(**fields)


def test_local_method_refines_the_star_files_own_angles(dataset):
    """--method local starts at the STAR file's pose: aligned particles nudged by 5° come back to the truth."""
    from gumalign.geometry import euler_to_matrix, rotation_error
    from gumalign.io.star import read_star, write_star
    from tests.test_align_cli import ANGLES, ORIGINS_PX

    table = read_star(dataset / "parts.star")
    nudged = ANGLES + np.array([5.0, -4.0, 3.0])
    start = table.with_alignment(euler_to_matrix(nudged), ORIGINS_PX * 10.0)
    write_star(start, dataset / "start.star", box_size=32, default_pixel_size=10.0)
    out = dataset / "local.star"
    result = runner.invoke(app, ["align", "--ref", str(dataset / "ref.mrc"), "--particles", str(dataset / "start.star"),
                                 "--out", str(out), "--method", "local", "--tilt-range", "-60", "60", "--device",
                                 "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    errors = rotation_error(euler_to_matrix(ANGLES), read_star(out).matrices())
    assert errors.max() < 0.05, errors
    assert rotation_error(euler_to_matrix(ANGLES), euler_to_matrix(nudged)).min() > 0.1


def test_runtime_restores_torch_threads_and_logs_the_device_before_the_first_bar():
    before = torch.get_num_threads()
    lines = []
    runtime = Runtime(device="cpu", threads=1, log=lines.append)
    with runtime.applied() as device:
        assert torch.get_num_threads() == 1 and device.type == "cpu"
        assert lines == []  # nothing logged until work starts (bad input stays one line)
        with runtime.progress("work", 3) as advance:
            advance(3)
    assert torch.get_num_threads() == before
    assert lines == ["device: cpu, 1 CPU threads"]


def test_in_process_simulate_and_train_leave_torch_threads_as_they_found_them(tmp_path):
    from gumalign.ops import SimulateRequest, TrainRequest, simulate, train

    torch.set_num_threads(2)
    simulate(SimulateRequest(structures=("builtin:proteasome",), out=tmp_path / "pairs", n=6, snr=100.0, box=32,
                             pairs=True, jobs=1))
    assert torch.get_num_threads() == 2
    report = train(TrainRequest(out=tmp_path / "model", pairs=tmp_path / "pairs" / "pairs.star", arch="gumnet-tiny",
                                epochs=1, batch_size=4, val_fraction=0.2), Runtime(device="cpu", threads=1))
    assert torch.get_num_threads() == 2
    assert (tmp_path / "model" / "model.safetensors").is_file() and report.summary()["epochs_done"] == 1


def test_python_api_and_cli_write_the_same_bytes(dataset):
    """align (ht), average and fsc: the same request through gumalign.ops and through the CLI."""
    ref, star = dataset / "ref.mrc", dataset / "parts.star"
    api, cli = dataset / "api", dataset / "cli"
    api.mkdir()
    cli.mkdir()
    runtime = Runtime(device="cpu")
    align(AlignRequest(ref, star, api / "aligned.star", AlignerSpec(method="ht"), tilt_range=(-60.0, 60.0)), runtime)
    average(AverageRequest(api / "aligned.star", api / "avg.mrc", tilt_range=(-60.0, 60.0)), runtime)
    fsc(FscRequest(maps=(api / "avg_half1.mrc", api / "avg_half2.mrc"), out=api / "fsc.star"), runtime)
    for args in (
        ["align", "--ref", str(ref), "--particles", str(star), "--out", str(cli / "aligned.star"), "--method", "ht"],
        ["average", "--particles", str(cli / "aligned.star"), "--out", str(cli / "avg.mrc")],
    ):
        result = runner.invoke(app, [*args, "--tilt-range", "-60", "60", "--device", "cpu", "--quiet"])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["fsc", str(cli / "avg_half1.mrc"), str(cli / "avg_half2.mrc"), "--out",
                                 str(cli / "fsc.star"), "--quiet"])
    assert result.exit_code == 0, result.output
    for name in ("avg.mrc", "avg_half1.mrc", "avg_half2.mrc"):
        assert _sha(api / name) == _sha(cli / name), name
    # The STAR and XML files name their own folder's files; everything else is the same.
    for name in ("aligned.star", "fsc.star", "fsc.xml"):
        assert (api / name).read_text().replace(str(api), "X") == (cli / name).read_text().replace(str(cli), "X")


def test_without_a_terminal_progress_comes_as_lines_and_one_summary_line_on_stdout(dataset):
    """A batch job's log (CliRunner is not a terminal): periodic progress lines on stderr, the device, and one
    key=value summary line on stdout; --json writes the same record."""
    runner_split = CliRunner(mix_stderr=False) if "mix_stderr" in CliRunner.__init__.__code__.co_varnames else CliRunner()
    out = dataset / "aligned.star"
    record = dataset / "summary.json"
    result = runner_split.invoke(app, ["align", "--ref", str(dataset / "ref.mrc"), "--particles",
                                       str(dataset / "parts.star"), "--out", str(out), "--method", "ht",
                                       "--batch-size", "1", "--tilt-range", "-60", "60", "--device", "cpu",
                                       "--json", str(record)])
    assert result.exit_code == 0, result.output
    stderr = result.stderr
    assert "device: cpu" in stderr
    progress = [line for line in stderr.splitlines() if line.startswith("align (ht): ")]
    assert [line.split(":")[1].split()[0] for line in progress] == ["1/3", "2/3", "3/3"], stderr
    summary_lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(summary_lines) == 1, result.stdout
    summary = dict(item.split("=", 1) for item in summary_lines[0].split())
    assert summary["particles"] == "3" and summary["method"] == "ht" and summary["out"] == str(out)
    assert json.loads(record.read_text())["particles"] == 3


def test_an_out_path_under_a_missing_folder_is_refused_before_any_work(tmp_path):
    """--out /nonexistent/dir/a.mrc: one line, exit 2, nothing created (issue 17); an output folder itself (train,
    simulate) is created when its parent exists."""
    for args in (["wedge", "--out", str(tmp_path / "missing" / "dir" / "w.mrc")],
                 ["simulate", "--structure", "builtin:proteasome", "--n", "1", "--out", str(tmp_path / "a" / "b")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "does not exist" in result.output and len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
    result = runner.invoke(app, ["wedge", "--box", "8", "--out", str(tmp_path / "w.mrc"), "--quiet"])
    assert result.exit_code == 0 and (tmp_path / "w.mrc").is_file()


def test_every_command_prints_one_parseable_summary_line_without_a_terminal(dataset):
    """average, fsc, cluster and wedge as a batch job sees them: one key=value line on stdout each, progress as
    plain lines on stderr (issue 17)."""
    split = CliRunner(mix_stderr=False) if "mix_stderr" in CliRunner.__init__.__code__.co_varnames else CliRunner()
    common = ["--tilt-range", "-60", "60", "--device", "cpu"]
    aligned = dataset / "aligned.star"
    assert split.invoke(app, ["align", "--ref", str(dataset / "ref.mrc"), "--particles", str(dataset / "parts.star"),
                              "--out", str(aligned), "--method", "ht", *common, "--quiet"]).exit_code == 0
    runs = {
        "average": ["average", "--particles", str(aligned), "--out", str(dataset / "avg.mrc"), *common],
        "fsc": ["fsc", str(dataset / "avg_half1.mrc"), str(dataset / "avg_half2.mrc"), "--out",
                str(dataset / "fsc.star")],
        "cluster": ["cluster", "--particles", str(aligned), "--k", "2", "--method", "ht", "--out",
                    str(dataset / "classes.star"), *common],
        "wedge": ["wedge", "--box", "8", "--out", str(dataset / "w.mrc")],
    }
    for name, args in runs.items():
        result = split.invoke(app, args)
        assert result.exit_code == 0, (name, result.output)
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, (name, result.stdout)
        summary = dict(item.split("=", 1) for item in lines[0].split())
        assert summary, name
        if name in ("average", "cluster"):
            assert "device: cpu" in result.stderr and "(100%)" in result.stderr, (name, result.stderr)
