"""The network's input normalisation: each volume z-scored, the one implementation.

The aligner (gumalign.align.gumnet), the training pairs (gumalign.train.data.zscore, a numpy wrapper for the numpy
pair sets) and the benchmarks all normalise s_a and s_b with it, so a model sees at inference what it saw in
training.
"""

from __future__ import annotations

import torch

__all__ = ["zscore"]


def zscore(volumes: torch.Tensor) -> torch.Tensor:
    """Each volume shifted and scaled to zero mean and unit standard deviation.

    The standard deviation is the population one (ddof 0, ``unbiased=False``), as the original Gum-Net's.

    Args:
        volumes: (..., D, H, W) float tensor [z, y, x], any device; statistics over the last three axes.

    Returns:
        A tensor of the same shape, dtype and device. A constant volume becomes all zeros (its rounded mean leaves a
        residue of about one ulp, which would otherwise be scaled up to ±1 or beyond).
    """
    dims = (-3, -2, -1)
    mean = volumes.mean(dim=dims, keepdim=True)
    std = volumes.std(dim=dims, keepdim=True, unbiased=False)
    scaled = (volumes - mean) / std.clamp_min(1e-12)
    flat = volumes.flatten(-3)
    constant = (flat.amax(dim=-1) == flat.amin(dim=-1))[..., None, None, None]
    return torch.where(constant, torch.zeros_like(scaled), scaled)
