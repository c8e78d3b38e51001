"""Tensor files without pickle: safetensors read and write, and the sha256 that model records carry.

Shared by the model registry (gumalign.weights) and training checkpoints (gumalign.train.checkpoint), so loading a
model never imports the training code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from gumalign.errors import GumalignError
from gumalign.io.atomic import atomic_path

__all__ = ["file_sha256", "load_tensors", "save_tensors"]


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB chunks."""
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
    """The tensors of a safetensors file, on ``device``; a GumalignError naming the file when it is unreadable."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(device))
    except Exception as exc:  # safetensors raises its own error types on corrupt headers
        raise GumalignError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
