"""The Gum-Net aligner: one forward pass per particle with a trained model (shipped or the user's).

The network estimates, for each (reference, particle) pair, the rigid transform with
``particle ≈ transform_volumes(reference, R, t)``; by construction (gumalign.models.transformer) R is RELION's matrix A
and t the shift (= -origin in pixels), so the result needs no conversion. The reference is s_a (stream 'a'), the
particle s_b (stream 'b'). When one reference serves every particle its features are computed once and cached.
Scores are the wedge-constrained correlation (gumalign.align.scoring) at the estimated transform.

Multi-start: a model trained on pairs whose relative rotation stays within 50° (``gumalign train --max-angle 50``,
the shipped recipe) is run against the reference pre-rotated by each of the 60 rotations of the icosahedral group,
whose 44.3° covering radius leaves every orientation within the model's range of one start S. The network estimates
the residual rotation R of each start; the candidate rotation is R·S, its shift the better (by constrained
correlation) of the network's and the FFT translation search's for that rotation, and the best candidate wins.
A polish pass then re-centres each particle by its shift and runs the network once more from the winning rotation,
where it is in its training regime (near-identity residual, small shift); its answer is kept where it scores higher.
This is our deviation from the seed's single pass: a compact network trained on a CPU budget cannot learn all of
SO(3), but it learns a 50° neighbourhood well, and 60 cheap matching passes (the particle's features are computed
once) cover the rest.

One pass (models with a full-SO(3) head, ``config.one_pass``: gumnet-so3, gumnet-so3-mh; issue 13): one forward pass
per particle against the cached reference features gives K scored rotation hypotheses; the ``hypotheses`` (k <= 4)
best-scored ones each get one FFT translation search (gumalign.align.scoring.translation_search, all k·B in one
batched call), the best constrained correlation wins, then the polish pass as above. No start loop.
"""

from __future__ import annotations

import hashlib

import numpy as np

from gumalign.align.base import AlignmentResult
from gumalign.errors import GumalignError
from gumalign import weights as registry
from gumalign.models.inputs import zscore
from gumalign.weights import DEFAULT_MODEL


class GumNetAligner:
    """Aligns particles to references with a Gum-Net model.

    Args:
        model: a built-in model name, or a `gumalign train --out` directory / .safetensors file.
        device: 'auto', 'cpu', 'cuda' or 'cuda:N'.
        batch_size: particles per forward pass.
        max_shift: longest shift (voxels) to report; longer estimated shifts are scaled back onto this radius.
            None: as the network estimates (at most half the box per axis).
        starts: 'auto', 'icosahedral' or 'none' (see :meth:`_start_rotations`).
        polish: extra passes after the best start: the particle is re-centred by the shift found so far and the
            network estimates the residual rotation from the current one, which puts it back in its training regime
            (relative rotations near the identity, small shifts); kept only where the score rises.
        hypotheses: for one-pass models, how many of the best-scored hypotheses get an FFT translation search
            (1..4; more cost one FFT search each per particle).
        voxel_size: the particles' voxel size in Å (None: the model's). Particles of another box or voxel size are
            brought to the model's sampling (gumalign.fourier.resample), the network runs there, and each answer's
            shift is mapped back and searched again at the particles' own sampling, where its score is taken.
    """

    name = "gumnet"

    def __init__(
        self, model: str = DEFAULT_MODEL, device: str = "auto", batch_size: int = 32, max_shift=None,
        starts: str = "auto",
        polish: int = 1,
        hypotheses: int = 4,
        voxel_size: float | None = None,
    ):
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
        self._box_max_shift = self.max_shift  # in the model box's voxels (differs when particles are resampled)
        self.voxel_size = None if voxel_size is None else float(voxel_size)
        self.model_voxel_size = float(self.record.get("voxel_size") or 0.0) or None
        self.starts = self._start_rotations(starts)
        if polish < 0:
            raise GumalignError(f"polish passes must be 0 or more, got {polish}")
        self.polish = int(polish)
        if not 1 <= int(hypotheses) <= 4:
            raise GumalignError(f"hypotheses must be 1 to 4, got {hypotheses}")
        self.hypotheses = min(int(hypotheses), int(self.model.config.n_anchors)) if self.one_pass else 1
        self._cache_key: bytes | None = None
        self._cache_features = None

    def _start_rotations(self, starts: str):
        """(S, 3, 3) start rotations: 'icosahedral' (60), 'none' (identity), or 'auto' (icosahedral when the model
        was trained on pairs with a bounded relative rotation)."""
        import torch
        from scipy.spatial.transform import Rotation

        if self.one_pass:
            if starts not in ("auto", "none"):
                raise GumalignError(f"a one-pass model ({self.model.config.arch}) runs without starts, not {starts!r}")
            starts = "none"
        if starts == "auto":
            local = self.model.config.rotation == "rotvec" or _trained_with_max_angle(self.record)
            starts = "icosahedral" if local else "none"
        if starts == "none":
            matrices = np.eye(3)[None]
        elif starts == "icosahedral":
            matrices = Rotation.create_group("I").as_matrix()
            identity_first = np.argsort(np.linalg.norm(matrices - np.eye(3), axis=(1, 2)), kind="stable")
            matrices = matrices[identity_first]
        else:
            raise GumalignError(f"unknown Gum-Net start set {starts!r}; choose auto, icosahedral or none")
        return torch.as_tensor(matrices, dtype=torch.float32, device=self.device)

    @property
    def one_pass(self) -> bool:
        """Whether the model answers any rotation in one pass (a full-SO(3) hypothesis head)."""
        return bool(getattr(self.model.config, "one_pass", False))

    def _top_hypotheses(self, f_a, f_b, refs, ref_w, parts, part_w):
        """One pass of a full-SO(3) head: the k best-scored hypotheses of every particle, one FFT translation search
        each (one batched call for all k·B), the best constrained correlation wins.

        Args: f_a (B or 1, C, 6, 6, 6) reference features, f_b (B, C, 6, 6, 6) particle features; volumes and
        weights as in :meth:`align`.

        Returns:
            rotations (B, 3, 3), shifts (B, 3), scores (B,).
        """
        import torch

        from gumalign.align.scoring import translation_search

        count, k = f_b.shape[0], self.hypotheses
        logits, rotations = self.model.hypotheses(self.model.match(f_a.expand(count, *f_a.shape[1:]), f_b))
        top = logits.topk(k, dim=1).indices  # (B, k), best first
        rows = torch.arange(count, device=top.device)[:, None]
        cand = rotations[rows, top].transpose(0, 1).reshape(k * count, 3, 3)  # hypothesis-major: [h0 of all, h1, ...]

        def tile(x):  # one shared volume broadcasts; per-particle ones repeat once per hypothesis
            x = torch.as_tensor(x)
            return x if len(x) == 1 else x.repeat(k, *([1] * (x.ndim - 1)))

        shift, score = translation_search(tile(refs), tile(ref_w), tile(parts), tile(part_w), cand, self._box_max_shift)
        score = score.reshape(k, count)
        best = score.argmax(dim=0)
        idx = torch.arange(count, device=best.device)
        return cand.reshape(k, count, 3, 3)[best, idx], shift.reshape(k, count, 3)[best, idx], score[best, idx]

    def _check_box(self, volumes: np.ndarray, what: str) -> None:
        if volumes.ndim != 4 or volumes.shape[1:] != (self.box,) * 3:
            raise GumalignError(
                f"Gum-Net model {self.model_name!r} takes {self.box}³ subtomograms; the {what} are "
                f"{'×'.join(map(str, volumes.shape[1:]))} (rescale or crop them to {self.box}³, or give their pixel "
                "size so that they are resampled)"
            )

    def _start_features(self, references):
        """Stream-'a' features of each reference pre-rotated by every start: (S, B, C, 6, 6, 6)."""
        from gumalign.geometry import transform_volumes

        refs = zscore(references)
        out = []
        for start in self.starts:
            rotated = refs if bool(torch_is_identity(start)) else transform_volumes(refs, start[None])
            out.append(self.model.features(rotated, "a"))
        import torch

        return torch.stack(out)

    def _reference_features(self, reference: np.ndarray):
        """Start features of one reference (S, 1, C, 6, 6, 6), cached on the reference's bytes (S = 1, the identity,
        for a one-pass model)."""
        import torch

        key = hashlib.sha1(np.ascontiguousarray(reference, dtype=np.float32).tobytes()).digest()
        if key != self._cache_key:
            with torch.no_grad():
                ref = torch.as_tensor(reference, dtype=torch.float32, device=self.device)[None]
                self._cache_features = self._start_features(ref)
            self._cache_key = key
        return self._cache_features

    def _best_start(self, f_starts, f_b, refs, ref_w, parts, part_w):
        """Run the matching head for every start (several starts per call) and keep each particle's best candidate.

        Args:
            f_starts: (S, B or 1, C, 6, 6, 6) reference features per start; f_b: (B, C, 6, 6, 6) particle features;
            refs (B or 1, N, N, N), weights and parts as in :meth:`align`.

        Returns:
            rotations (B, 3, 3) = residual·start, shifts (B, 3), scores (B,) of the best start per particle.
        """
        import torch

        from gumalign.align.scoring import search_or_keep

        count = f_b.shape[0]
        per_call = max(1, 64 // count)  # starts per matching call: bigger GEMMs, bounded memory
        best_rot = best_shift = best_score = None
        for first in range(0, len(self.starts), per_call):
            starts = self.starts[first : first + per_call]
            k = len(starts)
            f_a = f_starts[first : first + k].expand(k, count, *f_starts.shape[2:]).reshape(k * count, *f_starts.shape[2:])
            f_bb = f_b.expand(k, *f_b.shape).reshape(k * count, *f_b.shape[1:])
            residual, net_shift = self.model.rigid(self.model.match(f_a, f_bb))
            cand_rot = residual @ starts.repeat_interleave(count, dim=0)

            def tile(x):  # one shared volume broadcasts; per-particle ones repeat once per start
                x = torch.as_tensor(x)
                return x if len(x) == 1 else x.repeat(k, *([1] * (x.ndim - 1)))

            # The network's rotation with the FFT's best shift for it (a few voxels of translation error would
            # otherwise sink a right rotation); the network's own shift is kept where it scores higher.
            cand_shift, cand_score = search_or_keep(
                tile(refs), tile(ref_w), tile(parts), tile(part_w), cand_rot, self._clamp_shifts(net_shift),
                self._box_max_shift,
            )
            cand_score = cand_score.reshape(k, count)
            cand_rot, cand_shift = cand_rot.reshape(k, count, 3, 3), cand_shift.reshape(k, count, 3)
            top = cand_score.argmax(dim=0)
            idx = torch.arange(count, device=top.device)
            rot, shift, score = cand_rot[top, idx], cand_shift[top, idx], cand_score[top, idx]
            if best_score is None:
                best_rot, best_shift, best_score = rot, shift, score
            else:
                better = score > best_score
                best_rot = torch.where(better[:, None, None], rot, best_rot)
                best_shift = torch.where(better[:, None], shift, best_shift)
                best_score = torch.where(better, score, best_score)
        return best_rot, best_shift, best_score

    def _polish(self, refs, ref_w, parts, part_w, rot, shift, score):
        """One more network pass per particle from its current (rot, shift): the reference turned by ``rot`` against
        the particle moved back by ``shift``; the residual composes with ``rot`` and the FFT search finds the shift.

        Returns the updated (rotations (B, 3, 3), shifts (B, 3), scores (B,)), changed only where the score rose.
        """
        import torch

        from gumalign.align.scoring import translation_search
        from gumalign.geometry import transform_volumes

        count = len(parts)
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device).expand(count, 3, 3)
        centred = transform_volumes(parts, eye, -shift)
        turned = transform_volumes(refs.expand(count, *refs.shape[1:]), rot)
        f_a = self.model.features(zscore(turned), "a")
        f_b = self.model.features(zscore(centred), "b")
        residual, _ = self.model.rigid(self.model.match(f_a, f_b))
        cand_rot = residual @ rot
        cand_shift, cand_score = translation_search(refs, ref_w, parts, part_w, cand_rot, self._box_max_shift)
        better = cand_score > score
        return (
            torch.where(better[:, None, None], cand_rot, rot),
            torch.where(better[:, None], cand_shift, shift),
            torch.where(better, cand_score, score),
        )

    def _clamp_shifts(self, shifts):
        """Shifts longer than max_shift scaled back onto that radius (direction kept)."""
        if self._box_max_shift is None:
            return shifts
        length = shifts.norm(dim=1, keepdim=True)
        return shifts * (self._box_max_shift / length.clamp_min(self._box_max_shift)).clamp(max=1.0)

    def resampling(self, box: int):
        """The gumalign.fourier.resample.Resampling from particles of ``box``³ to the model, or None when they are
        already at its sampling (to the nearest even box); a GumalignError when it cannot be known."""
        from gumalign.fourier.resample import Resampling
        from gumalign.units import same_voxel_size

        model_voxel = self.model_voxel_size
        voxel = self.voxel_size
        if box == self.box and (voxel is None or model_voxel is None or same_voxel_size(voxel, model_voxel)):
            return None
        if voxel is None or model_voxel is None:
            missing = "the particles' pixel size" if voxel is None else f"model {self.model_name!r}'s voxel size"
            raise GumalignError(
                f"Gum-Net model {self.model_name!r} takes {self.box}³ subtomograms; particles of {box}³ are resampled "
                f"to it, which needs {missing} (give the STAR file's rlnImagePixelSize, or rescale or crop them to "
                f"{self.box}³)"
            )
        plan = Resampling(box, voxel, self.box, model_voxel)
        # Within half a voxel of the model's box there is no closer even box: the particles are used as they are.
        return None if plan.is_identity else plan

    def align(self, references, reference_weights, particles, particle_weights, prior=None) -> AlignmentResult:
        """Align each particle to its reference; see gumalign.align.base.Aligner for shapes and conventions.

        A global search: ``prior`` is accepted (every aligner takes it) and not used. Particles of another box or
        voxel size than the model's are resampled (see :meth:`resampling` and the ``voxel_size`` argument).
        """
        references = np.asarray(references, dtype=np.float32)
        particles = np.asarray(particles, dtype=np.float32)
        if particles.ndim != 4 or references.ndim != 4 or references.shape[1:] != particles.shape[1:]:
            self._check_box(particles, "particles")
            self._check_box(references, "references")
        plan = self.resampling(particles.shape[-1])
        if plan is None:
            self._box_max_shift = self.max_shift
            return self._align_at_model_box(references, reference_weights, particles, particle_weights)
        return self._align_resampled(plan, references, reference_weights, particles, particle_weights)

    def _align_resampled(self, plan, references, reference_weights, particles, particle_weights) -> AlignmentResult:
        """The network at the model's sampling, the shift and score at the particles' (module docstring of
        gumalign.fourier.resample for the mapping)."""
        import torch

        from gumalign.align.scoring import search_or_keep

        def at_model(x, weights=False):
            t = torch.as_tensor(np.asarray(x, dtype=np.float32), device=self.device)
            return (plan.weights(t) if weights else plan.volumes(t)).cpu().numpy()

        self._box_max_shift = None if self.max_shift is None else self.max_shift / plan.shift_scale
        n = len(particles)
        rotations, shifts, scores = [], [], []
        shared = len(references) == 1
        ref_m = at_model(references) if shared else None
        ref_w_m = at_model(reference_weights, True) if len(reference_weights) == 1 else None
        part_w_m = at_model(particle_weights, True) if len(particle_weights) == 1 else None
        for start in range(0, n, self.batch_size):
            rows = slice(start, min(start + self.batch_size, n))
            refs = references[:1] if shared else references[rows]
            ref_w = reference_weights if len(reference_weights) == 1 else reference_weights[rows]
            part_w = particle_weights if len(particle_weights) == 1 else particle_weights[rows]
            coarse = self._align_at_model_box(
                ref_m if shared else at_model(refs), ref_w_m if ref_w_m is not None else at_model(ref_w, True),
                at_model(particles[rows]), part_w_m if part_w_m is not None else at_model(part_w, True),
            )
            with torch.no_grad():
                rot = torch.as_tensor(coarse.rotations, dtype=torch.float32, device=self.device)
                mapped = torch.as_tensor(coarse.shifts * plan.shift_scale, dtype=torch.float32, device=self.device)
                shift, score = search_or_keep(
                    torch.as_tensor(refs, device=self.device), torch.as_tensor(np.asarray(ref_w), device=self.device),
                    torch.as_tensor(particles[rows], device=self.device),
                    torch.as_tensor(np.asarray(part_w), device=self.device), rot, mapped, self.max_shift,
                )
            rotations.append(coarse.rotations)
            shifts.append(shift.double().cpu().numpy())
            scores.append(score.double().cpu().numpy())
        return AlignmentResult(np.concatenate(rotations), np.concatenate(shifts), np.concatenate(scores))

    def _align_at_model_box(self, references, reference_weights, particles, particle_weights) -> AlignmentResult:
        """:meth:`align` for volumes at the model's box (shifts in its voxels, limited by ``_box_max_shift``)."""
        import torch

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
                f_b = self.model.features(zscore(parts), "b")
                if shared:
                    f_starts = self._reference_features(references[0])
                    refs = torch.as_tensor(references[:1], device=self.device)
                else:
                    refs = torch.as_tensor(references[start:stop], device=self.device)
                    f_starts = self._start_features(refs)
                ref_w = reference_weights if len(reference_weights) == 1 else reference_weights[start:stop]
                part_w = particle_weights if len(particle_weights) == 1 else particle_weights[start:stop]
                if self.one_pass:
                    rot, shift, score = self._top_hypotheses(f_starts[0], f_b, refs, ref_w, parts, part_w)
                else:
                    rot, shift, score = self._best_start(f_starts, f_b, refs, ref_w, parts, part_w)
                for _ in range(self.polish):
                    rot, shift, score = self._polish(refs, ref_w, parts, part_w, rot, shift, score)
                rotations.append(rot.double().cpu().numpy())
                shifts.append(shift.double().cpu().numpy())
                scores.append(score.double().cpu().numpy())
        return AlignmentResult(
            rotations=np.concatenate(rotations), shifts=np.concatenate(shifts), scores=np.concatenate(scores)
        )


def torch_is_identity(matrix) -> bool:
    """Whether a (3, 3) tensor is the identity (the start that needs no resampling)."""
    import torch

    return bool(torch.allclose(matrix, torch.eye(3, dtype=matrix.dtype, device=matrix.device)))


def _trained_with_max_angle(record: dict) -> bool:
    """Whether a model record says its training pairs had a bounded relative rotation (max_relative_angle set)."""
    stack = [record]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("max_relative_angle") is not None:
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False

