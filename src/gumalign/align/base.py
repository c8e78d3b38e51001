"""The aligner interface every method (gumnet, ht, fa) implements.

An aligner finds, for each particle, the rigid transform that carries its reference onto it:
``particle ≈ transform_volumes(reference, rotations[i], shifts[i])`` (see gumalign.geometry.transform), where
``rotations[i]`` is RELION's matrix A and ``shifts[i]`` = -origin in pixels, (x, y, z). Weights are observed-region
weights in the centred N³ layout (RELION's rlnCtfImage cube), 1 observed and 0 missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class AlignmentResult:
    """What an aligner returns for a batch of B particles.

    Attributes:
        rotations: (B, 3, 3) float64 RELION matrices A (rotate the reference into the particle).
        shifts: (B, 3) float64 shifts in voxels, (x, y, z), applied after the rotation (= -RELION origin in pixels).
        scores: (B,) float64 wedge-constrained correlation of particle and transformed reference (higher is better).
    """

    rotations: np.ndarray
    shifts: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def concatenate(results: list["AlignmentResult"]) -> "AlignmentResult":
        return AlignmentResult(
            rotations=np.concatenate([r.rotations for r in results]),
            shifts=np.concatenate([r.shifts for r in results]),
            scores=np.concatenate([r.scores for r in results]),
        )


class Aligner(Protocol):
    """One alignment method. Implementations are constructed with their options (device, max shift, ...)."""

    name: str

    def align(
        self,
        references: np.ndarray,
        reference_weights: np.ndarray,
        particles: np.ndarray,
        particle_weights: np.ndarray,
        prior: "AlignmentResult | None" = None,
    ) -> AlignmentResult:
        """Align each particle to its reference.

        Args:
            references: (B, N, N, N) or (1, N, N, N) float32 [z, y, x]; one reference broadcasts to every particle
                (an implementation may cache work done on it across calls).
            reference_weights: (B, N, N, N) or (1, N, N, N) centred observed-region weights of the references.
            particles: (B, N, N, N) float32 [z, y, x].
            particle_weights: (B, N, N, N) or (1, N, N, N) centred observed-region weights of the particles.
            prior: B known poses (rotations A, shifts = -origin px; scores unused) a local search starts from; the
                global methods (gumnet, ht, fa) search all of SO(3) and ignore it; 'local' starts there (None: the
                identity and zero shift).

        Returns:
            An AlignmentResult with B rows.
        """
        ...
