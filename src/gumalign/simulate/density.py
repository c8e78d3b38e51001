"""Structures in: atomic models (PDB/mmCIF, gzipped too) and density maps (MRC) -> template densities in a box.

Atomic models become densities as the seed's Situs pdb2vol does: every atom contributes its weight (mass by default,
or atomic number) spread by a Gaussian of standard deviation resolution / 2, centred on the model's centre of mass at
the box centre (index N // 2). Each voxel holds the Gaussian's integral over the voxel (erf differences), so the total
mass is conserved and the map moves smoothly with sub-voxel atom positions. Values are in Da/Å³ (mass) or e/Å³
(atomic number); protein is positive.

Only the first model of a file is used; waters are removed; each atom counts with its occupancy, so alternative
conformations add up to one atom.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from gumalign.errors import GumalignError

Weighting = Literal["mass", "atomic_number"]
MAP_SUFFIXES = (".mrc", ".map", ".rec", ".ccp4", ".mrc.gz", ".map.gz")
_ATOM_CHUNK = 4096
_TAIL_CUTOFF = 1e-7


@dataclass
class Structure:
    """A template ready to simulate from.

    Attributes:
        name: short name used in file names and the STAR's structure column.
        density: (N, N, N) float32 [z, y, x], protein positive.
        voxel_size: Å per voxel.
        source: where it came from (a path, or 'builtin:NAME').
        radius_voxels: largest distance of an atom from the centre, in voxels (None for maps).
    """

    name: str
    density: np.ndarray
    voxel_size: float
    source: str
    radius_voxels: float | None = None


@dataclass
class AtomicModel:
    """Atom positions and weights read from a model file.

    Attributes:
        positions: (A, 3) float64 (x, y, z) in Å.
        weights: (A,) float64 weights (mass in Da or atomic number, times occupancy).
        title: the entry's title, '' if none.
        entry_id: the PDB id, '' if none.
    """

    positions: np.ndarray
    weights: np.ndarray
    title: str = ""
    entry_id: str = ""


def read_atomic_model(path: str | os.PathLike, weighting: Weighting = "mass") -> AtomicModel:
    """Read the atoms of the first model of a PDB or mmCIF file (plain or gzipped) with gemmi.

    Raises:
        GumalignError: missing or unreadable file, or a model without atoms.
    """
    import gemmi

    path = Path(path)
    if not path.is_file():
        raise GumalignError(f"{path}: no such file")
    try:
        structure = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError, OSError, UnicodeDecodeError) as exc:
        message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise GumalignError(f"{path}: cannot read atomic model ({message})") from None
    structure.remove_waters()
    positions, weights = [], []
    if len(structure) > 0:
        for chain in structure[0]:
            for residue in chain:
                for atom in residue:
                    element = atom.element
                    value = element.weight if weighting == "mass" else float(element.atomic_number)
                    positions.append(atom.pos.tolist())
                    weights.append(value * atom.occ)
    weights_arr = np.asarray(weights, dtype=np.float64)
    if not positions or not np.any(weights_arr > 0):
        raise GumalignError(f"{path}: the atomic model has no atoms (is it a PDB or mmCIF file?)")
    info = dict(structure.info)
    title = info.get("_struct.title", "").strip().strip("'\"").strip()
    entry_id = info.get("_entry.id", "") or structure.name
    keep = weights_arr > 0
    return AtomicModel(np.asarray(positions, dtype=np.float64)[keep], weights_arr[keep], title, entry_id.upper())


def centre_of_mass(model: AtomicModel) -> np.ndarray:
    """(x, y, z) in Å, weighted by the atom weights."""
    return (model.positions * model.weights[:, None]).sum(axis=0) / model.weights.sum()


def check_fits(
    radius_angst: float, *, box: int, voxel_size: float, resolution: float, name: str
) -> None:
    """Refuse a structure that cannot lie inside the box in every orientation.

    The structure (atoms within ``radius_angst`` of the centre, blurred by the Gaussian out to two standard
    deviations, i.e. ``resolution``) must fit in the sphere of radius N/2 - 0.5 voxels.

    Raises:
        GumalignError: naming the structure's extent in voxels and the --box or --voxel-size that would fit.
    """
    reach = radius_angst + resolution
    limit = (box / 2.0 - 0.5) * voxel_size
    if reach <= limit:
        return
    span = 2.0 * reach / voxel_size
    min_box = int(math.ceil(span + 1.0))
    min_box += min_box % 2
    min_voxel = reach / (box / 2.0 - 0.5)
    raise GumalignError(
        f"{name}: the structure spans {span:.1f} voxels ({2 * reach:.0f} Å across, blur included, in any "
        f"orientation) at {voxel_size:g} Å per voxel, more than the box of {box}; use --box {min_box} or more, "
        f"or --voxel-size {math.ceil(min_voxel * 10) / 10:g} or more"
    )


def density_from_atoms(
    positions: np.ndarray,
    weights: np.ndarray,
    *,
    box: int,
    voxel_size: float,
    resolution: float,
    centre: np.ndarray,
) -> np.ndarray:
    """Sum of voxel-integrated Gaussians, one per atom.

    Args:
        positions: (A, 3) (x, y, z) in Å.
        weights: (A,) atom weights.
        box: N; the output is N³.
        voxel_size: Å per voxel.
        resolution: Å; the Gaussian's standard deviation is resolution / 2.
        centre: (x, y, z) in Å placed at the box centre (index N // 2).

    Returns:
        (N, N, N) float32 [z, y, x], weight per Å³.
    """
    from scipy.special import erf

    sigma = resolution / 2.0 / voxel_size
    coords = (np.asarray(positions, dtype=np.float64) - np.asarray(centre)) / voxel_size + box // 2
    edges = np.arange(box + 1, dtype=np.float64) - 0.5
    scale = 1.0 / (math.sqrt(2.0) * sigma)
    out = np.zeros((box, box * box), dtype=np.float64)
    for start in range(0, len(coords), _ATOM_CHUNK):
        chunk = coords[start : start + _ATOM_CHUNK]
        w = np.asarray(weights[start : start + _ATOM_CHUNK], dtype=np.float64)
        # Per atom and axis: the Gaussian's mass in each voxel, from erf at the voxel edges.
        cdf = 0.5 * erf((edges[None, None, :] - chunk[:, :, None]) * scale)  # (a, 3, N + 1)
        mass = np.diff(cdf, axis=2)  # (a, 3, N): axes x, y, z
        gx, gy, gz = mass[:, 0], mass[:, 1], mass[:, 2]
        gyx = (gy[:, :, None] * gx[:, None, :]).reshape(len(chunk), box * box)
        out += (gz * w[:, None]).T @ gyx
    density = out.reshape(box, box, box) / voxel_size**3
    # The Gaussians' far tails (< 10⁻⁷ of the peak, below float32 precision) are set to 0: exact zeros compress.
    density[density < _TAIL_CUTOFF * density.max()] = 0.0
    return density.astype(np.float32)


def density_from_model(
    path: str | os.PathLike,
    *,
    box: int = 32,
    voxel_size: float = 12.0,
    resolution: float = 12.0,
    weighting: Weighting = "mass",
) -> Structure:
    """An atomic model as a template density centred on its centre of mass (see the module docstring).

    Raises:
        GumalignError: unreadable or empty model, or a structure that does not fit the box.
    """
    _check_sampling(box, voxel_size, resolution)
    model = read_atomic_model(path, weighting)
    com = centre_of_mass(model)
    radius = float(np.sqrt(((model.positions - com) ** 2).sum(axis=1)).max())
    check_fits(radius, box=box, voxel_size=voxel_size, resolution=resolution, name=str(path))
    density = density_from_atoms(
        model.positions, model.weights, box=box, voxel_size=voxel_size, resolution=resolution, centre=com
    )
    return Structure(structure_name(path), density, float(voxel_size), str(path), radius / voxel_size)


def density_from_map(path: str | os.PathLike, *, box: int = 32, voxel_size: float = 12.0) -> Structure:
    """A density map resampled onto an N³ grid at ``voxel_size`` (map centre N_map // 2 to box centre N // 2).

    A map without a voxel size in its header is taken to be at ``voxel_size`` already. Downsampling low-passes first
    (a Gaussian of σ = half the sampling ratio, in map voxels) so that fine detail does not alias. The map is used at
    its own resolution and contrast (protein positive, as EM maps are).

    Raises:
        GumalignError: unreadable map, or density (voxels above 10% of the maximum) that falls outside the box.
    """
    from scipy import ndimage

    from gumalign.io.mrc import read_volume

    _check_sampling(box, voxel_size, resolution=None)
    volume = read_volume(path)
    data, map_voxel = volume.data.astype(np.float64), volume.voxel_size or float(voxel_size)
    if not np.any(data > 0):
        raise GumalignError(f"{path}: the map has no positive density")
    ratio = voxel_size / map_voxel
    # Index of every box voxel centre in the map's grid, per axis [z, y, x].
    axes = [(np.arange(box) - box // 2) * ratio + n // 2 for n in data.shape]
    strong = data > 0.1 * data.max()
    for axis, (n, grid) in enumerate(zip(data.shape, axes)):
        index = np.flatnonzero(strong.any(axis=tuple(a for a in range(3) if a != axis)))
        if index.min() < grid[0] - 0.5 * ratio or index.max() > grid[-1] + 0.5 * ratio:
            span = (index.max() - index.min() + 1) * map_voxel / voxel_size
            raise GumalignError(
                f"{path}: the map's density spans {span:.1f} voxels of {voxel_size:g} Å along "
                f"{'zyx'[axis]} and does not fit the box of {box} about the map centre; use a larger --box or "
                f"--voxel-size"
            )
    if ratio > 1.0 + 1e-6:
        data = ndimage.gaussian_filter(data, sigma=0.5 * ratio, mode="constant")
    if data.shape == (box, box, box) and abs(ratio - 1.0) < 1e-6:
        density = data
    else:
        zz, yy, xx = np.meshgrid(*axes, indexing="ij")
        density = ndimage.map_coordinates(data, [zz, yy, xx], order=1, mode="constant", cval=0.0)
    return Structure(structure_name(path), density.astype(np.float32), float(voxel_size), str(path), None)


def structure_name(path: str | os.PathLike) -> str:
    """A short name from a file name: '3jb9.cif.gz' -> '3jb9', 'emd_1234.map' -> 'emd_1234'."""
    name = Path(path).name
    for suffix in (".gz", ".bz2"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    stem = Path(name).stem if "." in name else name
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem) or "structure"


def is_map_file(path: str | os.PathLike) -> bool:
    """Whether a path names a density map (by suffix) rather than an atomic model."""
    return str(path).lower().endswith(MAP_SUFFIXES)


def _check_sampling(box: int, voxel_size: float, resolution: float | None) -> None:
    if box < 8:
        raise GumalignError(f"box size must be at least 8 voxels, got {box}")
    if not voxel_size > 0:
        raise GumalignError(f"voxel size must be positive, got {voxel_size:g} Å")
    if resolution is not None and not resolution > 0:
        raise GumalignError(f"resolution must be positive, got {resolution:g} Å")
