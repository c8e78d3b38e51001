"""`gumalign wedge`: write a missing-wedge weight volume (RELION's rlnCtfImage N³ centred layout).

Example usage:

    gumalign wedge --box 32 --tilt-range -60 60 --voxel-size 12 --out wedge.mrc
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Tuple

import typer

from gumalign.cli._common import handle_errors, info


@handle_errors
def command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output MRC file.")],
    box: Annotated[int, typer.Option(help="Box size N in voxels (the weight is N³).", min=4)] = 32,
    tilt_range: Annotated[
        Tuple[float, float], typer.Option(help="Minimum and maximum tilt angle in degrees (tilt axis y, beam z).")
    ] = (-60.0, 60.0),
    voxel_size: Annotated[float, typer.Option(help="Voxel size in Å written to the header.", min=0.0)] = 1.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No log output.")] = False,
) -> None:
    """Write the observed-region weight (1 observed, 0 missing) of a single-axis tilt series as a centred N³ cube,
    usable as rlnCtfImage in RELION and by every gumalign command."""
    from gumalign.cli._common import check_output_file
    from gumalign.errors import GumalignError
    from gumalign.fourier.wedge import wedge_mask
    from gumalign.io.mrc import write_volume

    check_output_file(out)
    needed, available = box**3 * _BYTES_PER_VOXEL, _physical_memory()
    if available and needed > available:
        raise GumalignError(
            f"--box {box}: a {box}³ weight needs about {needed / 1e9:.3g} GB of memory to compute, more than this "
            f"machine's {available / 1e9:.3g} GB"
        )
    try:
        mask = wedge_mask((box, box, box), tuple(tilt_range), "centred")
    except ValueError as exc:
        raise GumalignError(str(exc)) from None
    write_volume(out, mask, voxel_size)
    info(f"wrote {out}: {box}³ wedge weight for tilts {tilt_range[0]:g}..{tilt_range[1]:g}°, "
         f"{100 * (1 - mask.mean()):.1f}% of Fourier space missing", quiet)


_BYTES_PER_VOXEL = 32  # the frequency grids (float64) and the mask while it is built, the float32 copy written


def _physical_memory() -> int:
    """Bytes of physical memory, or 0 when the system does not say."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0
