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


# -- volumes by shape, .gz, extended headers (issue 16) ------------------------------------------------------------
def test_imod_style_ispg_0_volume_is_a_volume(tmp_path, rng):
    """IMOD writes tomograms and maps with ispg = 0: mrcfile calls that an image stack; its data are still a volume."""
    data = rng.standard_normal((9, 8, 7)).astype(np.float32)
    path = tmp_path / "imod.rec"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.header.ispg = 0
        mrc.voxel_size = 6.5
    with mrcfile.open(path) as mrc:
        assert mrc.is_image_stack() and not mrc.is_volume()  # what made the old reader refuse it
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.data, data)
    assert vol.voxel_size == pytest.approx(6.5)


def test_gzip_and_extended_header_are_read_like_mrcfile_reads_them(tmp_path, rng):
    import gzip

    data = rng.standard_normal((6, 6, 6)).astype(np.float32)
    path = tmp_path / "ext.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.set_extended_header(np.frombuffer(bytes(range(256)) * 3, dtype="V1"))
        mrc.voxel_size = 3.0
    with mrcfile.open(path) as mrc:  # independent reader
        assert int(mrc.header.nsymbt) == 768
        expected = np.array(mrc.data)
    np.testing.assert_array_equal(read_volume(path).data, expected)
    gz = tmp_path / "ext.mrc.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    vol = read_volume(gz)
    np.testing.assert_array_equal(vol.data, expected)
    assert vol.voxel_size == pytest.approx(3.0)


def test_extended_header_claiming_2_gib_is_one_error_without_allocating_it(tmp_path):
    import tracemalloc

    path = tmp_path / "liar.mrc"
    _write(path, np.ones((4, 4, 4), np.float32))
    raw = bytearray(path.read_bytes())
    raw[92:96] = np.int32(2**31 - 1).tobytes()  # nsymbt
    path.write_bytes(bytes(raw))
    tracemalloc.start()
    try:
        with pytest.raises(GumalignError, match=r"liar\.mrc: .*extended header of 2147483647 bytes"):
            read_volume(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20


def test_a_stack_of_volumes_and_a_2d_image_are_refused(tmp_path):
    path = tmp_path / "stack.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.ones((2, 4, 4, 4), np.float32))  # mrcfile writes ispg 401, mz = 4, nz = 8
    with pytest.raises(GumalignError, match="stack of 2 volumes"):
        read_volume(path)
