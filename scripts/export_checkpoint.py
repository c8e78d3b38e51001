#!/usr/bin/env python3
"""Write the latest epoch checkpoint of a (running, interrupted or time-boxed) `gumalign train` run as a model:
``OUT/model.safetensors`` + ``OUT/model.json`` (sha256, size, architecture, the epochs done and their validation),
usable wherever a model path is (`gumalign align --model OUT`, bench/bench_so3.py).

    .venv/bin/python scripts/export_checkpoint.py /root/runs/so3-long /root/runs/so3-long/export

Uses only the checkpoint's public functions (gumalign.train.checkpoint.load_checkpoint verifies the files' hashes).
The record says "from_checkpoint": true, so it is never mistaken for a finished run's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from gumalign.models.gumnet import GumNetConfig, build_model
from gumalign.train.checkpoint import load_checkpoint, read_checkpoint_state
from gumalign.train.loop import CHECKPOINT_DIR
from gumalign.weights import save_model


def export(run: Path, out: Path, name: str | None = None) -> Path:
    folder = Path(run) / CHECKPOINT_DIR
    state = read_checkpoint_state(folder)
    config = GumNetConfig.from_dict(state["fixed"]["config"])
    model = build_model(config)
    load_checkpoint(folder, model, torch.optim.Adam(model.parameters()), "cpu")
    history = state.get("history") or []
    record = {
        "name": name or Path(run).name,
        "from_checkpoint": True,
        "description": f"Gum-Net ({config.arch}) from epoch {state['epoch']} of the `gumalign train` run in {run}",
        "box": config.box,
        "training": {
            "run": str(run),
            "epochs_done": state["epoch"],
            "supervised": bool(state["fixed"].get("supervised", False)),
            **{k: state["fixed"].get(k) for k in ("lr", "decay", "seed", "batch_size")},
            "history": history,
        },
        "validation": history[-1]["val"] if history else None,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return save_model(model, record, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the `gumalign train --out` folder")
    parser.add_argument("out", type=Path, help="folder for model.safetensors + model.json")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    weights = export(args.run, args.out, args.name)
    record = json.loads(weights.with_suffix(".json").read_text())
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.1f} MB) from epoch {record['training']['epochs_done']}")


if __name__ == "__main__":
    main()
