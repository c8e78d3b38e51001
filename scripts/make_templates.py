#!/usr/bin/env python
"""Regenerate gumalign's built-in templates (src/gumalign/data/) from public atomic models.

Each template is the density that ``gumalign simulate --structure MODEL --box 32 --voxel-size 12 --resolution 12``
makes (gumalign.simulate.density.density_from_model, mass-weighted), written as a gzipped MRC with reproducible
bytes, and recorded in templates.json with its PDB id, title, point group, sha256 and this command. Rerunning gives
identical files.

Symmetric templates are turned into RELION's symmetry frame (n-fold axis on z, a 2-fold on x for Dn), so that
``--sym D7`` with the built-in proteasome means what it means in RELION: the group's axes are found in the 12 Å
density of the deposited model (gumalign.train.symmetry.symmetry_operators), geometry.symmetry.relion_frame gives the
rotation Q onto RELION's operators, and the density is made again from the atoms turned by Q about their centre of
mass (no interpolation). Q is recorded, so a pose A of the deposited model is the pose A·Qᵀ of the template.

Usage:
    .venv/bin/python scripts/make_templates.py --structures ../shared/structures --out src/gumalign/data
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from gumalign import __version__
from gumalign.io.atomic import write_text_atomic
import numpy as np

from gumalign.errors import GumalignError
from gumalign.geometry.symmetry import point_group, relion_frame
from gumalign.io.mrc import write_volume
from gumalign.simulate.density import centre_of_mass, density_from_atoms, density_from_model, read_atomic_model
from gumalign.train.symmetry import self_correlations, symmetry_operators

BOX, VOXEL_SIZE, RESOLUTION, WEIGHTING = 32, 12.0, 12.0, "mass"
COMMAND = "python scripts/make_templates.py --structures ../shared/structures --out src/gumalign/data"

# (name, model file): the SHREC benchmark models and the proteasome and spliceosome; every one fits 32³ at 12 Å.
TEMPLATES = [
    ("proteasome", "3j9i.pdb"),
    ("spliceosome", "3jb9.cif.gz"),
    ("rubisco", "1bxn.pdb"),
    ("p97", "3cf3.pdb"),
    ("clpb", "1qvr.pdb"),
    ("cand1_cul1_roc1", "1u6g.pdb"),
    ("hsp90_sba1", "2cg9.pdb"),
    ("sse1_hsp70", "3d2f.pdb"),
    ("hsp70_atpase", "1s3x.pdb"),
    ("ssb1_atpase", "3gl1.pdb"),
    ("get3", "3h84.pdb"),
    ("esterase", "3qm1.pdb"),
]

# Point groups of the deposited models, where the copies superpose: 3J9I the D7 20S proteasome (28 chains); 1BXN the
# C4 half of an L8S8 Rubisco (4 large + 4 small chains); 2CG9 the Hsp90 dimer with two Sba1 (chains A/B and X/Y
# superpose to 1.25 Å CA RMSD under a 2-fold); 3H84 the Get3 homodimer (1.9 Å). Not declared: 3D2F and 3GL1 hold two
# copies that superpose only to 4.6 Å (crystal packing, not a symmetric complex), although at 12 Å every small
# template looks roughly 2-fold symmetric.
SYMMETRY = {"proteasome": "D7", "rubisco": "C4", "hsp90_sba1": "C2", "get3": "C2"}
# After the turn, every RELION operator must keep this much of the 12 Å template (0.988 to 1.0 for the four above).
MIN_FRAME_CORRELATION = 0.98


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def in_relion_frame(positions, weights, centre, density, group, name):
    """(density, Q, worst self-correlation): the 12 Å template of the atoms turned by Q into RELION's frame of
    ``group`` (Q = identity and the density unchanged for C1)."""
    if group == "C1":
        return density, np.eye(3), 1.0
    turn = relion_frame(symmetry_operators(density, group), group)
    turned = (np.asarray(positions) - centre) @ turn.T + centre  # p' = c + Q (p - c), as transform_volumes(·, Q)
    density = density_from_atoms(turned, weights, box=BOX, voxel_size=VOXEL_SIZE, resolution=RESOLUTION,
                                 centre=centre)
    kept = float(self_correlations(density, point_group(group)[1:]).min())
    if kept < MIN_FRAME_CORRELATION:
        raise GumalignError(f"{name}: turned into RELION's {group} frame it keeps only {kept:.3f} of itself")
    return density, turn, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", type=Path, default=Path("../shared/structures"), help="folder of the models")
    parser.add_argument("--out", type=Path, default=Path("src/gumalign/data"), help="the package's data folder")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    entries = []
    for name, filename in TEMPLATES:
        source = args.structures / filename
        model = read_atomic_model(source, WEIGHTING)
        structure = density_from_model(source, box=BOX, voxel_size=VOXEL_SIZE, resolution=RESOLUTION,
                                       weighting=WEIGHTING)
        com = centre_of_mass(model)
        group = SYMMETRY.get(name, "C1")
        density, turn, kept = in_relion_frame(model.positions, model.weights, com, structure.density, group, name)
        target = args.out / f"{name}.mrc.gz"
        write_volume(target, density, VOXEL_SIZE)
        entries.append(
            {
                "name": name,
                "pdb_id": model.entry_id,
                "title": " ".join(model.title.split()),
                "file": target.name,
                "symmetry": group,
                # Q: template = deposited model turned by Q about its centre of mass (x, y, z column vectors).
                "relion_frame_rotation": [[round(float(v), 6) for v in row] for row in turn],
                "symmetry_self_correlation": round(kept, 4),
                "sha256": sha256(target),
                "mass_kda": round(float(model.weights.sum()) / 1000.0, 1),
                "atoms": int(len(model.positions)),
                "radius_voxels": round(float(structure.radius_voxels), 2),
                "centre_of_mass_angst": [round(float(c), 3) for c in com],
                "source_file": filename,
                "source_sha256": sha256(source),
            }
        )
        print(f"{name:16s} {model.entry_id:5s} {entries[-1]['mass_kda']:7.1f} kDa  radius "
              f"{structure.radius_voxels:4.1f} voxels  {group:3s} -> {target}")

    record = {
        "description": "Built-in templates derived by gumalign from public wwPDB atomic models (CC0).",
        "box": BOX,
        "voxel_size": VOXEL_SIZE,
        "resolution": RESOLUTION,
        "weighting": WEIGHTING,
        "method": "gumalign.simulate.density.density_from_model: first model, waters removed, atoms weighted by "
        "mass x occupancy, voxel-integrated Gaussians of sigma = resolution / 2, centre of mass at index N // 2; "
        "values in Da per cubic Angstrom; a symmetric template's atoms are first turned by relion_frame_rotation "
        "about their centre of mass into RELION's frame of its point group (n-fold axis on z, a 2-fold on x)",
        "command": COMMAND,
        "gumalign_version": __version__,
        "templates": entries,
    }
    write_text_atomic(args.out / "templates.json", json.dumps(record, indent=2) + "\n")
    (args.out / "templates.json").chmod(0o644)
    print(f"wrote {len(entries)} templates and templates.json to {args.out}")


if __name__ == "__main__":
    main()
