"""Loading particles and their observed-region weights in batches, with the checks every command needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from gumalign.errors import GumalignError
from gumalign.io.mrc import read_volume
from gumalign.io.star import ParticleTable
from gumalign.units import same_voxel_size


def check_images_exist(paths: list[Path], table_name: str) -> None:
    """Raise naming the first missing image, before any work or output starts."""
    for row, path in enumerate(paths, start=1):
        if not path.is_file():
            raise GumalignError(f"{table_name}: particle {row}: image {path} does not exist")


def check_pixel_size(table: ParticleTable, reference, reference_name: str = "") -> None:
    """Refuse particles whose pixel size differs from the reference's voxel size (a Volume; gumalign.units).

    A reference without a voxel size (0) is not checked; particles without one take the reference's.
    """
    if reference.voxel_size <= 0 or len(table) == 0:
        return
    sizes = table.pixel_sizes(default=reference.voxel_size)
    bad = ~same_voxel_size(sizes, reference.voxel_size)
    if bad.any():
        raise GumalignError(
            f"{table.name}: pixel size {sizes[np.argmax(bad)]:.4g} Å differs from the reference's "
            f"{reference.voxel_size:.4g} Å{f' ({reference_name})' if reference_name else ''}"
        )


@dataclass
class WeightSource:
    """Where each particle's observed-region weight and CTF come from: rlnCtfImage files, a tilt range, or nothing.

    rlnCtfImage is read in any of RELION's layouts (gumalign.io.ctf). Two views of it:

    - :meth:`for_rows`, the weight for alignment scoring: |CTF| (the square root of a premultiplied file's CTF²),
      centred N³, scaled to a maximum of 1 per particle (a wedge-like observation weight).
    - :meth:`ctf_for_rows`, RELION's terms for averaging, unscaled: (c, d) with the estimate
      Σ c·P / (Σ d + λ): c = CTF and d = CTF² for data that are not CTF-premultiplied; c = 1 (0 where RELION 4's
      multiplicity is below its threshold) and d = the file's CTF² for premultiplied data
      (rlnCtfDataAreCtfPremultiplied = 1). A tilt-range wedge w gives c = d = w.
    """

    box: int
    paths: list[Path] | None = None
    tilt_range: tuple[float, float] | None = None
    premultiplied: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def shared(self) -> np.ndarray | None:
        """The one weight every particle shares (tilt range or none), or None when weights are per particle."""
        if self.paths is not None:
            return None
        if self.tilt_range is None:
            return np.ones((self.box,) * 3, dtype=np.float32)
        from gumalign.fourier.wedge import wedge_mask

        return wedge_mask((self.box,) * 3, self.tilt_range, "centred")

    def for_rows(self, rows: np.ndarray) -> np.ndarray:
        """(B, N, N, N) scoring weights for the given particle rows, or (1, N, N, N) when shared."""
        shared = self.shared()
        if shared is not None:
            return shared[None]
        return np.stack([self._load(r)[0] for r in rows])

    def ctf_for_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(c, d), each (B, N, N, N) float32 centred (or (1, N, N, N) when shared): see the class docstring."""
        shared = self.shared()
        if shared is not None:
            return shared[None], shared[None]
        loaded = [self._load(r) for r in rows]
        return np.stack([item[1] for item in loaded]), np.stack([item[2] for item in loaded])

    def _is_premultiplied(self, row: int) -> bool:
        return bool(self.premultiplied[row]) if self.premultiplied is not None else False

    def _load(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from gumalign.io.ctf import read_ctf_image

        path, premultiplied = self.paths[row], self._is_premultiplied(row)
        key = (path, premultiplied)
        if key not in self._cache:
            ctf = read_ctf_image(path, self.box)
            if premultiplied:
                square = np.abs(ctf.values)
                magnitude, c, d = np.sqrt(square), ctf.observed, square
            else:
                magnitude, c, d = np.abs(ctf.values), ctf.values, ctf.values**2
            peak = float(magnitude.max())
            score = (magnitude / peak if peak > 0 else magnitude).astype(np.float32)
            self._cache[key] = (score, c.astype(np.float32), d.astype(np.float32))
            if len(self._cache) > 4096:  # bounded: per-particle weights of huge sets are not all kept
                self._cache.pop(next(iter(self._cache)))
        return self._cache[key]


def iter_particle_batches(
    paths: list[Path], rows: np.ndarray, batch_size: int, box: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (rows, volumes (B, N, N, N) float32) for ``rows`` in batches; each volume must be N³."""
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        volumes = []
        for r in chunk:
            data = read_volume(paths[r]).data
            if data.shape != (box,) * 3:
                raise GumalignError(f"{paths[r]}: box {data.shape[::-1]} differs from the reference's {box}³")
            volumes.append(data)
        yield chunk, np.stack(volumes)


def weight_source_for(table: ParticleTable, box: int, tilt_range: tuple[float, float] | None) -> WeightSource:
    """Per-particle rlnCtfImage when present, else the tilt range, else no wedge (DESIGN.md)."""
    paths = table.weight_paths()
    if paths is not None:
        return WeightSource(box=box, paths=paths, premultiplied=table.ctf_premultiplied())
    return WeightSource(box=box, tilt_range=tilt_range)
