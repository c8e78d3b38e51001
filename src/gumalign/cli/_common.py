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
from gumalign.io.atomic import check_output_file, check_output_folder, refuse_overwriting_inputs  # noqa: F401

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
    """A rich progress bar on stderr with rate and ETA; yields ``advance(n)``. Silent with ``quiet``.

    Without a terminal (a SLURM log, a pipe) a bar cannot redraw, so plain lines are printed instead: one at every
    10% of the total and at least every PROGRESS_LINE_SECONDS, each with the count, rate and ETA.
    """
    if quiet or not sys.stderr:
        yield lambda n=1: None
        return
    if not err_console.is_terminal:
        with _progress_lines(description, total) as advance:
            yield advance
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


PROGRESS_LINE_SECONDS = 30.0


@contextmanager
def _progress_lines(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Progress as log lines: 'align (fa): 40/100 (40%), 3.2/s, ETA 19 s'."""
    import time

    began = time.monotonic()
    state = {"done": 0, "last_time": began, "last_decile": 0}

    def line() -> str:
        done, elapsed = state["done"], time.monotonic() - began
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"{description}: {done}"
        if total:
            text += f"/{total} ({100 * done / total:.0f}%)"
        if rate > 0:
            text += f", {rate:.2f}/s"
            if total and done < total:
                text += f", ETA {(total - done) / rate:.0f} s"
        return text

    def advance(n: int = 1) -> None:
        state["done"] += n
        now = time.monotonic()
        decile = int(10 * state["done"] / total) if total else 0
        if decile > state["last_decile"] or now - state["last_time"] >= PROGRESS_LINE_SECONDS:
            state["last_decile"], state["last_time"] = decile, now
            err_console.print(line(), soft_wrap=True, markup=False, highlight=False)

    yield advance
    if total and state["last_decile"] < 10 and state["done"]:
        err_console.print(line(), soft_wrap=True, markup=False, highlight=False)


def info(message: str, quiet: bool = False) -> None:
    """A log line on stderr (silenced by --quiet)."""
    if not quiet:
        err_console.print(message, soft_wrap=True)


def cli_runtime(device: str = "auto", threads: int | None = None, quiet: bool = False):
    """The gumalign.ops.Runtime of a command: progress bars and log lines on stderr (silent with --quiet)."""
    import functools

    from gumalign.ops.runtime import Runtime

    return Runtime(device=device, threads=threads, progress=functools.partial(progress_bar, quiet=quiet),
                   log=functools.partial(info, quiet=quiet))


def print_summary(summary: dict, json_path: Path | None = None) -> None:
    """The command's one machine-readable line on stdout, ``key=value ...`` (values without spaces), and with
    ``json_path`` the same record as JSON (written atomically; '-' prints it on stdout instead of the line)."""
    import json

    def text(value) -> str:
        if isinstance(value, float):
            return f"{value:g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.6g}"
        return str(value).replace(" ", "_")

    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports (its summary is the run's)
        return
    if json_path is not None and str(json_path) == "-":
        typer.echo(json.dumps(summary, sort_keys=True))
        return
    typer.echo(" ".join(f"{key}={text(value)}" for key, value in summary.items()))
    if json_path is not None:
        from gumalign.io.atomic import write_text_atomic

        write_text_atomic(Path(json_path), json.dumps(summary, indent=2, sort_keys=True) + "\n")


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
