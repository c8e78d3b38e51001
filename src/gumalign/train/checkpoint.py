"""Training checkpoints without pickle: tensors in safetensors files, everything else in JSON.

A checkpoint folder holds one generation (one epoch) at a time, plus the pieces of the next while it is written:
    model-eNNNNNN.safetensors      the model's state dict (parameters and batch-norm statistics) after epoch NNNNNN
    optimizer-eNNNNNN.safetensors  Adam's per-parameter tensors, keyed '<parameter name>/<state key>'
    state.json                     epoch, step count, history, options, data fingerprint, the names of the
                                   generation's two tensor files and their sha256
state.json is the pointer: a new generation's tensor files are written under new names first, and the atomic rename
of the new state.json switches to them in one step; the previous generation's files are deleted only after that.
A kill or a full disk at any point leaves the previous generation whole and resumable. (Folders written before
generations, with plain model.safetensors / optimizer.safetensors, still resume.)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gumalign.errors import GumalignError
from gumalign.io.atomic import write_text_atomic
from gumalign.io.safetensors import file_sha256, load_tensors, save_tensors

MODEL_FILE = "model.safetensors"  # the names of a checkpoint written before generations
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"


def generation_files(epoch: int) -> dict[str, str]:
    """{'model': file name, 'optimizer': file name} of the generation written after ``epoch``."""
    return {"model": f"model-e{epoch:06d}.safetensors", "optimizer": f"optimizer-e{epoch:06d}.safetensors"}


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
    """Write a new generation of model, optimizer and ``state`` (JSON-serialisable, with an ``epoch``) into ``folder``.

    The tensor files go under the generation's own names; the atomic replacement of state.json switches to them;
    then the files of earlier (or torn) generations are removed. An interruption anywhere keeps the last whole one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = generation_files(int(state["epoch"]))
    save_tensors(model.state_dict(), folder / files["model"])
    save_tensors(_optimizer_tensors(model, optimizer), folder / files["optimizer"])
    state = dict(state)
    state["files"] = files
    state["sha256"] = {name: file_sha256(folder / name) for name in files.values()}
    write_text_atomic(folder / STATE_FILE, json.dumps(state, indent=1, sort_keys=True))
    _remove_other_generations(folder, set(files.values()))


def _remove_other_generations(folder: Path, keep: set[str]) -> None:
    """Delete tensor files (and temporary files) of generations other than ``keep``."""
    for path in folder.iterdir():
        if path.name in keep or path.name == STATE_FILE:
            continue
        if path.suffix in (".safetensors", ".tmp") and path.is_file():
            path.unlink(missing_ok=True)


def has_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds a checkpoint to resume (a state.json; its files are verified when it is read)."""
    return (Path(folder) / STATE_FILE).is_file()


def _checkpoint_files(state: dict) -> dict[str, str]:
    files = state.get("files") or {"model": MODEL_FILE, "optimizer": OPTIMIZER_FILE}
    if not isinstance(files, dict) or set(files) != {"model", "optimizer"}:
        raise GumalignError(f"{STATE_FILE}: unexpected 'files' entry {files!r}")
    return files


def read_checkpoint_state(folder: Path) -> dict:
    """state.json of a checkpoint, after checking both tensor files against the hashes it records.

    Raises:
        GumalignError: no state.json, an unreadable one, one without a sha256 for each tensor file, or a tensor file
            that is missing or differs from its hash (a torn or modified checkpoint).
    """
    path = folder / STATE_FILE
    if not path.is_file():
        raise GumalignError(f"{folder}: no checkpoint to resume from (missing {STATE_FILE})")
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GumalignError(f"{path}: unreadable checkpoint state ({exc})") from None
    if not isinstance(state, dict):
        raise GumalignError(f"{path}: unreadable checkpoint state (not a JSON object)")
    files = _checkpoint_files(state)
    hashes = state.get("sha256")
    if not isinstance(hashes, dict):
        hashes = {}
    for name in files.values():
        file = folder / name
        if name not in hashes:
            raise GumalignError(f"{path}: records no sha256 for {name}; the checkpoint cannot be verified")
        if not file.is_file() or file_sha256(file) != hashes[name]:
            raise GumalignError(f"{file}: checkpoint file is missing or does not match {STATE_FILE} (torn checkpoint)")
    return state


def load_checkpoint(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device | str
) -> dict:
    """Restore model and optimizer from ``folder``'s current generation; returns its state dict.

    Files of other generations (left by a run killed before it removed them) are deleted once this one verifies.
    """
    state = read_checkpoint_state(folder)
    files = _checkpoint_files(state)
    _remove_other_generations(folder, set(files.values()))
    model.load_state_dict(load_tensors(folder / files["model"], device))
    optimizer.state.clear()
    _restore_optimizer(model, optimizer, load_tensors(folder / files["optimizer"], "cpu"))
    return state
