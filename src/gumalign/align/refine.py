"""`--refine`: a local search around any method's answer that can only raise the score.

Pattern search on rotations: at each angular step, try the 27 rotations ΔR = exp([δ]×) with δ on a {-step, 0, step}³
grid of rotation vectors applied as A' = ΔR·A, each with a full FFT translation search (gumalign.align.scoring), keep
the best, repeat while it improves, then halve the step. The identity is always a candidate and the starting
transform's own score is the bar to beat, so a particle's score never goes down.

The band sets the cost: with a ``max_frequency`` f the search runs on Fourier-cropped copies of every volume and
weight (M = gumalign.fourier.crop.band_box(N, f) = 4·f voxels, nothing cropped when M >= N). The refined rotation then
gets one translation search at full sampling (same band, keeping the better of it and the cropped shift), and the
result replaces the start only where its full-size score beats the start's, so scores still never go down.
"""

from __future__ import annotations

import numpy as np
import torch

from gumalign.align.base import AlignmentResult
from gumalign.align.scoring import as_tensor, constrained_correlation, search_or_keep, translation_search
from gumalign.fourier import crop as band
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
    fourier_crop: bool = True,
) -> AlignmentResult:
    """Locally refine rotations and shifts, never lowering a particle's constrained correlation.

    Args: as gumalign.align.base.Aligner.align (arrays or tensors; the particles' device is used), plus ``start``
    (the method's answer for these particles), ``max_shift`` (voxels), ``max_frequency`` (cycles per box) and the
    angular ``steps_deg`` schedule; ``fourier_crop``: search at the band's cropped box (module docstring).

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
    box = particles.shape[-1]
    size = band.band_box(box, max_frequency) if fourier_crop else box
    if size == box:
        return _pattern_search(references, reference_weights, particles, particle_weights, rotations, shifts,
                               best_score, max_shift, max_frequency, steps_deg, max_rounds_per_step)
    # The band's box: one voxel there is box/size voxels here.
    scale = box / size
    cropped = [band.fourier_crop(as_tensor(references, device), size),
               band.crop_centred(as_tensor(reference_weights, device), size),
               band.fourier_crop(particles, size), band.crop_centred(as_tensor(particle_weights, device), size)]
    small_shifts = shifts / scale
    small_score = constrained_correlation(*cropped, rotations, small_shifts, **common)
    found = _pattern_search(*cropped, rotations, small_shifts, small_score,
                            None if max_shift is None else max_shift / scale, max_frequency, steps_deg,
                            max_rounds_per_step)
    # Full sampling for the refined rotation's shift; the start stays wherever the result does not beat it.
    new_rot = as_tensor(found.rotations, device)
    new_shift, new_score = search_or_keep(
        references, reference_weights, particles, particle_weights, new_rot, as_tensor(found.shifts, device) * scale,
        max_shift, max_frequency=max_frequency,
    )
    better = new_score > best_score
    return AlignmentResult(
        rotations=torch.where(better[:, None, None], new_rot, rotations).double().cpu().numpy(),
        shifts=torch.where(better[:, None], new_shift, shifts).double().cpu().numpy(),
        scores=torch.where(better, new_score, best_score).double().cpu().numpy(),
    )


def _pattern_search(references, reference_weights, particles, particle_weights, rotations, shifts, best_score,
                    max_shift, max_frequency, steps_deg, max_rounds_per_step) -> AlignmentResult:
    """The pattern search of the module docstring from (rotations, shifts) scoring ``best_score``, on these inputs."""
    device = particles.device
    common = dict(max_frequency=max_frequency)
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
        device: where the refinement runs (the particles are moved there): 'auto', 'cpu', 'cuda[:N]'.
        max_shift: longest shift (voxels) the refinement may reach (None: half the box).
        max_frequency: highest spatial frequency (cycles per box) the refinement's scores use (None: all).
        steps_deg: the angular schedule (None: DEFAULT_STEPS_DEG).
        max_rounds_per_step: at most this many improving rounds per step.
    """

    def __init__(self, base, device="cpu", max_shift: float | None = None, max_frequency: float | None = None,
                 steps_deg: tuple[float, ...] | None = None, max_rounds_per_step: int = 3):
        from gumalign.devices import resolve_device

        self.base = base
        self.device = resolve_device(device)
        self.max_shift = max_shift
        self.max_frequency = max_frequency
        self.steps_deg = tuple(steps_deg) if steps_deg else DEFAULT_STEPS_DEG
        self.max_rounds_per_step = int(max_rounds_per_step)
        self.name = f"{getattr(base, 'name', 'aligner')}+refine"

    def align(self, references, reference_weights, particles, particle_weights, prior=None) -> AlignmentResult:
        start = self.base.align(references, reference_weights, particles, particle_weights, prior=prior)
        volumes = as_tensor(particles, self.device)
        return refine_alignment(
            references, reference_weights, volumes, particle_weights, start,
            max_shift=self.max_shift, max_frequency=self.max_frequency, steps_deg=self.steps_deg,
            max_rounds_per_step=self.max_rounds_per_step,
        )


class LocalAligner:
    """The local search alone (``--method local``), started from each particle's prior pose: the STAR file's
    orientation in `align`, the previous round's in `average --iterations` (`cluster` gives none). Without a prior
    it starts at the identity and zero shift, so it only finds poses near the reference's.

    Args: as :class:`RefiningAligner` without ``base``; ``batch_size`` is accepted for the aligner specification
    (the search itself runs on whatever batch it is given).
    """

    name = "local"

    def __init__(self, device="auto", max_shift: float | None = None, max_frequency: float | None = None,
                 steps_deg: tuple[float, ...] | None = None, max_rounds_per_step: int = 3, batch_size: int = 32):
        from gumalign.devices import resolve_device

        self.device = resolve_device(device)
        self.max_shift = max_shift
        self.max_frequency = max_frequency
        self.steps_deg = tuple(steps_deg) if steps_deg else DEFAULT_STEPS_DEG
        self.max_rounds_per_step = int(max_rounds_per_step)
        self.batch_size = int(batch_size)

    def align(self, references, reference_weights, particles, particle_weights, prior=None) -> AlignmentResult:
        volumes = as_tensor(particles, self.device)
        count = volumes.shape[0]
        if prior is None:
            prior = AlignmentResult(np.tile(np.eye(3), (count, 1, 1)), np.zeros((count, 3)), np.zeros(count))
        elif len(prior) != count:
            raise ValueError(f"prior has {len(prior)} poses for {count} particles")
        return refine_alignment(
            references, reference_weights, volumes, particle_weights, prior,
            max_shift=self.max_shift, max_frequency=self.max_frequency, steps_deg=self.steps_deg,
            max_rounds_per_step=self.max_rounds_per_step,
        )
