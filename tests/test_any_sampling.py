"""A lab's own sampling (issue 17): particles of a built-in structure at 48³ / 7 Å and 64³ / 14 Å align with
`--method gumnet` and `--method fa` about as well as the 32³ / 12 Å version of the same particles (same seed: the
same orientations), each method against its own 32³ result."""

import numpy as np
import pytest
from typer.testing import CliRunner

from gumalign.cli.main import app
from gumalign.geometry import rotation_error
from gumalign.io.star import read_star

runner = CliRunner()
N_PARTICLES = 4


@pytest.fixture(scope="module")
def samplings(tmp_path_factory):
    """{(box, voxel): folder} of simulated sets with the same seed (the same rotations), SNR 100."""
    from gumalign.io.mrc import write_volume
    from gumalign.simulate.templates import load_builtin_template

    root = tmp_path_factory.mktemp("sampling")
    # The built-in map as a file: `simulate` resamples a map to any box and voxel size.
    template = load_builtin_template("spliceosome")
    density = root / "spliceosome.mrc"
    write_volume(density, template.density, template.voxel_size)
    sets = {}
    for box, voxel in ((32, 12.0), (48, 7.0), (64, 14.0)):
        out = root / f"b{box}"
        result = runner.invoke(app, ["simulate", "--structure", str(density), "--n", str(N_PARTICLES),
                                     "--snr", "100", "--box", str(box), "--voxel-size", str(voxel), "--max-shift",
                                     "2", "--seed", "4", "--jobs", "2", "--out", str(out), "--quiet"])
        assert result.exit_code == 0, result.output
        sets[(box, voxel)] = out
    return sets


def _mean_error(folder, method):
    out = folder / f"aligned_{method}.star"
    result = runner.invoke(app, ["align", "--ref", str(folder / "reference.mrc"), "--particles",
                                 str(folder / "particles.star"), "--method", method, "--device", "cpu", "--out",
                                 str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    truth = read_star(folder / "particles.star").matrices()
    return float(np.mean(rotation_error(truth, read_star(out).matrices())))


@pytest.mark.parametrize("method", ["gumnet", "fa"])
def test_other_boxes_and_voxel_sizes_align_as_the_32_cube_version(samplings, method):
    own = _mean_error(samplings[(32, 12.0)], method)
    for key in ((48, 7.0), (64, 14.0)):
        error = _mean_error(samplings[key], method)
        assert error <= own + 0.1, (method, key, error, own)
