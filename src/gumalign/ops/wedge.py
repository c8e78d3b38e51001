"""The `wedge` operation: the observed-region weight (1 observed, 0 missing) of a single-axis tilt series as a centred
N³ cube, usable as rlnCtfImage in RELION and by every gumalign command."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gumalign.errors import GumalignError
from gumalign.ops.runtime import Runtime

# The frequency grids (float64) and the mask while it is built, the float32 copy written.
_BYTES_PER_VOXEL = 32


@dataclass(frozen=True)
class WedgeRequest:
    """``box`` voxels per side, ``tilt_range`` (min, max) degrees about y (beam z), ``voxel_size`` Å for the header."""

    out: Path
    box: int = 32
    tilt_range: tuple[float, float] = (-60.0, 60.0)
    voxel_size: float = 1.0


@dataclass
class WedgeReport:
    out: Path
    box: int
    missing_fraction: float

    def summary(self) -> dict:
        return {"box": self.box, "missing_percent": round(100 * self.missing_fraction, 2), "out": str(self.out)}


def _physical_memory() -> int:
    """Bytes of physical memory, or 0 when the system does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def wedge(request: WedgeRequest, runtime: Runtime | None = None) -> WedgeReport:
    """Write the wedge weight of ``request`` to ``request.out``."""
    from gumalign.fourier.wedge import wedge_mask
    from gumalign.io.atomic import check_output_file
    from gumalign.io.mrc import write_volume

    runtime = runtime or Runtime()
    out, box = Path(request.out), request.box
    check_output_file(out)
    needed, available = box**3 * _BYTES_PER_VOXEL, _physical_memory()
    if available and needed > available:
        raise GumalignError(
            f"--box {box}: a {box}³ weight needs about {needed / 1e9:.3g} GB of memory to compute, more than this "
            f"machine's {available / 1e9:.3g} GB"
        )
    try:
        mask = wedge_mask((box, box, box), tuple(request.tilt_range), "centred")
    except ValueError as exc:
        raise GumalignError(str(exc)) from None
    write_volume(out, mask, request.voxel_size)
    missing = float(1 - mask.mean())
    lo, hi = request.tilt_range
    runtime.log(f"wrote {out}: {box}³ wedge weight for tilts {lo:g}..{hi:g}°, {100 * missing:.1f}% of Fourier space missing")
    return WedgeReport(out, box, missing)
