"""One implementation per convention: each shared kernel pinned against an independent reference, and a package
import graph without cycles."""

import ast
import subprocess
import sys
from pathlib import Path

import gumalign

PACKAGE = Path(gumalign.__file__).resolve().parent


# --- the package's import graph ---------------------------------------------------------------------------------------


def _subpackage_imports() -> dict[str, set[str]]:
    """{subpackage or top-level module: the other ones it imports}, counting imports inside functions too."""
    units = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    units |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {u: set() for u in units}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        unit = parts[0] if len(parts) > 1 else path.stem
        if unit not in graph:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")
                if top[0] == "gumalign" and len(top) > 1 and top[1] in units and top[1] != unit:
                    graph[unit].add(top[1])
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycle_between_subpackages():
    graph = _subpackage_imports()
    assert {"align", "train", "weights", "io"} <= set(graph)  # the walk found the package
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_loading_weights_imports_neither_training_nor_alignment():
    code = (
        "import sys, gumalign.weights\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('gumalign.train', 'gumalign.align')))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_version_is_the_installed_metadata():
    from importlib.metadata import version

    assert gumalign.__version__ == version("gumalign")


# --- rotations about axes (gumalign.geometry.axes) --------------------------------------------------------------------


def test_axis_rotations_match_scipy_for_numpy_and_torch():
    import numpy as np
    import torch
    from scipy.spatial.transform import Rotation

    from gumalign.geometry.axes import rotation_about_axis

    angles = np.random.default_rng(0).uniform(-np.pi, np.pi, size=(4, 5))
    for axis in "xyz":
        expected = Rotation.from_euler(axis, angles.ravel()[:, None]).as_matrix().reshape(4, 5, 3, 3)
        np.testing.assert_allclose(rotation_about_axis(axis, angles), expected, atol=1e-12)
        out = rotation_about_axis(axis, torch.as_tensor(angles))
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)
    assert rotation_about_axis("z", 0.5).shape == (3, 3)


def test_zyz_matrix_is_intrinsic_zyz_and_differentiable():
    import numpy as np
    import torch
    from scipy.spatial.transform import Rotation

    from gumalign.geometry.axes import zyz_matrix

    angles = np.random.default_rng(1).uniform(-np.pi, np.pi, size=(6, 3))
    expected = Rotation.from_euler("ZYZ", angles).as_matrix()
    np.testing.assert_allclose(zyz_matrix(*angles.T), expected, atol=1e-12)
    phi, theta, psi = (torch.tensor(a, requires_grad=True) for a in angles.T)
    out = zyz_matrix(phi, theta, psi)
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=1e-12)
    out.sum().backward()
    assert phi.grad is not None and torch.isfinite(phi.grad).all()


def test_axis_must_be_named():
    import pytest

    from gumalign.geometry.axes import rotation_about_axis

    with pytest.raises(ValueError, match="'x', 'y' or 'z'"):
        rotation_about_axis(2, 0.1)


# --- Fourier layouts and weight rotation (gumalign.fourier.layout) ----------------------------------------------------


def test_centred_to_rfft_is_ifftshift_then_the_non_negative_x_half_for_torch_and_numpy():
    import numpy as np
    import torch

    from gumalign.fourier import frequency_grid
    from gumalign.fourier.layout import centred_to_rfft

    rng = np.random.default_rng(2)
    for n in (8, 9):
        cube = rng.random((2, n, n, n))
        expected = np.fft.ifftshift(cube, axes=(-3, -2, -1))[..., : n // 2 + 1]
        np.testing.assert_array_equal(centred_to_rfft(cube), expected)
        out = centred_to_rfft(torch.as_tensor(cube))
        assert isinstance(out, torch.Tensor)
        np.testing.assert_array_equal(out.numpy(), expected)
        # Independent of ifftshift: each centred frequency lands where the rfft grid has the same frequency (mod N:
        # for even N the rfft half's Nyquist column +N/2 is the centred cube's -N/2).
        for centred, rfft in zip(frequency_grid((n,) * 3, "centred"), frequency_grid((n,) * 3, "rfft")):
            moved = centred_to_rfft(np.broadcast_to(centred, (n, n, n)).astype(float))
            np.testing.assert_array_equal(np.mod(moved, n), np.mod(np.broadcast_to(rfft, moved.shape), n))


def _scipy_rotate_centred(values, rotation):
    """out(k) = values(Rᵀk) about index N // 2, trilinear, edges replicated: scipy.ndimage's reading of the rule."""
    import numpy as np
    from scipy.ndimage import affine_transform

    n = values.shape[-1]
    centre = np.full(3, n // 2, dtype=np.float64)
    # R acts on (x, y, z); array indices are (z, y, x), so reverse both axes of Rᵀ.
    matrix = rotation.T[::-1, ::-1]
    return affine_transform(values, matrix, offset=centre - matrix @ centre, order=1, mode="nearest")


def test_rotate_weights_matches_scipy_with_replicated_edges():
    import numpy as np
    import torch

    from gumalign.fourier import wedge_mask
    from gumalign.fourier.layout import rotate_centred, rotate_weights
    from gumalign.geometry import random_rotations

    rng = np.random.default_rng(3)
    n = 16
    wedge = wedge_mask((n, n, n), (-50, 60), "centred").astype(np.float64)
    signed = rng.standard_normal((n, n, n))
    rotations = random_rotations(3, rng)
    got = rotate_weights(torch.as_tensor(wedge)[None], torch.as_tensor(rotations)).numpy()
    got_signed = rotate_centred(torch.as_tensor(signed)[None], torch.as_tensor(rotations)).numpy()
    for i, rotation in enumerate(rotations):
        np.testing.assert_allclose(got[i], np.clip(_scipy_rotate_centred(wedge, rotation), 0, 1), atol=1e-9)
        np.testing.assert_allclose(got_signed[i], _scipy_rotate_centred(signed, rotation), atol=1e-9)


def test_full_observation_stays_full_at_every_rotation_which_zero_fill_would_not_keep():
    """Why the edge is replicated: the corners beyond the Nyquist sphere have no source inside the cube at most
    rotations; replicating keeps an all-ones weight all ones there (what the score's and the imputation's all-ones
    shortcuts assume), while zero fill marks a rotation-dependent share of the cube unobserved."""
    import numpy as np
    import torch

    from gumalign.fourier.layout import rotate_weights
    from gumalign.geometry import random_rotations, transform_volumes
    from gumalign.geometry.axes import rotation_about_axis

    n = 16
    ones = torch.ones(1, n, n, n, dtype=torch.float64)
    rotations = torch.as_tensor(np.concatenate([random_rotations(4, np.random.default_rng(4)),
                                                rotation_about_axis("z", np.radians([0.0, 45.0]))]))
    np.testing.assert_allclose(rotate_weights(ones, rotations).numpy(), 1.0, atol=1e-12)
    zero_filled = transform_volumes(ones, rotations).clamp(0, 1).numpy()  # the rule the averages and scores had
    lost = 1.0 - zero_filled.reshape(len(rotations), -1).mean(axis=1)
    assert lost[-2] == 0.0 and lost[-1] > 0.1 and np.all(lost[:-2] > 0.1)  # none at 0°, a sixth at 45° about z
    kz, ky, kx = np.indices((n, n, n)) - n // 2
    inside = np.sqrt(kx**2 + ky**2 + kz**2) <= n / 2 - 1
    np.testing.assert_allclose(zero_filled[:, inside], 1.0, atol=1e-12)  # the two rules differ only in the corners


def test_compensated_average_of_fully_observed_particles_is_the_plain_mean():
    """The same rule seen from the averages: with every particle fully observed, wedge compensation has nothing to
    fill, so the compensated map (λ = 0) equals the plain mean, corners included."""
    import numpy as np

    from gumalign.average.compensated import average_particles
    from gumalign.geometry import random_rotations

    rng = np.random.default_rng(5)
    n, count = 16, 6
    particles = rng.standard_normal((count, n, n, n)).astype(np.float32)
    a = random_rotations(count, rng)
    origins = rng.uniform(-1.5, 1.5, (count, 3))
    ones = np.ones((n, n, n), dtype=np.float32)
    compensated = average_particles(particles, a, origins, weights=ones, regularisation=0.0)
    plain = average_particles(particles, a, origins, weights=ones, compensate=False)
    np.testing.assert_allclose(compensated.full, plain.full, atol=1e-4 * np.abs(plain.full).max())


# --- the network's z-score (gumalign.models.inputs) -------------------------------------------------------------------


def test_zscore_matches_scipy_per_volume_and_zeroes_constant_volumes():
    import numpy as np
    import torch
    from scipy.stats import zscore as scipy_zscore

    from gumalign.models.inputs import zscore
    from gumalign.train.data import zscore as zscore_numpy

    rng = np.random.default_rng(6)
    volumes = rng.standard_normal((3, 2, 8, 8, 8)) * 4.0 + 7.0
    expected = np.stack([[scipy_zscore(v, axis=None, ddof=0) for v in batch] for batch in volumes])
    out = zscore(torch.as_tensor(volumes))
    assert out.dtype == torch.float64 and out.shape == volumes.shape
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)
    as_float32 = zscore_numpy(volumes[0])
    assert as_float32.dtype == np.float32
    np.testing.assert_allclose(as_float32, expected[0], atol=1e-5)
    for value in (0.1, 1 / 3, -250.0):  # a rounded mean leaves a residue; it must not be scaled up
        assert not np.any(zscore_numpy(np.full((2, 8, 8, 8), value)))


# --- one voxel-size tolerance (gumalign.units) ------------------------------------------------------------------------


def test_same_voxel_size_is_math_isclose_at_the_one_tolerance():
    import math

    import numpy as np

    from gumalign.units import VOXEL_SIZE_RTOL, same_voxel_size

    rng = np.random.default_rng(7)
    a = rng.uniform(0.5, 20.0, 500)
    b = a * (1.0 + rng.uniform(-3, 3, 500) * VOXEL_SIZE_RTOL)
    expected = [math.isclose(x, y, rel_tol=VOXEL_SIZE_RTOL) for x, y in zip(a, b)]
    np.testing.assert_array_equal(same_voxel_size(a, b), expected)
    np.testing.assert_array_equal(same_voxel_size(b, a), expected)  # symmetric
    assert 0 < sum(expected) < len(expected)
    assert same_voxel_size(1.35, 1.3504) and not same_voxel_size(1.35, 1.3535)  # rounding yes, a real mismatch no
    assert same_voxel_size(0.0, 0.0) and not same_voxel_size(0.0, 1e-9)
