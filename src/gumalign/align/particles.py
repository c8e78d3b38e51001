"""Loading particles and their observed-region weights in batches, with the checks every command needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from gumalign.errors import GumalignError
from gumalign.io.mrc import read_volume
from gumalign.io.star import ParticleTable


def check_images_exist(paths: list[Path], table_name: str) -> None:
    """Raise naming the first missing image, before any work or output starts."""
    for row, path in enumerate(paths, start=1):
        if not path.is_file():
            raise GumalignError(f"{table_name}: particle {row}: image {path} does not exist")


def check_pixel_size(table: ParticleTable, reference, reference_name: str = "") -> None:
    """Refuse particles whose pixel size differs (by more than 1%) from the reference's voxel size (a Volume).

    A reference without a voxel size (0) is not checked; particles without one take the reference's.
    """
    if reference.voxel_size <= 0 or len(table) == 0:
        return
    sizes = table.pixel_sizes(default=reference.voxel_size)
    bad = ~np.isclose(sizes, reference.voxel_size, rtol=0.01)
    if bad.any():
        raise GumalignError(
            f"{table.name}: pixel size {sizes[np.argmax(bad)]:.4g} Å differs from the reference's "
            f"{reference.voxel_size:.4g} Å{f' ({reference_name})' if reference_name else ''}"
        )


@dataclass
class WeightSource:
    """Where each particle's observed-region weight comes from: rlnCtfImage files, a tilt range, or nothing.

    Weights are returned in the centred N³ layout, scaled to a maximum of 1.
    """

    box: int
    paths: list[Path] | None = None
    tilt_range: tuple[float, float] | None = None
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
        """(B, N, N, N) weights for the given particle rows, or (1, N, N, N) when shared."""
        shared = self.shared()
        if shared is not None:
            return shared[None]
        return np.stack([self._load(self.paths[r]) for r in rows])

    def _load(self, path: Path) -> np.ndarray:
        if path not in self._cache:
            if not path.is_file():
                raise GumalignError(f"weight file {path} (rlnCtfImage) does not exist")
            data = read_volume(path).data
            if data.shape != (self.box,) * 3:
                raise GumalignError(
                    f"{path}: rlnCtfImage of shape {data.shape} is not the centred {self.box}³ cube gumalign reads"
                )
            peak = float(np.abs(data).max())
            self._cache[path] = (np.abs(data) / peak if peak > 0 else data).astype(np.float32)
            if len(self._cache) > 4096:  # bounded: per-particle weights of huge sets are not all kept
                self._cache.pop(next(iter(self._cache)))
        return self._cache[path]


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
        return WeightSource(box=box, paths=paths)
    return WeightSource(box=box, tilt_range=tilt_range)
