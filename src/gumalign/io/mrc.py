"""MRC volumes: float32 [z, y, x] arrays with their voxel size in Å.

Reading parses the 1024-byte header itself (MRC2014, the layout mrcfile writes) so that three things other writers do
are handled rather than refused:

- A 3D array with nz > 1 is a volume whatever the space group says: IMOD and many other tools write tomograms and
  maps with ispg = 0, which mrcfile reads as an image stack. Only a header that says otherwise is refused: nz = 1 (one
  2D image), or ispg >= 401 with mz < nz (a stack of several volumes).
- ``.gz`` files (gzip) are read everywhere a ``.mrc`` is, decompressed in memory.
- The extended header (nsymbt bytes, e.g. FEI/SerialEM metadata) is skipped, never read: its size is checked against
  the file's size first, so a header claiming 2^31 bytes in a small file is one clear error, not a huge allocation.

mrcfile reports voxel_size as (x, y, z) = cella / (mx, my, mz); gumalign keeps one isotropic voxel size per volume
and refuses anisotropic ones rather than guessing. Modes 0 (int8), 1 (int16), 2 (float32), 6 (uint16) and 12
(float16) are read and converted to float32. Writing goes through mrcfile.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gumalign.errors import GumalignError
from gumalign.io.atomic import atomic_path
from gumalign.units import same_voxel_size

HEADER_BYTES = 1024
_MODES = {0: "i1", 1: "i2", 2: "f4", 6: "u2", 12: "f2"}
_MODE_NAMES = {3: "complex int16", 4: "complex float32", 101: "4-bit packed"}


class Volume(NamedTuple):
    """A volume and its voxel size. ``data`` is float32 [z, y, x]; ``voxel_size`` is in Å (0.0 when unset)."""

    data: np.ndarray
    voxel_size: float


class MRCHeader(NamedTuple):
    """The header fields gumalign uses. ``shape`` is (nz, ny, nx); ``voxel`` is (x, y, z) in Å (0 when unset)."""

    shape: tuple[int, int, int]
    mode: int
    dtype: np.dtype
    voxel: tuple[float, float, float]
    ispg: int
    mz: int
    extended_bytes: int

    @property
    def data_offset(self) -> int:
        return HEADER_BYTES + self.extended_bytes

    @property
    def data_bytes(self) -> int:
        nz, ny, nx = self.shape
        return nx * ny * nz * self.dtype.itemsize


def is_gzip(path: str | os.PathLike) -> bool:
    """True for a name ending in .gz (any case)."""
    return Path(path).name.lower().endswith(".gz")


def _bad(path: Path, why: str) -> GumalignError:
    return GumalignError(f"{path}: not a readable MRC file ({why})")


def parse_header(raw: bytes, path: Path, file_bytes: int) -> MRCHeader:
    """The header of an MRC file from its first 1024 bytes, checked against the file's size (bytes).

    Raises:
        GumalignError: too short, no plausible byte order, an unsupported mode, an extended header or data that
            do not fit in the file.
    """
    if len(raw) < HEADER_BYTES:
        raise _bad(path, f"{len(raw)} bytes, shorter than the {HEADER_BYTES}-byte header")
    stamp = raw[212]
    orders = ["<"] if stamp in (0x44, 0x41) else [">"] if stamp == 0x11 else ["<", ">"]
    for order in orders:
        ints = np.frombuffer(raw, dtype=f"{order}i4", count=24)
        nx, ny, nz, mode = (int(v) for v in ints[:4])
        if 0 < nx < 2**24 and 0 < ny < 2**24 and 0 < nz < 2**24 and mode in set(_MODES) | set(_MODE_NAMES):
            break
    else:
        raise _bad(path, "no valid dimensions or mode in the header")
    if mode not in _MODES:
        raise GumalignError(f"{path}: unsupported MRC mode {mode} ({_MODE_NAMES[mode]}); real-valued maps are needed")
    floats = np.frombuffer(raw, dtype=f"{order}f4", count=24)
    mx, my, mz = (int(v) for v in ints[7:10])
    cella = [float(v) for v in floats[10:13]]
    ispg, nsymbt = int(ints[22]), int(ints[23])
    if raw[208:212] != b"MAP " and raw[208:211] != b"MAP":
        # MRC2014 requires 'MAP ' at byte 208; older files may lack it, but then the size must match exactly.
        exact = HEADER_BYTES + max(nsymbt, 0) + nx * ny * nz * np.dtype(_MODES[mode]).itemsize
        if file_bytes != exact:
            raise _bad(path, "no 'MAP ' identifier in the header")
    if nsymbt < 0:
        raise _bad(path, f"negative extended header size {nsymbt}")
    if HEADER_BYTES + nsymbt > file_bytes:
        raise _bad(
            path, f"the header claims an extended header of {nsymbt} bytes but the file holds only {file_bytes} bytes"
        )
    voxel = tuple(c / m if m > 0 else 0.0 for c, m in zip(cella, (mx, my, mz)))
    header = MRCHeader((nz, ny, nx), mode, np.dtype(_MODES[mode]).newbyteorder(order), voxel, ispg, mz, nsymbt)
    if header.data_offset + header.data_bytes > file_bytes:
        raise _bad(
            path,
            f"file is truncated: {nx}×{ny}×{nz} voxels of mode {mode} need {header.data_offset + header.data_bytes} "
            f"bytes, the file holds {file_bytes}",
        )
    return header


def _read_gzip(path: Path) -> bytes:
    """The decompressed bytes of a .gz file, read in chunks (memory: the decompressed size)."""
    chunks = []
    try:
        with gzip.open(path, "rb") as handle:
            while True:
                chunk = handle.read(1 << 24)
                if not chunk:
                    break
                chunks.append(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise GumalignError(f"{path}: cannot decompress ({_short(exc)})") from None
    return b"".join(chunks)


def read_header(path: str | os.PathLike) -> MRCHeader:
    """The header of an MRC file (.gz too) without reading its data (a .gz is decompressed to check its size)."""
    path = Path(path)
    if not path.is_file():
        raise GumalignError(f"{path}: no such file")
    if is_gzip(path):
        raw = _read_gzip(path)
        return parse_header(raw[:HEADER_BYTES], path, len(raw))
    with open(path, "rb") as handle:
        return parse_header(handle.read(HEADER_BYTES), path, os.path.getsize(path))


def read_volume(path: str | os.PathLike, *, require_voxel_size: bool = False) -> Volume:
    """Read a 3D MRC volume (.mrc, .map, .rec, ... and any of them .gz).

    Raises:
        GumalignError: the file is missing, not an MRC file, truncated, not 3D (one 2D image, or a stack of several
            volumes), holds NaN/Inf, has an anisotropic voxel size, or (with ``require_voxel_size``) has no voxel size.
    """
    path = Path(path)
    if not path.is_file():
        raise GumalignError(f"{path}: no such file")
    try:
        if is_gzip(path):
            raw = _read_gzip(path)
            header = parse_header(raw[:HEADER_BYTES], path, len(raw))
            data = np.frombuffer(raw, dtype=header.dtype, count=int(np.prod(header.shape)), offset=header.data_offset)
        else:
            with open(path, "rb") as handle:
                header = parse_header(handle.read(HEADER_BYTES), path, os.path.getsize(path))
                handle.seek(header.data_offset)
                data = np.fromfile(handle, dtype=header.dtype, count=int(np.prod(header.shape)))
    except OSError as exc:
        raise GumalignError(f"{path}: cannot read MRC file ({_short(exc)})") from None
    nz, ny, nx = header.shape
    if nz == 1:
        raise GumalignError(f"{path}: expected a 3D volume, found one 2D image of {nx}×{ny} pixels")
    if header.ispg >= 401 and 0 < header.mz < nz:
        raise GumalignError(
            f"{path}: expected a 3D volume, found a stack of {nz // header.mz} volumes (space group {header.ispg})"
        )
    data = data.reshape(header.shape).astype(np.float32, copy=True)
    if not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise GumalignError(f"{path}: {bad} voxels are NaN or Inf")
    voxel = header.voxel
    if max(voxel) > 0 and not np.all(same_voxel_size(voxel, voxel[0])):
        raise GumalignError(f"{path}: anisotropic voxel size {voxel} Å is not supported")
    voxel_size = float(voxel[0])
    if require_voxel_size and voxel_size <= 0:
        raise GumalignError(f"{path}: voxel size is zero; set it in the header or pass --voxel-size")
    return Volume(data, voxel_size)


def write_volume(path: str | os.PathLike, data: np.ndarray, voxel_size: float) -> None:
    """Write a float32 [z, y, x] volume with its voxel size (Å), atomically (temp file, then rename).

    The same data give the same bytes: the header label is fixed text (mrcfile would stamp the time), and a name
    ending in '.gz' is gzip-compressed with no time or name in the gzip header.
    """
    import mrcfile

    data = np.asarray(data)
    if data.ndim != 3:
        raise GumalignError(f"{path}: refusing to write data of shape {data.shape} as a 3D volume")
    if voxel_size <= 0:
        raise GumalignError(f"{path}: refusing to write a volume with voxel size {voxel_size} Å")
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(data, dtype=np.float32))
            mrc.voxel_size = float(voxel_size)
            mrc.header.label[0] = f"{'gumalign':<80s}".encode("ascii")
            mrc.header.nlabl = 1
        if is_gzip(path):
            raw = tmp.read_bytes()
            with open(tmp, "wb") as handle:
                with gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0, compresslevel=9) as gz:
                    gz.write(raw)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
