"""MRC volumes: float32 [z, y, x] arrays with their voxel size in Å.

mrcfile reports voxel_size as (x, y, z); gumalign keeps one isotropic voxel size per volume and refuses anisotropic
ones rather than guessing. Mode 12 (float16) is read and converted to float32.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gumalign.errors import GumalignError
from gumalign.io.atomic import atomic_path


class Volume(NamedTuple):
    """A volume and its voxel size. ``data`` is float32 [z, y, x]; ``voxel_size`` is in Å (0.0 when unset)."""

    data: np.ndarray
    voxel_size: float


def read_volume(path: str | os.PathLike, *, require_voxel_size: bool = False) -> Volume:
    """Read a 3D MRC volume.

    Raises:
        GumalignError: the file is missing, not an MRC file, truncated, not 3D, holds NaN/Inf, has an anisotropic
            voxel size, or (with ``require_voxel_size``) has no voxel size.
    """
    import mrcfile

    path = Path(path)
    if not path.is_file():
        raise GumalignError(f"{path}: no such file")
    try:
        with mrcfile.open(path, mode="r", permissive=False) as mrc:
            data = np.asarray(mrc.data)
            vs = mrc.voxel_size
            voxel = (float(vs.x), float(vs.y), float(vs.z))
            is_volume = mrc.is_volume() or mrc.is_volume_stack()
    except ValueError as exc:
        raise GumalignError(f"{path}: not a readable MRC file ({_short(exc)})") from None
    except (OSError, EOFError) as exc:
        raise GumalignError(f"{path}: cannot read MRC file ({_short(exc)})") from None
    if data is None or data.ndim != 3 or not is_volume:
        shape = None if data is None else data.shape
        raise GumalignError(f"{path}: expected a 3D volume, found data of shape {shape}")
    if data.dtype.kind not in "fiu":
        raise GumalignError(f"{path}: unsupported MRC data type {data.dtype}")
    data = data.astype(np.float32, copy=True)
    if not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise GumalignError(f"{path}: {bad} voxels are NaN or Inf")
    if max(voxel) > 0 and not np.allclose(voxel, voxel[0], rtol=1e-4):
        raise GumalignError(f"{path}: anisotropic voxel size {voxel} Å is not supported")
    voxel_size = voxel[0]
    if require_voxel_size and voxel_size <= 0:
        raise GumalignError(f"{path}: voxel size is zero; set it in the header or pass --voxel-size")
    return Volume(data, voxel_size)


def write_volume(path: str | os.PathLike, data: np.ndarray, voxel_size: float) -> None:
    """Write a float32 [z, y, x] volume with its voxel size (Å), atomically (temp file, then rename).

    The same data give the same bytes: the header label is fixed text (mrcfile would stamp the time), and a name
    ending in '.gz' is gzip-compressed with no time or name in the gzip header.
    """
    import gzip

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
        if Path(path).name.lower().endswith(".gz"):
            raw = tmp.read_bytes()
            with open(tmp, "wb") as handle:
                with gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0, compresslevel=9) as gz:
                    gz.write(raw)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
