"""`gumalign`: the entry point. Registers the subcommands; imports nothing heavy."""

from __future__ import annotations

import typer

from gumalign import __version__
from gumalign.cli import _common
from gumalign.cli import align as align_cmd
from gumalign.cli import average as average_cmd
from gumalign.cli import cluster as cluster_cmd
from gumalign.cli import fsc as fsc_cmd
from gumalign.cli import info as info_cmd
from gumalign.cli import models as models_cmd
from gumalign.cli import simulate as simulate_cmd
from gumalign.cli import train as train_cmd
from gumalign.cli import wedge as wedge_cmd

app = typer.Typer(
    name="gumalign",
    help="Align, average, validate and cluster cryo-ET subtomograms (Gum-Net, H-T align, F&A align).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"gumalign {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    """Align, average, validate and cluster cryo-ET subtomograms (Gum-Net, H-T align, F&A align)."""
    _common.state.debug = debug


app.command("align")(align_cmd.command)
app.command("average")(average_cmd.command)
app.command("cluster")(cluster_cmd.command)
app.command("fsc")(fsc_cmd.command)
app.command("info")(info_cmd.command)
app.add_typer(models_cmd.app, name="models")
app.command("simulate")(simulate_cmd.command)
app.command("train")(train_cmd.command)
app.command("wedge")(wedge_cmd.command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
