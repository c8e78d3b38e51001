"""Full-SO(3) one-pass heads (issue 13): valid rotations, the symmetry-aware supervised loss, supervised training with
resume, the one-pass aligner path (batched, top-k hypotheses) and selection by name in the registry and the CLI.
Tiny widths and boxes of a few pairs throughout, so the file runs in seconds on one core."""

import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from gumalign.fourier import wedge_mask
from gumalign.geometry import random_rotations, rotation_error, transform_volumes
from gumalign.models import build_model
from gumalign.models.gumnet import ARCHITECTURES, GumNetConfig
from gumalign.models.so3 import anchor_rotations, sixd_to_matrix, supervised_loss
from gumalign.train import PairSet, TrainOptions, train_model, zscore
from gumalign.train.data import (
    concatenate_pairsets, load_pairset, random_blob_templates, save_pairset, simulated_pairs,
)
from gumalign.train.symmetry import equivalent_rotations, rotation_about
from tests.conftest import smooth_blob

N = 32


def _is_rotation(r: np.ndarray, atol=1e-5) -> bool:
    r = np.asarray(r, dtype=np.float64)
    eye = np.einsum("...ji,...jk->...ik", r, r)
    return bool(np.allclose(eye, np.eye(3), atol=atol) and np.allclose(np.linalg.det(r), 1.0, atol=atol))


def _tiny(head="anchors", **overrides) -> GumNetConfig:
    base = ARCHITECTURES["gumnet-so3-tiny"].to_dict()
    if head == "hypotheses":
        base.update(arch="gumnet-so3-mh-tiny", head="hypotheses", anchors="identity", n_anchors=4)
    base.update(overrides)
    return GumNetConfig.from_dict(base)


# -- rotations and anchors -----------------------------------------------------------------------------------------
def test_sixd_gram_schmidt_gives_rotations_and_zero_is_identity(rng):
    x = torch.as_tensor(rng.standard_normal((500, 6)) * 3, dtype=torch.float64)
    assert _is_rotation(sixd_to_matrix(x).numpy(), atol=1e-10)
    assert torch.allclose(sixd_to_matrix(torch.zeros(6, dtype=torch.float64)), torch.eye(3, dtype=torch.float64))
    # Any rotation is reachable: its first two columns (minus e_x, e_y) map back to it.
    r = Rotation.random(20, random_state=1).as_matrix()
    six = torch.as_tensor(np.concatenate([r[:, :, 0] - [1, 0, 0], r[:, :, 1] - [0, 1, 0]], axis=1))
    np.testing.assert_allclose(sixd_to_matrix(six).numpy(), r, atol=1e-12)


def test_anchor_sets():
    ico = anchor_rotations("icosahedral", 60)
    assert _is_rotation(ico, 1e-9) and np.allclose(ico[0], np.eye(3))
    products = np.einsum("aij,bjk->abik", ico, ico).reshape(-1, 9)
    # A group: every product is again one of the 60.
    assert np.all(np.min(np.linalg.norm(products[:, None] - ico.reshape(1, 60, 9), axis=2), axis=1) < 1e-9)
    fib = anchor_rotations("fibonacci", 300)
    assert fib.shape == (300, 3, 3) and _is_rotation(fib, 1e-9)
    # Near-uniform: every Haar draw has an anchor within about 30° (covering radius of 300 rotations ~ 24°).
    draws = random_rotations(500, np.random.default_rng(0))
    nearest = rotation_error(draws[:, None], fib[None]).min(axis=1)
    assert nearest.max() < 2 * np.sqrt(2) * np.sin(np.radians(35) / 2)


@pytest.mark.parametrize("head", ["anchors", "hypotheses"])
def test_head_outputs_are_valid_rotations_and_top_answer_is_a_hypothesis(head):
    model = build_model(_tiny(head), seed=3)
    model.eval()
    x = torch.as_tensor(np.random.default_rng(0).standard_normal((3, N, N, N)), dtype=torch.float32)
    with torch.no_grad():
        params = model(x, x.flip(1))
        logits, hyps = model.hypotheses(params)
        rot, shift = model.rigid(params)
    k = model.config.n_anchors
    assert logits.shape == (3, k) and hyps.shape == (3, k, 3, 3)
    assert _is_rotation(hyps.numpy(), 1e-5) and _is_rotation(rot.numpy(), 1e-5)
    best = logits.argmax(dim=1)
    assert torch.equal(rot, hyps[torch.arange(3), best]) and torch.all(shift == 0)
    if head == "anchors":  # residuals start near the identity: hypotheses sit near their anchors
        assert rotation_error(hyps.numpy(), model.anchor_set.numpy()[None]).max() < 0.2


def test_new_heads_leave_the_seed_architectures_unchanged():
    for name in ("gumnet", "gumnet-compact", "gumnet-compact-local", "mp", "ap", "sc", "gumnet-tiny"):
        config = ARCHITECTURES[name]
        assert not config.one_pass and "head" not in config.to_dict()
        assert GumNetConfig.from_dict(config.to_dict()) == config
    assert ARCHITECTURES["gumnet-so3"].to_dict()["head"] == "anchors"


# -- the supervised loss -----------------------------------------------------------------------------------------
def _c4_mates(rng, n=4):
    """(n, 4, 3, 3) mates R_b·g·R_aᵀ of a C4 template about a random axis, for random poses."""
    ops = rotation_about(rng.standard_normal(3), 2 * np.pi * np.arange(4) / 4)
    r_a, r_b = random_rotations(n, rng), random_rotations(n, rng)
    return torch.as_tensor(equivalent_rotations(r_a, r_b, ops), dtype=torch.float32)


def _perfect_anchor_outputs(anchors, mates, mate_index):
    """Every anchor's hypothesis = the mate nearest that anchor; logits peaked on the anchor nearest mate
    ``mate_index`` (a prediction of that symmetry mate)."""
    d = ((anchors[None, :, None] - mates[:, None]) ** 2).sum(dim=(-2, -1))  # (B, K, G)
    hyps = mates[torch.arange(len(mates))[:, None], d.argmin(dim=2)]
    logits = torch.full(d.shape[:2], -40.0)
    logits[torch.arange(len(mates)), d[:, :, mate_index].argmin(dim=1)] = 40.0
    return logits, hyps


def test_supervised_anchor_loss_is_zero_for_any_symmetry_mate_and_large_otherwise(rng):
    anchors = torch.as_tensor(anchor_rotations("icosahedral", 60), dtype=torch.float32)
    mates = _c4_mates(rng)
    for g in range(4):  # the prediction is mate g: zero loss whichever mate it is
        loss, parts = supervised_loss(*_perfect_anchor_outputs(anchors, mates, g), anchors, mates, "anchors")
        assert float(loss) < 1e-4, (g, parts)
    # Only the asymmetric truth (mate 0) given: predicting mate 2 (180° about the axis) is wrong, and costs.
    logits, hyps = _perfect_anchor_outputs(anchors, mates, 2)
    _, parts = supervised_loss(logits, hyps, anchors, mates[:, :1], "anchors")
    assert parts["ce"] > 5  # the probability sits on the wrong anchor
    _, parts = supervised_loss(logits, mates[:, 2:3].expand(-1, 60, 3, 3), anchors, mates[:, :1], "anchors")
    assert parts["residual"] > 0.5  # every hypothesis is mate 2, 180° from the truth
    # Gradients reach both outputs.
    logits = logits.clone().requires_grad_(True)
    six = torch.zeros(4, 60, 6, requires_grad=True)
    loss, _ = supervised_loss(logits, sixd_to_matrix(six) @ anchors, anchors, mates, "anchors")
    loss.backward()
    assert logits.grad.abs().sum() > 0 and six.grad.abs().sum() > 0


def test_supervised_hypotheses_loss_is_winner_take_all_over_mates(rng):
    mates = _c4_mates(rng)
    wrong = torch.as_tensor(random_rotations(4 * 3, rng).reshape(4, 3, 3, 3), dtype=torch.float32)
    hyps = torch.cat([wrong, mates[:, 3:4]], dim=1)  # hypothesis 3 = mate 3, the others random
    logits = torch.tensor([[-40.0, -40.0, -40.0, 40.0]]).repeat(4, 1)
    loss, parts = supervised_loss(logits, hyps, torch.eye(3).expand(4, 3, 3), mates, "hypotheses")
    assert parts["ce"] < 1e-4 and parts["residual"] < 0.05 * 8.0 + 1e-4  # only the 5% share of the losers
    _, wrong_parts = supervised_loss(logits, hyps, torch.eye(3).expand(4, 3, 3), mates[:, :1], "hypotheses")
    assert wrong_parts["residual"] > parts["residual"] + 0.5 or wrong_parts["ce"] > 1


# -- data -------------------------------------------------------------------------------------------------------
def test_blobs_are_seeded_centred_and_asymmetric():
    a, b = random_blob_templates(3, 7), random_blob_templates(3, 7)
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["blob7-0"], random_blob_templates(1, 8)["blob8-0"])
    z, y, x = np.indices((N, N, N)) - N // 2
    from gumalign.train.data import _max_self_correlation

    for density in a.values():
        w = density / density.sum()
        assert abs((w * x).sum()) < 0.5 and abs((w * y).sum()) < 0.5 and abs((w * z).sum()) < 0.5
        assert _max_self_correlation(density) <= 0.85


def test_simulated_mates_carry_s_a_onto_s_b_and_concatenate_and_cache(tmp_path):
    template = smooth_blob(seed=2, radius=8)
    ops = rotation_about([0, 0, 1], 2 * np.pi * np.arange(2) / 2)  # pretend C2: the mates are R_b·g·R_aᵀ
    sets = [simulated_pairs({"t": template}, [100.0], 3, seed=s, max_shift=2.0, symmetries={"t": ops})
            for s in (1, 2)]
    assert sets[0].mates.shape == (3, 2, 3, 3)
    assert rotation_error(sets[0].mates[:, 0], sets[0].rotations).max() < 1e-5  # g = identity is R itself
    both = concatenate_pairsets(sets)
    assert len(both) == 6 and both.mates.shape == (6, 2, 3, 3)
    for i in range(6):
        s_a, s_b, w_a, w_b = both.batch(np.array([i]))
        np.testing.assert_array_equal(s_b[0], sets[i // 3].b_volumes[i % 3])
        np.testing.assert_array_equal(w_b[0], sets[i // 3].weights[sets[i // 3].weight_b[i % 3]])
    save_pairset(both, tmp_path / "p.npz", key="k1")
    assert load_pairset(tmp_path / "p.npz", key="other") is None
    again = load_pairset(tmp_path / "p.npz", key="k1")
    assert again.fingerprint() == both.fingerprint() and np.array_equal(again.mates, both.mates)


def _synthetic_supervised_pairs(n=8, seed=0):
    """Our own tiny pairs: s_b = the template turned by a Haar rotation (no noise), fully observed."""
    template = smooth_blob(seed=seed + 1, radius=9)
    rot = random_rotations(n, np.random.default_rng(seed))
    moved = transform_volumes(torch.as_tensor(template)[None], torch.as_tensor(rot, dtype=torch.float32)).numpy()
    return PairSet(
        a_volumes=zscore(template[None]), a_index=np.zeros(n, np.int64), b_volumes=zscore(moved),
        weights=np.ones((1, N, N, N), np.float32), weight_a=np.zeros(n, np.int64), weight_b=np.zeros(n, np.int64),
        rotations=rot, shifts=np.zeros((n, 3)),
    )


def test_supervised_training_runs_and_resumes_exactly(tmp_path):
    torch.set_num_threads(1)
    pairs = _synthetic_supervised_pairs()
    train, val = pairs.subset(np.arange(6)), pairs.subset(np.arange(6, 8))
    options = dict(batch_size=3, lr=1e-3, decay=0.0, seed=0, supervised=True)
    full = build_model("gumnet-so3-tiny", seed=0)
    history = train_model(full, train, val, TrainOptions(epochs=2, **options), tmp_path / "full", "cpu")
    assert len(history) == 2 and np.isfinite(history[-1]["train_loss"])
    assert "rotation_error" in history[-1]["val"]
    part = build_model("gumnet-so3-tiny", seed=0)
    train_model(part, train, val, TrainOptions(epochs=1, **options), tmp_path / "part", "cpu")
    resumed = build_model("gumnet-so3-tiny", seed=0)
    again = train_model(resumed, train, val, TrainOptions(epochs=2, **options), tmp_path / "part", "cpu", resume=True)
    assert [h["train_loss"] for h in again] == [h["train_loss"] for h in history]
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    # A checkpoint of an unsupervised run does not resume as a supervised one.
    from gumalign.errors import GumalignError

    with pytest.raises(GumalignError, match="supervised"):
        train_model(build_model("gumnet-so3-tiny", seed=0), train, val,
                    TrainOptions(epochs=3, **dict(options, supervised=False)), tmp_path / "part", "cpu", resume=True)


def test_cpu_and_wall_budgets_stop_between_epochs_after_at_least_one(tmp_path):
    torch.set_num_threads(1)
    pairs = _synthetic_supervised_pairs(n=4)
    options = dict(epochs=5, batch_size=4, lr=1e-3, decay=0.0, supervised=True)
    for i, budget in enumerate(({"max_cpu_seconds": 0.0}, {"max_wall_seconds": 0.0})):
        history = train_model(build_model("gumnet-so3-tiny", seed=0), pairs, pairs.subset(np.arange(0)),
                              TrainOptions(**options, **budget), tmp_path / str(i), "cpu")
        assert len(history) == 1


def test_supervised_training_lowers_the_loss_on_a_fixed_batch():
    torch.set_num_threads(1)
    from gumalign.train.loop import supervised_pair_loss

    pairs = _synthetic_supervised_pairs(n=4, seed=3)
    model = build_model("gumnet-so3-tiny", seed=1)
    s_a, s_b, _, _ = (torch.as_tensor(x) for x in pairs.batch(np.arange(4)))
    mates = torch.as_tensor(pairs.mates_batch(np.arange(4)))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        optimiser.zero_grad()
        loss, *_ = supervised_pair_loss(model, s_a, s_b, mates)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


# -- the one-pass aligner ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def so3_dir(tmp_path_factory):
    from gumalign.weights import save_model

    folder = tmp_path_factory.mktemp("so3")
    save_model(build_model("gumnet-so3-tiny", seed=5), {"name": "tiny-so3", "box": N}, folder)
    return folder


def _particles(n=5, seed=4):
    template = smooth_blob(seed=seed, radius=9)
    rng = np.random.default_rng(seed)
    rot = random_rotations(n, rng)
    shifts = rng.uniform(-2, 2, (n, 3))
    parts = transform_volumes(torch.as_tensor(template)[None], torch.as_tensor(rot, dtype=torch.float32),
                              torch.as_tensor(shifts, dtype=torch.float32)).numpy()
    return template, parts, rot, shifts


def test_one_pass_aligner_is_batched_and_returns_valid_results(so3_dir):
    from gumalign.align.registry import get_aligner

    torch.set_num_threads(1)
    template, parts, _, _ = _particles()
    ones, wedge = np.ones((1, N, N, N), np.float32), wedge_mask((N,) * 3, (-60, 60), "centred")[None]
    results = []
    for batch, k, polish in ((5, 4, 1), (2, 4, 1), (5, 4, 0), (5, 1, 0)):
        aligner = get_aligner("gumnet", model=str(so3_dir), device="cpu", batch_size=batch, hypotheses=k, polish=polish)
        assert aligner.one_pass and aligner.hypotheses == k and len(aligner.starts) == 1
        result = aligner.align(template[None], ones, parts, wedge)
        assert result.rotations.shape == (5, 3, 3) and result.shifts.shape == (5, 3) and result.scores.shape == (5,)
        assert _is_rotation(result.rotations, 1e-4) and np.all(np.isfinite(result.scores))
        results.append(result)
    np.testing.assert_allclose(results[0].rotations, results[1].rotations, atol=1e-4)  # batch size does not matter
    np.testing.assert_allclose(results[0].scores, results[1].scores, atol=1e-4)
    assert np.all(results[0].scores >= results[2].scores - 1e-6)  # the polish only raises scores
    assert np.all(results[2].scores >= results[3].scores - 1e-6)  # 4 hypotheses never score below the top one


def test_one_pass_aligner_picks_the_true_hypothesis_by_constrained_correlation(so3_dir, monkeypatch):
    """The network is replaced by one whose third-best hypothesis is the truth (the others random): the FFT search
    must find the shift and the constrained correlation must pick it; the polish may only raise the score."""
    from gumalign.align.gumnet import GumNetAligner

    torch.set_num_threads(1)
    template, parts, rot, shifts = _particles(n=4)
    aligner = GumNetAligner(str(so3_dir), device="cpu", batch_size=4, hypotheses=4)
    k = aligner.model.config.n_anchors
    decoys = torch.as_tensor(random_rotations(4 * k, np.random.default_rng(9)).reshape(4, k, 3, 3), dtype=torch.float32)
    decoys[:, 7] = torch.as_tensor(rot, dtype=torch.float32)
    logits = torch.zeros(4, k)
    logits[:, [3, 11, 7, 20]] = torch.tensor([4.0, 3.0, 2.0, 1.0])

    def fake(params):
        return logits[: len(params)], decoys[: len(params)]

    monkeypatch.setattr(aligner.model, "hypotheses", fake)
    monkeypatch.setattr(aligner, "polish", 0)
    ones = np.ones((1, N, N, N), np.float32)
    result = aligner.align(template[None], ones, parts, ones)
    assert rotation_error(rot, result.rotations).max() < 1e-4
    assert np.abs(result.shifts - shifts).max() < 0.3


# -- selection by name ---------------------------------------------------------------------------------------
def test_train_cli_supervised_selects_the_one_pass_arch(tmp_path):
    from gumalign.align.registry import get_aligner
    from gumalign.cli.main import app

    out = tmp_path / "model"
    args = ["train", "--supervised", "--arch", "gumnet-so3-tiny", "--blobs", "2", "--snr", "100", "--n-pairs", "6",
            "--max-shift", "2", "--epochs", "1", "--batch-size", "3", "--val-fraction", "0.3", "--threads", "1",
            "--device", "cpu", "--data-cache", str(tmp_path / "pairs.npz"), "--quiet", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "model.json").read_text())
    assert record["architecture"]["head"] == "anchors" and record["training"]["supervised"] is True
    assert record["training"]["data"]["blobs"] == 2 and "rotation_error_symmetry_aware" in record["validation"]
    assert (tmp_path / "pairs.npz").is_file()
    resumed = CliRunner().invoke(app, args[:-2] + ["--epochs", "2", "--resume", "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert len(json.loads((out / "model.json").read_text())["training"]["history"]) == 2
    assert get_aligner("gumnet", model=str(out), device="cpu").one_pass
    bad = CliRunner().invoke(app, ["train", "--supervised", "--arch", "nope", "--blobs", "1", "--snr", "100",
                                   "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "gumnet-so3" in bad.output
