"""The pretrained-weights registry: built-in Gum-Net models shipped in this folder, and users' trained models.

A model is a safetensors file (the state dict; never a pickle) plus a JSON record: architecture, box, voxel size,
wedge, the training command and data, validation errors per SNR, and the file's sha256 and size. Built-in models live
here as ``NAME.safetensors`` + ``NAME.json``; ``gumalign train --out DIR`` writes ``DIR/model.safetensors`` +
``DIR/model.json``. Anywhere a model name is accepted, a directory or file path works too.

Every load checks the file against the sha256 in its record and refuses a mismatch. A file that cannot be verified
(a bare safetensors file without a record, or one that differs from its record) is refused unless the caller allows
unverified models (``allow_unverified=True``, or inside :func:`unverified_models_allowed`, which is what the CLI's
``--allow-unverified`` does); its architecture then comes from the file's metadata or the record.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import shutil
from pathlib import Path
from typing import Iterator

from gumalign.errors import GumalignError

WEIGHTS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = "gumnet-compact-sim32"
RECORD_FORMAT = "gumalign-gumnet-1"
CONFIG_METADATA_KEY = "gumalign_config"
MODEL_STEM = "model"  # gumalign train --out DIR writes DIR/model.safetensors and DIR/model.json

_ALLOW_UNVERIFIED: contextvars.ContextVar[bool] = contextvars.ContextVar("gumalign_allow_unverified", default=False)


@contextlib.contextmanager
def unverified_models_allowed(allow: bool = True) -> Iterator[None]:
    """Within the block, :func:`load_model` calls that do not say otherwise accept unverified models (``allow``)."""
    token = _ALLOW_UNVERIFIED.set(bool(allow))
    try:
        yield
    finally:
        _ALLOW_UNVERIFIED.reset(token)


def available_models() -> list[str]:
    """Names of the built-in models (a NAME.safetensors with its NAME.json in WEIGHTS_DIR), sorted."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors") if p.with_suffix(".json").is_file())


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GumalignError(f"{path}: unreadable model record ({exc})") from None
    if not isinstance(record, dict) or "architecture" not in record:
        raise GumalignError(f"{path}: not a gumalign model record (no 'architecture')")
    return record


def _unknown_name(name: str) -> GumalignError:
    names = available_models()
    have = f"available: {', '.join(names)}" if names else "no built-in models are installed"
    return GumalignError(
        f"unknown model {name!r} ({have}); or give a directory or .safetensors file written by `gumalign train --out`"
    )


def resolve_model(name_or_path: str | Path) -> tuple[Path, dict | None]:
    """(weights file, record or None) for a built-in name, a training output directory, a .safetensors or a .json.

    Raises:
        GumalignError: unknown name (listing the available ones), or a path without the expected files.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        weights, record = path / f"{MODEL_STEM}.safetensors", path / f"{MODEL_STEM}.json"
        if not weights.is_file():
            raise GumalignError(f"{path}: no {weights.name} in this directory (expected `gumalign train --out` output)")
        return weights, _read_record(record) if record.is_file() else None
    if path.suffix == ".json" and path.is_file():
        weights = path.with_suffix(".safetensors")
        if not weights.is_file():
            raise GumalignError(f"{path}: no weights file {weights.name} beside this record")
        return weights, _read_record(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise GumalignError(f"{path}: no such model file")
        record = path.with_suffix(".json")
        return path, _read_record(record) if record.is_file() else None
    if text in available_models():
        return WEIGHTS_DIR / f"{text}.safetensors", _read_record(WEIGHTS_DIR / f"{text}.json")
    raise _unknown_name(text)


def model_record(name_or_path: str | Path) -> dict:
    """The JSON record of a model (built-in name or path)."""
    weights, record = resolve_model(name_or_path)
    if record is None:
        raise GumalignError(f"{weights}: no model record (.json) beside this file")
    return record


def verify_weights(weights: Path, record: dict) -> None:
    """Refuse a weights file whose size or sha256 differs from its record."""
    from gumalign.io.safetensors import file_sha256

    expected = record.get("sha256")
    if not expected:
        raise GumalignError(f"{weights}: its record has no sha256 to verify against")
    size = weights.stat().st_size
    if "size_bytes" in record and size != record["size_bytes"]:
        raise GumalignError(
            f"{weights}: size {size} bytes differs from the record's {record['size_bytes']}; the file is damaged or "
            "was modified: reinstall it or retrain"
        )
    actual = file_sha256(weights)
    if actual != expected:
        raise GumalignError(
            f"{weights}: sha256 {actual[:16]}… does not match the record's {expected[:16]}…; the file is damaged or "
            "was modified: reinstall it or retrain"
        )


def load_model(name_or_path: str | Path, device="cpu", *, allow_unverified: bool | None = None):
    """A Gum-Net in eval mode with verified weights, and its record.

    Args:
        name_or_path: built-in model name, `gumalign train --out` directory, .safetensors or .json file.
        device: torch device (or its name) to put the model on.
        allow_unverified: accept a file without a record or one that differs from its record (its record then says
            ``"verified": False``); None: as set by :func:`unverified_models_allowed` (default: refuse).

    Returns:
        (model, record); record is {'architecture': ..., 'verified': False} for an unverified bare file.

    Raises:
        GumalignError: unknown name, an unverified file (unless allowed), unreadable file, weights that do not fit
            the architecture.
    """
    from safetensors import safe_open

    from gumalign.models.gumnet import GumNet, GumNetConfig
    from gumalign.io.safetensors import load_tensors

    allow = _ALLOW_UNVERIFIED.get() if allow_unverified is None else bool(allow_unverified)
    weights, record = resolve_model(name_or_path)
    if record is None and not allow:
        raise GumalignError(
            f"{weights}: no record (.json) beside this file, so its sha256 cannot be verified (a damaged or modified "
            "file would go unnoticed); use the `gumalign train --out` directory, or pass --allow-unverified"
        )
    if record is not None:
        try:
            verify_weights(weights, record)
        except GumalignError as exc:
            if not allow:
                raise GumalignError(f"{exc} (or pass --allow-unverified to use it anyway)") from None
            record = dict(record, verified=False)
        config_values = record["architecture"]
    else:
        try:
            with safe_open(str(weights), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except Exception as exc:
            raise GumalignError(f"{weights}: not a readable safetensors file ({exc})") from None
        if CONFIG_METADATA_KEY not in metadata:
            raise GumalignError(f"{weights}: no record beside it and no architecture in its metadata")
        config_values = json.loads(metadata[CONFIG_METADATA_KEY])
        record = {"architecture": config_values, "verified": False}
    try:
        config = GumNetConfig.from_dict(config_values)
        model = GumNet(config)
    except (TypeError, ValueError) as exc:
        raise GumalignError(f"{weights}: unusable architecture in the record ({exc})") from None
    state = load_tensors(weights, "cpu")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise GumalignError(f"{weights}: weights do not fit architecture {config.arch!r} ({str(exc)[:200]})") from None
    model.to(device)
    model.eval()
    return model, record


def save_model(model, record: dict, folder: Path) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/model.json`` (record completed with sha256, size, parameters).

    Returns:
        The weights path.
    """
    from gumalign.io.atomic import write_text_atomic
    from gumalign.io.safetensors import file_sha256, save_tensors
    from gumalign.models.gumnet import parameter_count

    folder = Path(folder)
    weights = folder / f"{MODEL_STEM}.safetensors"
    save_tensors(model.state_dict(), weights, metadata={CONFIG_METADATA_KEY: model.config.to_json()})
    record = dict(record)
    record.update(
        format=RECORD_FORMAT,
        architecture=model.config.to_dict(),
        parameters=parameter_count(model),
        sha256=file_sha256(weights),
        size_bytes=weights.stat().st_size,
    )
    write_text_atomic(folder / f"{MODEL_STEM}.json", json.dumps(record, indent=1))
    return weights


def install_model(source: str | Path, name: str, folder: Path | None = None, extra: dict | None = None) -> Path:
    """Copy a trained model (directory or file, verified first) into ``folder`` (default: the built-in folder) as
    NAME.safetensors + NAME.json, the record updated with ``name`` and ``extra``.

    Used by scripts/train_shipped.sh to ship a model inside the package.
    """
    from gumalign.io.atomic import atomic_path, write_text_atomic

    weights, record = resolve_model(source)
    if record is None:
        raise GumalignError(f"{weights}: a model needs its record (.json) to be installed")
    verify_weights(weights, record)
    record = dict(record, name=name)
    record.update(extra or {})
    target = Path(folder if folder is not None else WEIGHTS_DIR) / f"{name}.safetensors"
    with atomic_path(target) as tmp:
        shutil.copyfile(weights, tmp)
    write_text_atomic(target.with_suffix(".json"), json.dumps(record, indent=1))
    return target


__all__ = [
    "DEFAULT_MODEL",
    "WEIGHTS_DIR",
    "available_models",
    "install_model",
    "load_model",
    "model_record",
    "resolve_model",
    "save_model",
    "unverified_models_allowed",
    "verify_weights",
]
