"""What every subcommand shares: error reporting, progress bars, option types. No heavy imports here."""

from __future__ import annotations

import errno
import functools
import os
import sys
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator

import typer
from rich.console import Console

from gumalign.errors import GumalignError
from gumalign.io.atomic import refuse_overwriting_inputs  # noqa: F401  (re-exported for the commands)

# Logs and progress go to stderr; data go to files (and parseable summaries to stdout).
err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)


class _State:
    debug: bool = False


state = _State()


def fail(message: str) -> "typer.Exit":
    """Print one red line on stderr and return the Exit(2) to raise."""
    err_console.print(f"[bold red]error:[/bold red] {message}", markup=True, soft_wrap=True)
    return typer.Exit(code=2)


def handle_errors(func: Callable) -> Callable:
    """Turn a GumalignError from the core into one red line and exit status 2 (a traceback only with --debug)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from gumalign.memory import limit_heap_fragmentation

        limit_heap_fragmentation()
        try:
            return func(*args, **kwargs)
        except GumalignError as exc:
            if state.debug:
                raise
            raise fail(str(exc)) from None
        except OSError as exc:  # a full disk, a read-only folder, permission denied: the user's to fix
            if state.debug:
                raise
            raise fail(os_error_line(exc)) from None
        except MemoryError as exc:
            if state.debug:
                raise
            detail = f" ({exc})" if str(exc) else ""
            raise fail(f"out of memory{detail}; try a smaller --batch-size or box, or a machine with more memory") from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/yellow]; finished outputs are kept, partial ones removed")
            raise typer.Exit(code=130) from None

    return wrapper


@contextmanager
def progress_bar(description: str, total: int | None, quiet: bool = False) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr with rate and ETA; yields ``advance(n)``. Silent with ``quiet``."""
    if quiet or not sys.stderr:
        yield lambda n=1: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task(description, total=total, rate="")

        def advance(n: int = 1) -> None:
            progress.advance(task, n)
            speed = progress.tasks[0].speed
            if speed:
                progress.update(task, rate=f"{speed:.1f}/s")

        yield advance


def info(message: str, quiet: bool = False) -> None:
    """A log line on stderr (silenced by --quiet)."""
    if not quiet:
        err_console.print(message, soft_wrap=True)


def common_pixel_size(table, default: float | None) -> float:
    """The one pixel size (Å) of every particle in ``table``; a GumalignError when they differ or none is known."""
    import numpy as np

    from gumalign.errors import GumalignError

    sizes = table.pixel_sizes(default)
    if not np.allclose(sizes, sizes[0], rtol=1e-4):
        examples = sorted(set(sizes.tolist()))[:3]
        raise GumalignError(f"{table.name}: particles have different pixel sizes ({examples} Å)")
    return float(sizes[0])


def aligner_options(device, max_shift: float | None, seed: int) -> dict:
    """The common options passed to get_aligner (each method keeps those it takes); unset ones are left out.

    The aligner keeps its own batch size (its memory use differs from averaging's)."""
    options = {"device": str(device), "seed": seed}
    if max_shift is not None:
        options["max_shift"] = max_shift
    return options


def sibling(path: Path, suffix: str, extension: str | None = None) -> Path:
    """``avg.mrc`` -> ``avg{suffix}{extension or .mrc}`` in the same folder."""
    return path.with_name(path.stem + suffix + (extension if extension is not None else path.suffix or ".mrc"))


def os_error_line(exc: OSError) -> str:
    """One line naming the path(s) and the cause of an OSError: 'out/avg.mrc: No space left on device'."""
    cause = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        cause += " (the disk is full: free space or choose another --out)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        cause += " (choose a folder you can write to)"
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    line = f"{' -> '.join(paths)}: {cause}" if paths else cause
    kept = getattr(exc, "kept", None)  # io.atomic.PartialOutputError
    if kept is not None:
        line += f"; kept {', '.join(map(str, kept)) or 'nothing'}; not written: {', '.join(map(str, exc.missing))}"
    return line


def check_output_file(path: Path, option: str = "--out") -> None:
    """Refuse, before any work, an output file path that is a folder, lies under a file, or in a folder that cannot
    be written (read-only, permission denied)."""
    path = Path(path)
    if path.is_dir():
        raise GumalignError(f"{option} {path}: is a folder; give a file name")
    _check_writable_folder(path.parent, option, path)


def check_output_folder(path: Path, option: str = "--out") -> None:
    """Refuse, before any work, an output folder that is a file or cannot be created or written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise GumalignError(f"{option} {path}: exists and is not a folder")
    _check_writable_folder(path if path.exists() else path.parent, option, path)


def _check_writable_folder(folder: Path, option: str, target: Path) -> None:
    folder = Path(folder) if str(folder) else Path(".")
    existing = folder
    while not existing.exists():  # the folders still to be created: check the nearest that exists
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise GumalignError(f"{option} {target}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GumalignError(f"{option} {target}: cannot write into {existing} (read-only or permission denied)")


def table_input_files(table) -> list[Path]:
    """Every file a particle table names: its subtomograms and (rlnCtfImage) weights."""
    files = list(table.image_paths()) if table.has("rlnImageName") else []
    return files + list(table.weight_paths() or [])


def require_particles(table, what: str) -> None:
    """One line, exit 2, for a STAR file without particle rows."""
    if len(table) == 0:
        raise GumalignError(f"{table.name}: no particles to {what}")
