"""H-T align (Xu, Beck & Alber 2012): rotational matching of wedge-constrained Fourier amplitudes, then translation.

The method, as the tomominer core implements it (align.cpp::combined_search; REFERENCE.md "H-T align"):
1. Amplitude spectra |FFT| of particle and reference with the zero frequency removed: they do not depend on the
   translation, so the rotation can be found first. The observed-region weights are squared (they are weights).
2. One spherical shell per voxel, r = 1..N/2. Each shell is expanded in spherical harmonics up to
   L_r = min(sh_degree, the Nyquist degree of a ⌈πr⌉ × ⌈2πr⌉ grid), i.e. about πr, capped at 36 by default. Here the
   expansion is a quadrature on an oversampled Gauss–Legendre grid (exact for band-limited shells) rather than the
   original least-squares fit; samples are trilinear.
3. Three rotational correlations C12 = rot(A1·M1², A2·M2²), C11 = rot(A1²·M1², M2²), C22 = rot(M1², A2²·M2²), summed over
   shells with r² weights (trapezoid rule), by one 3D inverse FFT each on an Euler grid of n ≈ 2L+1 points per angle
   (75³ for L = 36: 4.8° steps); score C12 / sqrt(C11·C22).
4. Every local maximum of the score in its periodic 9³ neighbourhood (n/8 wide, as the original) is a candidate
   rotation (the best 500, which only a blank particle's flat score exceeds; ``max_candidates`` caps it further);
   candidates closer than two grid steps to a better one are dropped (the β ∈ (π, 2π) half of the grid repeats every
   rotation). The grid peak is refined by a quadratic fit (an addition to the original, which keeps grid angles).
5. For each candidate, the translation maximising the wedge-constrained correlation over the overlap of both observed
   regions (gumalign.align.scoring.translation_search, with a sub-voxel peak fit); the best score wins.

Shell samples whose trilinear interpolation reaches into a missing wedge are left out of the matching
(gumalign.baselines.matching.sample_weights): half-observed samples would bias the peak by degrees.
Work done on one reference and its weight (the three shell expansions) is cached across calls. Particles are processed
in batches on CPU or CUDA.

The band sets the cost (issue 17): by default H-T reads every shell up to N/2, its band is the whole box and nothing
is cropped. With ``max_freq`` f only shells r <= f are matched, and the candidates' translation searches of step 5
run on Fourier-cropped copies (M = gumalign.fourier.crop.band_box(N, f) = 4·f voxels, over that box's whole band);
when the box is cropped, the best candidate's shift is then searched again at full sampling over the full band,
keeping the better shift (gumalign.align.scoring.search_or_keep), and the full-band score there is the one reported.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gumalign.align.base import AlignmentResult
from gumalign.baselines._common import (
    BatchedAligner,
    as_batch,
    best_per_particle,
    check_inputs,
    fingerprint,
    odd,
    rows,
    translation_search_chunked,
)
from gumalign.baselines.matching import ShellCoefficients, constrained_score, normalisers, shell_coefficients
from gumalign.baselines.shells import amplitude_spectrum, centred_cube, smooth_zero_frequency
from gumalign.align.scoring import search_or_keep
from gumalign.fourier.crop import band_box, crop_centred, fourier_crop
from gumalign.baselines.so3 import distinct_peaks, euler_grid_size, grid_rotations, local_maxima, refine_peaks


# Local maxima of one particle's score taken further (refined, de-duplicated, translation-searched), best first.
MAX_LOCAL_MAXIMA = 500


def ht_shell_degree(radius: float, sh_degree: int) -> int:
    """The original's degree for a shell: the Nyquist degree of its ⌈πr⌉ × ⌈2πr⌉ grid, capped at ``sh_degree``."""
    n_lat = math.ceil(math.pi * radius)
    n_lon = math.ceil(2 * math.pi * radius)
    return int(max(1, min(math.ceil((n_lon - 1) / 2), n_lat - 1, sh_degree)))


class HTAligner(BatchedAligner):
    """H-T align. See the module docstring for the method.

    Args:
        max_shift: largest shift length in voxels (None: half the box).
        sh_degree: highest spherical-harmonic degree (the seed's 36).
        device: 'auto', 'cpu' or 'cuda'.
        max_candidates: at most this many candidate rotations per particle, best first (None: every local maximum,
            as the original).
        batch_size: particles matched at once (memory grows with it).
        peak_window: width of the local-maximum neighbourhood in grid steps (None: n/8 rounded up to odd, 9 for n=75).
        max_freq: highest shell matched, cycles per box (None: N/2, the original); it also sets the cropped box of
            the translation searches (see the module docstring).
        fourier_crop: False keeps the translation searches at the full box whatever ``max_freq``.
    """

    name = "ht"

    def __init__(
        self,
        max_shift: float | None = None,
        sh_degree: int = 36,
        device: str = "auto",
        max_candidates: int | None = None,
        batch_size: int = 8,
        peak_window: int | None = None,
        max_freq: int | None = None,
        fourier_crop: bool = True,
    ):
        if max_freq is not None and max_freq < 1:
            raise ValueError(f"max_freq must be >= 1, got {max_freq}")
        if sh_degree < 1:
            raise ValueError(f"sh_degree must be >= 1, got {sh_degree}")
        self._init_common(device, batch_size, max_shift, fourier_crop)
        self.sh_degree = int(sh_degree)
        self.max_candidates = max_candidates
        self.peak_window = peak_window
        self.max_freq = None if max_freq is None else int(max_freq)
        self._reference_coeffs: ShellCoefficients | None = None

    # --- set-up per box size -------------------------------------------------------------------------------------
    def _shell_rule(self, n_box: int):
        """Shells 1..N/2 (or max_freq), H-T's degree per shell."""
        top = n_box // 2 if self.max_freq is None else min(self.max_freq, n_box // 2)
        return top, lambda r: ht_shell_degree(r, self.sh_degree)

    def shell_weights(self, n_box: int) -> torch.Tensor:
        """r² with the trapezoid rule's halves at the first and last shell."""
        radii = torch.as_tensor(self.shells(n_box).radii, device=self.device)
        weights = radii**2
        if len(weights) > 1:
            weights[0] /= 2
            weights[-1] /= 2
        return weights

    def working_box(self, n_box: int) -> int:
        """The box the candidates' translation searches run at: band_box(N, max_freq), or N."""
        return band_box(n_box, self.max_freq) if self.fourier_crop else n_box

    def grid_size(self, n_box: int) -> int:
        return euler_grid_size(self.shells(n_box).max_degree)

    # --- the method ----------------------------------------------------------------------------------------------
    def _expand(self, volumes: torch.Tensor, weights: torch.Tensor) -> ShellCoefficients:
        shells = self.shells(volumes.shape[-1])
        amplitudes = smooth_zero_frequency(centred_cube(amplitude_spectrum(volumes), shells.half))
        weight_cubes = centred_cube(weights**2, shells.half)
        return shell_coefficients(shells, amplitudes, weight_cubes)

    def _reference(self, references: torch.Tensor, reference_weights: torch.Tensor) -> ShellCoefficients:
        if references.shape[0] != 1 or reference_weights.shape[0] != 1:
            return self._expand(references, reference_weights)
        key = fingerprint(references, reference_weights)
        if key != self._reference_key:
            self._reference_coeffs = self._expand(references, reference_weights)
            self._reference_key = key
        return self._reference_coeffs

    def rotation_scores(self, references, reference_weights, particles, particle_weights) -> torch.Tensor:
        """The constrained amplitude score on the Euler grid, (B, n, n, n) (grid index -> rotation: grid_rotations)."""
        ref_c = self._reference(references, reference_weights)
        part_c = self._expand(particles, particle_weights)
        n_box = particles.shape[-1]
        sw = self.shell_weights(n_box)
        n = self.grid_size(n_box)
        norm = normalisers(part_c, ref_c, sw, n)
        return constrained_score(part_c.signal, ref_c.signal, norm, sw, n)

    def candidate_rotations(self, scores: torch.Tensor) -> list[np.ndarray]:
        """Candidate rotations (K_b, 3, 3) per particle from the local maxima of the score grid, best first."""
        n = scores.shape[-1]
        window = self.peak_window or odd(n / 8)
        is_max = local_maxima(scores, window)
        batch, i, j, k = torch.nonzero(is_max, as_tuple=True)
        # A flat score (a blank particle) makes every grid point a maximum: keep the best few hundred per particle.
        value = scores[batch, i, j, k]
        order = torch.argsort(value, descending=True, stable=True)
        order = order[torch.argsort(batch[order], stable=True)]  # grouped by particle, best first within each
        first = torch.searchsorted(batch[order], batch[order], right=False)
        order = order[torch.arange(len(order), device=order.device) - first < MAX_LOCAL_MAXIMA]
        batch, index = batch[order], torch.stack([i, j, k], dim=1)[order]
        fine, values = refine_peaks(scores, batch, index)
        rotations = grid_rotations(fine.cpu().numpy(), n)
        values = values.cpu().numpy()
        batch = batch.cpu().numpy()
        step_deg = 360.0 / n
        out = []
        for b in range(scores.shape[0]):
            sel = np.flatnonzero(batch == b)
            keep = distinct_peaks(rotations[sel], values[sel], self.max_candidates, 2 * step_deg)
            out.append(rotations[sel[keep]])
        return out

    def _align_batch(self, refs, ref_w, parts, part_w) -> AlignmentResult:
        with torch.no_grad():
            scores = self.rotation_scores(refs, ref_w, parts, part_w)
            candidates = self.candidate_rotations(scores)
            owner = np.concatenate([np.full(len(c), b) for b, c in enumerate(candidates)])
            rotations = np.concatenate(candidates)
            n_box, size = parts.shape[-1], self.working_box(parts.shape[-1])
            if size == n_box:
                shifts, trans_scores = translation_search_chunked(
                    refs, ref_w, parts, part_w, owner, rotations, self.max_shift
                )
                return best_per_particle(parts.shape[0], owner, rotations, shifts, trans_scores)
            scale = n_box / size  # one voxel of the cropped box is this many of the particle's
            max_shift = None if self.max_shift is None else self.max_shift / scale
            shifts, trans_scores = translation_search_chunked(
                fourier_crop(refs, size), crop_centred(ref_w, size), fourier_crop(parts, size),
                crop_centred(part_w, size), owner, rotations, max_shift,
            )
            winners = best_per_particle(parts.shape[0], owner, rotations, shifts, trans_scores)
            dev = self.device
            final, scores = search_or_keep(
                refs, ref_w, parts, part_w, torch.as_tensor(winners.rotations, dtype=torch.float32, device=dev),
                torch.as_tensor(winners.shifts * scale, dtype=torch.float32, device=dev), self.max_shift,
            )
        return AlignmentResult(rotations=winners.rotations, shifts=final.double().cpu().numpy(),
                               scores=scores.double().cpu().numpy())
