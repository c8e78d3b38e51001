"""Point-group operators of training templates, for symmetry-aware supervised losses.

The one implementation of the axis search (bench/_common.py wraps it for the benchmarks' symmetry-aware errors):
the n-fold axis starts from the principal axis of the density's
second-moment tensor that differs most from the other two (every principal axis for n = 2), is refined by a pattern
search that maximises the self-correlation under a 2π/n rotation, and for Dn a perpendicular 2-fold axis is found by
a scan. Every operator must keep the template's self-correlation >= 0.9.

Rotations act on (x, y, z) column vectors about the box centre N // 2 (gumalign.geometry.transform).
"""

from __future__ import annotations

import re

import numpy as np

from gumalign.errors import GumalignError
from gumalign.geometry.symmetry import rotation_about  # the one Rodrigues; bench/_common.py imports it from here
from gumalign.simulate.templates import declared_symmetries

# Point groups of the built-in templates that have one, as templates.json records them (scripts/make_templates.py
# says why: 3J9I the D7 20S proteasome, 1BXN the C4 half of an L8S8 Rubisco, the 2CG9 and 3H84 C2 dimers). The
# axes are still found from the density below, so a template in any frame (a user's map of the same name) works.
DECLARED_SYMMETRY = declared_symmetries()
MIN_SELF_CORRELATION = 0.9


def self_correlations(density: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """(K,) Pearson correlations of ``density`` with itself rotated by each of ``rotations`` (K, 3, 3)."""
    import torch

    from gumalign.geometry import transform_volumes

    volume = torch.as_tensor(np.asarray(density, dtype=np.float32))
    flat = volume.flatten() - volume.mean()
    out = []
    for start in range(0, len(rotations), 64):
        chunk = torch.as_tensor(np.asarray(rotations[start : start + 64]), dtype=torch.float32)
        moved = transform_volumes(volume[None].expand(len(chunk), -1, -1, -1), chunk).flatten(1)
        moved = moved - moved.mean(dim=1, keepdim=True)
        out.append(((moved @ flat) / (moved.norm(dim=1) * flat.norm()).clamp_min(1e-12)).double().numpy())
    return np.concatenate(out)


def _cone(axis: np.ndarray, tilt_rad: float, count: int = 8) -> np.ndarray:
    helper = np.eye(3)[np.argmin(np.abs(axis))]
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    phis = 2 * np.pi * np.arange(count) / count
    tilted = np.cos(tilt_rad) * axis + np.sin(tilt_rad) * (np.cos(phis)[:, None] * e1 + np.sin(phis)[:, None] * e2)
    return np.concatenate([axis[None], tilted])


def _refine_axis(density: np.ndarray, axis: np.ndarray, order: int) -> np.ndarray:
    for tilt_deg in (4.0, 2.0, 1.0, 0.5, 0.25):
        for _ in range(4):
            candidates = _cone(axis, np.radians(tilt_deg))
            scores = self_correlations(density, np.stack([rotation_about(a, 2 * np.pi / order) for a in candidates]))
            if int(np.argmax(scores)) == 0:
                break
            axis = candidates[int(np.argmax(scores))]
    return axis / np.linalg.norm(axis)


def _perpendicular_two_fold(density: np.ndarray, axis: np.ndarray) -> np.ndarray:
    helper = np.eye(3)[np.argmin(np.abs(axis))]
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)

    def best(phis: np.ndarray) -> float:
        directions = np.cos(phis)[:, None] * e1 + np.sin(phis)[:, None] * e2
        scores = self_correlations(density, np.stack([rotation_about(d, np.pi) for d in directions]))
        return float(phis[int(np.argmax(scores))])

    phi = best(np.radians(np.arange(0.0, 180.0, 1.0)))
    phi = best(phi + np.radians(np.arange(-1.0, 1.01, 0.1)))
    return np.cos(phi) * e1 + np.sin(phi) * e2


def symmetry_operators(density: np.ndarray, declared: str = "C1") -> np.ndarray:
    """(G, 3, 3) operators of the ``declared`` group ('C1', 'Cn', 'Dn'), axes found from ``density``, identity first.

    Raises:
        GumalignError: a malformed group name, or a density that does not have that symmetry.
    """
    match = re.fullmatch(r"\s*([CcDd])\s*(\d+)\s*", declared)
    if not match or int(match.group(2)) < 1 or (match.group(1).upper() == "D" and int(match.group(2)) < 2):
        raise GumalignError(f"symmetry {declared!r} is not Cn (n >= 1) or Dn (n >= 2)")
    kind, order = match.group(1).upper(), int(match.group(2))
    if kind == "C" and order == 1:
        return np.eye(3)[None]
    n = density.shape[0]
    weights = np.clip(density, 0, None).astype(np.float64)
    z, y, x = np.indices(density.shape, dtype=np.float64) - n // 2
    coords = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    eigenvalues, vectors = np.linalg.eigh((coords.T * weights.ravel()) @ coords / weights.sum())
    if order == 2:
        starts = [vectors[:, i] for i in range(3)]
    else:
        gaps = [min(abs(eigenvalues[i] - eigenvalues[j]) for j in range(3) if j != i) for i in range(3)]
        starts = [vectors[:, int(np.argmax(gaps))]]
    refined = [_refine_axis(density, start, order) for start in starts]
    scores = self_correlations(density, np.stack([rotation_about(a, 2 * np.pi / order) for a in refined]))
    axis = refined[int(np.argmax(scores))]
    operators = rotation_about(axis, 2 * np.pi * np.arange(order) / order)
    if kind == "D":
        operators = np.concatenate([operators, operators @ rotation_about(_perpendicular_two_fold(density, axis), np.pi)])
    worst = float(self_correlations(density, operators).min())
    if worst < MIN_SELF_CORRELATION:
        raise GumalignError(
            f"the template does not have {kind}{order} symmetry: an operator leaves a self-correlation of only "
            f"{worst:.3f} (< {MIN_SELF_CORRELATION})"
        )
    return operators


def template_symmetries(templates: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{name: (G, 3, 3) operators} for templates named in DECLARED_SYMMETRY (a 'builtin:' prefix or a voxel-size
    suffix '@9' is ignored); the others get the identity alone."""
    out = {}
    for name, density in templates.items():
        base = name.split(":")[-1].split("@")[0]
        out[name] = symmetry_operators(np.asarray(density), DECLARED_SYMMETRY.get(base, "C1"))
    return out


def equivalent_rotations(rotations_a: np.ndarray, rotations_b: np.ndarray, operators: np.ndarray) -> np.ndarray:
    """(n, G, 3, 3) rotations R_b·g·R_aᵀ that all carry s_a = T(template, R_a) onto s_b = T(template, R_b)."""
    return np.einsum("nij,gjk,nlk->ngil", rotations_b, operators, rotations_a)
