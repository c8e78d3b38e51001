"""Built-in templates: 32³ densities at 12 Å per voxel and 12 Å resolution that the project derived itself.

scripts/make_templates.py makes them from public atomic models with gumalign.simulate.density (the very code
``--structure model.pdb`` runs) and records each in src/gumalign/data/templates.json: name, PDB id, title, file,
sha256 and the command. They ship inside the package, so ``--structure builtin:proteasome`` needs no file at hand.
A symmetric template (proteasome D7, rubisco C4, hsp90_sba1 C2, get3 C2) lies in RELION's frame of its point group.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

from gumalign.errors import GumalignError
from gumalign.simulate.density import Structure

BUILTIN_PREFIX = "builtin:"
RECORD_NAME = "templates.json"


@dataclass(frozen=True)
class BuiltinTemplate:
    """One built-in template as recorded in templates.json."""

    name: str
    pdb_id: str
    title: str
    file: str
    sha256: str
    mass_kda: float
    radius_voxels: float
    # The point group ('C1' if none), in RELION's frame: n-fold axis on z, a 2-fold on x (scripts/make_templates.py
    # turns a symmetric model's atoms into it), so ``--sym`` with this group needs no relion_align_symmetry first.
    symmetry: str = "C1"


def _data_dir():
    return resources.files("gumalign") / "data"


def template_record() -> dict:
    """The parsed templates.json (box, voxel_size, resolution, weighting, command, templates)."""
    path = _data_dir() / RECORD_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GumalignError(f"the built-in template record {RECORD_NAME} is missing from the installation") from None


def list_builtin_templates() -> list[BuiltinTemplate]:
    """Every built-in template, in the record's order."""
    fields = BuiltinTemplate.__dataclass_fields__
    entries = template_record()["templates"]
    return [BuiltinTemplate(**{k: v for k, v in entry.items() if k in fields}) for entry in entries]


def declared_symmetries() -> dict[str, str]:
    """{name: point group} of the built-in templates that have one (RELION's frame), from templates.json."""
    return {t.name: t.symmetry for t in list_builtin_templates() if t.symmetry.upper() != "C1"}


def find_builtin(name: str) -> BuiltinTemplate:
    """The built-in template called ``name`` (or with that PDB id), case-insensitive.

    Raises:
        GumalignError: no such template; the message lists the available ones.
    """
    key = name.strip().lower()
    if key.startswith(BUILTIN_PREFIX):
        key = key[len(BUILTIN_PREFIX):]
    templates = list_builtin_templates()
    for template in templates:
        if key in (template.name.lower(), template.pdb_id.lower()):
            return template
    available = ", ".join(t.name for t in templates)
    raise GumalignError(f"unknown built-in structure {name!r}; available: {available}")


def load_builtin_template(
    name: str, *, box: int = 32, voxel_size: float = 12.0, resolution: float = 12.0, weighting: str = "mass"
) -> Structure:
    """A built-in template as a :class:`Structure`, after checking its sha256.

    Raises:
        GumalignError: unknown name, settings other than the templates' own (box, resolution, weighting), a voxel
            size at which the structure does not fit the box, or a file that does not match its recorded sha256.

    Another voxel size (at the templates' own resolution and box) resamples the shipped map with
    gumalign.simulate.density.density_from_map: e.g. 9 Å voxels make the structures fill more of the box.
    """
    from gumalign.io.mrc import read_volume

    template = find_builtin(name)
    record = template_record()
    wanted = (int(box), float(voxel_size), float(resolution), weighting)
    own = (int(record["box"]), float(record["voxel_size"]), float(record["resolution"]), record["weighting"])
    # Another voxel size at the template's own resolution is a resampling of the shipped map (it must still fit).
    resample = wanted[0] == own[0] and wanted[2:] == own[2:] and wanted[1] != own[1]
    if wanted != own and not resample:
        raise GumalignError(
            f"builtin:{template.name} is {own[0]}³ at {own[1]:g} Å per voxel, {own[2]:g} Å resolution, "
            f"{own[3]}-weighted; for --box {box} --voxel-size {voxel_size:g} --resolution {resolution:g} "
            f"--weighting {weighting} pass an atomic model file (PDB id {template.pdb_id})"
        )
    resource = _data_dir() / template.file
    with resources.as_file(resource) as path:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != template.sha256:
            raise GumalignError(
                f"built-in template file {template.file} is corrupted (sha256 mismatch); reinstall gumalign"
            )
        if resample:
            from gumalign.simulate.density import density_from_map

            try:
                resampled = density_from_map(path, box=box, voxel_size=voxel_size)
            except GumalignError as exc:
                raise GumalignError(f"builtin:{template.name}: {str(exc).split(': ', 1)[-1]}") from None
            return Structure(template.name, resampled.density, float(voxel_size), BUILTIN_PREFIX + template.name,
                             template.radius_voxels * own[1] / float(voxel_size))
        volume = read_volume(path)
    density = volume.data.astype(np.float32)
    return Structure(template.name, density, float(volume.voxel_size), BUILTIN_PREFIX + template.name,
                     template.radius_voxels)
