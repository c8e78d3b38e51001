"""Point-group symmetrisation in Fourier space: centred weights and the sums of a wedge-compensated reconstruction.

The operators come from gumalign.geometry.symmetry (RELION's point groups); this module lives in fourier/ because it
rotates Fourier layouts (gumalign.fourier.layout), so geometry does not import fourier (no package cycle).
"""

from __future__ import annotations

import numpy as np

from gumalign.fourier.layout import centred_to_rfft, rfft_to_centred, rotate_centred
from gumalign.geometry.symmetry import operators, reduce_over_group, rotated_copies


def symmetrise_weights(weights, group, *, reduce: str = "sum", batch: int = 24):
    """Centred Fourier weights (zero frequency at N // 2) summed (or averaged) over the group's rotations.

    A volume rotated by S about the box centre has its transform rotated by S about the zero frequency, so these are
    the weights of the symmetrised data. Rotation by gumalign.fourier.layout.rotate_centred (trilinear, sources
    outside the cube take the nearest edge value: a cube of ones stays ones), no clamping.

    Args:
        weights: (N, N, N) or (B, N, N, N) real tensor or array, centred layout.
        group: a group name or (K, 3, 3) operators.
        reduce: "sum" (RELION's backprojector sums data and weights over the group) or "mean".

    Returns:
        Same shape, a torch tensor (float32 for numpy input).
    """
    return reduce_over_group(weights, group, rotate_centred, reduce, batch)


def symmetrise_fourier_sums(numerator, denominator, group, *, batch: int = 24):
    """The sums of a wedge-compensated reconstruction, Σ w'·P' and Σ w', summed over the group before the division.

    As RELION's BackProjector::symmetrise: both sums are rotated about the zero frequency by every operator with the
    same trilinear kernel (gumalign.fourier.layout.rotate_centred) and added, so Σ_k S_k(Σ w'·P') / Σ_k S_k(Σ w')
    fills each particle's missing wedge with its mates' data, stays 0 where no mate observed anything, and equals
    its own images under the group (up to interpolation). The numerator is first re-centred on the box centre
    N // 2 (a phase ramp; a rotation about the box centre is a rotation about the zero frequency only for the
    re-centred transform), rotated as real and imaginary parts, and the ramp is undone. (Rotating the numerator's
    inverse transform in real space instead leaks a little signal into unobserved frequencies, which the division
    then amplifies.) Both steps are linear, so two half sets can be symmetrised apart and then added.

    Args:
        numerator: (N, N, N//2 + 1) complex tensor, rfftn layout (gumalign.average.compensated.FourierAccumulator).
        denominator: (N, N, N//2 + 1) real tensor, rfftn layout (Σ of rotated weights).
        group: a group name or (K, 3, 3) operators.

    Returns:
        (numerator, denominator) symmetrised, same shapes, dtypes and device; C1 returns them unchanged.
    """
    import torch

    ops = operators(group)
    if len(ops) == 1:
        return numerator, denominator
    box = numerator.shape[-3]
    half = box // 2 + 1
    if numerator.shape[-3:] != (box, box, half) or denominator.shape[-3:] != numerator.shape[-3:]:
        raise ValueError(f"expected rfft-layout sums of a cubic box, got {tuple(numerator.shape)}, "
                         f"{tuple(denominator.shape)}")
    device = numerator.device
    real = torch.float64 if numerator.dtype == torch.complex128 else torch.float32
    # The full spectrum (Hermitian), re-centred on the box centre c = N // 2: G(k) = F(k)·e^{+2πi k·c/N}.
    full = torch.fft.fftn(torch.fft.irfftn(numerator, s=(box,) * 3, dim=(-3, -2, -1)), dim=(-3, -2, -1))
    k = torch.fft.fftfreq(box, device=device, dtype=real) * box
    phase_1d = torch.exp(2j * torch.pi * k * (box // 2) / box)
    ramp = phase_1d[:, None, None] * phase_1d[None, :, None] * phase_1d[None, None, :]
    centred = torch.fft.fftshift(full * ramp, dim=(-3, -2, -1))
    parts = torch.stack([centred.real, centred.imag]).to(real)  # (2, N, N, N)

    summed = rotated_copies(parts, ops, max(1, int(batch) // 2), rotate_centred)
    rotated = torch.fft.ifftshift(torch.complex(summed[0], summed[1]), dim=(-3, -2, -1)) * ramp.conj()
    sym_numerator = rotated[..., :half].contiguous().to(numerator.dtype)
    weights = torch.as_tensor(rfft_to_centred(denominator.detach().cpu().numpy(), box), device=device)
    sym_denominator = centred_to_rfft(symmetrise_weights(weights, ops, reduce="sum", batch=batch))
    # Only the sphere |k| < N/2 rotates onto itself: beyond it a rotated source leaves the cube (at a grid
    # permutation such as C2's 180°, the Nyquist plane k = -N/2 would land on +N/2, which the cube does not hold), so,
    # as RELION's BackProjector::symmetrise keeps r <= r_max, the symmetrised sums are cut to the sphere.
    inside = _inside_sphere(box, half, device)
    sym_numerator = sym_numerator * inside
    sym_denominator = sym_denominator.contiguous() * inside
    return sym_numerator, sym_denominator.to(denominator.dtype)


def symmetrise_map(volumes, group, *, batch: int = 24):
    """A map (or a batch of maps) averaged over the group's rotations in Fourier space, about the box centre N // 2.

    The mean of the rotated transforms, by :func:`symmetrise_fourier_sums` with a denominator of ones: it equals its
    own images under the group up to interpolation, and is cut to the sphere |k| < N/2 as the symmetrised sums are.
    Unlike gumalign.geometry.symmetry.symmetrise (the mean of trilinearly rotated copies in real space, which
    low-passes the map), it keeps the map's power: the built-in proteasome (D7, 32³) keeps 0.92-0.99 of it in every
    shell up to 14 this way and 0.45-0.86 of it in shells 6-16 in real space, so a reference symmetrised here is as
    sharp as the one given (tests/test_symmetry_align.py).

    Args:
        volumes: (N, N, N) or (B, N, N, N) real tensor or array, [z, y, x].
        group: a group name or (K, 3, 3) operators.

    Returns:
        Same shape, a float32 torch tensor on the input's device (CPU for numpy input).
    """
    import torch

    stack = torch.as_tensor(np.asarray(volumes) if not torch.is_tensor(volumes) else volumes)
    single = stack.ndim == 3
    stack = stack[None] if single else stack
    box = stack.shape[-1]
    out = []
    for volume in stack:
        numerator = torch.fft.rfftn(volume.double())
        ones = torch.ones(numerator.shape, dtype=torch.float64, device=numerator.device)
        summed, count = symmetrise_fourier_sums(numerator, ones, group, batch=batch)
        mean = torch.where(count > 0, summed / count.clamp_min(1e-12), torch.zeros_like(summed))
        out.append(torch.fft.irfftn(mean, s=(box,) * 3))
    result = torch.stack(out).to(torch.float32)
    return result[0] if single else result


def _inside_sphere(box: int, half: int, device) -> "torch.Tensor":
    """(N, N, N//2 + 1) bool, rfft layout: |k| < N/2 cycles per box."""
    import torch

    k = torch.fft.fftfreq(box, device=device) * box
    kx = torch.arange(half, device=device, dtype=k.dtype)
    radius2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + kx[None, None, :] ** 2
    return radius2 < (box / 2) ** 2
