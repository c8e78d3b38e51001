"""`gumalign models`: list the built-in Gum-Net models and show a model's record (built-in or trained).

Example usage:

    gumalign models list
    gumalign models show gumnet-compact-sim32
    gumalign models show runs/model/          # a `gumalign train --out` directory
"""

from __future__ import annotations

from typing import Annotated

import typer

from gumalign.cli._common import handle_errors, out_console

app = typer.Typer(
    name="models",
    help="List the built-in Gum-Net models and show a model's record.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)


def _fmt_errors(summary: dict | None) -> str:
    if not summary or "rotation_error" not in summary:
        return "-"
    return f"{summary['rotation_error']['mean']:.2f} / {summary['translation_error']['mean']:.2f}"


@app.command("list")
@handle_errors
def list_command() -> None:
    """List the built-in models: name, architecture, parameters, size and validation errors (rotation / translation)."""
    from gumalign.weights import DEFAULT_MODEL, WEIGHTS_DIR, available_models, model_record

    names = available_models()
    if not names:
        out_console.print(f"no built-in models installed in {WEIGHTS_DIR}")
        return
    for name in names:
        record = model_record(name)
        mark = " (default)" if name == DEFAULT_MODEL else ""
        out_console.print(
            f"{name}{mark}: {record['architecture'].get('arch', '?')}, {record.get('parameters', 0):,} parameters, "
            f"{record.get('size_bytes', 0) / 1e6:.1f} MB, validation rotation/translation error "
            f"{_fmt_errors(record.get('validation'))}",
            soft_wrap=True,
        )


@app.command("show")
@handle_errors
def show_command(
    name: Annotated[str, typer.Argument(help="A built-in model name, a `gumalign train --out` directory or a file.")],
) -> None:
    """Print a model's record: architecture, box, voxel size, wedge, training command and data, validation errors
    per SNR, sha256 and size (verifying the file against it and loading it). Exit status 2 for a file that does not
    verify or cannot be loaded."""
    import json

    from gumalign.weights import load_model, resolve_model

    weights, record = resolve_model(name)
    if record is None:
        # Check what can be checked: a readable safetensors file whose tensors fit the architecture it names.
        _, loaded = load_model(weights, "cpu", allow_unverified=True)
        out_console.print(
            f"{weights}: unverified: no record (.json) beside this file, so its sha256 cannot be checked; it loads as "
            f"{loaded['architecture'].get('arch', '?')!r} (use it with --allow-unverified)",
            soft_wrap=True,
        )
        return
    load_model(name, "cpu", allow_unverified=False)  # verifies the sha256 and that the tensors fit
    shown = dict(record)
    training = dict(shown.get("training") or {})
    history = training.pop("history", None)
    if history is not None:
        training["history"] = f"{len(history)} epochs (in {weights.with_suffix('.json').name})"
    shown["training"] = training
    out_console.print(f"{weights} (sha256 verified)")
    out_console.print_json(json.dumps(shown))
