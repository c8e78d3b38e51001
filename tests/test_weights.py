"""The weights registry and the Gum-Net aligner: verified loading, clear refusals, conventions end to end."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import gumalign.weights as registry
from gumalign.cli.main import app
from gumalign.errors import GumalignError
from gumalign.fourier import wedge_mask
from gumalign.geometry import rotation_error, transform_volumes
from gumalign.models import build_model
from gumalign.models.transformer import params_to_rigid
from tests.conftest import smooth_blob


@pytest.fixture
def trained_dir(tmp_path):
    """A `gumalign train --out`-style directory holding a (random) tiny model."""
    model = build_model("gumnet-tiny", seed=3)
    folder = tmp_path / "run"
    registry.save_model(model, {"name": "run", "validation": {}}, folder)
    return folder


@pytest.fixture
def builtin_dir(tmp_path, monkeypatch, trained_dir):
    """An isolated built-in folder with one installed model."""
    folder = tmp_path / "builtin"
    folder.mkdir()
    monkeypatch.setattr(registry, "WEIGHTS_DIR", folder)
    registry.install_model(trained_dir, "tiny-test")
    return folder


def test_save_and_load_round_trip(trained_dir):
    model, record = registry.load_model(trained_dir)
    fresh = build_model("gumnet-tiny", seed=3)
    for key, value in fresh.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert not model.training
    assert record["parameters"] == sum(p.numel() for p in fresh.parameters())
    assert record["size_bytes"] == (trained_dir / "model.safetensors").stat().st_size
    # The same model by its .safetensors file, its .json, or as a bare file (architecture from the metadata), which
    # cannot be verified and is refused unless allowed.
    registry.load_model(trained_dir / "model.safetensors")
    registry.load_model(trained_dir / "model.json")
    (trained_dir / "model.json").unlink()
    with pytest.raises(GumalignError, match="cannot be verified.*--allow-unverified"):
        registry.load_model(trained_dir)
    bare, bare_record = registry.load_model(trained_dir, allow_unverified=True)
    assert bare_record["verified"] is False and bare.config == fresh.config
    with registry.unverified_models_allowed():
        assert registry.load_model(trained_dir)[1]["verified"] is False


def test_one_changed_byte_is_refused(trained_dir, builtin_dir):
    for path in (trained_dir / "model.safetensors", builtin_dir / "tiny-test.safetensors"):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    with pytest.raises(GumalignError, match="sha256 .* does not match"):
        registry.load_model(trained_dir)
    with pytest.raises(GumalignError, match="sha256 .* does not match"):
        registry.load_model("tiny-test")
    result = CliRunner().invoke(app, ["models", "show", "tiny-test"])
    assert result.exit_code == 2 and "does not match" in result.output


def test_unknown_name_lists_the_available_models(builtin_dir):
    with pytest.raises(GumalignError, match=r"unknown model 'nope' \(available: tiny-test\)"):
        registry.load_model("nope")
    result = CliRunner().invoke(app, ["models", "show", "nope"])
    assert result.exit_code == 2 and "tiny-test" in result.output


def test_models_list_and_show(builtin_dir):
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0 and "tiny-test" in listed.output and "gumnet-tiny" in listed.output
    shown = runner.invoke(app, ["models", "show", "tiny-test"])
    assert shown.exit_code == 0, shown.output
    assert "sha256 verified" in shown.output and '"arch": "gumnet-tiny"' in shown.output


def test_shipped_models_verify_and_fit_the_size_budget():
    """Whatever ships in the package loads with its checksum, and all of it stays within 25 MB."""
    total = sum(p.stat().st_size for p in registry.WEIGHTS_DIR.glob("*.safetensors"))
    assert total <= 25 * 1024 * 1024
    for name in registry.available_models():
        model, record = registry.load_model(name)
        for key in ("architecture", "box", "voxel_size", "wedge", "training", "validation", "sha256", "size_bytes"):
            assert key in record, (name, key)
        assert record["architecture"]["arch"] == model.config.arch


def test_aligner_without_a_shipped_model_says_so(tmp_path, monkeypatch):
    from gumalign.align.gumnet import GumNetAligner

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(GumalignError, match="no shipped Gum-Net model"):
        GumNetAligner()


def test_aligner_reports_the_networks_transform_in_relion_convention(trained_dir, monkeypatch):
    """With the network's output fixed, the aligner returns A = R and shift = t, and transforming the reference by
    them reproduces the particle (constrained correlation ≈ 1): the convention holds end to end."""
    from gumalign.align.gumnet import GumNetAligner

    aligner = GumNetAligner(model=str(trained_dir), device="cpu", batch_size=2, polish=0)
    params = torch.tensor([[0.6, 0.3, 0.7, 0.55, 0.45, 0.52], [0.2, 0.8, 0.4, 0.5, 0.6, 0.45],
                           [0.5, 0.5, 0.9, 0.4, 0.5, 0.5]])
    calls = {"match": 0, "features_a": 0}
    original_features = aligner.model.features

    def fake_match(f_a, f_b):
        start = calls["match"]
        calls["match"] += len(f_b)
        return params[start:start + len(f_b)]

    def counting_features(volumes, stream):
        calls["features_a"] += stream == "a"
        return original_features(volumes, stream)

    monkeypatch.setattr(aligner.model, "match", fake_match)
    monkeypatch.setattr(aligner.model, "features", counting_features)
    reference = smooth_blob(seed=2)
    rot, shift = params_to_rigid(params.double(), 32)
    particles = transform_volumes(torch.from_numpy(reference)[None].double(), rot, shift).float().numpy()
    ones = np.ones((1, 32, 32, 32), np.float32)
    result = aligner.align(reference[None], ones, particles, ones)
    np.testing.assert_allclose(result.rotations, rot.numpy(), atol=1e-6)
    np.testing.assert_allclose(result.shifts, shift.numpy(), atol=1e-4)
    assert np.all(result.scores > 0.97)
    assert calls["features_a"] == 1  # one reference: its features computed once for both batches
    calls["match"] = 0
    aligner.align(reference[None], ones, particles, ones)
    assert calls["features_a"] == 1  # ... and reused by a later call with the same reference


def test_aligner_batches_agree_and_max_shift_clamps(trained_dir):
    from gumalign.align.gumnet import GumNetAligner

    rng = np.random.default_rng(0)
    reference = smooth_blob(seed=4)[None]
    particles = rng.standard_normal((5, 32, 32, 32)).astype(np.float32)
    wedge = wedge_mask((32,) * 3, (-60, 60), "centred")[None]
    ones = np.ones((1, 32, 32, 32), np.float32)
    whole = GumNetAligner(model=str(trained_dir), device="cpu", batch_size=5).align(reference, ones, particles, wedge)
    split = GumNetAligner(model=str(trained_dir), device="cpu", batch_size=2).align(reference, ones, particles, wedge)
    np.testing.assert_allclose(whole.rotations, split.rotations, atol=1e-5)
    np.testing.assert_allclose(whole.scores, split.scores, atol=1e-5)
    per_particle_refs = np.repeat(reference, 5, axis=0)
    explicit = GumNetAligner(model=str(trained_dir), device="cpu").align(per_particle_refs, ones, particles, wedge)
    np.testing.assert_allclose(explicit.shifts, whole.shifts, atol=1e-4)
    clamped = GumNetAligner(model=str(trained_dir), device="cpu", max_shift=0.5).align(reference, ones, particles, wedge)
    assert np.all(np.linalg.norm(clamped.shifts, axis=1) <= 0.5 + 1e-6)
    with pytest.raises(GumalignError, match="takes 32³"):
        GumNetAligner(model=str(trained_dir), device="cpu").align(
            np.zeros((1, 16, 16, 16), np.float32), ones[:, :16, :16, :16], particles[:, :16, :16, :16], wedge)
    assert json.loads((trained_dir / "model.json").read_text())["architecture"]["box"] == 32


def test_multi_start_composes_residual_with_the_start_and_picks_the_best(trained_dir, monkeypatch):
    """With the residual fixed to a small known rotation, the icosahedral multi-start must return residual·S for the
    start S that explains the particle: pins the composition order and the selection by score."""
    from scipy.spatial.transform import Rotation

    from gumalign.align.gumnet import GumNetAligner

    aligner = GumNetAligner(model=str(trained_dir), device="cpu", starts="icosahedral")
    assert len(aligner.starts) == 60 and torch.allclose(aligner.starts[0], torch.eye(3))
    residual_params = torch.tensor([[0.52, 0.53, 0.51, 0.5, 0.5, 0.5]])  # ~10° residual, no shift
    monkeypatch.setattr(aligner.model, "match", lambda f_a, f_b: residual_params.expand(len(f_b), -1))
    residual, _ = params_to_rigid(residual_params.double(), 32)
    icosahedral = Rotation.create_group("I").as_matrix()
    truth = residual[0].numpy() @ icosahedral[17]
    reference = smooth_blob(seed=5)
    particle = transform_volumes(torch.from_numpy(reference).double(), truth[None]).float().numpy()
    ones = np.ones((1, 32, 32, 32), np.float32)
    result = aligner.align(reference[None], ones, particle, ones)
    np.testing.assert_allclose(result.rotations[0], truth, atol=1e-5)
    assert result.scores[0] > 0.97


def test_aligner_takes_a_candidates_shift_from_the_fft_search_when_the_network_misses(trained_dir, monkeypatch):
    """The network's rotation is right but its shift is zero: the FFT translation search supplies the true shift."""
    from gumalign.align.gumnet import GumNetAligner

    aligner = GumNetAligner(model=str(trained_dir), device="cpu", starts="none")
    params = torch.tensor([[0.6, 0.3, 0.7, 0.5, 0.5, 0.5]])  # a ZYZ rotation, zero shift
    monkeypatch.setattr(aligner.model, "match", lambda f_a, f_b: params.expand(len(f_b), -1))
    rot, _ = params_to_rigid(params.double(), 32)
    true_shift = torch.tensor([[3.0, -2.0, 1.4]], dtype=torch.float64)
    reference = smooth_blob(seed=6)
    particle = transform_volumes(torch.from_numpy(reference)[None].double(), rot, true_shift).float().numpy()
    wedge = wedge_mask((32,) * 3, (-60, 60), "centred")[None]
    ones = np.ones((1, 32, 32, 32), np.float32)
    result = aligner.align(reference[None], ones, particle, wedge)
    np.testing.assert_allclose(result.shifts, true_shift.numpy(), atol=0.25)
    assert result.scores[0] > 0.97


def test_polish_pass_composes_the_residual_with_the_current_rotation(trained_dir, monkeypatch):
    """First pass: the network says R1 (20° off the truth). Polish pass: it says the residual truth·R1ᵀ. The result
    must be the truth with the true shift (composition order residual·R1, re-centring by the found shift), and
    the polish pass must see the particle moved back by the shift found in the first pass."""
    from scipy.spatial.transform import Rotation

    from gumalign.align.gumnet import GumNetAligner

    aligner = GumNetAligner(model=str(trained_dir), device="cpu", starts="none", polish=1)
    truth = Rotation.from_euler("zyz", [40, 70, -30], degrees=True).as_matrix()
    r1 = Rotation.from_rotvec(np.deg2rad(20) * np.array([0.0, 0.6, 0.8])).as_matrix() @ truth
    true_shift = np.array([[2.0, -1.0, 1.5]])
    # The test model is ZYZ: parameters for R1 and for the residual, zero shift (p = 0.5).
    def zyz_params(matrix):
        phi, theta, psi = Rotation.from_matrix(matrix).as_euler("ZYZ")  # R = Rz(φ)·Ry(θ)·Rz(ψ)
        return torch.tensor([[(phi + np.pi) / (2 * np.pi), (theta + np.pi) / (2 * np.pi),
                              (psi + np.pi) / (2 * np.pi), 0.5, 0.5, 0.5]], dtype=torch.float32)

    outputs = [zyz_params(r1), zyz_params(truth @ r1.T)]
    seen = []
    original_features = aligner.model.features

    def recording_features(volumes, stream):
        seen.append((stream, volumes.clone()))
        return original_features(volumes, stream)

    monkeypatch.setattr(aligner.model, "match", lambda f_a, f_b: outputs.pop(0))
    monkeypatch.setattr(aligner.model, "features", recording_features)
    reference = smooth_blob(seed=8)
    particle = transform_volumes(torch.from_numpy(reference)[None].double(), torch.from_numpy(truth)[None],
                                 torch.from_numpy(true_shift)).float().numpy()
    ones = np.ones((1, 32, 32, 32), np.float32)
    result = aligner.align(reference[None], ones, particle, ones)
    assert not outputs  # both passes ran
    assert rotation_error(truth[None], result.rotations)[0] < 0.02
    np.testing.assert_allclose(result.shifts, true_shift, atol=0.25)
    centred_b = [v for stream, v in seen if stream == "b"][-1][0].numpy()
    expected = transform_volumes(torch.from_numpy(reference).double(), torch.from_numpy(truth)[None]).float().numpy()[0]
    assert np.corrcoef(centred_b.ravel(), expected.ravel())[0, 1] > 0.95  # 0.36 if not re-centred


def test_auto_starts_follow_the_training_record(trained_dir):
    from gumalign.align.gumnet import GumNetAligner, _trained_with_max_angle

    assert len(GumNetAligner(model=str(trained_dir), device="cpu").starts) == 1
    assert _trained_with_max_angle({"training": {"data": {"max_relative_angle": 50.0}}})
    assert not _trained_with_max_angle({"training": {"data": {"max_relative_angle": None}}})
