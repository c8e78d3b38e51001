"""Training checkpoints without pickle: tensors in safetensors files, everything else in JSON.

A checkpoint folder holds
    model.safetensors      the model's state dict (parameters and batch-norm statistics)
    optimizer.safetensors  Adam's per-parameter tensors, keyed '<parameter name>/<state key>'
    state.json             epoch, step count, history, options, data fingerprint, and the sha256 of both files
state.json is written last and names the hashes of the other two, so a checkpoint torn by a kill between files is
recognised and refused instead of silently mixing two epochs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from gumalign.errors import GumalignError
from gumalign.io.atomic import atomic_path, write_text_atomic

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write tensors (moved to the CPU, made contiguous) to a safetensors file atomically."""
    from safetensors.torch import save_file

    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(cpu, str(tmp), metadata=metadata)


def load_tensors(path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(device))
    except Exception as exc:  # safetensors raises its own error types on corrupt headers
        raise GumalignError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None


def _optimizer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for param, state in optimizer.state.items():
        for key, value in state.items():
            out[f"{names[id(param)]}/{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def _restore_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for key, value in tensors.items():
        name, _, field = key.rpartition("/")
        if name not in params:
            raise GumalignError(f"optimizer checkpoint names an unknown parameter {name!r}")
        param = params[name]
        # Adam keeps 'step' on the CPU unless capturable; the moments live with the parameter.
        optimizer.state[param][field] = value if field == "step" else value.to(param.device)


def save_checkpoint(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict
) -> None:
    """Write model, optimizer and ``state`` (JSON-serialisable) into ``folder``; state.json last."""
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors(model.state_dict(), folder / MODEL_FILE)
    save_tensors(_optimizer_tensors(model, optimizer), folder / OPTIMIZER_FILE)
    state = dict(state)
    state["sha256"] = {MODEL_FILE: file_sha256(folder / MODEL_FILE), OPTIMIZER_FILE: file_sha256(folder / OPTIMIZER_FILE)}
    write_text_atomic(folder / STATE_FILE, json.dumps(state, indent=1, sort_keys=True))


def read_checkpoint_state(folder: Path) -> dict:
    """state.json of a checkpoint, after checking both tensor files against the hashes it records."""
    path = folder / STATE_FILE
    if not path.is_file():
        raise GumalignError(f"{folder}: no checkpoint to resume from (missing {STATE_FILE})")
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GumalignError(f"{path}: unreadable checkpoint state ({exc})") from None
    for name, digest in state.get("sha256", {}).items():
        file = folder / name
        if not file.is_file() or file_sha256(file) != digest:
            raise GumalignError(f"{file}: checkpoint file is missing or does not match {STATE_FILE} (torn checkpoint)")
    return state


def load_checkpoint(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device | str
) -> dict:
    """Restore model and optimizer from ``folder``; returns its state dict."""
    state = read_checkpoint_state(folder)
    model.load_state_dict(load_tensors(folder / MODEL_FILE, device))
    optimizer.state.clear()
    _restore_optimizer(model, optimizer, load_tensors(folder / OPTIMIZER_FILE, "cpu"))
    return state
