"""Bad inputs, interrupts and faults, as a new user and a careless script meet them (issue 15).

Every case gives one line (no traceback) and exit status 2, leaves no partial output or temporary file, and leaves
the inputs byte-identical; interrupted runs resume to exactly what an uninterrupted run writes.
"""

import errno
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gumalign.cli.main import app
from gumalign.io.mrc import write_volume
from tests.conftest import smooth_blob

runner = CliRunner()
N = 16
PIXEL = 10.0


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder`` (hidden temporary files included)."""
    return {str(p.relative_to(folder)): _digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(result, *needles):
    """Exit status 2, one line on the output, no traceback, and each needle in it."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())
    for needle in needles:
        assert needle in text, result.output


def _star(rows: list[str], columns: list[str]) -> str:
    header = "".join(f"_{c} #{i}\n" for i, c in enumerate(columns, start=1))
    return (
        "data_optics\n\nloop_\n_rlnOpticsGroupName #1\n_rlnOpticsGroup #2\n_rlnImagePixelSize #3\n"
        f"_rlnImageSize #4\n_rlnImageDimensionality #5\nopticsGroup1 1 {PIXEL} {N} 3\n\n"
        "data_particles\n\nloop_\n" + header + "\n".join(rows) + ("\n" if rows else "")
    )


@pytest.fixture
def data(tmp_path):
    """A 16³ reference, 4 rotated/shifted copies as particles, a wedge weight (rlnCtfImage), aligned angles."""
    from gumalign.fourier import wedge_mask

    ref = smooth_blob((N, N, N), seed=7, radius=6.0)
    write_volume(tmp_path / "ref.mrc", ref, PIXEL)
    write_volume(tmp_path / "weight.mrc", wedge_mask((N,) * 3, (-60, 60), "centred"), PIXEL)
    (tmp_path / "particles").mkdir()
    rows = []
    for i in range(4):
        volume = np.rot90(np.roll(ref, i - 1, axis=2), k=i, axes=(1, 2)).copy()
        write_volume(tmp_path / "particles" / f"particle_{i:06d}.mrc", volume, PIXEL)
        rows.append(f"particles/particle_{i:06d}.mrc weight.mrc 1 {10.0 * i} {20.0 + i} {-5.0 * i} 0 0 0 {i % 2 + 1}")
    columns = ["rlnImageName", "rlnCtfImage", "rlnOpticsGroup", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi",
               "rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst", "rlnRandomSubset"]
    (tmp_path / "parts.star").write_text(_star(rows, columns))
    (tmp_path / "plain.star").write_text(_star([r.split()[0] + " 1" for r in rows], ["rlnImageName", "rlnOpticsGroup"]))
    return tmp_path


def align_args(data, out, *extra, star="parts.star"):
    return ["align", "--ref", str(data / "ref.mrc"), "--particles", str(data / star), "--out", str(out),
            "--method", "ht", "--device", "cpu", "--quiet", *extra]


# --- --out that names an input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["ref.mrc", "parts.star", "particles/particle_000002.mrc", "weight.mrc"])
def test_align_refuses_an_out_that_is_an_input(data, target):
    before = _snapshot(data)
    result = runner.invoke(app, align_args(data, data / target))
    _one_line_error(result, "would overwrite the input file")
    assert _snapshot(data) == before


def test_align_refuses_an_out_that_reaches_an_input_by_another_spelling(data):
    before = _snapshot(data)
    (data / "link.mrc").symlink_to(data / "ref.mrc")
    result = runner.invoke(app, align_args(data, data / "particles" / ".." / "link.mrc"))
    _one_line_error(result, "would overwrite the input file")
    (data / "link.mrc").unlink()
    assert _snapshot(data) == before


def test_align_refuses_an_out_that_is_a_folder_before_any_work(data):
    (data / "isdir").mkdir()
    before = _snapshot(data)
    result = runner.invoke(app, align_args(data, data / "isdir"))
    _one_line_error(result, "is a folder")
    assert _snapshot(data) == before and not list((data / "isdir").iterdir())


def test_align_empty_particle_table_is_one_line(data):
    (data / "empty.star").write_text(_star([], ["rlnImageName", "rlnOpticsGroup"]))
    before = _snapshot(data)
    result = runner.invoke(app, align_args(data, data / "out.star", star="empty.star"))
    _one_line_error(result, "no particles")
    assert _snapshot(data) == before


# --- OS errors: one line naming the path and the cause ------------------------------------------------------------


@pytest.mark.parametrize(
    "error, needle",
    [(errno.ENOSPC, "No space left on device"), (errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only")],
)
def test_os_errors_while_writing_are_one_line(data, monkeypatch, error, needle):
    import gumalign.align.pipeline as pipeline

    def failing_write(table, path, **kwargs):
        raise OSError(error, os.strerror(error), str(path))

    real = pipeline.write_star
    monkeypatch.setattr(pipeline, "write_star", failing_write)
    result = runner.invoke(app, align_args(data, data / "out.star"))
    _one_line_error(result, "out.star", needle, "kept in", "--continue")
    assert not (data / "out.star").exists()
    monkeypatch.setattr(pipeline, "write_star", real)
    if error == errno.ENOSPC:  # the aligned rows were kept: --continue only writes the STAR file
        monkeypatch.setattr(pipeline, "iter_particle_batches", lambda *a: iter(()))
        again = runner.invoke(app, align_args(data, data / "out.star", "--continue"))
        assert again.exit_code == 0, again.output
        assert len((data / "out.star").read_text().splitlines()) > 4


def test_memory_error_is_one_line(data, monkeypatch):
    import gumalign.align.pipeline as pipeline

    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(pipeline, "iter_particle_batches", no_memory)
    result = runner.invoke(app, align_args(data, data / "out.star"))
    _one_line_error(result, "out of memory")


# --- align --continue: complete keys, exact lines, clear errors ---------------------------------------------------


def _interrupted_align(data, monkeypatch, out, *extra, after=1, star="parts.star"):
    """Run align with --batch-size 1 and stop it (as Ctrl-C would) after ``after`` partial writes."""
    import gumalign.align.pipeline as pipeline

    real = pipeline._append_partial
    calls = []

    def append_then_stop(*args):
        real(*args)
        calls.append(1)
        if len(calls) == after:
            raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_append_partial", append_then_stop)
    result = runner.invoke(app, align_args(data, out, "--batch-size", "1", *extra, star=star))
    monkeypatch.setattr(pipeline, "_append_partial", real)
    assert result.exit_code == 130, result.output
    assert not out.exists() and out.with_name(out.name + ".partial").is_file()


def test_resumed_align_equals_an_uninterrupted_one_bit_for_bit(data, monkeypatch):
    straight = data / "straight.star"
    assert runner.invoke(app, align_args(data, straight, "--batch-size", "1")).exit_code == 0
    resumed = data / "resumed.star"
    _interrupted_align(data, monkeypatch, resumed, after=3)
    partial = resumed.with_name("resumed.star.partial")
    text = partial.read_text()
    partial.write_text(text[: len(text) - 20])  # the kill cut the third row's line short (no newline)
    result = runner.invoke(app, align_args(data, resumed, "--batch-size", "1", "--continue"))
    assert result.exit_code == 0, result.output
    assert resumed.read_bytes() == straight.read_bytes()
    assert not partial.exists()


def test_partial_lines_store_every_bit(tmp_path):
    from gumalign.align.pipeline import _append_partial, _read_partial

    values = np.random.default_rng(3).standard_normal((3, 13)) * np.array([1e-7] + [1.0] * 11 + [1e5])
    key = {"run": 1}
    path = tmp_path / "x.partial"
    with open(path, "w") as handle:
        handle.write(json.dumps(key) + "\n")
        _append_partial(handle, np.array([0, 1, 2]), values)
    done = _read_partial(path, key, 3)
    assert all(np.array_equal(done[i], values[i]) for i in range(3))


@pytest.mark.parametrize(
    "first, then, needle",
    [
        (["--max-shift", "2"], ["--max-shift", "3"], "max_shift"),
        (["--tilt-range", "-60", "60"], ["--tilt-range", "-50", "50"], "tilt_range"),
        ([], ["--refine"], "refine"),
    ],
)
def test_align_continue_refuses_a_partial_made_with_other_options(data, monkeypatch, first, then, needle):
    out = data / "out.star"
    _interrupted_align(data, monkeypatch, out, *first, star="plain.star")
    result = runner.invoke(app, align_args(data, out, "--batch-size", "1", "--continue", *then, star="plain.star"))
    _one_line_error(result, "different", needle)


def test_align_continue_refuses_changed_particle_files(data, monkeypatch):
    out = data / "out.star"
    _interrupted_align(data, monkeypatch, out)
    particle = data / "particles" / "particle_000003.mrc"
    os.utime(particle, ns=(particle.stat().st_atime_ns, particle.stat().st_mtime_ns + 10**9))
    result = runner.invoke(app, align_args(data, out, "--batch-size", "1", "--continue"))
    _one_line_error(result, "different input files")


@pytest.mark.parametrize("line", ["1e", "1 " + " ".join(["nan"] * 13), "7 " + " ".join(["0.5"] * 13)])
def test_align_continue_names_a_corrupt_line(data, monkeypatch, line):
    out = data / "out.star"
    _interrupted_align(data, monkeypatch, out)
    partial = out.with_name("out.star.partial")
    partial.write_text(partial.read_text() + line + "\n" + partial.read_text().splitlines()[1] + "\n")
    result = runner.invoke(app, align_args(data, out, "--batch-size", "1", "--continue"))
    _one_line_error(result, "line 3 is corrupt")
    assert not out.exists()


def test_align_refuses_a_non_finite_result(data, monkeypatch):
    from gumalign.baselines.ht import HTAligner

    real = HTAligner.align

    def nan_scores(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        result.scores[:] = np.nan
        return result

    monkeypatch.setattr(HTAligner, "align", nan_scores)
    before = _snapshot(data)
    result = runner.invoke(app, align_args(data, data / "out.star"))
    _one_line_error(result, "particle_000000.mrc", "non-finite")
    assert _snapshot(data) == before


# --- models: unverified files are refused unless allowed; `models show` exits 2 on invalid files ---------------


@pytest.fixture
def bare_model(tmp_path):
    """A tiny model's safetensors file alone (no record beside it), one byte of its tensors flipped."""
    import gumalign.weights as registry
    from gumalign.models import build_model

    registry.save_model(build_model("gumnet-tiny", seed=3), {"name": "t", "validation": {}}, tmp_path / "run")
    bare = tmp_path / "t.safetensors"
    data = bytearray((tmp_path / "run" / "model.safetensors").read_bytes())
    data[-3] ^= 0x01
    bare.write_bytes(bytes(data))
    return bare


def test_align_refuses_an_unverified_model_unless_allowed(tmp_path, bare_model):
    ref = smooth_blob((32,) * 3, seed=2, radius=10.0)
    write_volume(tmp_path / "ref.mrc", ref, PIXEL)
    write_volume(tmp_path / "p.mrc", np.roll(ref, 1, axis=0), PIXEL)
    (tmp_path / "p.star").write_text(_star(["p.mrc 1"], ["rlnImageName", "rlnOpticsGroup"]).replace(f" {N} 3", " 32 3"))
    args = ["align", "--ref", str(tmp_path / "ref.mrc"), "--particles", str(tmp_path / "p.star"), "--device", "cpu",
            "--method", "gumnet", "--model", str(bare_model), "--out", str(tmp_path / "a.star"), "--quiet"]
    _one_line_error(runner.invoke(app, args), "t.safetensors", "cannot be verified", "--allow-unverified")
    assert not (tmp_path / "a.star").exists() and not (tmp_path / "a.star.partial").exists()
    allowed = runner.invoke(app, args + ["--allow-unverified"])
    assert allowed.exit_code == 0, allowed.output


def _invalid_models(folder: Path, bare: Path) -> dict[str, Path]:
    """Seven kinds of invalid model file, each named by what is wrong with it."""
    good = bare.read_bytes()
    cases = {
        "empty": b"",
        "text": b"not a model at all\n",
        "truncated": good[: len(good) // 2],
        "header": b"\xff" * 8 + good[8:],
        "json-header": (20).to_bytes(8, "little") + b'{"a": 1}' + b" " * 12,
    }
    paths = {}
    for name, content in cases.items():
        paths[name] = folder / f"{name}.safetensors"
        paths[name].write_bytes(content)
    from safetensors.torch import save_file
    import torch

    paths["no-architecture"] = folder / "no-architecture.safetensors"
    save_file({"w": torch.zeros(2)}, str(paths["no-architecture"]))
    paths["wrong-tensors"] = folder / "wrong-tensors.safetensors"
    save_file({"w": torch.zeros(2)}, str(paths["wrong-tensors"]),
              metadata={"gumalign_config": json.dumps({"arch": "gumnet-tiny"})})
    return paths


def test_models_show_exits_2_on_invalid_files(tmp_path, bare_model):
    for kind, path in _invalid_models(tmp_path, bare_model).items():
        result = runner.invoke(app, ["models", "show", str(path)])
        assert result.exit_code == 2, (kind, result.output)
        assert "Traceback" not in result.output and str(path.name) in result.output, (kind, result.output)
    shown = runner.invoke(app, ["models", "show", str(bare_model)])
    assert shown.exit_code == 0 and "unverified" in shown.output, shown.output


# --- training: checkpoints in generations, complete resume keys --------------------------------------------------


class _Killed(BaseException):
    """Stands in for SIGKILL or a full disk: nothing in gumalign catches it."""


def _tiny_training(seed=4):
    from gumalign.train import PairSet  # noqa: F401  (the data type built below)
    from tests.test_train import rough_blob, synthetic_pairs

    return synthetic_pairs(4, 1, rough_blob()).split(0.0, 0)  # 4 training pairs, no validation


def _train(out, epochs, resume=False, shift_search=False):
    from gumalign.models import build_model
    from gumalign.train import TrainOptions, train_model

    train, val = _tiny_training()
    model = build_model("gumnet-tiny", seed=4 if not resume else 99)
    options = TrainOptions(epochs=epochs, batch_size=4, lr=1e-3, decay=1e-3, seed=4, shift_search=shift_search)
    train_model(model, train, val, options, out, resume=resume)
    return model


def _weights_sha256(model) -> str:
    """sha256 of the model's weights as safetensors bytes (what save_model writes)."""
    from safetensors.torch import save

    return hashlib.sha256(save({k: v.contiguous() for k, v in model.state_dict().items()})).hexdigest()


@pytest.fixture(scope="module")
def straight_sha256(tmp_path_factory):
    return _weights_sha256(_train(tmp_path_factory.mktemp("straight"), 2))


@pytest.mark.parametrize("step", ["model", "optimizer", "state", "cleanup"])
def test_a_kill_during_a_checkpoint_write_still_resumes_to_the_same_weights(tmp_path, monkeypatch, straight_sha256,
                                                                            step):
    """Epoch 2's checkpoint write is interrupted after each of its steps (leaving a torn file where a kill would);
    --resume continues from the last whole generation and ends with the uninterrupted run's weights."""
    import gumalign.train.checkpoint as checkpoint

    real = {name: getattr(checkpoint, name) for name in ("save_tensors", "write_text_atomic", "_remove_other_generations")}
    calls = {"save_tensors": 0}

    def torn(path):
        Path(path).write_bytes(b"torn")  # what a kill in the middle of writing leaves
        raise _Killed

    def save_tensors(tensors, path, metadata=None):
        calls["save_tensors"] += 1
        second_epoch = calls["save_tensors"] > 2
        if second_epoch and step == "model" and calls["save_tensors"] == 3:
            torn(path)
        real["save_tensors"](tensors, path, metadata)
        if second_epoch and step == "optimizer" and calls["save_tensors"] == 4:
            raise _Killed

    def write_text_atomic(path, text):
        if calls["save_tensors"] > 2 and step == "state":
            raise _Killed  # atomic: the old state.json stays
        real["write_text_atomic"](path, text)

    def remove_other_generations(folder, keep):
        if calls["save_tensors"] > 2 and step == "cleanup":
            raise _Killed
        real["_remove_other_generations"](folder, keep)

    monkeypatch.setattr(checkpoint, "save_tensors", save_tensors)
    monkeypatch.setattr(checkpoint, "write_text_atomic", write_text_atomic)
    monkeypatch.setattr(checkpoint, "_remove_other_generations", remove_other_generations)
    with pytest.raises(_Killed):
        _train(tmp_path, 2)
    for name, function in real.items():
        monkeypatch.setattr(checkpoint, name, function)

    state = checkpoint.read_checkpoint_state(tmp_path / "checkpoint")  # the last whole generation, verified
    assert state["epoch"] == (2 if step == "cleanup" else 1)
    resumed = _train(tmp_path, 2, resume=True)
    assert _weights_sha256(resumed) == straight_sha256
    files = checkpoint.generation_files(2)
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == sorted([*files.values(), "state.json"])


def test_state_without_hashes_is_refused(tmp_path):
    from gumalign.errors import GumalignError
    from gumalign.train.checkpoint import read_checkpoint_state

    _train(tmp_path, 1)
    path = tmp_path / "checkpoint" / "state.json"
    state = json.loads(path.read_text())
    del state["sha256"]
    path.write_text(json.dumps(state))
    with pytest.raises(GumalignError, match="cannot be verified"):
        read_checkpoint_state(tmp_path / "checkpoint")


def test_resume_refuses_a_checkpoint_made_with_shift_search_when_the_flag_is_gone(tmp_path):
    from gumalign.errors import GumalignError

    _train(tmp_path, 1, shift_search=True)
    with pytest.raises(GumalignError, match="different shift_search"):
        _train(tmp_path, 2, resume=True, shift_search=False)


@pytest.fixture
def pairs_star(tmp_path):
    from tests.test_train import _write_pairs_star

    _write_pairs_star(tmp_path / "data", n=4)
    return tmp_path / "data" / "pairs.star"


def _train_cli(pairs_star, out, *extra):
    return runner.invoke(app, [
        "train", "--pairs", str(pairs_star), "--arch", "gumnet-tiny", "--batch-size", "4", "--lr", "1e-3",
        "--val-fraction", "0", "--device", "cpu", "--threads", "1", "--quiet", "--out", str(out), *extra,
    ])


def test_train_resume_with_fewer_epochs_is_refused_and_a_torn_first_checkpoint_does_not_block_a_fresh_run(
    tmp_path, pairs_star, monkeypatch
):
    import gumalign.train.checkpoint as checkpoint

    out = tmp_path / "run"
    assert _train_cli(pairs_star, out, "--epochs", "2").exit_code == 0
    before = _snapshot(out)
    _one_line_error(_train_cli(pairs_star, out, "--epochs", "1", "--resume"), "has 2 epochs", "--epochs 2 or more")
    assert _snapshot(out) == before

    # A kill during the very first checkpoint write: no state.json yet, so a fresh run may use the folder.
    fresh = tmp_path / "fresh"
    real = checkpoint.write_text_atomic

    def killed(path, text):
        raise _Killed

    monkeypatch.setattr(checkpoint, "write_text_atomic", killed)
    with pytest.raises(_Killed):
        _train_cli(pairs_star, fresh, "--epochs", "1")
    monkeypatch.setattr(checkpoint, "write_text_atomic", real)
    result = _train_cli(pairs_star, fresh, "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert json.loads((fresh / "model.json").read_text())["training"]["epochs"] == 1


def test_train_outputs_are_all_or_nothing_and_refuse_to_replace_the_init_model(tmp_path, pairs_star, monkeypatch):
    import gumalign.weights as registry
    from gumalign.models import build_model

    init = tmp_path / "init"
    registry.save_model(build_model("gumnet-tiny", seed=1), {"name": "init", "validation": {}}, init)
    before = _snapshot(init)
    _one_line_error(_train_cli(pairs_star, init, "--epochs", "1", "--init", str(init)), "would overwrite the input")
    assert _snapshot(init) == before

    out = tmp_path / "run"

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "model.json"))

    import gumalign.io.atomic as atomic

    real = atomic.write_text_atomic
    monkeypatch.setattr(atomic, "write_text_atomic", full_disk)
    _one_line_error(_train_cli(pairs_star, out, "--epochs", "1"), "model.json", "No space left on device")
    monkeypatch.setattr(atomic, "write_text_atomic", real)
    left = sorted(p.name for p in out.iterdir())
    assert left == ["checkpoint"], left  # no model.safetensors without its record, no loss.png, no temporary folder
    assert _train_cli(pairs_star, out, "--epochs", "1", "--resume").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint", "loss.png", "model.json", "model.safetensors"]


def test_train_particles_at_another_pixel_size_than_the_reference_are_refused(tmp_path):
    ref = smooth_blob((32,) * 3, seed=2, radius=10.0)
    write_volume(tmp_path / "ref.mrc", ref, 10.0)
    write_volume(tmp_path / "p.mrc", ref, 12.0)
    star = _star(["p.mrc 1"], ["rlnImageName", "rlnOpticsGroup"]).replace(f"{PIXEL} {N} 3", "12.0 32 3")
    (tmp_path / "p.star").write_text(star)
    result = runner.invoke(app, [
        "train", "--particles", str(tmp_path / "p.star"), "--ref", str(tmp_path / "ref.mrc"), "--arch", "gumnet-tiny",
        "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "m"), "--quiet",
    ])
    _one_line_error(result, "pixel size 12 Å differs from the reference's 10 Å")
    assert not (tmp_path / "m").exists()


# --- average, cluster, simulate, wedge, info: inputs kept, outputs all or nothing -----------------------------------


def average_args(data, out, *extra):
    return ["average", "--particles", str(data / "parts.star"), "--out", str(out), "--device", "cpu", "--quiet", *extra]


@pytest.mark.parametrize(
    "out, extra",
    [
        ("parts.mrc", ["--iterations", "1", "--method", "ht"]),  # its STAR beside the map would replace parts.star
        ("particles/particle_000001.mrc", []),
        ("weight.mrc", []),
        ("ref_half1.mrc", []),  # --out ref.mrc is no input, but the half map beside it is the rlnCtfImage
    ],
)
def test_average_refuses_outputs_that_replace_inputs(data, out, extra):
    if out == "ref_half1.mrc":
        star = (data / "parts.star").read_text().replace("weight.mrc", "ref_half1.mrc")
        (data / "parts.star").write_text(star)
        (data / "ref_half1.mrc").write_bytes((data / "weight.mrc").read_bytes())
        out = "ref.mrc"
    before = _snapshot(data)
    _one_line_error(runner.invoke(app, average_args(data, data / out, *extra)), "would overwrite the input file")
    assert _snapshot(data) == before


def test_average_empty_table_and_folder_out_are_one_line(data):
    (data / "empty.star").write_text(_star([], ["rlnImageName", "rlnOpticsGroup"]))
    before = _snapshot(data)
    result = runner.invoke(app, ["average", "--particles", str(data / "empty.star"), "--out", str(data / "a.mrc")])
    _one_line_error(result, "no particles")
    (data / "isdir.mrc").mkdir()
    _one_line_error(runner.invoke(app, average_args(data, data / "isdir.mrc")), "is a folder")
    assert _snapshot(data) == before


def test_average_on_a_full_disk_writes_no_map_at_all(data, monkeypatch):
    import gumalign.plots as plots

    def full_disk(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(plots, "slice_montage", full_disk)  # the last of the four files
    before = _snapshot(data)
    _one_line_error(runner.invoke(app, average_args(data, data / "avg.mrc")), "avg.png", "No space left on device")
    assert _snapshot(data) == before  # no half maps without the full map, no temporary folder


def test_cluster_refuses_an_input_as_output_and_writes_all_or_nothing(data, monkeypatch):
    before = _snapshot(data)
    args = ["cluster", "--particles", str(data / "parts.star"), "--k", "2", "--method", "ht", "--device", "cpu",
            "--quiet"]
    _one_line_error(runner.invoke(app, args + ["--out", str(data / "parts.star")]), "would overwrite the input")
    (data / "empty.star").write_text(_star([], ["rlnImageName", "rlnOpticsGroup"]))
    empty = runner.invoke(app, ["cluster", "--particles", str(data / "empty.star"), "--k", "1",
                                "--out", str(data / "c.star")])
    _one_line_error(empty, "no particles")
    (data / "empty.star").unlink()
    assert _snapshot(data) == before

    import gumalign.plots as plots

    def full_disk(path, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(plots, "heatmap_plot", full_disk)
    _one_line_error(runner.invoke(app, args + ["--out", str(data / "c.star")]), "No space left on device")
    assert _snapshot(data) == before  # neither c.star nor the score files


def test_simulate_on_a_full_disk_leaves_no_half_set(tmp_path, monkeypatch):
    import gumalign.simulate.dataset as dataset

    def full_disk(plan, truth, out_dir):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out_dir / "particles.star"))

    monkeypatch.setattr(dataset, "_write_stars", full_disk)
    out = tmp_path / "sim"
    result = runner.invoke(app, ["simulate", "--structure", "builtin:rubisco", "--n", "2", "--snr", "inf",
                                 "--no-ctf", "--no-mtf", "--tilt-step", "10", "--out", str(out), "--quiet"])
    _one_line_error(result, "particles.star", "No space left on device")
    assert list(tmp_path.iterdir()) == []  # neither particles without their STAR file nor a hidden staging folder


def test_wedge_huge_box_and_folder_out_are_one_line(tmp_path):
    _one_line_error(runner.invoke(app, ["wedge", "--box", "100000", "--out", str(tmp_path / "w.mrc")]),
                    "--box 100000", "GB of memory")
    (tmp_path / "w.mrc").mkdir()
    _one_line_error(runner.invoke(app, ["wedge", "--box", "8", "--out", str(tmp_path / "w.mrc")]), "is a folder")
    assert list(tmp_path.iterdir()) == [tmp_path / "w.mrc"] and not list((tmp_path / "w.mrc").iterdir())


def test_info_on_a_zero_size_header_is_one_line(tmp_path):
    import mrcfile

    path = tmp_path / "zero.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((1, 1, 1), np.float32))
    raw = bytearray(path.read_bytes()[:1024])
    raw[0:12] = np.zeros(3, "<i4").tobytes()  # nx = ny = nz = 0
    path.write_bytes(bytes(raw))
    _one_line_error(runner.invoke(app, ["info", str(path)]), "zero.mrc")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["align", "--ref", "r.mrc", "--particles", "p.star", "--out", "o.star", "--batch-size", "0"], "--batch-size"),
        (["wedge", "--box", "2", "--out", "w.mrc"], "--box"),
        (["train", "--out", "o", "--max-angle", "500", "--pairs", "p.star"], "--max-angle"),
        (["average", "--particles", "p.star"], "--out"),
        (["wedge", "--no-such-option"], "--no-such-option"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    _one_line_error(result, needle)
    assert not any("╭" in line or "│" in line for line in result.output.splitlines())
    assert list(tmp_path.iterdir()) == []


def _fsc_half_maps(folder: Path) -> list[Path]:
    from gumalign.io.mrc import write_volume

    gen = np.random.default_rng(3)
    signal = gen.standard_normal((16, 16, 16)).astype(np.float32)
    paths = []
    for i in (1, 2):
        paths.append(folder / f"half{i}.mrc")
        write_volume(paths[-1], signal + 0.3 * gen.standard_normal(signal.shape).astype(np.float32), 4.0)
    return paths


@pytest.mark.parametrize("out", ["half1.mrc", "sub/../half2.mrc"])
def test_fsc_refuses_an_out_that_is_one_of_its_maps(tmp_path, out):
    maps = _fsc_half_maps(tmp_path)
    (tmp_path / "sub").mkdir()
    before = _snapshot(tmp_path)
    result = runner.invoke(app, ["fsc", *map(str, maps), "--out", str(tmp_path / out)])
    _one_line_error(result, "would overwrite the input file")
    assert _snapshot(tmp_path) == before


def test_fsc_on_a_full_disk_writes_nothing(tmp_path, monkeypatch):
    import gumalign.plots as plots

    def full_disk(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    maps = _fsc_half_maps(tmp_path)
    monkeypatch.setattr(plots, "fsc_plot", full_disk)  # the last of the three files
    before = _snapshot(tmp_path)
    _one_line_error(runner.invoke(app, ["fsc", *map(str, maps), "--out", str(tmp_path / "post.star")]),
                    "post.png", "No space left on device")
    assert _snapshot(tmp_path) == before  # no STAR or XML without the plot, no temporary folder
