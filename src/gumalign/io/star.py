"""RELION particle STAR files (3.0, 3.1, 4.x, 5) <-> :class:`ParticleTable`.

Every value is read as the exact string in the file, so unknown columns and names such as tomogram '00255' pass
through untouched; numeric columns are converted only when asked for. Output is always RELION 3.1 style: a
data_optics block and a data_particles block with shifts in rlnOriginX/Y/ZAngst.

Shifts follow RELION: the particle's centre (pixels) is rlnCoordinate - rlnOrigin*Angst / pixel size, so a particle
equals the reference rotated by A (from rlnAngleRot/Tilt/Psi) and shifted by -origin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from gumalign.errors import GumalignError
from gumalign.io.atomic import atomic_path

ANGLE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
ORIGIN_ANGST_COLUMNS = ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")
ORIGIN_PIXEL_COLUMNS = ("rlnOriginX", "rlnOriginY", "rlnOriginZ")
SUBTOMOGRAM_ANGLE_COLUMNS = ("rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi")
_PIXEL_SIZE_COLUMNS = ("rlnImagePixelSize", "rlnPixelSize")


@dataclass
class ParticleTable:
    """A particle list in RELION's meaning.

    Attributes:
        particles: one row per particle; columns named as in RELION (rlnImageName, ...). Values read from a file are
            the file's strings; values gumalign sets are numbers.
        optics: the optics groups (RELION >= 3.1) or None (3.0).
        source: the STAR file read (image paths are resolved relative to its folder), or None.
        version: the RELION flavour detected: '3.0', '3.1', '4' or '5'.
    """

    particles: pd.DataFrame
    optics: pd.DataFrame | None = None
    source: Path | None = None
    version: str = "3.1"
    _name: str = field(default="", repr=False)

    # -- basics -----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.particles)

    @property
    def name(self) -> str:
        """How messages refer to this table: its file name, or 'particle table'."""
        return str(self.source) if self.source is not None else (self._name or "particle table")

    def has(self, column: str) -> bool:
        return column in self.particles.columns

    def numeric(self, column: str) -> np.ndarray:
        """A particle column as float64; a missing or non-numeric column is a GumalignError naming it."""
        if column not in self.particles.columns:
            raise GumalignError(f"{self.name}: missing column _{column}")
        values = pd.to_numeric(self.particles[column], errors="coerce").to_numpy(dtype=np.float64)
        if np.any(np.isnan(values)):
            row = int(np.flatnonzero(np.isnan(values))[0])
            raise GumalignError(
                f"{self.name}: column _{column} has a non-numeric value {self.particles[column].iloc[row]!r} "
                f"in particle {row + 1}"
            )
        return values

    # -- paths --------------------------------------------------------------------------------------------------
    def _resolve(self, names: pd.Series, column: str) -> list[Path]:
        base = self.source.parent if self.source is not None else Path(".")
        out = []
        for name in names.astype(str):
            if "@" in name:
                raise GumalignError(f"{self.name}: _{column} {name!r} points into a 2D stack; 3D MRC files are needed")
            path = Path(name)
            if not path.is_absolute():
                beside_star = base / path
                # RELION resolves against its project folder (the working directory); prefer the STAR's folder.
                path = beside_star if beside_star.exists() or not path.exists() else path
            out.append(path)
        return out

    def image_paths(self) -> list[Path]:
        """Each particle's subtomogram (rlnImageName), resolved relative to the STAR file's folder."""
        if not self.has("rlnImageName"):
            raise GumalignError(f"{self.name}: missing column _rlnImageName")
        return self._resolve(self.particles["rlnImageName"], "rlnImageName")

    def weight_paths(self) -> list[Path] | None:
        """Each particle's 3D weight (rlnCtfImage, RELION's N³ centred cube), or None when the column is absent."""
        if not self.has("rlnCtfImage"):
            return None
        return self._resolve(self.particles["rlnCtfImage"], "rlnCtfImage")

    # -- geometry -----------------------------------------------------------------------------------------------
    def pixel_sizes(self, default: float | None = None) -> np.ndarray:
        """Pixel size in Å per particle: from the particle row, else its optics group, else ``default``.

        Looks at rlnImagePixelSize / rlnPixelSize, then (RELION 4) rlnTomoTiltSeriesPixelSize × rlnTomoSubtomogramBinning,
        then (3.0) rlnDetectorPixelSize·10⁴ / rlnMagnification.
        """
        n = len(self)
        for column in _PIXEL_SIZE_COLUMNS:
            if self.has(column):
                return self.numeric(column)
        if self.optics is not None and len(self.optics):
            group_px = _optics_pixel_sizes(self.optics, self.name)
            if group_px is not None:
                if len(self.optics) == 1 or not self.has("rlnOpticsGroup"):
                    return np.full(n, float(next(iter(group_px.values()))))
                groups = self.numeric("rlnOpticsGroup").astype(int)
                missing = sorted(set(groups) - set(group_px))
                if missing:
                    raise GumalignError(f"{self.name}: optics group {missing[0]} is not in data_optics")
                return np.array([group_px[g] for g in groups], dtype=np.float64)
        if self.has("rlnDetectorPixelSize") and self.has("rlnMagnification"):
            return self.numeric("rlnDetectorPixelSize") * 1e4 / self.numeric("rlnMagnification")
        if default is not None and default > 0:
            return np.full(n, float(default))
        raise GumalignError(f"{self.name}: no pixel size (rlnImagePixelSize in data_optics); pass --pixel-size")

    def has_angles(self) -> bool:
        return all(self.has(c) for c in ANGLE_COLUMNS)

    def angles(self) -> np.ndarray:
        """(N, 3) RELION (rot, tilt, psi) in degrees; every angle column must be present."""
        for column in ANGLE_COLUMNS:
            if not self.has(column):
                raise GumalignError(f"{self.name}: missing column _{column} (the particles have no orientations)")
        return np.stack([self.numeric(c) for c in ANGLE_COLUMNS], axis=1)

    def matrices(self) -> np.ndarray:
        """(N, 3, 3) RELION matrices A (rotate the reference into each particle)."""
        from gumalign.geometry.euler import euler_to_matrix

        return euler_to_matrix(self.angles())

    def subtomogram_matrices(self) -> np.ndarray | None:
        """(N, 3, 3) RELION 5 subtomogram frames from rlnTomoSubtomogramRot/Tilt/Psi, or None.

        The particle's orientation in the tomogram is subtomogram_matrix @ matrix; alignment against the extracted
        image uses :meth:`matrices` alone.
        """
        if not all(self.has(c) for c in SUBTOMOGRAM_ANGLE_COLUMNS):
            return None
        from gumalign.geometry.euler import euler_to_matrix

        return euler_to_matrix(np.stack([self.numeric(c) for c in SUBTOMOGRAM_ANGLE_COLUMNS], axis=1))

    def shifts_angst(self, default_pixel_size: float | None = None) -> np.ndarray:
        """(N, 3) origins (x, y, z) in Å in RELION's meaning; zeros when the file has none."""
        if all(self.has(c) for c in ORIGIN_ANGST_COLUMNS):
            return np.stack([self.numeric(c) for c in ORIGIN_ANGST_COLUMNS], axis=1)
        if all(self.has(c) for c in ORIGIN_PIXEL_COLUMNS):
            px = self.pixel_sizes(default_pixel_size)
            return np.stack([self.numeric(c) for c in ORIGIN_PIXEL_COLUMNS], axis=1) * px[:, None]
        return np.zeros((len(self), 3))

    def shifts_px(self, default_pixel_size: float | None = None) -> np.ndarray:
        """(N, 3) origins (x, y, z) in pixels of the particle image."""
        if not any(self.has(c) for c in ORIGIN_ANGST_COLUMNS) and all(self.has(c) for c in ORIGIN_PIXEL_COLUMNS):
            return np.stack([self.numeric(c) for c in ORIGIN_PIXEL_COLUMNS], axis=1)
        if not any(self.has(c) for c in ORIGIN_ANGST_COLUMNS + ORIGIN_PIXEL_COLUMNS):
            return np.zeros((len(self), 3))
        return self.shifts_angst(default_pixel_size) / self.pixel_sizes(default_pixel_size)[:, None]

    def half_sets(self) -> np.ndarray | None:
        """rlnRandomSubset (1 or 2) per particle as int, or None when the column is absent."""
        if not self.has("rlnRandomSubset"):
            return None
        halves = self.numeric("rlnRandomSubset").astype(int)
        bad = set(np.unique(halves)) - {1, 2}
        if bad:
            raise GumalignError(f"{self.name}: _rlnRandomSubset must be 1 or 2, found {sorted(bad)[0]}")
        return halves

    def classes(self) -> np.ndarray | None:
        """rlnClassNumber per particle as int, or None."""
        return self.numeric("rlnClassNumber").astype(int) if self.has("rlnClassNumber") else None

    # -- edits (each returns a new table) -----------------------------------------------------------------------
    def with_columns(self, **columns) -> "ParticleTable":
        """A copy with columns set or added (values: scalars or length-N sequences)."""
        particles = self.particles.copy()
        for key, values in columns.items():
            particles[key] = values
        return replace(self, particles=particles)

    def with_alignment(
        self, matrices: np.ndarray, shifts_angst: np.ndarray, **columns
    ) -> "ParticleTable":
        """A copy holding new orientations (RELION matrices A) and origins (x, y, z, Å), plus any extra columns.

        Pixel-unit origin columns (RELION 3.0) are dropped so that only one shift is on record.
        """
        from gumalign.geometry.euler import matrix_to_euler

        angles = matrix_to_euler(np.asarray(matrices))
        shifts = np.asarray(shifts_angst, dtype=np.float64)
        if angles.shape != (len(self), 3) or shifts.shape != (len(self), 3):
            raise ValueError(f"expected {len(self)} rotations and shifts, got {angles.shape} and {shifts.shape}")
        values = {c: angles[:, i] for i, c in enumerate(ANGLE_COLUMNS)}
        values.update({c: shifts[:, i] for i, c in enumerate(ORIGIN_ANGST_COLUMNS)})
        values.update(columns)
        out = self.with_columns(**values)
        out.particles = out.particles.drop(columns=[c for c in ORIGIN_PIXEL_COLUMNS if c in out.particles.columns])
        return out

    def subset(self, rows: np.ndarray | list[int]) -> "ParticleTable":
        """A copy with only the given rows (positional indices), in that order."""
        return replace(self, particles=self.particles.iloc[np.asarray(rows, dtype=int)].reset_index(drop=True))


def _optics_pixel_sizes(optics: pd.DataFrame, name: str) -> dict[int, float] | None:
    """{optics group number: pixel size (Å)} from an optics block, or None when it has no pixel size."""
    def col(c):
        return pd.to_numeric(optics[c], errors="coerce").to_numpy(dtype=np.float64)

    if "rlnImagePixelSize" in optics.columns:
        px = col("rlnImagePixelSize")
    elif "rlnTomoTiltSeriesPixelSize" in optics.columns:
        px = col("rlnTomoTiltSeriesPixelSize")
        if "rlnTomoSubtomogramBinning" in optics.columns:
            px = px * col("rlnTomoSubtomogramBinning")
    else:
        return None
    if np.any(~np.isfinite(px)) or np.any(px <= 0):
        raise GumalignError(f"{name}: data_optics has an invalid pixel size")
    groups = col("rlnOpticsGroup").astype(int) if "rlnOpticsGroup" in optics.columns else np.arange(1, len(px) + 1)
    return dict(zip(groups.tolist(), px.tolist()))


# -- reading --------------------------------------------------------------------------------------------------------
def _column_names(path: Path) -> list[str]:
    """Every loop column name in the file (without the leading underscore)."""
    names = []
    with open(path, "r", errors="replace") as handle:
        for line in handle:
            stripped = line.strip()
            if stripped.startswith("_"):
                names.append(stripped.split()[0][1:])
    return names


def read_star(path: str | os.PathLike) -> ParticleTable:
    """Read a RELION particle STAR file of any flavour (3.0, 3.1, 4.x, 5).

    Raises:
        GumalignError: missing or unreadable file, no particle block.
    """
    import starfile

    path = Path(path)
    if not path.is_file():
        raise GumalignError(f"{path}: no such file")
    try:
        columns = _column_names(path)
        blocks = starfile.read(path, always_dict=True, parse_as_string=list(dict.fromkeys(columns)))
    except UnicodeDecodeError:
        raise GumalignError(f"{path}: not a STAR file (binary content)") from None
    except Exception as exc:  # starfile raises assorted pandas errors on malformed files
        raise GumalignError(f"{path}: cannot parse STAR file ({type(exc).__name__}: {str(exc)[:150]})") from None
    tables = {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}
    if not tables:
        raise GumalignError(f"{path}: no data loop found; is this a RELION STAR file?")
    if "particles" in tables:
        particles = tables["particles"]
    elif len(tables) == 1:
        particles = next(iter(tables.values()))
    else:
        raise GumalignError(f"{path}: several data blocks and none is data_particles")
    optics = tables.get("optics")
    particles = particles.reset_index(drop=True)
    return ParticleTable(particles=particles, optics=optics, source=path, version=_detect_version(particles, optics))


def _detect_version(particles: pd.DataFrame, optics: pd.DataFrame | None) -> str:
    cols = set(particles.columns)
    if {"rlnCenteredCoordinateXAngst", "rlnTomoSubtomogramRot"} & cols:
        return "5"
    if {"rlnTomoName", "rlnTomoParticleName"} & cols:
        return "4"
    return "3.1" if optics is not None else "3.0"


# -- writing --------------------------------------------------------------------------------------------------------
def write_star(
    table: ParticleTable,
    path: str | os.PathLike,
    *,
    box_size: int | None = None,
    default_pixel_size: float | None = None,
) -> None:
    """Write ``table`` in RELION 3.1 style (data_optics + data_particles, origins in Å), atomically.

    Args:
        box_size: rlnImageSize for a newly made optics block (tables read from RELION 3.0 have none).
        default_pixel_size: pixel size (Å) to use when the table has none.
    """
    import starfile

    particles = table.particles.copy()
    optics = table.optics.copy() if table.optics is not None else None
    has_pixel_origins = all(c in particles.columns for c in ORIGIN_PIXEL_COLUMNS)
    if has_pixel_origins and not any(c in particles.columns for c in ORIGIN_ANGST_COLUMNS):
        shifts = table.shifts_angst(default_pixel_size)
        for i, c in enumerate(ORIGIN_ANGST_COLUMNS):
            particles[c] = shifts[:, i]
        particles = particles.drop(columns=list(ORIGIN_PIXEL_COLUMNS))
    if optics is None:
        px = table.pixel_sizes(default_pixel_size)
        unique = list(dict.fromkeys(np.round(px, 6).tolist()))
        optics = pd.DataFrame(
            {
                "rlnOpticsGroupName": [f"opticsGroup{i + 1}" for i in range(len(unique))],
                "rlnOpticsGroup": list(range(1, len(unique) + 1)),
                "rlnImagePixelSize": unique,
                "rlnImageDimensionality": [3] * len(unique),
            }
        )
        if box_size is not None:
            optics["rlnImageSize"] = [int(box_size)] * len(unique)
        group_of = {v: i + 1 for i, v in enumerate(unique)}
        particles["rlnOpticsGroup"] = [group_of[v] for v in np.round(px, 6).tolist()]
    elif "rlnOpticsGroup" not in particles.columns:
        particles["rlnOpticsGroup"] = 1
    particles = _relocate_paths(particles, table.source, Path(path))
    with atomic_path(path) as tmp:
        starfile.write({"optics": optics, "particles": particles}, tmp, float_format="%.6f")
        # starfile stamps the time into its first comment; a fixed line keeps same-input output byte-identical.
        text = tmp.read_text()
        if text.startswith("# Created by"):
            text = "# Created by gumalign\n" + text.split("\n", 1)[1]
            tmp.write_text(text)


_PATH_COLUMNS = ("rlnImageName", "rlnCtfImage")


def _relocate_paths(particles: pd.DataFrame, source: Path | None, target: Path) -> pd.DataFrame:
    """Rewrite relative image paths that were found beside the source STAR so they still resolve beside ``target``.

    Paths that resolve against the working directory (RELION's project-folder convention) are left as they are.
    """
    if source is None or source.parent.resolve() == target.parent.resolve():
        return particles
    for column in _PATH_COLUMNS:
        if column not in particles.columns:
            continue
        new = []
        for name in particles[column].astype(str):
            path = Path(name)
            beside = source.parent / path
            if not path.is_absolute() and beside.exists():
                name = os.path.relpath(beside.resolve(), target.parent.resolve())
            new.append(name)
        particles[column] = new
    return particles
