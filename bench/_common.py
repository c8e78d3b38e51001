"""Shared helpers for the benchmarks: point-group symmetry of a template, symmetry-aware alignment errors, provenance.

Why symmetry: two of the built-in templates the paper tables use are symmetric (the 20S proteasome 3J9I is D7, the
Rubisco 1BXN template is C4). For them a rotation that differs from the simulated one by a symmetry operation gives
the same particle, so the seed's error ||R_true - R_est|| would punish a correct answer with up to 2.83. The
symmetry-aware error takes the smallest error over the equivalent true transforms. The seed's five structures are
asymmetric, for which both errors are the same.

Conventions: rotations act on (x, y, z) column vectors about the box centre N // 2 (gumalign.geometry.transform);
shifts are (x, y, z) voxels; s = transform_volumes(template, R, t).
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Point groups of the built-in templates, the self-correlation every operator must keep, and the numerical pieces of
# the axis search live in the package (gumalign.train.symmetry, which the supervised loss uses); this module wraps
# them into a SymmetryGroup for the benchmarks' symmetry-aware errors.
from gumalign.train.symmetry import (  # noqa: E402
    DECLARED_SYMMETRY,
    MIN_SELF_CORRELATION,
    _perpendicular_two_fold,
    _refine_axis,
    rotation_about,
    self_correlations,
)


@dataclass
class SymmetryGroup:
    """A point group about the box centre.

    Attributes:
        name: 'C1', 'Cn' or 'Dn'.
        operators: (G, 3, 3) float64 rotations acting on (x, y, z), the identity first.
        axis: (3,) unit vector (x, y, z) of the n-fold axis (None for C1).
        min_self_correlation: the lowest Pearson correlation of the template with itself rotated by any operator.
    """

    name: str
    operators: np.ndarray
    axis: np.ndarray | None = None
    min_self_correlation: float = 1.0


def parse_symmetry(text: str) -> tuple[str, int]:
    """'C1', 'C7', 'D4' (case-insensitive) -> ('C' or 'D', n)."""
    match = re.fullmatch(r"\s*([CcDd])\s*(\d+)\s*", text)
    if not match or int(match.group(2)) < 1 or (match.group(1).upper() == "D" and int(match.group(2)) < 2):
        raise ValueError(f"symmetry {text!r} is not Cn (n >= 1) or Dn (n >= 2)")
    return match.group(1).upper(), int(match.group(2))


def _principal_axes(density: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and unit eigenvectors (columns, x y z) of the density's second-moment tensor about
    the box centre (positive density only)."""
    n = density.shape[0]
    weights = np.clip(density, 0, None).astype(np.float64)
    z, y, x = np.indices(density.shape, dtype=np.float64) - n // 2
    coords = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    moment = (coords.T * weights.ravel()) @ coords / weights.sum()
    return np.linalg.eigh(moment)


def detect_symmetry(density: np.ndarray, declared: str = "C1") -> SymmetryGroup:
    """The operators of the ``declared`` point group (Cn or Dn), with axes found from the template itself.

    The n-fold axis starts from the principal axis whose second moment differs most from the other two (the unique
    axis of a symmetric top; for n = 2 every principal axis is tried) and is refined by maximising the self-correlation
    under a 2π/n rotation; for Dn, a perpendicular 2-fold axis is found by a scan. The group is checked: every operator
    must keep the template's self-correlation >= MIN_SELF_CORRELATION.

    Args:
        density: (N, N, N) float32 template [z, y, x], centred on the box centre N // 2.
        declared: 'C1', 'Cn' or 'Dn'.

    Returns:
        A :class:`SymmetryGroup`.

    Raises:
        ValueError: a malformed ``declared``, or a density that does not have that symmetry.
    """
    kind, order = parse_symmetry(declared)
    if kind == "C" and order == 1:
        return SymmetryGroup("C1", np.eye(3)[None])
    eigenvalues, vectors = _principal_axes(density)
    if order == 2:
        starts = [vectors[:, i] for i in range(3)]
    else:
        gaps = [min(abs(eigenvalues[i] - eigenvalues[j]) for j in range(3) if j != i) for i in range(3)]
        starts = [vectors[:, int(np.argmax(gaps))]]
    refined = [_refine_axis(density, start, order) for start in starts]
    scores = self_correlations(density, np.stack([rotation_about(a, 2 * np.pi / order) for a in refined]))
    axis = refined[int(np.argmax(scores))]
    cyclic = rotation_about(axis, 2 * np.pi * np.arange(order) / order)
    operators = cyclic
    if kind == "D":
        flip = rotation_about(_perpendicular_two_fold(density, axis), np.pi)
        operators = np.concatenate([cyclic, cyclic @ flip])
    correlations = self_correlations(density, operators)
    group = SymmetryGroup(f"{kind}{order}", operators, axis, float(correlations.min()))
    if group.min_self_correlation < MIN_SELF_CORRELATION:
        raise ValueError(
            f"the template does not have {group.name} symmetry: an operator leaves a self-correlation of only "
            f"{group.min_self_correlation:.3f} (< {MIN_SELF_CORRELATION})"
        )
    return group


def symmetric_errors(
    rotations_a: np.ndarray,
    shifts_a: np.ndarray,
    rotations_b: np.ndarray,
    shifts_b: np.ndarray,
    operators: np.ndarray,
    rotations_est: np.ndarray,
    shifts_est: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seed-style errors against the closest of the symmetry-equivalent true transforms of each pair.

    With s_a = T(template, R_a, t_a), s_b = T(template, R_b, t_b) and T(template, g) = template for every operator g,
    s_b = T(s_a, R_g, t_g) with R_g = R_b·g·R_aᵀ and t_g = t_b - R_g·t_a. The operator chosen is the one with the
    smallest rotation error; the translation error is taken against the same operator's t_g.

    Args:
        rotations_a, rotations_b: (B, 3, 3) poses of s_a and s_b relative to the template.
        shifts_a, shifts_b: (B, 3) shifts (x, y, z) voxels of s_a and s_b.
        operators: (G, 3, 3) symmetry operators of the template (the identity included).
        rotations_est, shifts_est: (B, 3, 3), (B, 3) the estimated transform carrying s_a onto s_b.

    Returns:
        ((B,) rotation errors ||R_g - R_est||_F, (B,) translation errors ||t_g - t_est|| in voxels, (B,) index of g).
    """
    rot_a = np.asarray(rotations_a, dtype=np.float64)
    rot_b = np.asarray(rotations_b, dtype=np.float64)
    equivalent = np.einsum("bij,gjk,blk->bgil", rot_b, np.asarray(operators, dtype=np.float64), rot_a)  # R_b g R_aᵀ
    shifts = np.asarray(shifts_b, dtype=np.float64)[:, None] - np.einsum("bgij,bj->bgi", equivalent, shifts_a)
    rot_err = np.sqrt(np.sum((equivalent - np.asarray(rotations_est)[:, None]) ** 2, axis=(-2, -1)))
    best = np.argmin(rot_err, axis=1)
    rows = np.arange(len(best))
    trans_err = np.linalg.norm(shifts[rows, best] - np.asarray(shifts_est, dtype=np.float64), axis=-1)
    return rot_err[rows, best], trans_err, best


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(threads: int) -> dict:
    """Where and how a benchmark ran: command, commit (and whether the tree had changes), machine, versions, date."""
    import torch

    import gumalign

    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "command": shlex.join([Path(sys.executable).name] + sys.argv),
        "commit": (commit or "unknown") + (" (with uncommitted changes)" if commit and dirty else ""),
        "cpu": _cpu_model(),
        "cores": cores,
        "torch_threads": threads,
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gumalign": gumalign.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
