"""Wedge orientation, layouts and shells against the formulas of DESIGN.md and numpy's FFT conventions."""

import numpy as np
import pytest

from gumalign.fourier import centred_to_rfft, frequency_grid, rfft_to_centred, shell_index, wedge_mask


def test_wedge_60_is_empty_exactly_where_x_below_tan30_z():
    n = 32
    mask = wedge_mask((n, n, n), (-60, 60), "centred")
    k = np.arange(n) - n // 2
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    missing = np.abs(kx) < np.tan(np.deg2rad(30)) * np.abs(kz) - 1e-9
    np.testing.assert_array_equal(mask == 0, missing)
    # The beam axis (kz) is missing, the tilt axis (ky) and kx are observed.
    assert mask[n // 2 + 5, n // 2, n // 2] == 0
    assert mask[n // 2, n // 2 + 5, n // 2] == 1 and mask[n // 2, n // 2, n // 2 + 5] == 1


def test_full_tilt_range_observes_everything():
    assert wedge_mask((16, 16, 16), (-90, 90), "centred").min() == 1


def test_wedge_of_a_real_projection_geometry():
    # A central slice at tilt +40° holds k ⟂ (sin 40°, 0, cos 40°): observed for (-45, 45), missing for (-30, 30).
    n = 64
    direction = np.array([np.cos(np.deg2rad(40)), -np.sin(np.deg2rad(40))])  # (kx, kz)
    kx, kz = np.round(direction * 20).astype(int)
    for rng_, expected in [((-45, 45), 1), ((-30, 30), 0)]:
        mask = wedge_mask((n, n, n), rng_, "centred")
        assert mask[n // 2 + kz, n // 2, n // 2 + kx] == expected


@pytest.mark.parametrize("tilt", [(-60, 60), (-45, 55)])
def test_layouts_agree(tilt):
    n = 24
    centred = wedge_mask((n, n, n), tilt, "centred")
    full = wedge_mask((n, n, n), tilt, "full")
    rfft = wedge_mask((n, n, n), tilt, "rfft")
    np.testing.assert_array_equal(np.fft.ifftshift(centred), full)
    np.testing.assert_array_equal(full[..., : n // 2 + 1], rfft)
    np.testing.assert_array_equal(centred_to_rfft(centred), rfft)
    if tilt[0] == -tilt[1]:  # symmetric masks survive the Hermitian round trip exactly
        np.testing.assert_array_equal(rfft_to_centred(rfft, n), centred)


def test_frequency_grid_matches_numpy():
    kz, ky, kx = frequency_grid((8, 6, 10), "rfft")
    np.testing.assert_array_equal(kz.ravel(), np.round(np.fft.fftfreq(8) * 8))
    np.testing.assert_array_equal(ky.ravel(), np.round(np.fft.fftfreq(6) * 6))
    np.testing.assert_array_equal(kx.ravel(), np.round(np.fft.rfftfreq(10) * 10))
    kz, _, _ = frequency_grid((8, 8, 8), "centred")
    assert kz.ravel()[4] == 0


def test_shell_index():
    shells = shell_index((16, 16, 16), "centred")
    assert shells[8, 8, 8] == 0 and shells[8, 8, 11] == 3 and shells[11, 12, 8] == 5
    assert shells.max() == round(np.sqrt(3) * 8)


def test_bad_tilt_range():
    with pytest.raises(ValueError):
        wedge_mask((8, 8, 8), (60, -60), "centred")
