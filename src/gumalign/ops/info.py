"""The `info` operation: what an MRC volume or a particle file holds, as a record (the CLI prints it as a line)."""

from __future__ import annotations

from pathlib import Path

from gumalign.errors import GumalignError
from gumalign.ops.runtime import Runtime

VOLUME_SUFFIXES = (".mrc", ".map", ".rec", ".mrcs", ".st", ".ali")


def describe(path: Path, runtime: Runtime | None = None) -> dict:
    """{'kind': 'particles'|'volume', ...}: a particle file's flavour, count, pixel sizes, orientations, half sets
    and columns, or a volume's shape (x, y, z), voxel size (Å) and statistics. The table's notes go to the log."""
    import numpy as np

    from gumalign.io.mrc import read_volume
    from gumalign.io.star import read_star

    runtime = runtime or Runtime()
    path = Path(path)
    name = path.name.lower()
    kind = name[:-3] if name.endswith(".gz") else name
    if name.endswith((".star", ".tbl")):
        table = read_star(path)
        for note in table.notes:
            runtime.log(note)
        halves = table.half_sets()
        return {
            "kind": "particles", "path": str(path), "flavour": table.flavour_name, "particles": len(table),
            "pixel_sizes": np.unique(np.round(table.pixel_sizes(default=0.0), 4)).tolist(),
            "orientations": table.has_angles(),
            "half_sets": None if halves is None else np.bincount(halves, minlength=3)[1:].tolist(),
            "columns": [str(c) for c in table.particles.columns],
        }
    if kind.endswith(VOLUME_SUFFIXES):
        vol = read_volume(path)
        d = vol.data
        return {
            "kind": "volume", "path": str(path), "shape_xyz": [d.shape[2], d.shape[1], d.shape[0]],
            "voxel_size": float(vol.voxel_size), "mean": float(d.mean()), "std": float(d.std()),
            "min": float(d.min()), "max": float(d.max()),
        }
    raise GumalignError(f"{path}: unknown file type (expected .mrc, .map, .rec (or .gz), .star or .tbl)")
