"""STAR output RELION reads (issue 16): --star-version 3.1/4/5, complete optics blocks, RELION 5 centred coordinates
and optimisation sets, and the input checks that used to pass silently (duplicate columns, wild or corrupt values)."""

import numpy as np
import pandas as pd
import pytest
import starfile
from scipy.spatial.transform import Rotation

from gumalign.errors import GumalignError
from gumalign.io.star import ParticleTable, optimisation_set_path, read_star, write_star
from tests.test_star import STAR_30, STAR_31, STAR_4

# The columns RELION's loaders need, from RELION 5.0's source (3dem/relion):
#  - src/jaz/single_particle/obs_model.cpp, ObservationModel::ObservationModel: stops with "not all necessary
#    variables defined in _optics.star" without rlnVoltage, rlnSphericalAberration and a pixel size
#    (rlnImagePixelSize); ObservationModel::getBoxSize stops without rlnImageSize; ObservationModel::loadSafely
#    (findUndefinedOptGroups) needs each particle's rlnOpticsGroup in data_optics; groupNames: rlnOpticsGroupName.
#  - src/exp_model.cpp, Experiment::read: rlnImageDimensionality, read with a default of 2 (3D data would be 2D).
#  - src/ctf.cpp, CTF::readByGroup: rlnAmplitudeContrast.
#  - src/jaz/tomography/particle_set.cpp, ParticleSet::read (RELION 4 and 5 tomography): rlnTomoTiltSeriesPixelSize
#    in data_optics ("missing from optics MetaDataTable"), rlnTomoName per particle; getOpticsGroup:
#    rlnOpticsGroup; getParticleCoordDecenteredPixel (RELION 5): rlnCenteredCoordinateX/Y/ZAngst.
OPTICS_31 = {"rlnOpticsGroup", "rlnOpticsGroupName", "rlnImagePixelSize", "rlnImageSize", "rlnImageDimensionality",
             "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"}
PARTICLES_31 = {"rlnImageName", "rlnOpticsGroup", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi",
                "rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst"}
OPTICS_TOMO = OPTICS_31 | {"rlnTomoTiltSeriesPixelSize"}
PARTICLES_4 = PARTICLES_31 | {"rlnTomoName", "rlnTomoParticleName"}
PARTICLES_5 = PARTICLES_4 | {"rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
                             "rlnCenteredCoordinateZAngst"}
REQUIRED = {"3.1": (OPTICS_31, PARTICLES_31), "4": (OPTICS_TOMO, PARTICLES_4), "5": (OPTICS_TOMO, PARTICLES_5)}

TOMOGRAMS = """
data_global

loop_
_rlnTomoName #1
_rlnTomoSizeX #2
_rlnTomoSizeY #3
_rlnTomoSizeZ #4
_rlnTomoTiltSeriesPixelSize #5
00255 4000 3000 1000 1.350000
"""


@pytest.fixture
def write(tmp_path):
    def _write(text, name="in.star"):
        path = tmp_path / name
        path.write_text(text.lstrip())
        return path

    return _write


def _check_relion_reads(path, version):
    blocks = starfile.read(path, always_dict=True)  # an independent reader
    assert set(blocks) == {"optics", "particles"}
    optics_needed, particles_needed = REQUIRED[version]
    optics, particles = blocks["optics"], blocks["particles"]
    assert optics_needed <= set(optics.columns), optics_needed - set(optics.columns)
    assert particles_needed <= set(particles.columns), particles_needed - set(particles.columns)
    assert (optics["rlnImageDimensionality"] == 3).all()
    assert set(particles["rlnOpticsGroup"]) <= set(optics["rlnOpticsGroup"])
    assert path.read_text().count("# version " + {"3.1": "30001", "4": "40000", "5": "50001"}[version]) == 2
    return optics, particles


@pytest.mark.parametrize("version", ["3.1", "4", "5"])
def test_each_flavour_has_what_relions_loader_needs(write, tmp_path, version):
    """RELION 4 input (tomogram names, pixel coordinates) written in each flavour and read back."""
    table = read_star(write(STAR_4)).for_output(version, tomograms=write(TOMOGRAMS, "tomograms.star"))
    out = tmp_path / f"out{version}.star"
    write_star(table, out)
    optics, particles = _check_relion_reads(out, version)
    again = read_star(out)
    # A 3.1 file that keeps the input's tomogram columns reads as RELION 4 (detection is by columns).
    assert again.version == ("4" if version == "3.1" else version)
    np.testing.assert_allclose(again.angles(), table.angles())
    np.testing.assert_allclose(again.origins_angst(), table.origins_angst())
    np.testing.assert_allclose(again.pixel_sizes(), 5.4)
    if version == "5":
        # RELION 5: pixel = centred Å / tilt-series px + size / 2, so centred = (1000 - 4000/2) * 1.35 Å.
        np.testing.assert_allclose(particles["rlnCenteredCoordinateXAngst"], [(1000 - 2000) * 1.35, (1100 - 2000) * 1.35])
        np.testing.assert_allclose(particles["rlnCenteredCoordinateZAngst"], [(300 - 500) * 1.35, (310 - 500) * 1.35])
        assert "rlnCoordinateX" not in particles.columns
    else:
        assert again.particles["rlnCoordinateX"].tolist() == ["1000.0", "1100.0"]
    assert again.particles["rlnTomoName"].tolist() == ["00255", "00255"]


def test_relion_30_input_gets_a_complete_optics_block_from_its_particle_columns(write, tmp_path):
    text = STAR_30.replace("_rlnRandomSubset #14", "_rlnRandomSubset #14\n_rlnVoltage #15\n_rlnSphericalAberration #16")
    text = text.replace(" 1\nsub/p2", " 1 200 2.0\nsub/p2").replace("00256 5.0 10000.0 2", "00256 5.0 10000.0 2 200 2.0")
    table = read_star(write(text))
    out = tmp_path / "out.star"
    write_star(table, out, box_size=24)  # 3.0 input is written as 3.1 by default
    optics, particles = _check_relion_reads(out, "3.1")
    assert optics["rlnVoltage"].tolist() == [200] and optics["rlnSphericalAberration"].tolist() == [2.0]
    assert optics["rlnImageSize"].tolist() == [24] and optics["rlnImagePixelSize"].tolist() == [5.0]
    assert optics["rlnAmplitudeContrast"].tolist() == [0.1]
    assert "# gumalign: not in the input, written as defaults: rlnAmplitudeContrast 0.1" in out.read_text()
    assert "rlnVoltage" not in particles.columns  # moved to data_optics, as relion_convert_star does


def test_default_flavour_is_the_inputs(write, tmp_path):
    out = tmp_path / "out.star"
    write_star(read_star(write(STAR_4)), out)
    _check_relion_reads(out, "4")
    write_star(read_star(write(STAR_31)), out)
    _check_relion_reads(out, "3.1")


def test_relion_5_optimisation_set_names_the_files(write, tmp_path):
    tomograms = write(TOMOGRAMS, "tomograms.star")
    table = read_star(write(STAR_4)).for_output("5", tomograms=tomograms, optimisation_set=True)
    out = tmp_path / "run.star"
    write_star(table, out)
    opt = optimisation_set_path(out)
    assert opt.name == "run_optimisation_set.star"
    block = starfile.read(opt, always_dict=True)["optimisation_set"]
    assert block["rlnTomoParticlesFile"] == str(out) and block["rlnTomoTomogramsFile"] == str(tomograms)


def test_flavours_that_cannot_be_written_are_refused_before_any_work(write):
    with pytest.raises(GumalignError, match="--star-version must be one of 3.1, 4, 5"):
        read_star(write(STAR_31)).for_output("3.0")
    with pytest.raises(GumalignError, match="need rlnTomoName"):
        read_star(write(STAR_31)).for_output("4")
    with pytest.raises(GumalignError, match="pass --tomograms"):
        read_star(write(STAR_4)).for_output("5")
    with pytest.raises(GumalignError, match="add --star-version 5"):
        read_star(write(STAR_4)).for_output("4", optimisation_set=True)


def test_simulate_style_table_gets_voltage_cs_and_amplitude_contrast(tmp_path):
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [12.0], "rlnImageSize": [32],
                           "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.07]})
    particles = pd.DataFrame({"rlnImageName": ["a.mrc"], "rlnAngleRot": [1.0], "rlnAngleTilt": [2.0],
                              "rlnAnglePsi": [3.0], "rlnOriginXAngst": [0.0], "rlnOriginYAngst": [0.0],
                              "rlnOriginZAngst": [0.0]})
    out = tmp_path / "p.star"
    write_star(ParticleTable(particles, optics), out)
    optics_out, _ = _check_relion_reads(out, "3.1")
    assert optics_out["rlnAmplitudeContrast"].tolist() == [0.07]
    assert "defaults" not in out.read_text()


# -- input checks ---------------------------------------------------------------------------------------------------
def test_duplicate_column_is_one_clear_error(write):
    path = write(STAR_31.replace("_myLabNote #10", "_rlnAngleRot #10"))
    with pytest.raises(GumalignError, match=r"in\.star: column _rlnAngleRot appears twice in data_particles"):
        read_star(path)


def test_angles_outside_180_are_wrapped_with_a_note(write):
    table = read_star(write(STAR_31.replace("p1.mrc 10.0 20.0 30.0", "p1.mrc 3867.0 20.0 -200.0")))
    assert len(table.notes) == 1 and "3867" in table.notes[0] and "wrapped" in table.notes[0]
    angles = table.angles()
    np.testing.assert_allclose(angles[0], [3867 - 3600 - 360, 20.0, 160.0])
    assert np.all(np.abs(angles) <= 180)
    same = Rotation.from_euler("ZYZ", [3867.0, 20.0, -200.0], degrees=True).as_matrix().T
    np.testing.assert_allclose(table.matrices()[0], same, atol=1e-12)


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("p1.mrc 10.0 20.0", "p1.mrc inf 20.0", r"_rlnAngleRot has a non-finite value 'inf' in particle 1"),
        ("30.0 4.0 -8.0", "30.0 nan -8.0", r"_rlnOriginXAngst has a non-numeric value '?nan'? in particle 1"),
        ("30.0 4.0 -8.0", "30.0 1e30 -8.0", r"particle 1 has an origin of 1e\+30 Å"),
    ],
)
def test_non_finite_and_absurd_values_are_refused(write, old, new, message):
    table = read_star(write(STAR_31.replace(old, new)))
    with pytest.raises(GumalignError, match=message):
        table.angles() if "Angle" in message else table.origins_angst()
    if "origin" in message:
        with pytest.raises(GumalignError, match=message):
            table.origins_px()


def test_optics_groups_with_different_pixel_sizes_name_the_command_that_splits_them(write):
    text = STAR_31.replace("opticsGroup1 1 4.000000 32 3", "opticsGroup1 1 4.000000 32 3\nopticsGroup2 2 5.000000 32 3")
    text = text.replace("4.0 -4.0 1 2 007", "4.0 -4.0 2 2 007")
    table = read_star(write(text))
    np.testing.assert_allclose(table.pixel_sizes(), [4.0, 5.0])
    with pytest.raises(GumalignError, match=r"group 1: 4 Å, group 2: 5 Å.*relion_star_handler --i .*in\.star --o "
                                            r"in_optics1\.star --select rlnOpticsGroup --minval 1 --maxval 1"):
        table.common_pixel_size()
