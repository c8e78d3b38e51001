"""The Gum-Net aligner: one forward pass per particle with a trained model (shipped or the user's).

The network estimates, for each (reference, particle) pair, the rigid transform with
``particle ≈ transform_volumes(reference, R, t)``; by construction (gumalign.models.transformer) R is RELION's matrix A
and t the shift (= -origin in pixels), so the result needs no conversion. The reference is s_a (stream 'a'), the
particle s_b (stream 'b'). When one reference serves every particle its features are computed once and cached.
Scores are the wedge-constrained correlation (gumalign.align.scoring) at the estimated transform.
"""

from __future__ import annotations

import hashlib

import numpy as np

from gumalign.align.base import AlignmentResult
from gumalign.errors import GumalignError
from gumalign import weights as registry
from gumalign.weights import DEFAULT_MODEL


def _zscore_torch(volumes):
    mean = volumes.mean(dim=(-3, -2, -1), keepdim=True)
    std = volumes.std(dim=(-3, -2, -1), keepdim=True, unbiased=False)
    return (volumes - mean) / std.clamp_min(1e-12)


class GumNetAligner:
    """Aligns particles to references with a Gum-Net model.

    Args:
        model: a built-in model name, or a `gumalign train --out` directory / .safetensors file.
        device: 'auto', 'cpu', 'cuda' or 'cuda:N'.
        batch_size: particles per forward pass.
        max_shift: longest shift (voxels) to report; longer estimated shifts are scaled back onto this radius.
            None: as the network estimates (at most half the box per axis).
    """

    name = "gumnet"

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "auto", batch_size: int = 32, max_shift=None):
        from gumalign.devices import resolve_device

        if model == DEFAULT_MODEL and DEFAULT_MODEL not in registry.available_models():
            raise GumalignError(
                f"no shipped Gum-Net model {DEFAULT_MODEL!r} is installed yet; train one (scripts/train_shipped.sh, "
                "or `gumalign train ... --out DIR`) and pass --model DIR, or use --method ht or fa"
            )
        if batch_size < 1:
            raise GumalignError(f"batch size must be at least 1, got {batch_size}")
        self.device = resolve_device(device)
        self.model, self.record = registry.load_model(model, self.device)
        self.model_name = str(model)
        self.box = self.model.config.box
        self.batch_size = int(batch_size)
        self.max_shift = None if max_shift is None else float(max_shift)
        self._cache_key: bytes | None = None
        self._cache_features = None

    def _check_box(self, volumes: np.ndarray, what: str) -> None:
        if volumes.ndim != 4 or volumes.shape[1:] != (self.box,) * 3:
            raise GumalignError(
                f"Gum-Net model {self.model_name!r} takes {self.box}³ subtomograms; the {what} are "
                f"{'×'.join(map(str, volumes.shape[1:]))} (rescale or crop them to {self.box}³)"
            )

    def _reference_features(self, reference: np.ndarray):
        """Stream-'a' features of one reference (1, C, 6, 6, 6), cached on the reference's bytes."""
        import torch

        key = hashlib.sha1(np.ascontiguousarray(reference, dtype=np.float32).tobytes()).digest()
        if key != self._cache_key:
            with torch.no_grad():
                ref = _zscore_torch(torch.as_tensor(reference, dtype=torch.float32, device=self.device)[None])
                self._cache_features = self.model.features(ref, "a")
            self._cache_key = key
        return self._cache_features

    def _clamp_shifts(self, shifts):
        """Shifts longer than max_shift scaled back onto that radius (direction kept)."""
        if self.max_shift is None:
            return shifts
        length = shifts.norm(dim=1, keepdim=True)
        return shifts * (self.max_shift / length.clamp_min(self.max_shift)).clamp(max=1.0)

    def align(self, references, reference_weights, particles, particle_weights) -> AlignmentResult:
        """Align each particle to its reference; see gumalign.align.base.Aligner for shapes and conventions."""
        import torch

        from gumalign.align.scoring import constrained_correlation
        from gumalign.models.transformer import params_to_rigid

        references = np.asarray(references, dtype=np.float32)
        particles = np.asarray(particles, dtype=np.float32)
        self._check_box(references, "references")
        self._check_box(particles, "particles")
        n = len(particles)
        if len(references) not in (1, n):
            raise GumalignError(f"{len(references)} references for {n} particles (need 1 or {n})")
        shared = len(references) == 1
        rotations, shifts, scores = [], [], []
        with torch.no_grad():
            for start in range(0, n, self.batch_size):
                stop = min(start + self.batch_size, n)
                parts = torch.as_tensor(particles[start:stop], device=self.device)
                f_b = self.model.features(_zscore_torch(parts), "b")
                if shared:
                    f_a = self._reference_features(references[0]).expand(stop - start, -1, -1, -1, -1)
                    refs = torch.as_tensor(references[:1], device=self.device)
                else:
                    refs = torch.as_tensor(references[start:stop], device=self.device)
                    f_a = self.model.features(_zscore_torch(refs), "a")
                rot, shift = params_to_rigid(self.model.match(f_a, f_b), self.box)
                shift = self._clamp_shifts(shift)
                ref_w = reference_weights if len(reference_weights) == 1 else reference_weights[start:stop]
                part_w = particle_weights if len(particle_weights) == 1 else particle_weights[start:stop]
                score = constrained_correlation(
                    refs.expand(stop - start, -1, -1, -1), ref_w, parts, part_w, rot, shift
                )
                rotations.append(rot.double().cpu().numpy())
                shifts.append(shift.double().cpu().numpy())
                scores.append(score.double().cpu().numpy())
        return AlignmentResult(
            rotations=np.concatenate(rotations), shifts=np.concatenate(shifts), scores=np.concatenate(scores)
        )

