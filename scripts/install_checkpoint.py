#!/usr/bin/env python3
"""Install the latest epoch checkpoint of a (running or interrupted) `gumalign train` run as a built-in model.

Used to ship an interim model while the full recipe (scripts/train_shipped.sh) is still training: the record says
so ("interim": true), holds the checkpoint's epoch, the last validation errors and the recipe, so that the next
finished run replaces it. Example:

    .venv/bin/python scripts/install_checkpoint.py runs/shipped/stage1 gumnet-compact-sim32 \\
        --data-json '{"structures": "12 built-in templates", "snrs": [100], "max_relative_angle": 50}'
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from gumalign.io.safetensors import load_tensors
from gumalign.models.gumnet import GumNetConfig, build_model
from gumalign.train.checkpoint import MODEL_FILE, read_checkpoint_state
from gumalign.train.loop import CHECKPOINT_DIR
from gumalign.weights import install_model, save_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the `gumalign train --out` folder")
    parser.add_argument("name", help="built-in model name to install as")
    parser.add_argument("--data-json", default="{}", help="the training data description (JSON) for the record")
    parser.add_argument("--recipe", default="scripts/train_shipped.sh")
    parser.add_argument("--folder", type=Path, default=None, help="install into this folder (default: the package)")
    parser.add_argument("--voxel-size", type=float, default=12.0)
    parser.add_argument("--tilt-range", type=float, nargs=2, default=(-60.0, 60.0))
    args = parser.parse_args()

    folder = args.run / CHECKPOINT_DIR
    state = read_checkpoint_state(folder)  # verifies the checkpoint files' hashes
    config = GumNetConfig.from_dict(state["fixed"]["config"])
    model = build_model(config)
    model.load_state_dict(load_tensors(folder / MODEL_FILE))
    last = state["history"][-1]
    record = {
        "name": args.name,
        "interim": True,
        "description": f"Gum-Net ({config.arch}), INTERIM: epoch {state['epoch']} of an unfinished run of "
                       f"{args.recipe}; replaced when the recipe finishes",
        "box": config.box,
        "voxel_size": args.voxel_size,
        "wedge": f"s_b tilts {args.tilt_range[0]:g}..{args.tilt_range[1]:g} degrees about y; s_a none",
        "training": {
            "recipe": args.recipe,
            "run": str(args.run),
            "epochs_done": state["epoch"],
            "data": json.loads(args.data_json),
            **{k: state["fixed"][k] for k in ("lr", "decay", "seed", "batch_size")},
        },
        "validation": last["val"],
        "history": [{"epoch": h["epoch"], "train_loss": h["train_loss"], "val": h["val"]} for h in state["history"]],
    }
    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, record, Path(tmp))
        target = install_model(Path(tmp), args.name, args.folder)
    print(f"installed {target} ({target.stat().st_size / 1e6:.1f} MB) from epoch {state['epoch']}")


if __name__ == "__main__":
    main()
