"""`gumalign man`: print a gumalign manual page, from the package itself (no MANPATH needed).

The pages are generated from the CLI's own help (gumalign.cli.manpages), the same text as the installed
man/gumalign-*.1 files. Plain text by default; --roff gives the roff source for `man -l -`.

Example usage:

    gumalign man align
    gumalign man models show
    gumalign man fsc --roff | man -l -
"""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from gumalign.cli._common import handle_errors


@handle_errors
def command(
    name: Annotated[
        Optional[List[str]],
        typer.Argument(help="The command, e.g. align or models show (none: the gumalign(1) overview).",
                       show_default=False),
    ] = None,
    roff: Annotated[bool, typer.Option("--roff", help="Print the roff source instead of plain text.")] = False,
) -> None:
    """Print the manual page of a gumalign command."""
    from gumalign.cli.manpages import page_name, pages, render_text
    from gumalign.errors import GumalignError

    words = [w for part in (name or []) for w in part.replace("-", " ").split()]
    if words[:1] == ["gumalign"]:
        words = words[1:]
    available = pages()
    file_name = page_name(words)
    if file_name not in available:
        commands = sorted(n[len("gumalign-"):-2].replace("-", " ") for n in available if n != "gumalign.1")
        raise GumalignError(f"no manual page for {' '.join(words)!r}; pages: {', '.join(commands)}")
    page = available[file_name]
    typer.echo(page if roff else render_text(page), nl=False)
