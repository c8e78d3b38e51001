"""`gumalign`: the entry point. Registers the subcommands; imports nothing heavy."""

from __future__ import annotations

import typer
import typer.core
from typer._click import exceptions as click_exceptions

from gumalign import __version__
from gumalign.cli import _common
from gumalign.cli import align as align_cmd
from gumalign.cli import average as average_cmd
from gumalign.cli import cluster as cluster_cmd
from gumalign.cli import fsc as fsc_cmd
from gumalign.cli import info as info_cmd
from gumalign.cli import man as man_cmd
from gumalign.cli import merge as merge_cmd
from gumalign.cli import models as models_cmd
from gumalign.cli import simulate as simulate_cmd
from gumalign.cli import train as train_cmd
from gumalign.cli import wedge as wedge_cmd

class _OneLineErrorsGroup(typer.core.TyperGroup):
    """The root command, with usage errors (a bad option value, an unknown option) as one line on stderr and exit
    status 2, the way gumalign reports every other mistake, instead of Typer's multi-line box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        import sys

        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        except click_exceptions.NoArgsIsHelpError as exc:
            exc.show()  # the help itself (rich prints it while it is formatted)
            sys.exit(exc.exit_code)
        except click_exceptions.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            message = " ".join(exc.format_message().split())
            typer.echo(f"error: {message}{hint}", err=True)
            sys.exit(exc.exit_code)
        # click returns an Exit's code here (commands themselves return None).
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    cls=_OneLineErrorsGroup,
    name="gumalign",
    help="Align, average, validate and cluster cryo-ET subtomograms (Gum-Net, H-T align, F&A align).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
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
app.command("man")(man_cmd.command)
app.command("merge")(merge_cmd.command)
app.add_typer(models_cmd.app, name="models")
app.command("simulate")(simulate_cmd.command)
app.command("train")(train_cmd.command)
app.command("wedge")(wedge_cmd.command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
