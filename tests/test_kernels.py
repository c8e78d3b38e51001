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
