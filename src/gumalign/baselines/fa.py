"""F&A align (Chen et al. 2013; PyTom's frm_align): constrained fast rotational matching with alternating refinement.

The method, as PyTom pytomc/sh_alignment/frm.py implements it (REFERENCE.md "F&A align"):
1. Each volume gets its own observed-region weight applied and a sphere mask of radius N/2.
2. Shells r = 1..max_freq of the spectrum (phase origin at the box centre), each expanded in spherical harmonics with
   bandwidth bw_r = clamp(2^⌈log2(2r)⌉, *bandwidth), i.e. degrees < bw_r; shells are summed with r² weights. (PyTom
   upsamples its Euler-grid sums when bw doubles; here all shells are summed as coefficients, which is exact.)
3. Coarse stage on amplitudes: the wedge-constrained score num / sqrt(den1·den2) with num = FRM(|f|·mf, |g|·mg),
   den1 = FRM(|f|²·mf, mg), den2 = FRM(mf, |g|²·mg); its best ``num_seeds`` peaks at least 11.25° apart (PyTom's
   distance cut, bw/16 in bandwidth units) are the seeds.
4. Per seed, up to ``max_iterations`` rounds: rotate the reference, find the translation maximising the
   wedge-constrained correlation low-passed to max_freq within ``max_shift`` (gumalign.align.scoring.translation_search,
   with a sub-voxel peak fit), keep the best (rotation, position) so far; stop once that position moves by at most one
   voxel, else shift the particle back by it and take the global peak of the complex constrained FRM
   num = FRM(f·mf, g·mg) (same denominators) as the next rotation, with quadratic interpolation of the peak.
5. The best seed wins. Seeds are compared by the score this aligner reports, the wedge-constrained correlation over
   the full band at their answer (gumalign.align.scoring.constrained_correlation, comparable across methods), where
   PyTom compares the low-passed one: on smooth references the low-passed score is nearly flat along a valley where
   a rotation error is traded for a shift.

The Euler grid has PyTom's (2·bw)³ points by default (32³, 11.25° steps, for max_freq 8); peaks are refined by the
quadratic fit. (48³ and 64³ grids gave the same accuracy on simulated particles.)
Shell samples whose trilinear interpolation reaches into a missing wedge are left out of the matching
(gumalign.baselines.matching.sample_weights), as are the zero frequencies (gumalign.baselines.shells).
Work on one reference (preprocessing, spectra, shell expansions) is cached across calls; particles are processed in
batches, all seeds of a batch iterating together, on CPU or CUDA.

The band sets the cost (issue 17). Everything above reads frequencies up to max_freq only, so it runs on
Fourier-cropped volumes of M = gumalign.fourier.crop.band_box(N, max_freq) = 4·max_freq voxels (32 for the default 8:
a 128³ particle is matched and searched at 32³; a 32³ particle is not cropped, and its results are the uncropped
method's). Steps 1–4 then work in the cropped box (wedge, sphere of radius M/2, spectra, translation searches within
max_shift·M/N, convergence when a position moves by at most one cropped voxel). When the box is cropped, step 5
compares the seeds by the constrained correlation over the cropped box's whole band (|k| < M/2 = 2·max_freq, which
at M = N is the full band), and the winner's shift is found again by an FFT search at the box F =
band_box(N, 2·max_freq) = 8·max_freq (64 for the default 8; the full box when N <= F), keeping the better of the two
shifts (gumalign.align.scoring.search_or_keep). F holds twice the method's band, so shifts there are as precise as
the band can make them (sub-voxel in F, a fraction of the band's resolution element), and the score reported is the
constrained correlation over |k| < 2·max_freq cycles per box: the whole band of a 32³ particle, the same band at
every box, so scores (and `cluster`'s distances) do not depend on the box size. Cost per particle: the cropped work
plus one Fourier crop of the particle and one F³ rotation and search for the winning seed (at 128³ with the default
band, a 64³ search instead of a 128³ one: 8x fewer voxels to rotate).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gumalign.align.base import AlignmentResult
from gumalign.align.scoring import constrained_correlation, search_or_keep
from gumalign.baselines._common import (
    BatchedAligner,
    as_batch,
    best_per_particle,
    check_inputs,
    fingerprint,
    gather,
    rows,
    sphere_mask,
    translation_search_chunked,
    wedge_filter,
)
from gumalign.baselines.matching import (
    constrained_score,
    normalisers,
    shell_coefficients,
    signal_coefficients,
)
from gumalign.baselines.shells import (
    centred_cube,
    centred_spectrum,
    shell_phase_ramp,
    smooth_zero_frequency,
)
from gumalign.fourier.crop import band_box, crop_centred, fourier_crop
from gumalign.baselines.so3 import distinct_peaks, euler_grid_size, grid_rotations, local_maxima, refine_peaks

SEED_SEPARATION_DEG = 11.25


def adaptive_bandwidth(radius: int, bandwidth: tuple[int, int]) -> int:
    """PyTom's get_adaptive_bw: 2^⌈log2(2r)⌉ clamped to [b_min, b_max]."""
    b_min, b_max = bandwidth
    bw = 2 ** int(math.ceil(math.log2(2 * radius)))
    return int(min(max(bw, b_min), b_max))


class _Prepared:
    """One batch of volumes ready for matching: filtered volumes, spectra cube, weights cube, coefficients."""

    def __init__(self, volumes, weights, spectra_cube, weight_cube, amplitude_coeffs, signal_coeffs):
        # volumes and weights at the working box (the Fourier-cropped one when the band allows it)
        self.volumes = volumes
        self.weights = weights
        self.spectra_cube = spectra_cube
        self.weight_cube = weight_cube
        self.amplitude = amplitude_coeffs
        self.signal = signal_coeffs


class FAAligner(BatchedAligner):
    """F&A align. See the module docstring for the method.

    Args:
        max_shift: largest shift length in voxels (the seed's 16; None: half the box).
        max_freq: highest Fourier shell used, cycles per box (the seed's 8).
        bandwidth: (b_min, b_max) of the per-shell harmonic bandwidth (PyTom's [4, 64]).
        device: 'auto', 'cpu' or 'cuda'.
        num_seeds: coarse orientations refined per particle (PyTom's 5).
        max_iterations: alternations per seed (PyTom's 10).
        euler_grid: minimum Euler grid size per angle (None: 2·bw of the outermost shell, as PyTom).
        batch_size: particles matched at once.
        fourier_crop: work at the Fourier-cropped box the band needs (see the module docstring); False: at the full
            box whatever the band (the method before issue 17, for comparison).
    """

    name = "fa"

    def __init__(
        self,
        max_shift: float | None = 16,
        max_freq: int = 8,
        bandwidth: tuple[int, int] = (4, 64),
        device: str = "auto",
        num_seeds: int = 5,
        max_iterations: int = 10,
        euler_grid: int | None = None,
        batch_size: int = 8,
        fourier_crop: bool = True,
    ):
        if max_freq < 1:
            raise ValueError(f"max_freq must be >= 1, got {max_freq}")
        if not (1 <= bandwidth[0] <= bandwidth[1]):
            raise ValueError(f"bandwidth must be (b_min, b_max) with 1 <= b_min <= b_max, got {bandwidth}")
        self._init_common(device, batch_size, max_shift, fourier_crop)
        self.max_freq = int(max_freq)
        self.bandwidth = (int(bandwidth[0]), int(bandwidth[1]))
        self.num_seeds = int(num_seeds)
        self.max_iterations = int(max_iterations)
        self.euler_grid = euler_grid
        self._reference: _Prepared | None = None

    # --- set-up per box size -------------------------------------------------------------------------------------
    def _shell_rule(self, n_box: int):
        """Shells 1..min(max_freq, N/2), PyTom's adaptive bandwidth per shell."""
        bandwidth = self.bandwidth
        return min(self.max_freq, n_box // 2), lambda r: adaptive_bandwidth(int(r), bandwidth) - 1

    def shell_weights(self, n_box: int) -> torch.Tensor:
        return torch.as_tensor(self.shells(n_box).radii, device=self.device) ** 2

    def working_box(self, n_box: int) -> int:
        """The box the method works at: band_box(N, max_freq), or N without ``fourier_crop``."""
        return band_box(n_box, self.max_freq) if self.fourier_crop else n_box

    def final_box(self, n_box: int) -> int:
        """The box of the winner's last shift search and score: band_box(N, 2·max_freq), or N without
        ``fourier_crop`` (module docstring)."""
        return band_box(n_box, 2 * self.max_freq) if self.fourier_crop else n_box

    def grid_size(self, n_box: int) -> int:
        shells = self.shells(n_box)
        minimum = self.euler_grid if self.euler_grid is not None else 2 * (shells.max_degree + 1)
        return euler_grid_size(shells.max_degree, minimum)

    # --- the method ----------------------------------------------------------------------------------------------
    def _prepare(self, volumes: torch.Tensor, weights: torch.Tensor, with_signal: bool) -> _Prepared:
        n_box = self.working_box(volumes.shape[-1])
        shells = self.shells(n_box)
        if n_box != volumes.shape[-1]:  # the band's box: crop spectra and weights, then work there
            volumes, weights = fourier_crop(volumes, n_box), crop_centred(weights, n_box)
        filtered = wedge_filter(volumes, weights) * sphere_mask(n_box, n_box / 2, volumes.device)
        spectra = smooth_zero_frequency(centred_cube(centred_spectrum(filtered), shells.half))
        weight_cube = centred_cube(weights, shells.half)
        amplitude = shell_coefficients(shells, spectra.abs(), weight_cube)
        signal = signal_coefficients(shells, spectra, weight_cube) if with_signal else None
        return _Prepared(filtered, weights, spectra, weight_cube, amplitude, signal)

    def _prepared_reference(self, references, reference_weights) -> _Prepared:
        if references.shape[0] != 1 or reference_weights.shape[0] != 1:
            return self._prepare(references, reference_weights, with_signal=True)
        key = fingerprint(references, reference_weights)
        if key != self._reference_key:
            self._reference = self._prepare(references, reference_weights, with_signal=True)
            self._reference_key = key
        return self._reference

    def _seeds(self, scores: torch.Tensor) -> list[np.ndarray]:
        """Up to num_seeds rotations per particle from the coarse score grid, best first, 11.25° apart at least."""
        n = scores.shape[-1]
        batch, i, j, k = torch.nonzero(local_maxima(scores, 3), as_tuple=True)
        fine, values = refine_peaks(scores, batch, torch.stack([i, j, k], dim=1))
        rotations = grid_rotations(fine.cpu().numpy(), n)
        values, batch = values.cpu().numpy(), batch.cpu().numpy()
        out = []
        for b in range(scores.shape[0]):
            sel = np.flatnonzero(batch == b)
            out.append(rotations[sel[distinct_peaks(rotations[sel], values[sel], self.num_seeds, SEED_SEPARATION_DEG)]])
        return out

    def _complex_peak(self, particle: _Prepared, reference: _Prepared, normaliser, owner, positions) -> np.ndarray:
        """Global peak of the complex constrained FRM after moving each particle back by its position."""
        n_box = particle.volumes.shape[-1]
        shells = self.shells(n_box)
        owner_t = torch.as_tensor(owner, device=self.device)
        ramp = shell_phase_ramp(shells.half, torch.as_tensor(positions, device=self.device), n_box)
        shifted = particle.spectra_cube[owner_t] * ramp
        signal = signal_coefficients(shells, shifted, gather(particle.weight_cube, owner_t))
        n = self.grid_size(n_box)
        scores = constrained_score(signal, gather(reference.signal, owner_t), gather(normaliser, owner_t),
                                   self.shell_weights(n_box), n)
        flat = scores.flatten(1).argmax(dim=1)
        index = torch.stack([flat // (n * n), (flat // n) % n, flat % n], dim=1)
        fine, _ = refine_peaks(scores, torch.arange(len(owner), device=self.device), index)
        return grid_rotations(fine.cpu().numpy(), n)

    def _align_batch(self, refs, ref_w, parts, part_w) -> AlignmentResult:
        """Large boxes are first Fourier-cropped to the final search's box (one FFT of each full-size particle; the
        working box is then cropped from that), and the shifts scaled back to the particles' voxels."""
        n_box = parts.shape[-1]
        final = self.final_box(n_box)
        if final == n_box:
            return self._align_at(refs, ref_w, parts, part_w, self.max_shift)
        scale = n_box / final  # particle voxels per voxel of the final box
        with torch.no_grad():
            cropped = (fourier_crop(refs, final), crop_centred(ref_w, final), fourier_crop(parts, final),
                       crop_centred(part_w, final))
        result = self._align_at(*cropped, None if self.max_shift is None else self.max_shift / scale)
        return AlignmentResult(rotations=result.rotations, shifts=result.shifts * scale, scores=result.scores)

    def _align_at(self, refs, ref_w, parts, part_w, max_shift: float | None) -> AlignmentResult:
        """F&A on volumes at most as large as the final box (shifts in their voxels, within ``max_shift`` of them)."""
        with torch.no_grad():
            n_box = parts.shape[-1]
            reference = self._prepared_reference(refs, ref_w)
            particle = self._prepare(parts, part_w, with_signal=False)
            sw = self.shell_weights(self.working_box(n_box))
            n = self.grid_size(self.working_box(n_box))
            normaliser = normalisers(particle.amplitude, reference.amplitude, sw, n)
            coarse = constrained_score(particle.amplitude.signal, reference.amplitude.signal, normaliser, sw, n)
            seeds = self._seeds(coarse)
            owner = np.concatenate([np.full(len(s), b) for b, s in enumerate(seeds)])
            orientation = np.concatenate(seeds)
            best_rot, best_pos, best_val = self._iterate(particle, reference, normaliser, owner, orientation, n_box,
                                                         max_shift)

            owner_t = torch.as_tensor(owner, device=self.device)
            if self.working_box(n_box) == n_box:
                # Each seed's answer is scored over the full band, the score reported, and the best seed wins.
                full_band = constrained_correlation(
                    gather(refs, owner_t), gather(ref_w, owner_t), parts[owner_t], gather(part_w, owner_t),
                    torch.as_tensor(best_rot, dtype=torch.float32, device=self.device),
                    torch.as_tensor(best_pos, dtype=torch.float32, device=self.device),
                ).double().cpu().numpy()
                return best_per_particle(parts.shape[0], owner, best_rot, best_pos, full_band)
            # Cropped: the seeds compete over the cropped box's whole band; the winner's shift is searched again
            # at full sampling over the full band (kept only where it scores better).
            working_band = constrained_correlation(
                gather(reference.volumes, owner_t), gather(reference.weights, owner_t), particle.volumes[owner_t],
                gather(particle.weights, owner_t),
                torch.as_tensor(best_rot, dtype=torch.float32, device=self.device),
                torch.as_tensor(best_pos, dtype=torch.float32, device=self.device),
            ).double().cpu().numpy()
            winners = best_per_particle(parts.shape[0], owner, best_rot, best_pos, working_band)
            shifts, scores = search_or_keep(
                refs, ref_w, parts, part_w, torch.as_tensor(winners.rotations, dtype=torch.float32, device=self.device),
                torch.as_tensor(winners.shifts * (n_box / self.working_box(n_box)), dtype=torch.float32,
                                device=self.device),
                max_shift,
            )
        return AlignmentResult(rotations=winners.rotations, shifts=shifts.double().cpu().numpy(),
                               scores=scores.double().cpu().numpy())

    def _iterate(self, particle: _Prepared, reference: _Prepared, normaliser, owner, orientation, box: int,
                 max_shift: float | None):
        """PyTom's alternation for every seed at once; returns the best (rotation, position, score) of each seed.

        Positions are in voxels of the working box (particle.volumes), ``box`` is the particles' own box N and
        ``max_shift`` is in its voxels.
        """
        count = len(owner)
        best_rot = orientation.copy()
        best_pos = np.zeros((count, 3))
        best_val = np.full(count, -np.inf)
        old_pos = np.full((count, 3), np.nan)
        active = np.ones(count, dtype=bool)
        n_box = particle.volumes.shape[-1]
        if max_shift is not None and n_box != box:  # a voxel of the working box is N/M of the particle's
            max_shift = max_shift * n_box / box
        for iteration in range(self.max_iterations):
            idx = np.flatnonzero(active)
            if idx.size == 0:
                break
            pos, val = translation_search_chunked(
                reference.volumes, reference.weights, particle.volumes, particle.weights, owner[idx],
                orientation[idx], max_shift, max_frequency=self.max_freq,
            )
            better = val > best_val[idx]
            best_rot[idx[better]] = orientation[idx[better]]
            best_pos[idx[better]] = pos[better]
            best_val[idx[better]] = val[better]
            moved = np.linalg.norm(best_pos[idx] - old_pos[idx], axis=1)
            converged = np.nan_to_num(moved, nan=np.inf) <= 1.0
            active[idx[converged]] = False
            old_pos[idx] = best_pos[idx]
            still = idx[~converged]
            if still.size == 0 or iteration == self.max_iterations - 1:
                break
            orientation[still] = self._complex_peak(particle, reference, normaliser, owner[still], best_pos[still])
        return best_rot, best_pos, best_val
