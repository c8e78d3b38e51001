#!/usr/bin/env python
"""Regenerate gumalign's built-in templates (src/gumalign/data/) from public atomic models.

Each template is the density that ``gumalign simulate --structure MODEL --box 32 --voxel-size 12 --resolution 12``
makes (gumalign.simulate.density.density_from_model, mass-weighted), written as a gzipped MRC with reproducible
bytes, and recorded in templates.json with its PDB id, title, sha256 and this command. Rerunning gives identical
files.

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
from gumalign.simulate.density import centre_of_mass, density_from_model, read_atomic_model
from gumalign.io.mrc import write_volume

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


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
        target = args.out / f"{name}.mrc.gz"
        write_volume(target, structure.density, VOXEL_SIZE)
        com = centre_of_mass(model)
        entries.append(
            {
                "name": name,
                "pdb_id": model.entry_id,
                "title": " ".join(model.title.split()),
                "file": target.name,
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
              f"{structure.radius_voxels:4.1f} voxels  -> {target}")

    record = {
        "description": "Built-in templates derived by gumalign from public wwPDB atomic models (CC0).",
        "box": BOX,
        "voxel_size": VOXEL_SIZE,
        "resolution": RESOLUTION,
        "weighting": WEIGHTING,
        "method": "gumalign.simulate.density.density_from_model: first model, waters removed, atoms weighted by "
        "mass x occupancy, voxel-integrated Gaussians of sigma = resolution / 2, centre of mass at index N // 2; "
        "values in Da per cubic Angstrom",
        "command": COMMAND,
        "gumalign_version": __version__,
        "templates": entries,
    }
    write_text_atomic(args.out / "templates.json", json.dumps(record, indent=2) + "\n")
    (args.out / "templates.json").chmod(0o644)
    print(f"wrote {len(entries)} templates and templates.json to {args.out}")


if __name__ == "__main__":
    main()
