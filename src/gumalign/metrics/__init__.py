"""Quality measures: Fourier shell correlation and resolution, real-space correlation, the seed's SNR.

numpy only (no torch), so scripts can import it cheaply.
"""

from gumalign.metrics.correlation import measured_snr, pearson, snr_from_correlation
from gumalign.metrics.fsc import (
    FSCResult,
    Resolution,
    fsc,
    fsc_with_mask,
    randomise_phases_beyond,
    resolution_at,
    shell_resolution_angstrom,
    shell_voxel_counts,
    soft_spherical_mask,
)

__all__ = [
    "FSCResult",
    "Resolution",
    "fsc",
    "fsc_with_mask",
    "measured_snr",
    "pearson",
    "randomise_phases_beyond",
    "resolution_at",
    "shell_resolution_angstrom",
    "shell_voxel_counts",
    "snr_from_correlation",
    "soft_spherical_mask",
]
