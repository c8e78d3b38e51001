"""`gumalign info`: describe MRC volumes and STAR particle files.

Example usage:

    gumalign info ref.mrc particles.star
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List

import typer

from gumalign.cli._common import cli_runtime, handle_errors, out_console


@handle_errors
def command(
    files: Annotated[
        List[Path], typer.Argument(help="MRC volumes (.mrc, .map, .rec, also .gz), STAR or Dynamo .tbl particle files.")
    ],
) -> None:
    """Describe MRC volumes (shape, voxel size, statistics) and particle files (flavour, columns, counts)."""
    from gumalign.ops.info import describe

    runtime = cli_runtime("cpu")
    for path in files:
        d = describe(path, runtime)
        if d["kind"] == "particles":
            halves = "no" if d["half_sets"] is None else d["half_sets"]
            out_console.print(
                f"{d['path']}: {d['flavour']} particle file, {d['particles']} particles, "
                f"pixel size {d['pixel_sizes']} Å, orientations {'yes' if d['orientations'] else 'no'}, "
                f"half sets {halves}", soft_wrap=True,
            )
            out_console.print(f"  columns: {' '.join(d['columns'])}", soft_wrap=True)
        else:
            x, y, z = d["shape_xyz"]
            out_console.print(
                f"{d['path']}: {x}×{y}×{z} (x×y×z) voxels of {d['voxel_size']:.3f} Å, mean {d['mean']:.4g}, "
                f"std {d['std']:.4g}, min {d['min']:.4g}, max {d['max']:.4g}", soft_wrap=True,
            )
