"""Gum-Net's pieces against independent references: scipy's DCT, hand-worked index maps, scipy rotations,
RELION's matrices, and the geometry package's transform."""

import numpy as np
import pytest
import scipy.fft
import torch
from scipy.spatial.transform import Rotation

from gumalign.fourier import wedge_mask
from gumalign.geometry import euler_to_matrix, random_rotations, rotation_error, transform_volumes
from gumalign.models import (
    ARCHITECTURES,
    GumNetConfig,
    SpectralPool3d,
    build_model,
    correlation_loss,
    dct3,
    dct_matrix,
    feature_correlation,
    idct3,
    l2_normalise_channels,
    parameter_count,
    parameter_counts,
    params_to_rigid,
    rotate_weights,
    spectral_imputation,
    transform_and_impute,
)
from tests.conftest import smooth_blob


# -- DCT spectral pooling ------------------------------------------------------------------------------------------
def test_dct_matrix_is_scipy_orthonormal_dct2(rng):
    x = rng.standard_normal(11)
    np.testing.assert_allclose(dct_matrix(11) @ x, scipy.fft.dct(x, type=2, norm="ortho"), atol=1e-12)
    np.testing.assert_allclose(dct_matrix(11) @ dct_matrix(11).T, np.eye(11), atol=1e-12)


def test_dct3_and_idct3_equal_scipy_dctn_idctn(rng):
    x = rng.standard_normal((2, 3, 6, 7, 5))
    got = dct3(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, scipy.fft.dctn(x, type=2, norm="ortho", axes=(-3, -2, -1)), atol=1e-10)
    back = idct3(torch.from_numpy(got)).numpy()
    np.testing.assert_allclose(back, scipy.fft.idctn(got, type=2, norm="ortho", axes=(-3, -2, -1)), atol=1e-10)
    np.testing.assert_allclose(back, x, atol=1e-10)


@pytest.mark.parametrize("n_in,n_out,keep", [(30, 26, 22), (24, 18, 15), (16, 12, 10), (10, 8, 7)])
def test_spectral_pooling_equals_scipy_crop_pad_chain(rng, n_in, n_out, keep):
    x = rng.standard_normal((2, 3, n_in, n_in, n_in)).astype(np.float32)
    coeffs = scipy.fft.dctn(x.astype(np.float64), type=2, norm="ortho", axes=(-3, -2, -1))
    padded = np.zeros(x.shape[:2] + (n_out,) * 3)
    padded[..., :keep, :keep, :keep] = coeffs[..., :keep, :keep, :keep]
    expected = scipy.fft.idctn(padded, type=2, norm="ortho", axes=(-3, -2, -1))
    got = SpectralPool3d(n_in, n_out, keep)(torch.from_numpy(x)).numpy()
    assert got.shape == (2, 3, n_out, n_out, n_out)
    np.testing.assert_allclose(got, expected, atol=2e-5)


# -- correlation and normalisation ---------------------------------------------------------------------------------
def test_feature_correlation_hand_example():
    # f_a: one feature at (z, y, x) = (0, 0, 1) in channel 0; f_b: one at (z, y, x) = (0, 1, 0) in channel 0.
    f_a = torch.zeros(1, 2, 2, 2, 2)
    f_b = torch.zeros(1, 2, 2, 2, 2)
    f_a[0, 0, 0, 0, 1] = 2.0
    f_b[0, 0, 0, 1, 0] = 3.0
    out = feature_correlation(f_a, f_b)
    assert out.shape == (1, 8, 2, 2, 2)
    # q = raster index of f_b's (0, 1, 0) = 0·4 + 1·2 + 0 = 2; output position (i, j, k) with f_a at (k, j, i):
    # f_a's (0, 0, 1) -> (i, j, k) = (1, 0, 0).
    expected = torch.zeros(1, 8, 2, 2, 2)
    expected[0, 2, 1, 0, 0] = 6.0
    assert torch.equal(out, expected)


def test_feature_correlation_matches_the_written_formula(rng):
    f_a = rng.standard_normal((2, 4, 3, 3, 3))
    f_b = rng.standard_normal((2, 4, 3, 3, 3))
    out = feature_correlation(torch.from_numpy(f_a), torch.from_numpy(f_b)).numpy()
    for b in range(2):
        for q in range(27):
            qz, qy, qx = np.unravel_index(q, (3, 3, 3))
            for i, j, k in np.ndindex(3, 3, 3):
                want = np.dot(f_a[b, :, k, j, i], f_b[b, :, qz, qy, qx])
                assert abs(out[b, q, i, j, k] - want) < 1e-10


def test_l2_normalisation_is_over_channels(rng):
    x = torch.from_numpy(rng.standard_normal((2, 5, 3, 4, 2)))
    norms = torch.sqrt(torch.sum(l2_normalise_channels(x) ** 2, dim=1))
    np.testing.assert_allclose(norms.numpy(), 1.0, atol=1e-5)


# -- output mapping and transformer --------------------------------------------------------------------------------
def test_params_map_to_zyz_rotation_and_half_box_translation(rng):
    p = torch.from_numpy(rng.uniform(0.05, 0.95, (5, 6)))
    rot, shift = params_to_rigid(p, box=32)
    angles = 2 * np.pi * p[:, :3].numpy() - np.pi
    for i in range(5):
        # Intrinsic ZYZ (scipy 'ZYZ') is Rz(φ)·Ry(θ)·Rz(ψ).
        np.testing.assert_allclose(rot[i].numpy(), Rotation.from_euler("ZYZ", angles[i]).as_matrix(), atol=1e-12)
        # ... which is RELION's A for (rot, tilt, psi) = (-ψ, -θ, -φ).
        np.testing.assert_allclose(rot[i].numpy(), euler_to_matrix(np.rad2deg(-angles[i][::-1])), atol=1e-12)
    np.testing.assert_allclose(shift.numpy(), (2 * p[:, 3:].numpy() - 1) * 16, atol=1e-12)
    edges = params_to_rigid(torch.tensor([[0.5, 0.5, 0.5, 0.0, 1.0, 0.5]], dtype=torch.float64), box=32)[1]
    np.testing.assert_allclose(edges.numpy(), [[-16.0, 16.0, 0.0]])


def _centroid_xyz(vol: np.ndarray) -> np.ndarray:
    z, y, x = np.indices(vol.shape)
    w = np.clip(vol, 0, None)
    return np.array([(x * w).sum(), (y * w).sum(), (z * w).sum()]) / w.sum()


def test_transformer_moves_a_point_where_the_convention_says():
    n = 32
    z, y, x = np.indices((n, n, n)) - n // 2
    u = np.array([6.0, -3.0, 2.0])  # (x, y, z) relative to the centre
    vol = np.exp(-((x - u[0]) ** 2 + (y - u[1]) ** 2 + (z - u[2]) ** 2) / 2.0).astype(np.float32)
    p = torch.tensor([[0.61, 0.33, 0.72, 0.55, 0.42, 0.6]], dtype=torch.float64)
    rot, shift = params_to_rigid(p, n)
    moved = transform_and_impute(torch.from_numpy(vol)[None].double(), None, None, rot, shift)[0].numpy()
    phi, theta, psi = 2 * np.pi * p[0, :3].numpy() - np.pi
    r_expected = Rotation.from_euler("ZYZ", [phi, theta, psi]).as_matrix()
    t_expected = (2 * p[0, 3:].numpy() - 1) * n / 2
    np.testing.assert_allclose(_centroid_xyz(moved) - n // 2, r_expected @ u + t_expected, atol=0.05)
    # ... and it is geometry's transform with RELION's A for those angles.
    a = euler_to_matrix(np.rad2deg([-psi, -theta, -phi]))
    via_geometry = transform_volumes(torch.from_numpy(vol)[None].double(), a[None], t_expected[None])[0].numpy()
    np.testing.assert_allclose(moved, via_geometry, atol=1e-10)


def test_imputation_keeps_s_b_exactly_where_s_a_is_unobserved(rng):
    n = 16
    s_a = torch.from_numpy(rng.standard_normal((2, n, n, n)))
    s_b = torch.from_numpy(rng.standard_normal((2, n, n, n)))
    mask_a = torch.from_numpy(wedge_mask((n, n, n), (-45, 45), "centred").astype(np.float64))[None]
    rot = torch.from_numpy(random_rotations(2, rng))
    moved = transform_volumes(s_a, rot, torch.tensor([[1.5, -2.0, 0.5], [0.0, 3.0, -1.0]], dtype=torch.float64))
    rotated = rotate_weights(mask_a, rot)
    out = spectral_imputation(moved, s_b, rotated)
    spec_out = np.fft.fftshift(np.fft.fftn(out.numpy(), axes=(1, 2, 3)), axes=(1, 2, 3))
    spec_b = np.fft.fftshift(np.fft.fftn(s_b.numpy(), axes=(1, 2, 3)), axes=(1, 2, 3))
    spec_a = np.fft.fftshift(np.fft.fftn(moved.numpy(), axes=(1, 2, 3)), axes=(1, 2, 3))
    w = rotated.numpy()
    # Hermitian partner of centred index i is (n - i) % n; the real part mixes k and -k, so require both.
    mirror = np.roll(np.flip(w, axis=(1, 2, 3)), shift=1, axis=(1, 2, 3))
    unobserved = (w == 0) & (mirror == 0)
    observed = (w == 1) & (mirror == 1)
    assert unobserved.sum() > 500 and observed.sum() > 500
    np.testing.assert_allclose(spec_out[unobserved], spec_b[unobserved], atol=1e-9)
    np.testing.assert_allclose(spec_out[observed], spec_a[observed], atol=1e-9)


def test_weights_rotate_about_the_zero_frequency(rng):
    """R(M)(k) = M(Rᵀk): a bump of weight at frequency k0 (x, y, z) moves to R·k0; the DC stays put."""
    n = 32
    kz, ky, kx = np.indices((n, n, n)) - n // 2
    k0 = np.array([5.0, -2.0, 3.0])
    bump = np.exp(-((kx - k0[0]) ** 2 + (ky - k0[1]) ** 2 + (kz - k0[2]) ** 2) / 2.0)
    rot = random_rotations(1, rng)
    rotated = rotate_weights(torch.from_numpy(bump)[None], torch.from_numpy(rot))[0].numpy()
    np.testing.assert_allclose(_centroid_xyz(rotated) - n // 2, rot[0] @ k0, atol=0.05)
    dc = np.zeros((n, n, n))
    dc[n // 2, n // 2, n // 2] = 1.0
    assert rotate_weights(torch.from_numpy(dc)[None], torch.from_numpy(rot))[0, 16, 16, 16] == pytest.approx(1.0)


def test_imputation_with_full_observation_is_the_transformed_volume(rng):
    vol = torch.from_numpy(smooth_blob((16, 16, 16), seed=3).astype(np.float64))[None]
    rot = torch.from_numpy(random_rotations(1, rng))
    shift = torch.tensor([[1.0, 2.0, -1.0]], dtype=torch.float64)
    out = transform_and_impute(vol, torch.zeros_like(vol), torch.ones_like(vol), rot, shift)
    np.testing.assert_allclose(out.numpy(), transform_volumes(vol, rot, shift).numpy(), atol=1e-10)


def test_loss_is_one_minus_per_sample_pearson_and_punishes_anticorrelation(rng):
    t = torch.from_numpy(rng.standard_normal((3, 5, 5, 5)))
    o = torch.from_numpy(rng.standard_normal((3, 5, 5, 5)))
    r = [np.corrcoef(t[i].numpy().ravel(), o[i].numpy().ravel())[0, 1] for i in range(3)]
    assert float(correlation_loss(t, o)) == pytest.approx(1 - np.mean(r), abs=1e-9)
    assert float(correlation_loss(t, 3 * t + 1)) == pytest.approx(0.0, abs=1e-9)
    assert float(correlation_loss(t, -t)) == pytest.approx(2.0, abs=1e-9)


# -- random-rotation baseline --------------------------------------------------------------------------------------
def test_mean_error_of_uniformly_random_rotations_is_2_40():
    rng = np.random.default_rng(0)
    errors = rotation_error(random_rotations(200_000, rng), random_rotations(200_000, rng))
    assert errors.mean() == pytest.approx(2.40, abs=0.01)
    # The closed form: E[2√2 sin(ω/2)] with Haar density (1 - cos ω)/π is 16√2/(3π).
    assert 16 * np.sqrt(2) / (3 * np.pi) == pytest.approx(2.40, abs=0.005)
    # A constant guess does no better than a random one.
    assert rotation_error(random_rotations(200_000, rng), np.eye(3)).mean() == pytest.approx(2.40, abs=0.01)


# -- architectures ---------------------------------------------------------------------------------------------------
def test_parameter_counts_and_sizes():
    counts = parameter_counts()
    assert 105e6 < counts["gumnet"] < 115e6  # "about 110 M" (seed and REFERENCE.md)
    model = build_model("sc")
    head = sum(p.numel() for p in model.branch_ab.parameters())
    assert 34.0e6 < head < 34.6e6  # one branch: 216->1024 and 1024->1024 3³ convs with BN (68.6 M for two)
    assert counts["mp"] == counts["ap"] == counts["gumnet"]
    assert counts["sc"] == counts["gumnet"] - head - 8 * 1024 * 2000
    assert counts["gumnet-compact"] * 4 <= 20e6  # float32 bytes: the shipped file must stay under 25 MB


def _tiny(**overrides) -> GumNetConfig:
    base = ARCHITECTURES["gumnet-tiny"].to_dict()
    base.update(overrides)
    return GumNetConfig.from_dict(base)


@pytest.mark.parametrize("overrides", [{}, {"pooling": "max", "arch": "mp-tiny"}, {"pooling": "avg", "arch": "ap-tiny"},
                                       {"siamese": False, "arch": "sc-tiny"}])
def test_gradients_reach_every_parameter(overrides):
    """Through the network, the transformer, the imputation and the loss. Dense 6 starts at zero weights (as in the
    original), which blocks gradients to everything before it at step 0, so one optimiser step comes first."""
    rng = np.random.default_rng(1)
    model = build_model(_tiny(**overrides), seed=0)
    s_a = torch.from_numpy(rng.standard_normal((3, 32, 32, 32)).astype(np.float32))
    s_b = torch.from_numpy(rng.standard_normal((3, 32, 32, 32)).astype(np.float32))
    w_a = torch.from_numpy(wedge_mask((32,) * 3, (-60, 60), "centred"))[None]
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):
        optimiser.zero_grad()
        rot, shift = params_to_rigid(model(s_a, s_b), 32)
        loss = correlation_loss(s_b, transform_and_impute(s_a, s_b, w_a, rot, shift))
        loss.backward()
        optimiser.step()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, missing


def test_initialisation_is_seeded_and_keras_like():
    a, b, c = build_model("gumnet-tiny", seed=5), build_model("gumnet-tiny", seed=5), build_model("gumnet-tiny", seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.out.bias, c.out.bias)
    assert torch.all(a.out.weight == 0) and torch.all(a.out.bias.abs() <= 0.5)
    assert all(torch.all(m.bias == 0) for m in a.modules() if isinstance(m, torch.nn.Conv3d))
    conv = a.extractor.convs[1]
    limit = np.sqrt(6 / (27 * (conv.in_channels + conv.out_channels)))  # Glorot uniform
    largest = float(conv.weight.detach().abs().max())
    assert 0.9 * limit < largest <= limit


def test_streams_share_convolutions_but_not_batch_norm():
    model = build_model("gumnet-tiny")
    names = [n for n, _ in model.named_parameters()]
    assert not any(".a." in n or ".b." in n for n in names if "convs" in n)
    assert any("norms.a." in n for n in names) and any("norms.b." in n for n in names)
    assert parameter_count(model) == sum(p.numel() for p in model.parameters())
    x = torch.randn(2, 32, 32, 32)
    model.eval()
    assert model.features(x, "a").shape == (2, 16, 6, 6, 6)
    with torch.no_grad():
        model.extractor.norms["b"][0].bias.fill_(1.0)
    assert not torch.allclose(model.features(x, "a"), model.features(x, "b"))


def test_rotation_vector_outputs_match_scipy_and_stay_within_range():
    import math

    from scipy.spatial.transform import Rotation

    from gumalign.models.transformer import params_to_rigid, rotvec_matrix

    gen = torch.Generator().manual_seed(0)
    vectors = (torch.rand(50, 3, generator=gen, dtype=torch.float64) - 0.5) * 2.0
    vectors[0] = 0.0
    vectors[1] = 1e-5
    np.testing.assert_allclose(rotvec_matrix(vectors).numpy(), Rotation.from_rotvec(vectors.numpy()).as_matrix(), atol=1e-10)
    params = torch.rand(20, 6, generator=gen, dtype=torch.float64)
    rotations, _ = params_to_rigid(params, 32, "rotvec", 60.0)
    expected = Rotation.from_rotvec(((2 * params[:, :3] - 1) * math.radians(60)).numpy()).as_matrix()
    np.testing.assert_allclose(rotations.numpy(), expected, atol=1e-10)
    half, _ = params_to_rigid(torch.full((1, 6), 0.5, dtype=torch.float64), 32, "rotvec", 60.0)
    np.testing.assert_allclose(half[0].numpy(), np.eye(3), atol=1e-12)  # the sigmoid's centre is the identity
    # Gradients are finite at the identity (the Taylor branch).
    v = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    rotvec_matrix(v).sum().backward()
    assert torch.isfinite(v.grad).all()
