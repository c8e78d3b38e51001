"""What the two baseline aligners share: input checks, devices, content hashes, candidate translation search."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from gumalign.align.base import AlignmentResult
from gumalign.align.scoring import translation_search
from gumalign.devices import resolve_device
from gumalign.errors import GumalignError


def as_batch(array, device: torch.device, what: str) -> torch.Tensor:
    """(B, N, N, N) or (N, N, N) numpy/torch -> float32 (B, N, N, N) tensor on ``device``."""
    tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
    tensor = tensor.to(device=device, dtype=torch.float32)
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4 or not (tensor.shape[1] == tensor.shape[2] == tensor.shape[3]):
        raise GumalignError(f"{what} must be cubic volumes (B, N, N, N), got shape {tuple(tensor.shape)}")
    return tensor


def check_inputs(references, reference_weights, particles, particle_weights) -> None:
    """Box sizes agree and every batch is 1 or the particles' B."""
    n_box = particles.shape[-1]
    batch = particles.shape[0]
    for name, t in (("references", references), ("reference weights", reference_weights),
                    ("particle weights", particle_weights)):
        if t.shape[-1] != n_box:
            raise GumalignError(f"{name} have box {t.shape[-1]} but the particles have box {n_box}")
        if t.shape[0] not in (1, batch):
            raise GumalignError(f"{name} must number 1 or {batch} (one per particle), got {t.shape[0]}")


def rows(tensor: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows start:stop of a batch, or the single row of a broadcast batch of one."""
    return tensor if tensor.shape[0] == 1 else tensor[start:stop]


def gather(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` of a batch, or the single row of a broadcast batch of one."""
    return tensor if tensor.shape[0] == 1 else tensor[index]


def fingerprint(*tensors: torch.Tensor) -> str:
    """A content hash, so a cached reference expansion is reused only for the very same reference and weight."""
    digest = hashlib.blake2b(digest_size=16)
    for t in tensors:
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def odd(value: float) -> int:
    """The odd integer at or above ``value`` (at least 3): window widths for peak finding."""
    v = max(3, int(math.ceil(value)))
    return v if v % 2 else v + 1


def wedge_filter(volumes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Multiply each volume's spectrum by its centred observed-region weight (weights (B or 1, N, N, N))."""
    dims = (-3, -2, -1)
    spectrum = torch.fft.fftn(volumes, dim=dims) * torch.fft.ifftshift(weights, dim=dims)
    return torch.fft.ifftn(spectrum, dim=dims).real


def sphere_mask(n_box: int, radius: float, device) -> torch.Tensor:
    """(N, N, N) float32: 1 within ``radius`` voxels of the box centre N // 2, else 0."""
    c = torch.arange(n_box, device=device, dtype=torch.float32) - n_box // 2
    r2 = c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2
    return (r2 <= radius**2).float()


def translation_search_chunked(refs, ref_w, parts, part_w, owner, rotations, max_shift, max_frequency=None,
                               chunk: int = 64):
    """translation_search for candidate rotations (K, 3, 3) numpy; candidate i belongs to particle owner[i].

    Returns (K, 3) float64 shifts and (K,) float64 scores, numpy.
    """
    shifts, scores = [], []
    owner_t = torch.as_tensor(owner, device=parts.device)
    rot_t = torch.as_tensor(rotations, dtype=torch.float32, device=parts.device)
    for start in range(0, len(owner), chunk):
        idx = owner_t[start : start + chunk]
        s, v = translation_search(gather(refs, idx), gather(ref_w, idx), parts[idx], gather(part_w, idx),
                                  rot_t[start : start + chunk], max_shift, max_frequency=max_frequency)
        shifts.append(s.double().cpu())
        scores.append(v.double().cpu())
    return torch.cat(shifts).numpy(), torch.cat(scores).numpy()


def best_per_particle(n_particles, owner, rotations, shifts, scores) -> AlignmentResult:
    """The best-scoring candidate of each particle (owner[i]: the particle of candidate i)."""
    best = np.array([np.flatnonzero(owner == b)[np.argmax(scores[owner == b])] for b in range(n_particles)])
    return AlignmentResult(rotations=rotations[best], shifts=shifts[best], scores=scores[best])


class BatchedAligner:
    """What both baselines share: their common settings, the Fourier shells per box size (cached), and Aligner.align
    (check inputs, then ``_align_batch`` over chunks of ``batch_size``).

    Subclasses call :meth:`_init_common` and implement ``_shell_rule(n_box) -> (top shell, degree of shell r)`` and
    ``_align_batch(refs, ref_w, parts, part_w)`` on (B or 1, N, N, N) tensors.
    """

    device: torch.device
    batch_size: int

    def _init_common(self, device, batch_size: int, max_shift: float | None, fourier_crop: bool) -> None:
        self.max_shift = max_shift
        self.device = resolve_device(str(device))  # 'auto' | 'cpu' | 'cuda[:N]' or a torch.device
        self.batch_size = int(batch_size)
        self.fourier_crop = bool(fourier_crop)
        self._shells = {}
        self._reference_key: str | None = None

    def shells(self, n_box: int):
        """The method's gumalign.baselines.shells.FourierShells for an N³ box (built once per box size)."""
        from gumalign.baselines.shells import FourierShells

        if n_box not in self._shells:
            self._shells[n_box] = FourierShells.integer_radii(*self._shell_rule(n_box))
        return self._shells[n_box]

    def _shell_rule(self, n_box: int):
        raise NotImplementedError

    def align(self, references, reference_weights, particles, particle_weights, prior=None) -> AlignmentResult:
        """Align each particle to its reference (gumalign.align.base.Aligner).

        Returns rotations A (RELION, reference -> particle), shifts (x, y, z) voxels and the wedge-constrained
        correlation at that transform, such that particle ≈ transform_volumes(reference, A, shift).
        """
        refs = as_batch(references, self.device, "references")
        ref_w = as_batch(reference_weights, self.device, "reference weights")
        parts = as_batch(particles, self.device, "particles")
        part_w = as_batch(particle_weights, self.device, "particle weights")
        check_inputs(refs, ref_w, parts, part_w)
        results = []
        for start in range(0, parts.shape[0], self.batch_size):
            stop = min(start + self.batch_size, parts.shape[0])
            results.append(self._align_batch(rows(refs, start, stop), rows(ref_w, start, stop), parts[start:stop],
                                             rows(part_w, start, stop)))
        return AlignmentResult.concatenate(results)

    def _align_batch(self, refs, ref_w, parts, part_w) -> AlignmentResult:
        raise NotImplementedError
