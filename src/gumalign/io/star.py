"""RELION particle STAR files (3.0, 3.1, 4.x, 5) <-> :class:`ParticleTable`.

Every value is read as the exact string in the file, so unknown columns and names such as tomogram '00255' pass
through untouched; numeric columns are converted only when asked for. A Dynamo table (.tbl) is read into the same
ParticleTable (gumalign.io.dynamo) wherever a STAR file is accepted, and written when the output name ends in .tbl.

Output is RELION 3.1, 4 or 5 (default: the input's flavour; 3.0 input is written as 3.1): a data_optics block and a
data_particles block with shifts in rlnOriginX/Y/ZAngst. The optics block is always complete, with every column
RELION's loaders need (rlnOpticsGroup, rlnOpticsGroupName, rlnImagePixelSize, rlnImageSize, rlnImageDimensionality 3,
rlnVoltage, rlnSphericalAberration, rlnAmplitudeContrast; 4 and 5 add rlnTomoTiltSeriesPixelSize and
rlnTomoSubtomogramBinning). Microscope values the input lacks are written as 300 kV, 2.7 mm and 0.1, and a comment
line in the file says so. RELION 4 and 5 need rlnTomoName (copied from rlnMicrographName when absent); 5 stores
positions as rlnCenteredCoordinateX/Y/ZAngst = (rlnCoordinate - tomogram size / 2) × tilt-series pixel size (RELION
src/jaz/tomography/particle_set.cpp, getParticleCoordDecenteredPixel; sizes from a RELION 5 tomograms.star), and can
come with an optimisation set naming the particle and tomogram files.

Checks on read: a column named twice in one block is an error; orientations and origins must be finite; an origin
beyond 10⁶ Å (0.1 mm) is refused as corrupt; angles outside ±180° are wrapped (the same rotation) and a note says so.

Shifts follow RELION: the particle's centre (pixels) is rlnCoordinate - rlnOrigin*Angst / pixel size, so a particle
equals the reference rotated by A (from rlnAngleRot/Tilt/Psi) and shifted by -origin.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from gumalign.errors import GumalignError
from gumalign.io.atomic import atomic_path
from gumalign.units import same_voxel_size

ANGLE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
ORIGIN_ANGST_COLUMNS = ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")
ORIGIN_PIXEL_COLUMNS = ("rlnOriginX", "rlnOriginY", "rlnOriginZ")
SUBTOMOGRAM_ANGLE_COLUMNS = ("rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi")
_PIXEL_SIZE_COLUMNS = ("rlnImagePixelSize", "rlnPixelSize")
CENTERED_COLUMNS = ("rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst")
COORDINATE_COLUMNS = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
STAR_VERSIONS = ("3.1", "4", "5")
MICROSCOPE_COLUMNS = ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast")
DEFAULT_MICROSCOPE = {"rlnVoltage": 300.0, "rlnSphericalAberration": 2.7, "rlnAmplitudeContrast": 0.1}
ABSURD_ORIGIN_ANGST = 1e6  # 0.1 mm: larger than any tomogram; an origin beyond it is a corrupt value


@dataclass(frozen=True)
class StarOutput:
    """How a table is to be written (set by :meth:`ParticleTable.for_output`, used by :func:`write_star`).

    Attributes:
        version: '3.1', '4' or '5', or None for the input's flavour.
        tomogram_sizes: {rlnTomoName: (x, y, z) size in tilt-series pixels}, from a RELION 5 tomograms.star; needed to
            turn rlnCoordinate* into RELION 5's rlnCenteredCoordinate*Angst.
        tomograms_file: that tomograms.star (named in the optimisation set).
        optimisation_set: also write ``<name>_optimisation_set.star`` beside the particles (RELION 5).
    """

    version: str | None = None
    tomogram_sizes: dict | None = None
    tomograms_file: Path | None = None
    optimisation_set: bool = False


@dataclass
class ParticleTable:
    """A particle list in RELION's meaning.

    Attributes:
        particles: one row per particle; columns named as in RELION (rlnImageName, ...). Values read from a file are
            the file's strings; values gumalign sets are numbers.
        optics: the optics groups (RELION >= 3.1) or None (3.0).
        source: the STAR file read (image paths are resolved relative to its folder), or None.
        version: the flavour detected: '3.0', '3.1', '4', '5' or 'dynamo'.
        notes: things a user should hear about the input (e.g. angles wrapped into ±180°); the CLI prints them.
        output: how :func:`write_star` writes the table (:meth:`for_output`); None: the input's flavour.
    """

    particles: pd.DataFrame
    optics: pd.DataFrame | None = None
    source: Path | None = None
    version: str = "3.1"
    _name: str = field(default="", repr=False)
    notes: list[str] = field(default_factory=list)
    output: StarOutput | None = None

    # -- basics -----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.particles)

    @property
    def name(self) -> str:
        """How messages refer to this table: its file name, or 'particle table'."""
        return str(self.source) if self.source is not None else (self._name or "particle table")

    def has(self, column: str) -> bool:
        return column in self.particles.columns

    @property
    def flavour_name(self) -> str:
        """'RELION 3.1', 'Dynamo table', ... for messages."""
        return "Dynamo table" if self.version == "dynamo" else f"RELION {self.version}"

    def for_output(
        self,
        version: str | None = None,
        *,
        tomograms: str | os.PathLike | None = None,
        optimisation_set: bool = False,
    ) -> "ParticleTable":
        """A copy that :func:`write_star` writes in RELION ``version`` ('3.1', '4', '5'; None: the input's flavour).

        Args:
            tomograms: a RELION 5 tomograms.star (tomogram sizes, to centre rlnCoordinate* for version 5).
            optimisation_set: also write an optimisation set beside the particles (version 5 only).

        Raises:
            GumalignError: an unknown version, or a table that cannot be written in it (checked now, before any
                long computation, not at the end).
        """
        if version is not None and version not in STAR_VERSIONS:
            raise GumalignError(f"--star-version must be one of {', '.join(STAR_VERSIONS)}, got {version!r}")
        sizes = read_tomogram_sizes(tomograms) if tomograms is not None else None
        output = StarOutput(version, sizes, Path(tomograms) if tomograms is not None else None, optimisation_set)
        out = replace(self, output=output)
        target = out.output_version()
        if optimisation_set and target != "5":
            raise GumalignError(f"an optimisation set is RELION 5's; add --star-version 5 (the output is {target})")
        _relion_particles(out, out.particles.copy(), target)  # raises now what writing would raise later
        return out

    def output_version(self) -> str:
        """The RELION flavour :func:`write_star` writes: the one asked for, else the input's (3.0, Dynamo: 3.1)."""
        if self.output is not None and self.output.version is not None:
            return self.output.version
        return self.version if self.version in STAR_VERSIONS else "3.1"

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
    def paths(self, column: str) -> list[Path]:
        """Each particle's file named in ``column`` (e.g. rlnImageName, rlnCtfImage, gumPairReference).

        A relative name is resolved against the STAR file's folder when the file is there, else left relative to the
        working directory (RELION's project folder). A GumalignError when the column is absent or a name points into
        a 2D stack (``n@stack.mrcs``).
        """
        if not self.has(column):
            raise GumalignError(f"{self.name}: missing column _{column}")
        base = self.source.parent if self.source is not None else Path(".")
        out = []
        for name in self.particles[column].astype(str):
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
        """Each particle's subtomogram (rlnImageName), resolved as :meth:`paths` does."""
        return self.paths("rlnImageName")

    def weight_paths(self) -> list[Path] | None:
        """Each particle's 3D CTF or weight (rlnCtfImage, any of RELION's layouts), or None when the column is absent."""
        if not self.has("rlnCtfImage"):
            return None
        return self.paths("rlnCtfImage")

    def ctf_premultiplied(self) -> np.ndarray:
        """(N,) bool: rlnCtfDataAreCtfPremultiplied of each particle (its row, else its optics group; False when
        absent). RELION 4 and 5 subtomograms are premultiplied: their rlnCtfImage holds CTF², the data CTF·F."""
        column = "rlnCtfDataAreCtfPremultiplied"
        if self.has(column):
            return self.numeric(column) != 0
        if self.optics is not None and column in self.optics.columns and len(self):
            values = _numeric_column(self.optics, column) != 0
            groups = (_numeric_column(self.optics, "rlnOpticsGroup").astype(int)
                      if "rlnOpticsGroup" in self.optics.columns else np.arange(1, len(values) + 1))
            by_group = dict(zip(groups.tolist(), values.tolist()))
            if len(by_group) == 1 or not self.has("rlnOpticsGroup"):
                return np.full(len(self), bool(values[0]))
            return np.array([by_group.get(g, False) for g in self.numeric("rlnOpticsGroup").astype(int)])
        return np.zeros(len(self), dtype=bool)

    # -- geometry -----------------------------------------------------------------------------------------------
    def pixel_sizes(self, default: float | None = None) -> np.ndarray:
        """Pixel size in Å per particle: from the particle row, else its optics group, else ``default``.

        Looks at rlnImagePixelSize / rlnPixelSize, then (RELION 4) rlnTomoTiltSeriesPixelSize × rlnTomoSubtomogramBinning,
        then (3.0) rlnDetectorPixelSize·10⁴ / rlnMagnification.
        """
        n = len(self)
        if n == 0:
            return np.zeros(0)
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

    def common_pixel_size(self, default: float | None = None) -> float:
        """The one pixel size (Å) of every particle; a GumalignError naming the optics groups when they differ."""
        sizes = self.pixel_sizes(default)
        if len(sizes) and not np.all(same_voxel_size(sizes, sizes[0])):
            if self.has("rlnOpticsGroup"):
                groups = self.numeric("rlnOpticsGroup").astype(int)
                per_group = {int(g): float(sizes[groups == g][0]) for g in np.unique(groups)}
                listed = ", ".join(f"group {g}: {v:g} Å" for g, v in per_group.items())
                first = next(iter(per_group))
                stem = Path(self.name).stem
                raise GumalignError(
                    f"{self.name}: optics groups have different pixel sizes ({listed}); process each group on its "
                    f"own, e.g. relion_star_handler --i {self.name} --o {stem}_optics{first}.star --select "
                    f"rlnOpticsGroup --minval {first} --maxval {first}"
                )
            examples = sorted(set(np.round(sizes, 6).tolist()))[:3]
            raise GumalignError(f"{self.name}: particles have different pixel sizes ({examples} Å)")
        return float(sizes[0]) if len(sizes) else float(default or 0.0)

    def _finite(self, column: str) -> np.ndarray:
        values = self.numeric(column)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise GumalignError(
                f"{self.name}: column _{column} has a non-finite value {self.particles[column].iloc[bad[0]]!r} "
                f"in particle {bad[0] + 1}"
            )
        return values

    def has_angles(self) -> bool:
        return all(self.has(c) for c in ANGLE_COLUMNS)

    def angles(self) -> np.ndarray:
        """(N, 3) RELION (rot, tilt, psi) in degrees; every angle column must be present."""
        for column in ANGLE_COLUMNS:
            if not self.has(column):
                raise GumalignError(f"{self.name}: missing column _{column} (the particles have no orientations)")
        return wrap_angles(np.stack([self._finite(c) for c in ANGLE_COLUMNS], axis=1))

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

    def origins_angst(self, default_pixel_size: float | None = None) -> np.ndarray:
        """(N, 3) origins (x, y, z) in Å in RELION's meaning; zeros when the file has none."""
        if all(self.has(c) for c in ORIGIN_ANGST_COLUMNS):
            origins = np.stack([self._finite(c) for c in ORIGIN_ANGST_COLUMNS], axis=1)
        elif all(self.has(c) for c in ORIGIN_PIXEL_COLUMNS):
            px = self.pixel_sizes(default_pixel_size)
            origins = np.stack([self._finite(c) for c in ORIGIN_PIXEL_COLUMNS], axis=1) * px[:, None]
        else:
            return np.zeros((len(self), 3))
        absurd = np.flatnonzero(np.abs(origins).max(axis=1, initial=0.0) > ABSURD_ORIGIN_ANGST)
        if len(absurd):
            row = int(absurd[0])
            raise GumalignError(
                f"{self.name}: particle {row + 1} has an origin of {np.abs(origins[row]).max():.3g} Å, beyond "
                f"{ABSURD_ORIGIN_ANGST:g} Å (0.1 mm); the value is corrupt"
            )
        return origins

    def origins_px(self, default_pixel_size: float | None = None) -> np.ndarray:
        """(N, 3) origins (x, y, z) in pixels of the particle image."""
        if not any(self.has(c) for c in ORIGIN_ANGST_COLUMNS) and all(self.has(c) for c in ORIGIN_PIXEL_COLUMNS):
            origins = np.stack([self._finite(c) for c in ORIGIN_PIXEL_COLUMNS], axis=1)
            try:
                self.origins_angst(default_pixel_size)  # the absurd-value check, when a pixel size is known
            except GumalignError as exc:
                if "origin of" in str(exc):
                    raise
            return origins
        if not any(self.has(c) for c in ORIGIN_ANGST_COLUMNS + ORIGIN_PIXEL_COLUMNS):
            return np.zeros((len(self), 3))
        return self.origins_angst(default_pixel_size) / self.pixel_sizes(default_pixel_size)[:, None]

    def half_sets(self, require_both: bool = False) -> np.ndarray | None:
        """rlnRandomSubset (1 or 2) per particle as int, or None when the column is absent.

        Args:
            require_both: raise a GumalignError when one half set is empty (gold-standard half maps need both;
                a RELION 3.0 file with every particle in half 1 would average to an all-zero half 2).
        """
        if not self.has("rlnRandomSubset"):
            return None
        halves = self.numeric("rlnRandomSubset").astype(int)
        bad = set(np.unique(halves)) - {1, 2}
        if bad:
            raise GumalignError(f"{self.name}: _rlnRandomSubset must be 1 or 2, found {sorted(bad)[0]}")
        counts = [int(np.sum(halves == h)) for h in (1, 2)]
        if require_both and len(halves) and min(counts) == 0:
            raise GumalignError(
                f"{self.name}: half set {1 if counts[0] == 0 else 2} is empty (_rlnRandomSubset: {counts[0]} particles "
                f"in half 1, {counts[1]} in half 2); fix the column, or remove it to have the particles split 1, 2, 1, 2"
            )
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
        self, matrices: np.ndarray, origins_angst: np.ndarray, **columns
    ) -> "ParticleTable":
        """A copy holding new orientations (RELION matrices A) and origins (x, y, z, Å), plus any extra columns.

        Pixel-unit origin columns (RELION 3.0) are dropped so that only one origin is on record.
        """
        from gumalign.geometry.euler import matrix_to_euler

        angles = matrix_to_euler(np.asarray(matrices))
        origins = np.asarray(origins_angst, dtype=np.float64)
        if angles.shape != (len(self), 3) or origins.shape != (len(self), 3):
            raise ValueError(f"expected {len(self)} rotations and origins, got {angles.shape} and {origins.shape}")
        values = {c: angles[:, i] for i, c in enumerate(ANGLE_COLUMNS)}
        values.update({c: origins[:, i] for i, c in enumerate(ORIGIN_ANGST_COLUMNS)})
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
def wrap_angles(angles: np.ndarray) -> np.ndarray:
    """Angles in degrees wrapped into [-180, 180) (the same rotations); values already in ±180 are kept exactly."""
    angles = np.asarray(angles, dtype=np.float64)
    outside = np.abs(angles) > 180.0
    return np.where(outside, (angles + 180.0) % 360.0 - 180.0, angles)


def _blocks_and_columns(path: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Every loop column name in the file (without the leading underscore) and (block, column) pairs named twice."""
    names, duplicates = [], []
    block, seen = "", set()
    with open(path, "r", errors="replace") as handle:
        for line in handle:
            stripped = line.strip()
            if stripped.startswith("data_"):
                block, seen = stripped, set()
            elif stripped.startswith("_"):
                name = stripped.split()[0][1:]
                names.append(name)
                if name in seen:
                    duplicates.append((block, name))
                seen.add(name)
    return names, duplicates


def read_star(path: str | os.PathLike) -> ParticleTable:
    """Read a RELION particle STAR file of any flavour (3.0, 3.1, 4.x, 5), or a Dynamo table (.tbl).

    Raises:
        GumalignError: missing or unreadable file, no particle block, a column named twice in one block.
    """
    import starfile

    path = Path(path)
    if path.suffix.lower() == ".tbl":
        from gumalign.io.dynamo import read_dynamo

        return _with_notes(read_dynamo(path))
    if not path.is_file():
        raise GumalignError(f"{path}: no such file")
    try:
        columns, duplicates = _blocks_and_columns(path)
    except UnicodeDecodeError:
        raise GumalignError(f"{path}: not a STAR file (binary content)") from None
    if duplicates:
        block, name = duplicates[0]
        raise GumalignError(f"{path}: column _{name} appears twice in {block}; remove one of them")
    try:
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
    table = ParticleTable(particles=particles, optics=optics, source=path, version=_detect_version(particles, optics))
    return _with_notes(table)


def _with_notes(table: ParticleTable) -> ParticleTable:
    """Add the notes a user should read about ``table`` (angles outside ±180°)."""
    if table.has_angles():
        values = np.stack(
            [pd.to_numeric(table.particles[c], errors="coerce").to_numpy(dtype=np.float64) for c in ANGLE_COLUMNS]
        )
        outside = np.isfinite(values) & (np.abs(values) > 180.0)
        if outside.any():
            worst = float(values[outside][np.argmax(np.abs(values[outside]))])
            rows = int(outside.any(axis=0).sum())
            table.notes.append(
                f"note: {table.name}: {rows} particle(s) have angles outside ±180° (e.g. {worst:g}°); wrapped into "
                f"±180° (the same rotation)"
            )
    return table


def _detect_version(particles: pd.DataFrame, optics: pd.DataFrame | None) -> str:
    cols = set(particles.columns)
    if {"rlnCenteredCoordinateXAngst", "rlnTomoSubtomogramRot"} & cols:
        return "5"
    if {"rlnTomoName", "rlnTomoParticleName"} & cols:
        return "4"
    return "3.1" if optics is not None else "3.0"


def read_tomogram_sizes(path: str | os.PathLike) -> dict[str, tuple[float, float, float]]:
    """{rlnTomoName: (rlnTomoSizeX, Y, Z)} from a RELION 5 tomograms.star (block data_global)."""
    import starfile

    path = Path(path)
    if not path.is_file():
        raise GumalignError(f"{path}: no such file")
    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=["rlnTomoName"])
    except Exception as exc:
        raise GumalignError(f"{path}: cannot parse STAR file ({type(exc).__name__}: {str(exc)[:150]})") from None
    table = blocks.get("global")
    if isinstance(table, dict):
        table = pd.DataFrame([table])
    needed = ("rlnTomoName", "rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ")
    if not isinstance(table, pd.DataFrame) or any(c not in table.columns for c in needed):
        raise GumalignError(f"{path}: not a RELION 5 tomogram set (data_global with {', '.join(needed)})")
    sizes = {}
    for _, row in table.iterrows():
        sizes[str(row["rlnTomoName"])] = tuple(float(row[c]) for c in needed[1:])
    return sizes


# -- writing --------------------------------------------------------------------------------------------------------
def _numeric_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)


def _box_size_of(table: ParticleTable, box_size: int | None) -> int:
    if box_size is not None:
        return int(box_size)
    if table.has("rlnImageName") and len(table):
        from gumalign.io.mrc import read_header

        try:
            first = table.image_paths()[0]
            if first.is_file():
                return int(read_header(first).shape[-1])
        except GumalignError:
            pass
    raise GumalignError(
        f"{table.name}: the box size (rlnImageSize) is unknown: no optics block holds it and the first particle "
        f"image cannot be read"
    )


def _relion_optics(table: ParticleTable, particles: pd.DataFrame, version: str, box_size: int | None,
                   default_pixel_size: float | None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """A complete optics block for ``particles`` and the particles with rlnOpticsGroup; plus what was made up."""
    invented: list[str] = []
    optics = table.optics.copy() if table.optics is not None else None
    if optics is None or not len(optics):
        # RELION 3.0 / Dynamo: one group per distinct (pixel size, voltage, Cs, amplitude contrast), as RELION's
        # StarConverter::convert_3p0_particlesTo_3p1 moves those columns from the particles into data_optics.
        px = np.round(table.pixel_sizes(default_pixel_size), 6)
        keys = [tuple(px.tolist())]
        present = [c for c in MICROSCOPE_COLUMNS if c in particles.columns]
        for column in present:
            keys.append(tuple(np.round(_numeric_column(particles, column), 6).tolist()))
        rows = list(zip(*keys))
        unique = list(dict.fromkeys(rows))
        group_of = {key: i + 1 for i, key in enumerate(unique)}
        optics = pd.DataFrame(
            {
                "rlnOpticsGroupName": [f"opticsGroup{i + 1}" for i in range(len(unique))],
                "rlnOpticsGroup": list(range(1, len(unique) + 1)),
                "rlnImagePixelSize": [key[0] for key in unique],
            }
        )
        for i, column in enumerate(present):
            optics[column] = [key[i + 1] for key in unique]
        particles["rlnOpticsGroup"] = [group_of[key] for key in rows]
        particles = particles.drop(columns=present)
    else:
        if "rlnOpticsGroup" not in optics.columns:
            optics.insert(0, "rlnOpticsGroup", list(range(1, len(optics) + 1)))
        if "rlnOpticsGroup" not in particles.columns:
            if len(optics) > 1:
                raise GumalignError(f"{table.name}: {len(optics)} optics groups but the particles have no rlnOpticsGroup")
            particles["rlnOpticsGroup"] = optics["rlnOpticsGroup"].iloc[0]
        if "rlnOpticsGroupName" not in optics.columns:
            optics["rlnOpticsGroupName"] = [f"opticsGroup{g}" for g in optics["rlnOpticsGroup"]]
        if "rlnImagePixelSize" not in optics.columns:
            group_px = _optics_pixel_sizes(optics, table.name)
            if group_px is None:
                group_px = {1: table.common_pixel_size(default_pixel_size)} if len(optics) == 1 else None
            if group_px is None:
                raise GumalignError(f"{table.name}: data_optics has no pixel size (rlnImagePixelSize)")
            optics["rlnImagePixelSize"] = [group_px.get(int(g), next(iter(group_px.values())))
                                           for g in optics["rlnOpticsGroup"]]
    if "rlnImageSize" not in optics.columns:
        optics["rlnImageSize"] = _box_size_of(table, box_size)
    optics["rlnImageDimensionality"] = 3
    for column, value in DEFAULT_MICROSCOPE.items():
        if column not in optics.columns:
            optics[column] = value
            invented.append(f"{column} {value:g}")
    if version in ("4", "5"):
        px = _numeric_column(optics, "rlnImagePixelSize")
        if "rlnTomoTiltSeriesPixelSize" not in optics.columns:
            binning = (_numeric_column(optics, "rlnTomoSubtomogramBinning")
                       if "rlnTomoSubtomogramBinning" in optics.columns else np.ones(len(optics)))
            optics["rlnTomoTiltSeriesPixelSize"] = px / binning
        if "rlnTomoSubtomogramBinning" not in optics.columns:
            optics["rlnTomoSubtomogramBinning"] = px / _numeric_column(optics, "rlnTomoTiltSeriesPixelSize")
    first = ["rlnOpticsGroup", "rlnOpticsGroupName", "rlnImagePixelSize", "rlnImageSize", "rlnImageDimensionality",
             *MICROSCOPE_COLUMNS]
    optics = optics[first + [c for c in optics.columns if c not in first]]
    return optics, particles, invented


def _relion_particles(table: ParticleTable, particles: pd.DataFrame, version: str) -> pd.DataFrame:
    """The particle columns RELION ``version`` needs (tomogram names, centred coordinates), or a GumalignError."""
    if version in ("4", "5"):
        if "rlnTomoName" not in particles.columns:
            if "rlnMicrographName" not in particles.columns:
                raise GumalignError(
                    f"{table.name}: RELION {version} particles need rlnTomoName (each particle's tomogram) and the "
                    f"input has neither it nor rlnMicrographName; write --star-version 3.1"
                )
            particles["rlnTomoName"] = particles["rlnMicrographName"].astype(str)
        if "rlnTomoParticleName" not in particles.columns:
            # RELION's own rule (ParticleSet::read): <tomogram>/<1-based count within that tomogram>.
            count = particles.groupby("rlnTomoName", sort=False).cumcount() + 1
            particles["rlnTomoParticleName"] = particles["rlnTomoName"].astype(str) + "/" + count.astype(str)
    if version == "5" and not all(c in particles.columns for c in CENTERED_COLUMNS):
        if not all(c in particles.columns for c in COORDINATE_COLUMNS):
            raise GumalignError(
                f"{table.name}: RELION 5 particles need rlnCenteredCoordinateX/Y/ZAngst and the input has no "
                f"coordinates; write --star-version 3.1 or 4"
            )
        sizes = table.output.tomogram_sizes if table.output is not None else None
        if sizes is None:
            raise GumalignError(
                f"{table.name}: RELION 5 needs rlnCenteredCoordinateX/Y/ZAngst; the input has pixel coordinates "
                f"(rlnCoordinateX/Y/Z): pass --tomograms tomograms.star (RELION 5 tomogram set with rlnTomoSizeX/Y/Z)"
            )
        names = particles["rlnTomoName"].astype(str)
        missing = sorted(set(names) - set(sizes))
        if missing:
            raise GumalignError(f"{table.name}: tomogram {missing[0]!r} is not in the tomogram set")
        if table.optics is not None and "rlnTomoTiltSeriesPixelSize" in table.optics.columns:
            px = table.pixel_sizes() / _optics_binning(table)
        else:
            px = table.pixel_sizes()
        size = np.array([sizes[n] for n in names], dtype=np.float64)
        for axis, (coordinate, centred) in enumerate(zip(COORDINATE_COLUMNS, CENTERED_COLUMNS)):
            # RELION 5 (particle_set.cpp, getParticleCoordDecenteredPixel): pixel = centred / px + size / 2.
            particles[centred] = (_numeric_column(particles, coordinate) - size[:, axis] / 2.0) * px
        particles = particles.drop(columns=list(COORDINATE_COLUMNS))
    return particles


def _optics_binning(table: ParticleTable) -> np.ndarray:
    """Per particle, rlnImagePixelSize / rlnTomoTiltSeriesPixelSize of its optics group (1 where unknown)."""
    optics = table.optics
    tilt = dict(zip(_numeric_column(optics, "rlnOpticsGroup").astype(int) if "rlnOpticsGroup" in optics.columns
                    else range(1, len(optics) + 1), _numeric_column(optics, "rlnTomoTiltSeriesPixelSize")))
    groups = table.numeric("rlnOpticsGroup").astype(int) if table.has("rlnOpticsGroup") else np.ones(len(table), int)
    return table.pixel_sizes() / np.array([tilt[g] for g in groups])


def write_star(
    table: ParticleTable,
    path: str | os.PathLike,
    *,
    box_size: int | None = None,
    default_pixel_size: float | None = None,
    version: str | None = None,
) -> None:
    """Write ``table`` atomically in RELION 3.1, 4 or 5 (data_optics + data_particles, origins in Å), or as a Dynamo
    table when ``path`` ends in .tbl.

    Args:
        box_size: rlnImageSize for an optics block that has none (tables read from RELION 3.0); by default read from
            the first particle image.
        default_pixel_size: pixel size (Å) to use when the table has none.
        version: '3.1', '4' or '5'; default: ``table.output`` (:meth:`ParticleTable.for_output`), else the input's
            flavour (3.1 for 3.0 and Dynamo input).
    """
    import starfile

    path = Path(path)
    if path.suffix.lower() == ".tbl":
        from gumalign.io.dynamo import write_dynamo

        write_dynamo(table, path, default_pixel_size=default_pixel_size)
        return
    if version is not None:
        table = table.for_output(
            version,
            tomograms=table.output.tomograms_file if table.output is not None else None,
            optimisation_set=table.output.optimisation_set if table.output is not None else False,
        )
    version = table.output_version()
    particles = table.particles.copy()
    has_pixel_origins = all(c in particles.columns for c in ORIGIN_PIXEL_COLUMNS)
    if has_pixel_origins and not any(c in particles.columns for c in ORIGIN_ANGST_COLUMNS):
        origins = table.origins_angst(default_pixel_size)
        for i, c in enumerate(ORIGIN_ANGST_COLUMNS):
            particles[c] = origins[:, i]
        particles = particles.drop(columns=list(ORIGIN_PIXEL_COLUMNS))
    optics, particles, invented = _relion_optics(table, particles, version, box_size, default_pixel_size)
    particles = _relion_particles(table, particles, version)
    particles = _relocate_paths(particles, table.source, path)
    stamp = {"3.1": "30001", "4": "40000", "5": "50001"}[version]
    with atomic_path(path) as tmp:
        starfile.write({"optics": optics, "particles": particles}, tmp, float_format="%.6f")
        # starfile stamps the time into its first comment; a fixed line keeps same-input output byte-identical.
        text = tmp.read_text()
        head = f"# Created by gumalign (RELION {version} particles)\n"
        if invented:
            head += f"# gumalign: not in the input, written as defaults: {', '.join(invented)}\n"
        body = text.split("\n", 1)[1] if text.startswith("# Created by") else text
        # RELION writes "# version NNNNN" above each block (MetaDataTable::write); starfile does not.
        body = re.sub(r"^(data_\S*)", rf"# version {stamp}\n\n\1", body, flags=re.MULTILINE)
        tmp.write_text(head + body)
    if table.output is not None and table.output.optimisation_set:
        write_optimisation_set(path, table.output.tomograms_file)


def optimisation_set_path(particles_path: str | os.PathLike) -> Path:
    """``run.star`` -> ``run_optimisation_set.star`` beside it."""
    particles_path = Path(particles_path)
    return particles_path.with_name(particles_path.stem + "_optimisation_set.star")


def write_optimisation_set(particles_path: str | os.PathLike, tomograms: Path | None) -> Path:
    """Write ``<particles>_optimisation_set.star``: RELION 5's optimisation set naming the particles (and tomograms)
    file, as OptimisationSet::write does (src/jaz/tomography/optimisation_set.cpp: one key-value block with
    rlnTomoParticlesFile and rlnTomoTomogramsFile). Paths are written as given (RELION reads them relative to the
    project folder, the working directory)."""
    from gumalign.io.atomic import write_text_atomic

    particles_path = Path(particles_path)
    target = optimisation_set_path(particles_path)
    lines = ["", "# version 50001", "", "data_optimisation_set", "", f"_rlnTomoParticlesFile {particles_path}"]
    if tomograms is not None:
        lines.append(f"_rlnTomoTomogramsFile {Path(tomograms)}")
    write_text_atomic(target, "\n".join(lines) + "\n\n")
    return target


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
