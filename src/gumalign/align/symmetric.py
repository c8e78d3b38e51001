"""`--sym G`: any aligner on a point-group-symmetric reference, answering in the asymmetric unit.

For a reference with point group G, the orientations A and A·S (S in G) make the same particle
(gumalign.geometry.symmetry). The wrapped method aligns each particle to the reference symmetrised over G (the mean
of its rotated transforms, gumalign.fourier.symmetrise.symmetrise_map, cached per reference), so every mate of the
right answer scores the same, and the rotation it returns is replaced by the mate in gumalign's asymmetric unit
closest to the particle's prior (the identity when there is none): the same orientation, written once, so a D7
particle's 14 equivalent answers are one answer. Shifts and scores are unchanged by the choice of mate (the
operators fix the box centre).

C1 is the identity: the method itself, untouched.
"""

from __future__ import annotations

import hashlib

import numpy as np

from gumalign.align.base import AlignmentResult


class SymmetricAligner:
    """``base`` on symmetrised references, its rotations mapped to the asymmetric unit of ``group``.

    Args:
        base: an object with the gumalign.align.base.Aligner ``align`` method.
        group: a point group name (C1, Cn, Dn, T, O, I, I1..I4; RELION's axes).
    """

    def __init__(self, base, group: str):
        from gumalign.geometry.symmetry import operators, parse_group

        self.base = base
        self.group = parse_group(group)
        self.operators = operators(self.group)
        self.name = f"{getattr(base, 'name', 'aligner')} ({self.group})"
        self._cache: tuple[bytes, np.ndarray] | None = None

    def _symmetrised(self, references: np.ndarray) -> np.ndarray:
        """(B or 1, N, N, N) references averaged over the group (one shared reference is done once)."""
        from gumalign.fourier.symmetrise import symmetrise_map

        refs = np.ascontiguousarray(references, dtype=np.float32)
        key = hashlib.sha1(refs.tobytes()).digest()
        if self._cache is None or self._cache[0] != key:
            # In Fourier space: a real-space mean of trilinear copies low-passes the reference (and --refine, which
            # reads its high frequencies, then loses a shell or two of the average's resolution).
            self._cache = (key, symmetrise_map(refs, self.operators).cpu().numpy())
        return self._cache[1]

    def align(self, references, reference_weights, particles, particle_weights, prior=None) -> AlignmentResult:
        from gumalign.geometry.symmetry import asymmetric_unit_mate

        refs = np.asarray(references.detach().cpu() if hasattr(references, "detach") else references)
        result = self.base.align(self._symmetrised(refs), reference_weights, particles, particle_weights, prior=prior)
        near = None if prior is None else np.asarray(prior.rotations, dtype=np.float64)
        rotations = asymmetric_unit_mate(result.rotations, self.operators, prior=near)
        return AlignmentResult(rotations=rotations, shifts=result.shifts, scores=result.scores)
