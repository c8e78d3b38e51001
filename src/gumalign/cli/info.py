"""`gumalign info`: describe MRC volumes and STAR particle files.

Example usage:

    gumalign info ref.mrc particles.star
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List

import typer

from gumalign.cli._common import err_console, handle_errors, out_console


@handle_errors
def command(
    files: Annotated[
        List[Path], typer.Argument(help="MRC volumes (.mrc, .map, .rec, also .gz), STAR or Dynamo .tbl particle files.")
    ],
) -> None:
    """Describe MRC volumes (shape, voxel size, statistics) and particle files (flavour, columns, counts)."""
    import numpy as np

    from gumalign.errors import GumalignError
    from gumalign.io.mrc import read_volume
    from gumalign.io.star import read_star

    for path in files:
        name = path.name.lower()
        kind = name[:-3] if name.endswith(".gz") else name
        if name.endswith((".star", ".tbl")):
            table = read_star(path)
            for note in table.notes:
                err_console.print(note, soft_wrap=True)
            px = table.pixel_sizes(default=0.0)
            halves = table.half_sets()
            out_console.print(
                f"{path}: {table.flavour_name} particle file, {len(table)} particles, "
                f"pixel size {np.unique(np.round(px, 4)).tolist()} Å, "
                f"orientations {'yes' if table.has_angles() else 'no'}, "
                f"half sets {'no' if halves is None else np.bincount(halves, minlength=3)[1:].tolist()}"
            )
            out_console.print(f"  columns: {' '.join(map(str, table.particles.columns))}")
        elif kind.endswith((".mrc", ".map", ".rec", ".mrcs", ".st", ".ali")):
            vol = read_volume(path)
            d = vol.data
            out_console.print(
                f"{path}: {d.shape[2]}×{d.shape[1]}×{d.shape[0]} (x×y×z) voxels of {vol.voxel_size:.3f} Å, "
                f"mean {d.mean():.4g}, std {d.std():.4g}, min {d.min():.4g}, max {d.max():.4g}"
            )
        else:
            raise GumalignError(f"{path}: unknown file type (expected .mrc, .map, .rec (or .gz), .star or .tbl)")
