"""Training: pair datasets, the schedule, a short CPU run that learns, exact resume, and `gumalign train`."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.ndimage import gaussian_filter
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from gumalign.cli.main import app
from gumalign.errors import GumalignError
from gumalign.fourier import wedge_mask
from gumalign.geometry import rotation_error, transform_volumes
from gumalign.io.mrc import write_volume
from gumalign.io.star import ParticleTable, write_star
from gumalign.models import build_model
from gumalign.train import PairSet, TrainOptions, evaluate, keras_decayed_lr, train_model, zscore
from gumalign.train.checkpoint import STATE_FILE, generation_files

N = 32


def rough_blob(seed=1, radius=10, sigma=2.0):
    """An asymmetric density with fine detail (filtered noise in a sphere): rotations change it a lot."""
    gen = np.random.default_rng(seed)
    vol = gaussian_filter(gen.standard_normal((N, N, N)), sigma)
    z, y, x = np.indices((N, N, N)) - N // 2
    return (vol * ((x * x + y * y + z * z) <= radius * radius)).astype(np.float32)


def synthetic_pairs(n, seed, template, max_deg=45.0, max_shift=3.0, snr=None):
    """Our own tiny generator (independent of gumalign.simulate): s_a = template; s_b = transform_volumes(template,
    R, t), then a ±60° wedge by FFT, then optional noise. Rotations lie within ``max_deg`` of the identity."""
    rng = np.random.default_rng(seed)
    axes = rng.standard_normal((n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.deg2rad(max_deg) * rng.uniform(0, 1, n) ** (1 / 3)  # uniform in the ball of rotation vectors
    rot = Rotation.from_rotvec(axes * angles[:, None]).as_matrix()
    shifts = rng.uniform(-max_shift, max_shift, (n, 3))
    moved = transform_volumes(torch.from_numpy(template)[None], torch.from_numpy(rot).float(),
                              torch.from_numpy(shifts).float()).numpy()
    wedge = wedge_mask((N,) * 3, (-60, 60), "full")
    s_b = np.fft.ifftn(np.fft.fftn(moved, axes=(1, 2, 3)) * wedge, axes=(1, 2, 3)).real.astype(np.float32)
    if snr is not None:
        s_b += rng.standard_normal(s_b.shape).astype(np.float32) * np.sqrt(s_b.var() / snr)
    weights = np.stack([np.ones((N,) * 3, np.float32), wedge_mask((N,) * 3, (-60, 60), "centred")])
    return PairSet(
        a_volumes=zscore(template[None]), a_index=np.zeros(n, np.int64), b_volumes=zscore(s_b), weights=weights,
        weight_a=np.zeros(n, np.int64), weight_b=np.ones(n, np.int64), rotations=rot, shifts=shifts,
    )


def test_keras_time_decay():
    assert keras_decayed_lr(1e-5, 2e-8, 0) == 1e-5
    assert keras_decayed_lr(1e-5, 2e-8, 10**6) == pytest.approx(1e-5 / 1.02)
    assert keras_decayed_lr(1e-3, 0.0, 123) == 1e-3


def test_split_is_seeded_stratified_and_disjoint():
    template = rough_blob()
    pairs = synthetic_pairs(40, 0, template)
    pairs.snr = np.repeat([100.0, 0.1], 20)
    train, val = pairs.split(0.25, seed=3)
    again_train, again_val = pairs.split(0.25, seed=3)
    assert len(train) == 30 and len(val) == 10
    assert np.array_equal(val.rotations, again_val.rotations)
    assert sorted(np.unique(val.snr, return_counts=True)[1]) == [5, 5]
    ids = lambda part: {tuple(np.round(row, 9)) for row in part.shifts}  # noqa: E731 (shifts identify pairs)
    assert not ids(train) & ids(val) and ids(train) | ids(val) == ids(pairs)
    with pytest.raises(GumalignError):
        pairs.split(1.5, seed=0)


def test_short_cpu_training_learns_to_align(tmp_path):
    """Loss falls and held-out errors fall below the untrained network's, a constant identity guess and a random
    rotation (2.40). Rotations lie within 45° so that a few seconds of CPU suffice (full SO(3) takes far longer);
    learning a transposed or otherwise wrong convention would leave the error above the identity guess."""
    template = rough_blob()
    train, val = synthetic_pairs(64, 10, template), synthetic_pairs(48, 100, template)
    model = build_model("gumnet-tiny", seed=0)
    before = evaluate(model, val, 16, "cpu")
    history = train_model(model, train, val, TrainOptions(epochs=8, batch_size=8, lr=3e-3, decay=0.0), tmp_path)
    after = history[-1]["val"]
    identity_guess = rotation_error(val.rotations, np.eye(3)).mean()
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.1
    assert after["loss"] < before.loss - 0.1
    assert after["rotation_error"]["mean"] < 0.9 * min(identity_guess, before.rotation_errors.mean(), 2.40)
    assert after["translation_error"]["mean"] < 0.7 * before.translation_errors.mean()


def test_shift_search_term_scores_the_networks_rotation_at_the_fft_shift(monkeypatch):
    """With the network's rotation right and its shift wrong, the searched term is near zero, so the shift-search loss
    is about half the plain one; and only the rotation outputs get the searched term's gradient."""
    from gumalign.models.transformer import params_to_rigid
    from gumalign.train.loop import pair_loss

    template = rough_blob(seed=3)
    pairs = synthetic_pairs(2, 7, template, max_deg=30.0, max_shift=3.0)
    s_a, s_b, w_a, w_b = (torch.from_numpy(np.ascontiguousarray(x)) for x in pairs.batch(np.arange(2)))
    model = build_model("gumnet-tiny", seed=0).eval()
    vectors = Rotation.from_matrix(pairs.rotations).as_rotvec()
    params = torch.tensor(np.concatenate([vectors / np.deg2rad(60.0) / 2 + 0.5, np.full((2, 3), 0.5)], axis=1),
                          dtype=torch.float32, requires_grad=True)  # rotation vectors within 60°, zero shift
    monkeypatch.setattr(model, "forward", lambda a, b: params)
    monkeypatch.setattr(model, "rigid", lambda p: params_to_rigid(p, 32, "rotvec", 60.0))
    plain, *_ = pair_loss(model, s_a, s_b, w_a, w_b, shift_search=False)
    searched, *_ = pair_loss(model, s_a, s_b, w_a, w_b, shift_search=True)
    from gumalign.models.transformer import correlation_loss, transform_and_impute

    rotations = params_to_rigid(params.detach(), 32, "rotvec", 60.0)[0]
    at_truth = correlation_loss(s_b, transform_and_impute(s_a, s_b, w_a, rotations, torch.from_numpy(pairs.shifts).float()))
    assert float(plain) > float(at_truth) + 0.15
    # searched = (plain + the term at the FFT shift) / 2, and that term is the loss at the true transform
    assert float(2 * searched - plain) == pytest.approx(float(at_truth), abs=0.02)
    searched.backward()
    assert params.grad[:, :3].abs().sum() > 0


def _states_close(a, b, atol=1e-6):
    return all(torch.allclose(a[k].double(), b[k].double(), atol=atol, rtol=0) for k in a)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    template = rough_blob()
    train, val = synthetic_pairs(12, 1, template), synthetic_pairs(4, 2, template)
    options = dict(batch_size=4, lr=1e-3, decay=1e-3, seed=4)

    straight = build_model("gumnet-tiny", seed=4)
    h_straight = train_model(straight, train, val, TrainOptions(epochs=2, **options), tmp_path / "straight")

    first = build_model("gumnet-tiny", seed=4)
    train_model(first, train, val, TrainOptions(epochs=1, **options), tmp_path / "split")
    resumed = build_model("gumnet-tiny", seed=99)  # a different start: everything must come from the checkpoint
    h_resumed = train_model(resumed, train, val, TrainOptions(epochs=2, **options), tmp_path / "split", resume=True)

    assert _states_close(straight.state_dict(), resumed.state_dict())
    assert len(h_resumed) == 2
    for a, b in zip(h_straight, h_resumed):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
        assert a["val"]["loss"] == pytest.approx(b["val"]["loss"], abs=1e-6)
    # The checkpoint is safetensors + JSON only (never a pickle).
    # One generation is kept (epoch 2's); the epoch-1 files went once state.json pointed at the new ones.
    folder = tmp_path / "split" / "checkpoint"
    files = generation_files(2)
    assert sorted(p.name for p in folder.iterdir()) == sorted([files["model"], files["optimizer"], STATE_FILE])
    assert json.loads((folder / STATE_FILE).read_text())["step"] == 6


def test_resume_refuses_other_data_and_torn_checkpoints(tmp_path):
    template = rough_blob()
    train, val = synthetic_pairs(8, 1, template), synthetic_pairs(4, 2, template)
    options = TrainOptions(epochs=1, batch_size=4, lr=1e-3)
    train_model(build_model("gumnet-tiny"), train, val, options, tmp_path)
    other = synthetic_pairs(8, 5, template)
    with pytest.raises(GumalignError, match="different data"):
        train_model(build_model("gumnet-tiny"), other, val, TrainOptions(epochs=2, batch_size=4, lr=1e-3), tmp_path,
                    resume=True)
    with pytest.raises(GumalignError, match="different lr"):
        train_model(build_model("gumnet-tiny"), train, val, TrainOptions(epochs=2, batch_size=4, lr=1e-4), tmp_path,
                    resume=True)
    model_file = tmp_path / "checkpoint" / generation_files(1)["model"]
    data = bytearray(model_file.read_bytes())
    data[-1] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(GumalignError, match="torn checkpoint"):
        train_model(build_model("gumnet-tiny"), train, val, TrainOptions(epochs=2, batch_size=4, lr=1e-3), tmp_path,
                    resume=True)
    with pytest.raises(GumalignError, match="nothing|no checkpoint"):
        train_model(build_model("gumnet-tiny"), train, val, options, tmp_path / "empty", resume=True)


def test_simulated_pairs_follow_the_ground_truth_convention():
    """Pairs from gumalign.simulate: transform_volumes(s_a, R, t) matches s_b (SNR 100) far better than s_a does."""
    from gumalign.train.data import simulated_pairs

    z, y, x = np.indices((N, N, N)) - N // 2
    template = np.zeros((N, N, N), np.float32)
    for cx, cy, cz, s in [(0, 0, 0, 2.5), (6, 1, -1, 2.0), (-2, 7, 2, 1.5), (1, -3, 6, 1.5)]:
        template += np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * s * s)).astype(np.float32)
    pairs = simulated_pairs({"t": template}, [100.0, 0.5], 4, seed=0, max_shift=3.0)
    assert len(pairs) == 4 and list(pairs.snr) == [100.0, 100.0, 0.5, 0.5]
    assert pairs.weights.shape == (2, N, N, N) and pairs.weights[1].mean() < 0.8
    for i in range(2):
        s_a, s_b, _, _ = pairs.batch(np.array([i]))
        moved = transform_volumes(torch.from_numpy(s_a), pairs.rotations[i:i + 1], pairs.shifts[i:i + 1]).numpy()
        good = np.corrcoef(moved.ravel(), s_b.ravel())[0, 1]
        assert good > 0.8 and good > np.corrcoef(s_a.ravel(), s_b.ravel())[0, 1] + 0.2


# -- the command -----------------------------------------------------------------------------------------------------
def _write_pairs_star(folder, n=8):
    template = rough_blob()
    pairs = synthetic_pairs(n, 3, template)
    folder.mkdir(parents=True, exist_ok=True)
    write_volume(folder / "ref.mrc", template, 10.0)
    write_volume(folder / "w_b.mrc", pairs.weights[1], 10.0)
    rows = []
    from gumalign.geometry import matrix_to_euler

    angles = matrix_to_euler(pairs.rotations)
    for i in range(n):
        write_volume(folder / f"b{i}.mrc", pairs.b_volumes[i], 10.0)
        rows.append({
            "rlnImageName": f"b{i}.mrc", "gumPairReference": "ref.mrc", "rlnCtfImage": "w_b.mrc",
            "rlnAngleRot": angles[i, 0], "rlnAngleTilt": angles[i, 1], "rlnAnglePsi": angles[i, 2],
            # s_b ≈ shift(rotate(s_a, A), -origin): origin = -t, in Å (10 Å pixels).
            "rlnOriginXAngst": -10 * pairs.shifts[i, 0], "rlnOriginYAngst": -10 * pairs.shifts[i, 1],
            "rlnOriginZAngst": -10 * pairs.shifts[i, 2],
        })
    table = ParticleTable(particles=pd.DataFrame(rows))
    write_star(table, folder / "pairs.star", box_size=N, default_pixel_size=10.0)
    return pairs


def test_pairs_star_loads_with_ground_truth(tmp_path):
    from gumalign.train.data import pairs_from_pairs_star

    truth = _write_pairs_star(tmp_path)
    loaded = pairs_from_pairs_star(tmp_path / "pairs.star")
    assert len(loaded) == 8 and loaded.a_volumes.shape == (1, N, N, N) and loaded.voxel_size == pytest.approx(10.0)
    np.testing.assert_allclose(loaded.rotations, truth.rotations, atol=1e-5)
    np.testing.assert_allclose(loaded.shifts, truth.shifts, atol=1e-4)
    np.testing.assert_allclose(loaded.b_volumes, zscore(truth.b_volumes), atol=1e-5)
    np.testing.assert_array_equal(loaded.weights[loaded.weight_b[0]], truth.weights[1])
    assert np.all(loaded.weights[loaded.weight_a] == 1)


def test_train_command_writes_a_usable_model_and_resumes(tmp_path):
    _write_pairs_star(tmp_path / "data")
    out = tmp_path / "model"
    runner = CliRunner()
    args = ["train", "--pairs", str(tmp_path / "data" / "pairs.star"), "--arch", "gumnet-tiny", "--batch-size", "4",
            "--lr", "1e-3", "--val-fraction", "0.25", "--device", "cpu", "--threads", "2", "--out", str(out)]
    result = runner.invoke(app, args + ["--epochs", "1"])
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "model.json", "loss.png", "checkpoint/state.json"):
        assert (out / name).is_file(), name
    record = json.loads((out / "model.json").read_text())
    assert record["architecture"]["arch"] == "gumnet-tiny" and record["training"]["pairs_val"] == 2
    assert "rotation_error" in record["validation"] and len(record["sha256"]) == 64
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A second run into the same folder must say --resume; --resume continues to the new epoch count.
    again = runner.invoke(app, args + ["--epochs", "2"])
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(app, args + ["--epochs", "2", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert len(json.loads((out / "model.json").read_text())["training"]["history"]) == 2
    shown = runner.invoke(app, ["models", "show", str(out)])
    assert shown.exit_code == 0 and "sha256 verified" in shown.output


def test_train_command_from_particles_and_reference(tmp_path):
    pairs = _write_pairs_star(tmp_path, n=4)
    star = tmp_path / "particles.star"
    table = ParticleTable(particles=pd.DataFrame({"rlnImageName": [f"b{i}.mrc" for i in range(4)]}))
    write_star(table, star, box_size=N, default_pixel_size=10.0)
    result = CliRunner().invoke(app, [
        "train", "--particles", str(star), "--ref", str(tmp_path / "ref.mrc"), "--tilt-range", "-60", "60",
        "--arch", "gumnet-tiny", "--epochs", "1", "--batch-size", "2", "--val-fraction", "0", "--device", "cpu",
        "--out", str(tmp_path / "m"), "--quiet",
    ])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "m" / "model.json").read_text())
    assert record["training"]["data"]["weights"] == "tilt range -60..60"
    assert record["validation"] == {} and len(pairs) == 4


@pytest.mark.parametrize("layout", ["cube", "half", "half+multiplicity"])
def test_particle_pairs_read_rlnctfimage_in_every_relion_layout_as_align_does(tmp_path, layout):
    """`train --particles` weights: RELION's 3D CTF layouts (the wedge written as a centred cube, the FFTW half
    transform, RELION 4's CTF² + multiplicity) all give the wedge itself, as `align` reads them."""
    from gumalign.align.particles import weight_source_for
    from gumalign.fourier.layout import centred_to_rfft
    from gumalign.io.star import read_star
    from gumalign.train.data import pairs_from_particles

    _write_pairs_star(tmp_path, n=2)
    wedge = wedge_mask((N,) * 3, (-45, 45), "centred")  # not the -60..60 default (and k -> -k symmetric)
    if layout == "cube":
        data = wedge
    else:
        data = centred_to_rfft(wedge)
        if layout == "half+multiplicity":
            data = np.concatenate([data, data])  # CTF² sums, then multiplicity (1 where observed)
    write_volume(tmp_path / "ctf.mrc", np.ascontiguousarray(data, dtype=np.float32), 10.0)
    table = ParticleTable(particles=pd.DataFrame({"rlnImageName": ["b0.mrc", "b1.mrc"],
                                                  "rlnCtfImage": ["ctf.mrc", "ctf.mrc"]}))
    write_star(table, tmp_path / "particles.star", box_size=N, default_pixel_size=10.0)
    pairs = pairs_from_particles(tmp_path / "particles.star", tmp_path / "ref.mrc")
    got = pairs.weights[pairs.weight_b]
    np.testing.assert_allclose(got[0], wedge, atol=1e-6)  # the independent reference: the mask that was written
    aligns_with = weight_source_for(read_star(tmp_path / "particles.star"), N, None).for_rows(np.arange(2))
    np.testing.assert_array_equal(got, aligns_with)
    np.testing.assert_array_equal(pairs.weights[pairs.weight_a[0]], np.ones((N,) * 3, np.float32))


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "exactly one data source"),
        (["--pairs", "p.star", "--simulate", "x.pdb"], "exactly one data source"),
        (["--particles", "p.star"], "go together"),
        (["--pairs", "p.star", "--arch", "resnet"], "unknown --arch"),
        (["--pairs", "p.star", "--resume"], "nothing to resume"),
        (["--pairs", "missing.star"], "no such file"),
        (["--simulate", "t.mrc", "--snr", "-1"], "positive"),
    ],
)
def test_train_command_bad_input(tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "o"), "--device", "cpu"] + extra)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
