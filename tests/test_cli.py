"""The command line as users and scripts meet it: help without torch, version, exit status 2, man pages."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gumalign import __version__
from gumalign.cli.main import app
from gumalign.io.mrc import read_volume, write_volume

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from gumalign.cli.main import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'scipy', 'matplotlib', 'gemmi') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_every_subcommand_help_is_light():
    from gumalign.cli.main import app as the_app
    import typer

    names = list(typer.main.get_command(the_app).commands)
    code = (
        "import sys\nfrom gumalign.cli.main import app\n"
        f"for name in {names!r}:\n"
        "    try:\n        app([name, '--help'])\n    except SystemExit:\n        pass\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "TORCH False" in out


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_wedge_writes_relion_cube(tmp_path):
    out = tmp_path / "w.mrc"
    result = runner.invoke(app, ["wedge", "--box", "16", "--tilt-range", "-60", "60", "--voxel-size", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    vol = read_volume(out)
    assert vol.data.shape == (16, 16, 16) and vol.voxel_size == pytest.approx(5.0)
    assert vol.data[8, 8, 8] == 1 and vol.data[14, 8, 8] == 0  # beam axis kz missing


def test_user_error_is_one_line_and_status_2(tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path / "missing.mrc")])
    assert result.exit_code == 2
    assert "missing.mrc: no such file" in result.output
    assert "Traceback" not in result.output


def test_debug_shows_the_exception(tmp_path):
    result = runner.invoke(app, ["--debug", "info", str(tmp_path / "missing.mrc")])
    assert result.exit_code != 0 and result.exception is not None


def test_bad_tilt_range_is_status_2(tmp_path):
    result = runner.invoke(app, ["wedge", "--tilt-range", "70", "-70", "--out", str(tmp_path / "w.mrc")])
    assert result.exit_code == 2 and "tilt range" in result.output
    assert not (tmp_path / "w.mrc").exists()


def test_info_on_star_and_mrc(tmp_path):
    write_volume(tmp_path / "v.mrc", np.zeros((8, 8, 8), np.float32), 3.0)
    result = runner.invoke(app, ["info", str(tmp_path / "v.mrc")])
    assert result.exit_code == 0 and "8×8×8" in result.output and "3.000 Å" in result.output


def test_man_pages_are_up_to_date(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_man
    finally:
        sys.path.pop(0)
    generated = make_man.pages()
    committed = {p.name: p.read_text() for p in (ROOT / "man").glob("gumalign*.1")}
    assert set(generated) == set(committed), "run `make man` to regenerate the man pages"
    for name, text in generated.items():
        assert committed[name] == text, f"man/{name} is stale: run `make man`"
