"""MRC reading/writing: axis order, voxel size, float16, atomic writes and one clear error per bad input."""

import mrcfile
import numpy as np
import pytest

from gumalign.errors import GumalignError
from gumalign.io.mrc import read_volume, write_volume


def test_round_trip_keeps_axis_order_and_voxel_size(tmp_path, rng):
    data = rng.standard_normal((8, 10, 12)).astype(np.float32)  # [z, y, x]
    path = tmp_path / "v.mrc"
    write_volume(path, data, 12.0)
    with mrcfile.open(path) as mrc:  # independent reader: nx is the last axis
        assert (int(mrc.header.nx), int(mrc.header.ny), int(mrc.header.nz)) == (12, 10, 8)
        assert float(mrc.voxel_size.x) == pytest.approx(12.0)
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.data, data)
    assert vol.voxel_size == pytest.approx(12.0)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_float16_mode_12_is_readable(tmp_path):
    data = np.arange(27, dtype=np.float16).reshape(3, 3, 3)
    path = tmp_path / "half.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 5.0
    with mrcfile.open(path) as mrc:
        assert int(mrc.header.mode) == 12
    vol = read_volume(path)
    assert vol.data.dtype == np.float32 and vol.data[2, 2, 2] == 26


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "v.mrc"
    write_volume(path, np.ones((4, 4, 4), np.float32), 1.0)
    with pytest.raises(GumalignError):
        write_volume(path, np.ones((4, 4), np.float32), 1.0)
    assert read_volume(path).data.shape == (4, 4, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mrc"]


def _write(path, data, voxel=1.0):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = voxel


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such file"),
        ("not_mrc", "not a readable MRC file"),
        ("truncated", "not a readable MRC file"),
        ("two_d", "expected a 3D volume"),
        ("nan", "NaN or Inf"),
        ("zero_voxel", "voxel size is zero"),
    ],
)
def test_bad_inputs_have_clear_messages(tmp_path, case, message):
    path = tmp_path / f"{case}.mrc"
    if case == "not_mrc":
        path.write_text("this is not an MRC file" * 100)
    elif case == "truncated":
        _write(path, np.ones((16, 16, 16), np.float32))
        path.write_bytes(path.read_bytes()[:-1000])
    elif case == "two_d":
        _write(path, np.ones((16, 16), np.float32))
    elif case == "nan":
        data = np.ones((4, 4, 4), np.float32)
        data[1, 2, 3] = np.nan
        _write(path, data)
    elif case == "zero_voxel":
        _write(path, np.ones((4, 4, 4), np.float32), voxel=0.0)
    with pytest.raises(GumalignError, match=message) as info:
        read_volume(path, require_voxel_size=True)
    assert str(path) in str(info.value)
