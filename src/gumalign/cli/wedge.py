"""`gumalign wedge`: write a missing-wedge weight volume (RELION's rlnCtfImage N³ centred layout).

Example usage:

    gumalign wedge --box 32 --tilt-range -60 60 --voxel-size 12 --out wedge.mrc
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Tuple

import typer

from gumalign.cli._common import cli_runtime, handle_errors, print_summary
from gumalign.cli._options import JsonOut


@handle_errors
def command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output MRC file.")],
    box: Annotated[int, typer.Option(help="Box size N in voxels (the weight is N³).", min=4)] = 32,
    tilt_range: Annotated[
        Tuple[float, float], typer.Option(help="Minimum and maximum tilt angle in degrees (tilt axis y, beam z).")
    ] = (-60.0, 60.0),
    voxel_size: Annotated[float, typer.Option(help="Voxel size in Å written to the header.", min=0.0)] = 1.0,
    json_out: JsonOut = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No log output.")] = False,
) -> None:
    """Write the observed-region weight (1 observed, 0 missing) of a single-axis tilt series as a centred N³ cube,
    usable as rlnCtfImage in RELION and by every gumalign command."""
    from gumalign.ops.wedge import WedgeRequest, wedge

    report = wedge(WedgeRequest(out, box, tuple(tilt_range), voxel_size), cli_runtime("cpu", None, quiet))
    print_summary(report.summary(), json_out)
