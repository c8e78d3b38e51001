"""One entry point for ``--structure``: a built-in name, a density map or an atomic model."""

from __future__ import annotations

from pathlib import Path

from gumalign.errors import GumalignError
from gumalign.simulate.density import Structure, Weighting, density_from_map, density_from_model, is_map_file
from gumalign.simulate.templates import BUILTIN_PREFIX, load_builtin_template


def load_structure(
    spec: str,
    *,
    box: int = 32,
    voxel_size: float = 12.0,
    resolution: float = 12.0,
    weighting: Weighting = "mass",
) -> Structure:
    """A template from ``spec``: 'builtin:NAME', a map (.mrc, .map, .rec, .ccp4, gzipped too) or an atomic model
    (PDB or mmCIF, gzipped too).

    Raises:
        GumalignError: unknown built-in, missing or unreadable file, empty model, or a structure that does not fit.
    """
    if spec.lower().startswith(BUILTIN_PREFIX):
        return load_builtin_template(
            spec[len(BUILTIN_PREFIX):], box=box, voxel_size=voxel_size, resolution=resolution, weighting=weighting
        )
    path = Path(spec)
    if not path.exists():
        raise GumalignError(f"{spec}: no such file (built-in templates are named builtin:NAME; see --list-structures)")
    if is_map_file(path):
        return density_from_map(path, box=box, voxel_size=voxel_size)
    return density_from_model(path, box=box, voxel_size=voxel_size, resolution=resolution, weighting=weighting)
