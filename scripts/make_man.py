#!/usr/bin/env python3
"""Generate man/gumalign.1 and man/gumalign-<command>.1 from the CLI's own help, so they never drift.

Usage: python scripts/make_man.py [OUTDIR]   (default: man/)
tests/test_cli.py regenerates the pages into a temporary folder and compares them with the committed ones.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import typer

try:  # typer >= 0.29 vendors click
    from typer import _click as click
except ImportError:  # older typer depends on click
    import click

from gumalign import __version__
from gumalign.cli.main import app

_MARKUP = re.compile(r"\[/?[a-z ]+\]")


def _roff(text: str) -> str:
    """Plain text -> roff-safe text (escape backslashes and leading dots/quotes; drop rich markup)."""
    text = _MARKUP.sub("", text or "").replace("\\", "\\\\").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in text.splitlines())


def _option_lines(command) -> list[str]:
    """One .TP entry per option/argument, from click's own help records (names, metavar, help, default)."""
    ctx = click.Context(command, info_name=command.name)
    lines = []
    for param in command.params:
        record = param.get_help_record(ctx)
        if param.param_type_name == "argument":
            record = (param.name.upper(), getattr(param, "help", "") or "")
        if record is None:
            continue
        names, help_text = record
        lines += [".TP", f".B {_roff(names)}", _roff(help_text)]
    return lines


def _page(name: str, command, summary: str) -> str:
    usage_ctx = click.Context(command, info_name=name)
    usage = " ".join(command.collect_usage_pieces(usage_ctx))
    lines = [
        f'.TH "{name.upper()}" 1 "" "gumalign {__version__}" "gumalign manual"',
        ".SH NAME",
        f"{_roff(name)} \\- {_roff(summary)}",
        ".SH SYNOPSIS",
        f".B {_roff(name)}",
        _roff(usage),
        ".SH DESCRIPTION",
        _roff(command.help or ""),
        ".SH OPTIONS",
        *_option_lines(command),
    ]
    if hasattr(command, "commands"):
        lines.append(".SH COMMANDS")
        for sub_name, sub in sorted(command.commands.items()):
            lines += [".TP", f".B {sub_name}", _roff(sub.get_short_help_str(90))]
    lines += [".SH SEE ALSO", "gumalign(1)", ""]
    return "\n".join(lines)


def pages() -> dict[str, str]:
    """{file name: page text} for the top-level command and every subcommand (nested groups included)."""
    root = typer.main.get_command(app)
    out = {"gumalign.1": _page("gumalign", root, "subtomogram alignment for cryo-ET")}

    def walk(group, prefix: str) -> None:
        for sub_name, sub in sorted(group.commands.items()):
            full = f"{prefix}-{sub_name}"
            out[f"{full}.1"] = _page(full.replace("-", " ", 1), sub, sub.get_short_help_str(90))
            if hasattr(sub, "commands"):
                walk(sub, full)

    walk(root, "gumalign")
    return out


def main(outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    generated = pages()
    for stale in outdir.glob("gumalign*.1"):
        if stale.name not in generated:
            stale.unlink()
    for file_name, text in generated.items():
        (outdir / file_name).write_text(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "man")
