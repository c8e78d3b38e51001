"""Device choice shared by every command: --device auto|cpu|cuda."""

from __future__ import annotations

from gumalign.errors import GumalignError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name):
    """torch.device for 'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N' (or a torch.device)."""
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GumalignError(f"--device {name}: no CUDA device is available (use --device cpu or auto)")
        return torch.device(name)
    raise GumalignError(f"unknown device {name!r}; choose one of: {', '.join(DEVICE_CHOICES)}")
