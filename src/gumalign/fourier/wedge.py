"""Missing-wedge weights for single-axis tilt series (tilt axis y, beam z).

A projection at tilt angle θ about y samples the central plane normal to the beam direction (sin θ, 0, cos θ) in the
specimen frame: kx·sin θ + kz·cos θ = 0. So a coefficient is observed when θ(k) = atan(-kz / kx), folded into
[-90°, 90°], lies in the tilt range; ky is free. For ±60° the missing region is |kx| < tan(30°)·|kz| (30° wedge
half-angle about the beam), and the boundary itself counts as observed, as in aitom's wedge code.
The zero frequency is always observed; ±90° observes everything.
"""

from __future__ import annotations

import numpy as np

from gumalign.fourier.grids import Layout, frequency_grid

_EDGE_TOL_DEG = 1e-6


def wedge_mask(
    shape: tuple[int, int, int],
    tilt_range: tuple[float, float],
    layout: Layout,
) -> np.ndarray:
    """Observed-region weights (1 observed, 0 missing) for a tilt range about y.

    Args:
        shape: real-space box [z, y, x].
        tilt_range: (min, max) tilt in degrees, within [-90, 90]; e.g. (-60, 60) gives a 30° wedge.
        layout: 'centred', 'rfft' or 'full' (see gumalign.fourier).

    Returns:
        float32 array in the layout's shape.
    """
    lo, hi = float(tilt_range[0]), float(tilt_range[1])
    if not (-90.0 <= lo <= hi <= 90.0):
        raise ValueError(f"tilt range must satisfy -90 <= min <= max <= 90, got {tilt_range}")
    kz, ky, kx = frequency_grid(shape, layout)
    kz = kz.astype(np.float64)
    kx = kx.astype(np.float64)
    # Tilt angle whose slice holds (kx, kz); atan in [-90, 90] with kx = 0 mapping to ±90.
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = np.degrees(np.arctan(-kz / kx))
    theta = np.where(kx == 0, 90.0, theta)
    observed = (theta >= lo - _EDGE_TOL_DEG) & (theta <= hi + _EDGE_TOL_DEG)
    # θ = +90 and θ = -90 are the same slice (the kz axis direction); observe it if either end is in range.
    on_kz_axis = kx == 0
    observed = np.where(on_kz_axis, (hi >= 90.0 - _EDGE_TOL_DEG) | (lo <= -90.0 + _EDGE_TOL_DEG), observed)
    observed = observed | ((kx == 0) & (kz == 0))
    return np.broadcast_to(observed, np.broadcast_shapes(kz.shape, ky.shape, kx.shape)).astype(np.float32)
