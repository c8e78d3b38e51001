"""Packaging (issue 17): man pages with whole NAME lines, EXAMPLES and EXIT STATUS; `gumalign man CMD` prints one from
the package; pip installs them to share/man/man1; shell completion is on."""

import re
import sys
import tomllib
from pathlib import Path

from typer.testing import CliRunner

from gumalign.cli.main import app
from gumalign.cli.manpages import pages, render_text

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_gumalign_man_align_prints_the_whole_page():
    result = runner.invoke(app, ["man", "align"])
    assert result.exit_code == 0, result.output
    text = result.output
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXAMPLES", "EXIT STATUS", "SEE ALSO"):
        assert re.search(rf"^{section}$", text, re.M), section
    assert "gumalign align - Align every particle" in text
    assert "--method <str>" in text and "gumalign align --ref ref.mrc --particles parts.star" in text
    assert not re.search(r"^\.", text, re.M) and "\\-" not in text  # rendered, not roff
    roff = runner.invoke(app, ["man", "align", "--roff"]).output
    assert roff == pages()["gumalign-align.1"] and roff.startswith('.TH "GUMALIGN ALIGN" 1')
    assert runner.invoke(app, ["man", "models", "show"]).output.startswith("NAME\n       gumalign models show - ")
    assert runner.invoke(app, ["man"]).output.startswith("NAME\n       gumalign - ")


def test_unknown_page_is_one_line_and_exit_2():
    result = runner.invoke(app, ["man", "allign"])
    assert result.exit_code == 2
    assert "no manual page for 'allign'" in result.output and "align, average" in result.output
    assert "Traceback" not in result.output


def test_every_page_has_a_whole_name_line_examples_and_exit_status():
    generated = pages()
    assert {"gumalign.1", "gumalign-align.1", "gumalign-man.1", "gumalign-models-show.1"} <= set(generated)
    for file_name, page in generated.items():
        lines = page.splitlines()
        name_line = lines[lines.index(".SH NAME") + 1]
        assert "..." not in name_line and "…" not in name_line, file_name
        assert name_line.rstrip().endswith((".", ")", "cryo\\-ET")), (file_name, name_line)
        assert ".SH EXAMPLES" in lines and ".SH EXIT STATUS" in lines, file_name
        status = page.split(".SH EXIT STATUS", 1)[1].split(".SH", 1)[0]
        assert all(f".B {code}\n" in status for code in (0, 2, 130)), file_name
        examples = page.split(".SH EXAMPLES", 1)[1].split(".SH", 1)[0]
        assert "gumalign" in examples and ".nf" in examples, file_name
    # A command's examples are its own: the align page shows no simulate example.
    assert "gumalign simulate" not in generated["gumalign-align.1"].split(".SH EXAMPLES")[1]
    assert render_text(generated["gumalign-fsc.1"]).count("EXIT STATUS") == 1


def test_pages_are_installed_with_the_package_and_completion_is_on():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["data-files"]["share/man/man1"] == ["man/*.1"]
    committed = {p.name for p in (ROOT / "man").glob("gumalign*.1")}
    assert set(pages()) == committed
    result = runner.invoke(app, ["--help"])
    assert "--install-completion" in result.output and "--show-completion" in result.output
    # Completion answers through Typer's protocol (what --install-completion wires into the shell), and printing a
    # page loads no torch.
    import os
    import subprocess

    script = Path(sys.executable).parent / "gumalign"
    env = dict(os.environ, _GUMALIGN_COMPLETE="complete_bash", COMP_WORDS="gumalign align --max-s", COMP_CWORD="2")
    done = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["--max-shift"], done.stderr
    probe = ("import sys; from typer.testing import CliRunner; from gumalign.cli.main import app; "
             "r = CliRunner().invoke(app, ['man', 'align']); print(r.exit_code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["0", "False"], done.stderr
