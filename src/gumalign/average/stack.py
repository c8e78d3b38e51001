"""Particle stacks read batch by batch, so that averaging and clustering never hold every particle in memory.

A stack hands out particles with their observed-region weights (centred N³ layout, RELION's rlnCtfImage cube):
``load(rows) -> (volumes (B, N, N, N) float32 [z, y, x], weights (B or 1, N, N, N) float32)``; weights shared by every
particle come back once, as (1, N, N, N). A stack may also offer ``load_ctf(rows) -> (c, d)``, RELION's averaging
terms (the estimate is Σ c·P / (Σ d + λ): c = CTF and d = CTF², or c = 1 and d = CTF² for premultiplied data; see
gumalign.align.particles.WeightSource); without it, c = d = the weight (a 0/1 wedge).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from gumalign.errors import GumalignError


class ParticleStack(Protocol):
    """Random access to N particles of one cubic box size."""

    box: int

    def __len__(self) -> int: ...

    def load(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Volumes (B, N, N, N) float32 [z, y, x] and centred weights (B or 1, N, N, N) float32 for ``rows``."""
        ...


def iter_batches(n: int, batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive row indices 0..n-1 in batches of at most ``batch_size``."""
    if batch_size < 1:
        raise GumalignError(f"batch size must be at least 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield np.arange(start, min(start + batch_size, n))


class ArrayStack:
    """Particles already in memory.

    Args:
        volumes: (N, D, D, D) float array [z, y, x].
        weights: None (fully observed), one (D, D, D) centred weight shared by all, or (N, D, D, D) per particle.
        ctf: None, or (c, d): RELION's averaging terms, each (D, D, D) shared or (N, D, D, D) centred.
    """

    def __init__(self, volumes: np.ndarray, weights: np.ndarray | None = None, ctf=None):
        volumes = np.asarray(volumes, dtype=np.float32)
        if volumes.ndim != 4 or len(set(volumes.shape[1:])) != 1:
            raise GumalignError(f"particles must be (N, D, D, D) cubes, got shape {volumes.shape}")
        self.volumes = volumes
        self.box = volumes.shape[-1]
        if weights is None:
            weights = np.ones((1,) + volumes.shape[1:], dtype=np.float32)
        weights = np.asarray(weights, dtype=np.float32)
        if weights.ndim == 3:
            weights = weights[None]
        if weights.shape[1:] != volumes.shape[1:] or weights.shape[0] not in (1, len(volumes)):
            raise GumalignError(f"weights of shape {weights.shape} do not match particles of shape {volumes.shape}")
        self.weights = weights
        self.ctf = None
        if ctf is not None:
            terms = []
            for term in ctf:
                term = np.asarray(term, dtype=np.float32)
                term = term[None] if term.ndim == 3 else term
                if term.shape[1:] != volumes.shape[1:] or term.shape[0] not in (1, len(volumes)):
                    raise GumalignError(f"CTF terms of shape {term.shape} do not match particles of shape {volumes.shape}")
                terms.append(term)
            self.ctf = tuple(terms)

    def __len__(self) -> int:
        return len(self.volumes)

    def load(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, dtype=int)
        weights = self.weights if len(self.weights) == 1 else self.weights[rows]
        return self.volumes[rows], weights

    def load_ctf(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        if self.ctf is None:
            return None
        rows = np.asarray(rows, dtype=int)
        return tuple(t if len(t) == 1 else t[rows] for t in self.ctf)


class StarStack:
    """Particles of a RELION STAR file, read from their MRC files on demand.

    Weights follow gumalign.align.particles (the same rules as `gumalign align`): rlnCtfImage when the table has it
    (any of RELION's layouts; ``load`` gives the scoring weight |CTF| scaled to a maximum of 1, ``load_ctf`` RELION's
    averaging terms, premultiplied data respected); otherwise one missing-wedge weight from ``tilt_range``; otherwise
    the particles count as fully observed.

    Args:
        table: a gumalign.io.star.ParticleTable.
        tilt_range: (min, max) tilt in degrees, or None.
    """

    def __init__(self, table, tilt_range: tuple[float, float] | None = None):
        from gumalign.align.particles import check_images_exist, weight_source_for
        from gumalign.io.mrc import read_volume

        self.table = table
        self.paths = table.image_paths()
        if not self.paths:
            raise GumalignError(f"{table.name}: no particles")
        check_images_exist(self.paths, table.name)
        first = read_volume(self.paths[0]).data
        if len(set(first.shape)) != 1:
            raise GumalignError(f"{self.paths[0]}: particles must be cubes, got {first.shape[::-1]} (x×y×z)")
        self.box = first.shape[0]
        if tilt_range is not None:
            lo, hi = tilt_range
            if not -90.0 <= lo <= hi <= 90.0:
                raise GumalignError(f"--tilt-range must satisfy -90 <= min <= max <= 90, got {lo:g} {hi:g}")
        self.weights = weight_source_for(table, self.box, tuple(tilt_range) if tilt_range is not None else None)
        if self.weights.paths is not None:
            self.weight_source = "rlnCtfImage"
        elif tilt_range is not None:
            self.weight_source = f"tilt range {tilt_range[0]:g}..{tilt_range[1]:g}°"
        else:
            self.weight_source = "none (no rlnCtfImage, no --tilt-range)"
        self._shared = self.weights.shared()

    def __len__(self) -> int:
        return len(self.paths)

    def _read_particle(self, path: Path) -> np.ndarray:
        from gumalign.io.mrc import read_volume

        data = read_volume(path).data
        if data.shape != (self.box,) * 3:
            raise GumalignError(
                f"{path}: particle of {data.shape[2]}×{data.shape[1]}×{data.shape[0]} (x×y×z) voxels differs from "
                f"the first particle's {self.box}³"
            )
        return data

    def load(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, dtype=int)
        volumes = np.stack([self._read_particle(self.paths[i]) for i in rows])
        if self._shared is not None:
            return volumes, self._shared[None]
        return volumes, self.weights.for_rows(rows)

    def load_ctf(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RELION's averaging terms (c, d) for ``rows`` (see the module docstring)."""
        rows = np.asarray(rows, dtype=int)
        if self._shared is not None:
            return self._shared[None], self._shared[None]
        return self.weights.ctf_for_rows(rows)


class SubsetStack:
    """The particles ``rows`` of another stack, renumbered 0..len(rows)-1."""

    def __init__(self, stack: ParticleStack, rows: np.ndarray):
        self.stack = stack
        self.rows = np.asarray(rows, dtype=int)
        self.box = stack.box

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.stack.load(self.rows[np.asarray(rows, dtype=int)])

    def load_ctf(self, rows: np.ndarray):
        load = getattr(self.stack, "load_ctf", None)
        return None if load is None else load(self.rows[np.asarray(rows, dtype=int)])


def load_all(stack: ParticleStack, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Every particle and weight of a stack in memory: (N, D, D, D) volumes and (N or 1, D, D, D) weights."""
    volumes, weights, shared = [], [], True
    for rows in iter_batches(len(stack), batch_size):
        v, w = stack.load(rows)
        volumes.append(v)
        weights.append(w)
        shared = shared and len(w) == 1 and len(rows) >= 1
    if shared and all(np.array_equal(weights[0], w) for w in weights[1:]):
        return np.concatenate(volumes), weights[0]
    full = [np.broadcast_to(w, (len(v),) + w.shape[1:]) for v, w in zip(volumes, weights)]
    return np.concatenate(volumes), np.concatenate(full)
