"""Dynamo tables (.tbl) <-> :class:`~gumalign.io.star.ParticleTable`, read and written with the dynamotable package.

Dynamo's table convention (wiki.dynamo.biozentrum.unibas.ch, Table_convention): column 1 tag, 4-6 dx, dy, dz (pixels),
7-9 tdrot, tilt, narot (degrees), 10 cc, 20 tomo, 22 class, 24-26 x, y, z (pixels), 36 apix (Å). The particle's
centre is x + dx; the table map (``<name>.doc``: "tomo index  tomogram file" per line) names the tomograms.

In RELION's meaning (DESIGN.md) this is:

- rlnCoordinateX/Y/Z = x, y, z; rlnOriginX/Y/Z (pixels) = -dx, -dy, -dz (RELION's centre = coordinate - origin);
  rlnOriginX/Y/ZAngst = -d·apix when apix is set.
- Angles: Dynamo's matrix for (tdrot, tilt, narot) is the extrinsic zxz rotation, RELION's for (rot, tilt, psi) the
  intrinsic ZYZ one, both "passive" in the eulerangles package's terms (its metadata for 'dynamo' and 'relion'), so
  the same particle has the same matrix: Rotation.from_euler('zxz', [tdrot, tilt, narot]) ==
  Rotation.from_euler('ZYZ', [rot, tilt, psi]); in closed form rot = narot - 90, tilt = tilt, psi = tdrot + 90.
  RELION's A (reference -> particle) is that matrix transposed.
- Particle images: Dynamo crops particle_<tag, 6 digits>.em into a data folder; gumalign reads MRC, so rlnImageName
  is ``particle_<tag:06d>.mrc`` beside the table (convert the .em files, or keep a column in a STAR file instead).
- tomo -> rlnTomoName (the tomogram file's stem from the table map, else the number) and rlnMicrographName (the
  file); class -> rlnClassNumber; cc -> dynamoCc. Every Dynamo column is kept as ``dynamo<Name>`` (dynamoTag,
  dynamoCc, ...), so a table read and written back keeps the columns gumalign does not use.

Writing fills the columns from the table (orientations, origins, coordinates, class, gumAlignScore as cc, pixel
size as apix), takes the other columns from the dynamo<Name> ones when present, and writes the table map when the
particles name their tomograms.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from gumalign.errors import GumalignError
from gumalign.io.atomic import atomic_path

PREFIX = "dynamo"


def _kept_name(column: str) -> str:
    return PREFIX + "".join(part.capitalize() for part in column.split("_"))


def dynamo_to_relion(dynamo_angles: np.ndarray) -> np.ndarray:
    """(N, 3) Dynamo (tdrot, tilt, narot) -> (N, 3) RELION (rot, tilt, psi), degrees, the same rotation matrices."""
    from gumalign.geometry.euler import matrix_to_euler

    return matrix_to_euler(dynamo_matrices(dynamo_angles))


def dynamo_matrices(dynamo_angles: np.ndarray) -> np.ndarray:
    """(N, 3, 3) RELION matrices A (reference -> particle) of Dynamo (tdrot, tilt, narot) in degrees."""
    from scipy.spatial.transform import Rotation

    angles = np.atleast_2d(np.asarray(dynamo_angles, dtype=np.float64))
    return np.transpose(Rotation.from_euler("zxz", angles, degrees=True).as_matrix(), (0, 2, 1))


def relion_to_dynamo(matrices: np.ndarray) -> np.ndarray:
    """(N, 3, 3) RELION matrices A -> (N, 3) Dynamo (tdrot, tilt, narot) in degrees."""
    from scipy.spatial.transform import Rotation

    matrices = np.asarray(matrices, dtype=np.float64).reshape(-1, 3, 3)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gimbal lock at tilt 0 or 180: scipy picks one of the equivalent triples
        return Rotation.from_matrix(np.transpose(matrices, (0, 2, 1))).as_euler("zxz", degrees=True)


def table_map_path(table: Path) -> Path:
    return table.with_suffix(".doc")


def read_dynamo(path: str | os.PathLike):
    """Read a Dynamo table (and its table map ``<name>.doc`` when present) as a ParticleTable (version 'dynamo')."""
    import dynamotable

    from gumalign.io.star import ParticleTable

    path = Path(path)
    if not path.is_file():
        raise GumalignError(f"{path}: no such file")
    try:
        raw = dynamotable.read(str(path))
    except Exception as exc:  # pandas parser errors
        raise GumalignError(f"{path}: cannot parse Dynamo table ({type(exc).__name__}: {str(exc)[:150]})") from None
    needed = ("tag", "dx", "dy", "dz", "tdrot", "tilt", "narot")
    if raw.shape[1] < 26 or any(c not in raw.columns for c in needed):
        raise GumalignError(f"{path}: a Dynamo table has at least 26 columns, found {raw.shape[1]}")
    raw = raw.loc[:, [c for c in raw.columns if c]]
    for column in raw.columns:
        values = pd.to_numeric(raw[column], errors="coerce")
        bad = np.flatnonzero(~np.isfinite(values.to_numpy(dtype=np.float64)))
        if len(bad):
            raise GumalignError(
                f"{path}: column {column} has a non-numeric or non-finite value {raw[column].iloc[bad[0]]!r} in "
                f"row {bad[0] + 1}"
            )
        raw[column] = values
    tomo_files: dict[int, str] = {}
    doc = table_map_path(path)
    if doc.is_file():
        for line in doc.read_text().splitlines():
            parts = line.split(maxsplit=1)
            if len(parts) == 2:
                tomo_files[int(float(parts[0]))] = parts[1].strip()
    n = len(raw)
    apix = raw["apix"].to_numpy(dtype=np.float64) if "apix" in raw.columns else np.zeros(n)
    angles = dynamo_to_relion(raw[["tdrot", "tilt", "narot"]].to_numpy())
    particles = {
        "rlnImageName": [f"particle_{int(t):06d}.mrc" for t in raw["tag"]],
        "rlnCoordinateX": raw["x"].to_numpy(np.float64),
        "rlnCoordinateY": raw["y"].to_numpy(np.float64),
        "rlnCoordinateZ": raw["z"].to_numpy(np.float64),
        "rlnAngleRot": angles[:, 0],
        "rlnAngleTilt": angles[:, 1],
        "rlnAnglePsi": angles[:, 2],
    }
    shifts = -raw[["dx", "dy", "dz"]].to_numpy(np.float64)
    optics = None
    if np.all(apix > 0):
        for i, c in enumerate(("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")):
            particles[c] = shifts[:, i] * apix
        if np.allclose(apix, apix[0], rtol=1e-6):
            optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                                   "rlnImagePixelSize": [float(apix[0])]})
            particles["rlnOpticsGroup"] = np.ones(n, dtype=int)
        else:
            particles["rlnImagePixelSize"] = apix
    else:
        for i, c in enumerate(("rlnOriginX", "rlnOriginY", "rlnOriginZ")):
            particles[c] = shifts[:, i]
    tomo = raw["tomo"].astype(int)
    particles["rlnTomoName"] = [Path(tomo_files[t]).stem if t in tomo_files else str(t) for t in tomo]
    if tomo_files:
        particles["rlnMicrographName"] = [tomo_files.get(t, str(t)) for t in tomo]
    if "class" in raw.columns and (raw["class"] != 0).any():
        particles["rlnClassNumber"] = raw["class"].astype(int).to_numpy()
    for column in raw.columns:
        particles[_kept_name(column)] = raw[column].to_numpy()
    frame = pd.DataFrame(particles)
    return ParticleTable(particles=frame, optics=optics, source=path, version="dynamo")


def write_dynamo(table, path: str | os.PathLike, *, default_pixel_size: float | None = None) -> None:
    """Write ``table`` as a Dynamo table (atomically), and its table map ``<name>.doc`` when tomograms are named."""
    import dynamotable
    from dynamotable.utils import COLUMN_NAMES

    path = Path(path)
    n = len(table)
    columns: dict[str, object] = {}
    for name in COLUMN_NAMES:
        kept = _kept_name(name)
        if table.has(kept):
            columns[name] = pd.to_numeric(table.particles[kept], errors="coerce").fillna(0).to_numpy()
    columns.setdefault("tag", np.arange(1, n + 1))
    columns.setdefault("aligned_value", np.ones(n, dtype=int))
    if table.has_angles():
        angles = relion_to_dynamo(table.matrices())
        columns["tdrot"], columns["tilt"], columns["narot"] = angles[:, 0], angles[:, 1], angles[:, 2]
    origins = table.origins_px(default_pixel_size)
    columns["dx"], columns["dy"], columns["dz"] = -origins[:, 0], -origins[:, 1], -origins[:, 2]
    for name, column in zip(("x", "y", "z"), ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")):
        if table.has(column):
            columns[name] = table.numeric(column)
    if table.has("rlnClassNumber"):
        columns["class"] = table.numeric("rlnClassNumber").astype(int)
    if table.has("gumAlignScore"):
        columns["cc"] = table.numeric("gumAlignScore")
    try:
        columns["apix"] = table.pixel_sizes(default_pixel_size)
    except GumalignError:
        pass
    frame = pd.DataFrame(columns)
    names = None
    if table.has("rlnMicrographName") or table.has("rlnTomoName"):
        names = table.particles["rlnMicrographName" if table.has("rlnMicrographName") else "rlnTomoName"].astype(str)
        if not table.has(_kept_name("tomo")):
            index = {name: i + 1 for i, name in enumerate(dict.fromkeys(names))}
            frame["tomo"] = [index[v] for v in names]
        frame["tomo_file"] = names.to_numpy()
    with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as folder:
        scratch = Path(folder) / "table.tbl"
        dynamotable.write(frame, str(scratch))
        with atomic_path(path) as tmp:
            tmp.write_bytes(scratch.read_bytes())
        if names is not None:
            with atomic_path(table_map_path(path)) as tmp:
                tmp.write_bytes((Path(folder) / "table.doc").read_bytes())
