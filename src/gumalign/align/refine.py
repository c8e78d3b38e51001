"""`--refine`: a local search around any method's answer that can only raise the score.

Pattern search on rotations: at each angular step, try the 27 rotations ΔR = exp([δ]×) with δ on a {-step, 0, step}³
grid of rotation vectors applied as A' = ΔR·A, each with a full FFT translation search (gumalign.align.scoring), keep
the best, repeat while it improves, then halve the step. The identity is always a candidate and the starting
transform's own score is the bar to beat, so a particle's score never goes down.
"""

from __future__ import annotations

import numpy as np
import torch

from gumalign.align.base import AlignmentResult
from gumalign.align.scoring import as_tensor, constrained_correlation, translation_search
from gumalign.geometry.sampling import rotation_grid_near_identity

DEFAULT_STEPS_DEG = (6.0, 3.0, 1.5)


def _cube_of_rotations(step_deg: float) -> torch.Tensor:
    """(27, 3, 3) rotations with rotation vectors on the {-step, 0, step}³ grid; the identity first."""
    # The grid's ball of radius sqrt(3)·step holds the whole cube.
    grid = rotation_grid_near_identity(np.sqrt(3.0) * step_deg + 1e-6, step_deg)
    return torch.as_tensor(grid, dtype=torch.float32)


def refine_alignment(
    references,
    reference_weights,
    particles,
    particle_weights,
    start: AlignmentResult,
    *,
    max_shift: float | None = None,
    max_frequency: float | None = None,
    steps_deg: tuple[float, ...] = DEFAULT_STEPS_DEG,
    max_rounds_per_step: int = 3,
) -> AlignmentResult:
    """Locally refine rotations and shifts, never lowering a particle's constrained correlation.

    Args: as gumalign.align.base.Aligner.align (arrays or tensors; the particles' device is used), plus ``start``
    (the method's answer for these particles), ``max_shift`` (voxels), ``max_frequency`` (cycles per box) and the
    angular ``steps_deg`` schedule.

    Returns:
        A new AlignmentResult whose scores are >= the start's scores re-evaluated at the start's transforms.
    """
    particles = as_tensor(particles)
    device = particles.device
    rotations = as_tensor(start.rotations, device)
    shifts = as_tensor(start.shifts, device)
    common = dict(max_frequency=max_frequency)
    best_score = constrained_correlation(
        references, reference_weights, particles, particle_weights, rotations, shifts, **common
    )
    for step in steps_deg:
        cube = _cube_of_rotations(step).to(device)
        for _ in range(max_rounds_per_step):
            improved = torch.zeros(len(particles), dtype=torch.bool, device=device)
            new_rot, new_shift, new_score = rotations.clone(), shifts.clone(), best_score.clone()
            for delta in cube:
                candidate = delta @ rotations
                cand_shift, cand_score = translation_search(
                    references, reference_weights, particles, particle_weights, candidate, max_shift, **common
                )
                better = cand_score > new_score + 1e-7
                new_rot[better], new_shift[better], new_score[better] = candidate[better], cand_shift[better], cand_score[better]
                improved |= better
            rotations, shifts, best_score = new_rot, new_shift, new_score
            if not bool(improved.any()):
                break
    return AlignmentResult(
        rotations=rotations.double().cpu().numpy(),
        shifts=shifts.double().cpu().numpy(),
        scores=best_score.double().cpu().numpy(),
    )


class RefiningAligner:
    """Any aligner followed by :func:`refine_alignment`: what ``--refine`` means wherever a method is named
    (`align`, `average --iterations`, `cluster`). Scores can only rise over the wrapped method's.

    Args:
        base: an object with the gumalign.align.base.Aligner ``align`` method.
        device: where the refinement runs (the particles are moved there).
        max_shift: longest shift (voxels) the refinement may reach (None: half the box).
        max_frequency: highest spatial frequency (cycles per box) the refinement's scores use (None: all).
    """

    def __init__(self, base, device="cpu", max_shift: float | None = None, max_frequency: float | None = None):
        self.base = base
        self.device = torch.device(device)
        self.max_shift = max_shift
        self.max_frequency = max_frequency
        self.name = f"{getattr(base, 'name', 'aligner')}+refine"

    def align(self, references, reference_weights, particles, particle_weights) -> AlignmentResult:
        start = self.base.align(references, reference_weights, particles, particle_weights)
        volumes = as_tensor(particles, self.device)
        return refine_alignment(
            references, reference_weights, volumes, particle_weights, start,
            max_shift=self.max_shift, max_frequency=self.max_frequency,
        )

