"""Gum-Net's output mapping, spatial transformer, spectral data imputation and loss.

Output mapping (aitom RigidTransformation3DImputation.py, utils.py): the network's six sigmoid outputs p ∈ (0, 1) give
ZYZ angles φ, θ, ψ = 2π·p[0:3] - π and a translation (2·p[3:6] - 1) in units of half the box, so ±N/2 voxels.

Convention: R = Rz(φ)·Ry(θ)·Rz(ψ), right-handed rotations on (x, y, z) column vectors (gumalign.geometry.axes,
zyz_matrix, where Ry and Rz are written out); the translation is
t = (t_x, t_y, t_z) voxels. The transform is the forward map u -> R·u + t about the box centre, exactly
``gumalign.geometry.transform_volumes(s_a, R, t)``. So the network's R *is* RELION's matrix A of the aligner convention
(particle ≈ transform_volumes(reference, A, shift), shift = -origin): ``A = R``, ``shift = t``. In RELION's Euler angles
A = (Rz(rot)·Ry(tilt)·Rz(psi))ᵀ = Rz(-psi)·Ry(-tilt)·Rz(-rot), so (rot, tilt, psi) = (-ψ, -θ, -φ) up to the usual
ZYZ ambiguity; use gumalign.geometry.matrix_to_euler(R) rather than that shortcut.
"""

from __future__ import annotations

import math

import torch

from gumalign.fourier.layout import rotate_weights
from gumalign.geometry.axes import zyz_matrix
from gumalign.geometry.transform import transform_volumes


def rotvec_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """Rotation matrices exp([v]×) for rotation vectors (..., 3) in radians (Rodrigues), smooth through v = 0."""
    theta_sq = (vectors**2).sum(dim=-1)[..., None, None]
    theta = torch.sqrt(theta_sq.clamp_min(1e-12))
    small = theta_sq < 1e-6
    # sin θ/θ and (1 - cos θ)/θ², with their Taylor series near 0 so gradients stay finite.
    a = torch.where(small, 1.0 - theta_sq / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta_sq / 24.0, (1.0 - torch.cos(theta)) / theta_sq.clamp_min(1e-12))
    x, y, z = vectors.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*vectors.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=vectors.dtype, device=vectors.device).expand_as(skew)
    return eye + a * skew + b * (skew @ skew)


def params_to_rigid(
    params: torch.Tensor, box: int, rotation: str = "zyz", max_angle_deg: float = 180.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's sigmoid outputs as a rigid transform.

    Args:
        params: (B, 6) values in (0, 1): three rotation parameters, then t_x, t_y, t_z before scaling.
        box: box size N in voxels.
        rotation: 'zyz' (the seed's: φ, θ, ψ = 2πp - π, R = Rz(φ)·Ry(θ)·Rz(ψ)) or 'rotvec' (a rotation vector
            (2p - 1)·max_angle per component, R = exp([v]×): smooth around the identity, for models trained on
            bounded relative rotations; ZYZ angles are degenerate there, where only φ + ψ is defined).
        max_angle_deg: the rotation vectors' range for 'rotvec'.

    Returns:
        rotations (B, 3, 3) (= RELION A) and shifts (B, 3) in voxels (x, y, z), differentiable in ``params``.
    """
    if rotation == "rotvec":
        rotations = rotvec_matrix((2.0 * params[:, :3] - 1.0) * math.radians(max_angle_deg))
    elif rotation == "zyz":
        angles = 2.0 * math.pi * params[:, :3] - math.pi
        rotations = zyz_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    else:
        raise ValueError(f"unknown rotation parameterisation {rotation!r}")
    shifts = (2.0 * params[:, 3:6] - 1.0) * (box / 2.0)
    return rotations, shifts


def spectral_imputation(
    moved_a: torch.Tensor, s_b: torch.Tensor, rotated_weight_a: torch.Tensor
) -> torch.Tensor:
    """Fill the Fourier region the moved s_a does not observe with s_b's data.

    ``out = Re(IFFT(FFT(T(s_a))·R(M_a) + FFT(s_b)·(1 - R(M_a))))`` where M_a is s_a's observed region.

    Args:
        moved_a: (B, N, N, N) transformed s_a, T(s_a).
        s_b: (B, N, N, N) the target.
        rotated_weight_a: (B or 1, N, N, N) R(M_a) in the centred layout (zero frequency at N // 2).

    Returns:
        (B, N, N, N) real tensor.
    """
    dims = (-3, -2, -1)
    weight = torch.fft.ifftshift(rotated_weight_a, dim=dims)  # centred -> unshifted, to match torch.fft.fftn
    spectrum = torch.fft.fftn(moved_a, dim=dims) * weight + torch.fft.fftn(s_b, dim=dims) * (1.0 - weight)
    return torch.fft.ifftn(spectrum, dim=dims).real


def transform_and_impute(
    s_a: torch.Tensor,
    s_b: torch.Tensor,
    weight_a: torch.Tensor | None,
    rotations: torch.Tensor,
    shifts: torch.Tensor,
) -> torch.Tensor:
    """T(s_a) = transform_volumes(s_a, R, t), then spectral imputation with s_b (skipped when ``weight_a`` is None).

    Args:
        s_a, s_b: (B, N, N, N) volumes [z, y, x].
        weight_a: (B or 1, N, N, N) centred observed-region weights of s_a, or None (fully observed).
            s_b may be None when s_a is fully observed.
        rotations: (B, 3, 3); shifts: (B, 3) voxels (x, y, z).

    Returns:
        (B, N, N, N) the imputed transformed s_a.
    """
    moved = transform_volumes(s_a, rotations, shifts)
    # A fully observed s_a stays fully observed at every rotation (gumalign.fourier.layout), and then the imputation is
    # the identity: skipping it gives the same result for a fifth less work per training step.
    if weight_a is None or bool(torch.all(weight_a == 1)):
        return moved
    return spectral_imputation(moved, s_b, rotate_weights(weight_a, rotations))


def correlation_loss(target: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """1 - Pearson correlation of each target with its output, averaged over the batch: a scalar in [0, 2].

    Why not the original's 1 - r² with one r over the whole batch tensor (aitom utils.py): squaring rewards an
    anti-correlated output as much as a correlated one (r = -1 gives zero loss), and a batch-wide r is dominated by
    differences between samples (offsets and scales) rather than by how well each pair is aligned. Per-sample r keeps
    every pair's alignment in its own term and only ever rewards agreement.

    Args:
        target, output: (B, ...) tensors.
    """
    t = target.reshape(target.shape[0], -1)
    o = output.reshape(output.shape[0], -1)
    t = t - t.mean(dim=1, keepdim=True)
    o = o - o.mean(dim=1, keepdim=True)
    r = torch.sum(t * o, dim=1) / torch.sqrt(torch.sum(t * t, dim=1) * torch.sum(o * o, dim=1) + 1e-12)
    return 1.0 - r.mean()
