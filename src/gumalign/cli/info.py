"""`gumalign info`: describe MRC volumes and STAR particle files.

Example usage:

    gumalign info ref.mrc particles.star
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List

import typer

from gumalign.cli._common import handle_errors, out_console


@handle_errors
def command(
    files: Annotated[List[Path], typer.Argument(help="MRC volumes (.mrc, .map, .rec) or STAR particle files.")],
) -> None:
    """Describe MRC volumes (shape, voxel size, statistics) and STAR particle files (flavour, columns, counts)."""
    import numpy as np

    from gumalign.errors import GumalignError
    from gumalign.io.mrc import read_volume
    from gumalign.io.star import read_star

    for path in files:
        if path.suffix.lower() == ".star":
            table = read_star(path)
            px = table.pixel_sizes(default=0.0)
            halves = table.half_sets()
            out_console.print(
                f"{path}: RELION {table.version} particle file, {len(table)} particles, "
                f"pixel size {np.unique(np.round(px, 4)).tolist()} Å, "
                f"orientations {'yes' if table.has_angles() else 'no'}, "
                f"half sets {'no' if halves is None else np.bincount(halves, minlength=3)[1:].tolist()}"
            )
            out_console.print(f"  columns: {' '.join(map(str, table.particles.columns))}")
        elif path.suffix.lower() in (".mrc", ".map", ".rec", ".mrcs", ".st"):
            vol = read_volume(path)
            d = vol.data
            out_console.print(
                f"{path}: {d.shape[2]}×{d.shape[1]}×{d.shape[0]} (x×y×z) voxels of {vol.voxel_size:.3f} Å, "
                f"mean {d.mean():.4g}, std {d.std():.4g}, min {d.min():.4g}, max {d.max():.4g}"
            )
        else:
            raise GumalignError(f"{path}: unknown file type (expected .mrc or .star)")
