"""Full-SO(3) one-pass heads for Gum-Net's Siamese features: rotation helpers, anchor sets and the supervised loss.

Two heads read the same correlation features (gumalign.models.gumnet):

- ``anchors`` (EPN-style pair registration, Chen et al. 2021): a fixed set of K anchor rotations S_k (the 60 of the
  icosahedral group, or a near-uniform super-Fibonacci set), a score per anchor and a residual rotation Δ_k per
  anchor, so hypothesis k is R_k = Δ_k·S_k. Trained by cross-entropy on the anchors nearest to the true rotation's
  symmetry mates plus a residual loss at those anchors.
- ``hypotheses``: K free rotations (all anchors the identity) with a confidence each, trained winner-take-all.

Residuals are 6D outputs orthogonalised by Gram-Schmidt (Zhou et al. 2019), offset so that zero outputs give the
identity. Every rotation here is in the project's convention: R acts on (x, y, z) column vectors about the box centre
and s_b ≈ gumalign.geometry.transform_volumes(s_a, R, t), i.e. R is RELION's matrix A of the aligner convention.

Symmetry: for a template with point group {g}, s_a = T(template, R_a) and s_b = T(template, R_b), every
R_g = R_b·g·R_aᵀ carries s_a onto s_b (see bench/_common.py). The supervised loss takes the set of these "mates"
(B, G, 3, 3) and is zero for a prediction of any of them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# super-Fibonacci spiral constants (Alexa, CVPR 2022): phi = sqrt(2), psi the root of psi^4 = psi + 4.
_SF_PHI = math.sqrt(2.0)
_SF_PSI = 1.533751168755204288118041


def sixd_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) rotations by Gram-Schmidt on two 3-vectors (Zhou et al. 2019), columns b1, b2, b1×b2.

    The two vectors are e_x + x[..., :3] and e_y + x[..., 3:], so zero outputs give the identity.
    """
    a1 = x[..., :3] + torch.tensor([1.0, 0.0, 0.0], dtype=x.dtype, device=x.device)
    a2 = x[..., 3:6] + torch.tensor([0.0, 1.0, 0.0], dtype=x.dtype, device=x.device)
    b1 = a1 / a1.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    a2 = a2 - (b1 * a2).sum(dim=-1, keepdim=True) * b1
    b2 = a2 / a2.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def icosahedral_rotations() -> np.ndarray:
    """(60, 3, 3) rotations of the icosahedral group (covering radius 44.5°), the identity first, fixed order."""
    from scipy.spatial.transform import Rotation

    matrices = Rotation.create_group("I").as_matrix()
    # A deterministic order that does not depend on scipy's: by angle, then lexicographically by the matrix entries.
    angles = np.round(np.arccos(np.clip((np.trace(matrices, axis1=1, axis2=2) - 1) / 2, -1, 1)), 6)
    keys = np.round(matrices.reshape(60, 9), 6)
    order = np.lexsort(tuple(keys[:, i] for i in reversed(range(9))) + (angles,))
    return matrices[order]


def super_fibonacci_rotations(n: int) -> np.ndarray:
    """(n, 3, 3) near-uniform rotations from the super-Fibonacci spiral (Alexa 2022), deterministic."""
    from scipy.spatial.transform import Rotation

    s = np.arange(n) + 0.5
    r = np.sqrt(s / n)
    big_r = np.sqrt(1.0 - s / n)
    alpha = 2 * np.pi * s / _SF_PHI
    beta = 2 * np.pi * s / _SF_PSI
    quats = np.stack([r * np.sin(alpha), r * np.cos(alpha), big_r * np.sin(beta), big_r * np.cos(beta)], axis=1)
    return Rotation.from_quat(quats).as_matrix()  # scipy's (x, y, z, w) order; any order is uniform


def anchor_rotations(kind: str, n: int) -> np.ndarray:
    """(n, 3, 3) anchors: 'icosahedral' (n must be 60), 'fibonacci' (n near-uniform) or 'identity' (n copies)."""
    if kind == "icosahedral":
        if n != 60:
            raise ValueError(f"the icosahedral anchor set has 60 rotations, not {n}")
        return icosahedral_rotations()
    if kind == "fibonacci":
        return super_fibonacci_rotations(n)
    if kind == "identity":
        return np.repeat(np.eye(3)[None], n, axis=0)
    raise ValueError(f"unknown anchor set {kind!r}; choose icosahedral, fibonacci or identity")


def squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a - b||_F² over the last two axes (broadcast): 8·sin²(θ/2) for rotations θ apart."""
    return ((a - b) ** 2).sum(dim=(-2, -1))


def supervised_loss(
    logits: torch.Tensor,
    rotations: torch.Tensor,
    anchors: torch.Tensor,
    mates: torch.Tensor,
    mode: str,
    residual_weight: float = 1.0,
) -> tuple[torch.Tensor, dict]:
    """Symmetry-aware supervised loss of a K-hypothesis head.

    Args:
        logits: (B, K) scores of the hypotheses.
        rotations: (B, K, 3, 3) hypotheses R_k.
        anchors: (K, 3, 3) the anchors S_k (for 'anchors' mode).
        mates: (B, G, 3, 3) the symmetry-equivalent true rotations (G = 1 for an asymmetric template; padding by
            repeating a mate is harmless).
        mode: 'anchors': the targets are, for every mate, the anchor nearest to it; cross-entropy on the summed
            probability of the target anchors (-log Σ_T p_k: zero when the mass sits on any of them, so a
            symmetric particle may answer any mate) plus the mean squared Frobenius residual error of the target
            anchors' hypotheses to their nearest mates. 'hypotheses': winner-take-all: each hypothesis' error is its
            squared distance to the nearest mate, the best hypothesis gets the residual loss (others 5%) and the
            cross-entropy target.

    Returns:
        (scalar loss, {'ce': float, 'residual': float}).
    """
    d_hyp = squared_distance(rotations[:, :, None], mates[:, None])  # (B, K, G)
    if mode == "anchors":
        d_anchor = squared_distance(anchors[None, :, None], mates[:, None])  # (B, K, G)
        nearest_anchor = d_anchor.argmin(dim=1)  # (B, G)
        target = torch.zeros_like(logits, dtype=torch.bool)
        target.scatter_(1, nearest_anchor, True)
        # The mate each target anchor regresses to: the one nearest that anchor.
        mate_of_anchor = d_anchor.argmin(dim=2, keepdim=True)  # (B, K, 1)
        residual_k = d_hyp.gather(2, mate_of_anchor)[..., 0]  # (B, K)
        residual = (residual_k * target).sum(dim=1) / target.sum(dim=1)
        log_p = torch.log_softmax(logits, dim=1)
        ce = -torch.logsumexp(log_p.masked_fill(~target, -torch.inf), dim=1)
    elif mode == "hypotheses":
        err = d_hyp.min(dim=2).values  # (B, K)
        best = err.argmin(dim=1)
        residual = err.gather(1, best[:, None])[:, 0] + 0.05 * err.mean(dim=1)
        ce = torch.nn.functional.cross_entropy(logits, best, reduction="none")
    else:
        raise ValueError(f"unknown supervised loss mode {mode!r}")
    loss = ce.mean() + residual_weight * residual.mean()
    return loss, {"ce": float(ce.mean().detach()), "residual": float(residual.mean().detach())}


def single_rotation_loss(rotations: torch.Tensor, mates: torch.Tensor) -> torch.Tensor:
    """Supervised loss of a one-rotation head (the faithful Gum-Net outputs): min over mates of ||R - R_g||_F²."""
    return squared_distance(rotations[:, None], mates).min(dim=1).values.mean()
