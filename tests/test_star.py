"""RELION STAR flavours 3.0, 3.1, 4 and 5 into one ParticleTable and back out as 3.1, values untouched."""

import numpy as np
import pandas as pd
import pytest
import starfile

from gumalign.errors import GumalignError
from gumalign.io.star import read_star, write_star

STAR_30 = """
data_

loop_
_rlnImageName #1
_rlnCoordinateX #2
_rlnCoordinateY #3
_rlnCoordinateZ #4
_rlnAngleRot #5
_rlnAngleTilt #6
_rlnAnglePsi #7
_rlnOriginX #8
_rlnOriginY #9
_rlnOriginZ #10
_rlnMicrographName #11
_rlnDetectorPixelSize #12
_rlnMagnification #13
_rlnRandomSubset #14
sub/p1.mrc 100.0 200.0 50.0 10.0 20.0 30.0 1.5 -2.0 0.5 00255 5.0 10000.0 1
sub/p2.mrc 110.0 210.0 60.0 -10.0 120.0 -30.0 0.0 1.0 -1.0 00256 5.0 10000.0 2
"""

STAR_31 = """
# version 30001

data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnImagePixelSize #3
_rlnImageSize #4
_rlnImageDimensionality #5
opticsGroup1 1 4.000000 32 3

# version 30001

data_particles

loop_
_rlnImageName #1
_rlnAngleRot #2
_rlnAngleTilt #3
_rlnAnglePsi #4
_rlnOriginXAngst #5
_rlnOriginYAngst #6
_rlnOriginZAngst #7
_rlnOpticsGroup #8
_rlnClassNumber #9
_myLabNote #10
p1.mrc 10.0 20.0 30.0 4.0 -8.0 2.0 1 1 keep
p2.mrc -10.0 120.0 -30.0 0.0 4.0 -4.0 1 2 007
"""

STAR_4 = """
data_optics

loop_
_rlnOpticsGroup #1
_rlnOpticsGroupName #2
_rlnTomoTiltSeriesPixelSize #3
_rlnImagePixelSize #4
_rlnImageSize #5
_rlnImageDimensionality #6
1 opticsGroup1 1.350000 5.400000 32 3

data_particles

loop_
_rlnTomoName #1
_rlnTomoParticleName #2
_rlnImageName #3
_rlnCtfImage #4
_rlnCoordinateX #5
_rlnCoordinateY #6
_rlnCoordinateZ #7
_rlnAngleRot #8
_rlnAngleTilt #9
_rlnAnglePsi #10
_rlnOriginXAngst #11
_rlnOriginYAngst #12
_rlnOriginZAngst #13
_rlnOpticsGroup #14
_rlnRandomSubset #15
00255 00255/1 Subtomograms/00255/1_data.mrc Subtomograms/00255/1_weights.mrc 1000.0 900.0 300.0 5.0 45.0 90.0 5.4 0.0 -10.8 1 1
00255 00255/2 Subtomograms/00255/2_data.mrc Subtomograms/00255/2_weights.mrc 1100.0 950.0 310.0 15.0 55.0 -90.0 0.0 0.0 0.0 1 2
"""

STAR_5 = """
data_optics

loop_
_rlnOpticsGroup #1
_rlnOpticsGroupName #2
_rlnTomoTiltSeriesPixelSize #3
_rlnTomoSubtomogramBinning #4
_rlnImageSize #5
_rlnImageDimensionality #6
1 opticsGroup1 1.500000 4.000000 32 3

data_particles

loop_
_rlnTomoName #1
_rlnCenteredCoordinateXAngst #2
_rlnCenteredCoordinateYAngst #3
_rlnCenteredCoordinateZAngst #4
_rlnTomoSubtomogramRot #5
_rlnTomoSubtomogramTilt #6
_rlnTomoSubtomogramPsi #7
_rlnAngleRot #8
_rlnAngleTilt #9
_rlnAnglePsi #10
_rlnOriginXAngst #11
_rlnOriginYAngst #12
_rlnOriginZAngst #13
_rlnImageName #14
_rlnOpticsGroup #15
TS_01 -120.5 33.0 10.0 0.0 90.0 0.0 1.0 2.0 3.0 6.0 0.0 0.0 sub/1.mrc 1
TS_01 220.5 -13.0 -10.0 30.0 60.0 90.0 4.0 5.0 6.0 0.0 -6.0 0.0 sub/2.mrc 1
"""


@pytest.fixture
def write(tmp_path):
    def _write(text, name="in.star"):
        path = tmp_path / name
        path.write_text(text.lstrip())
        return path

    return _write


def test_relion_30_pixel_shifts_and_detector_pixel_size(write):
    table = read_star(write(STAR_30))
    assert table.version == "3.0"
    np.testing.assert_allclose(table.pixel_sizes(), [5.0, 5.0])
    np.testing.assert_allclose(table.origins_px()[0], [1.5, -2.0, 0.5])
    np.testing.assert_allclose(table.origins_angst()[0], [7.5, -10.0, 2.5])
    assert table.particles["rlnMicrographName"].tolist() == ["00255", "00256"]
    assert table.image_paths()[0] == table.source.parent / "sub/p1.mrc"


def test_relion_31(write):
    table = read_star(write(STAR_31))
    assert table.version == "3.1"
    np.testing.assert_allclose(table.origins_px()[0], [1.0, -2.0, 0.5])
    np.testing.assert_allclose(table.angles()[1], [-10, 120, -30])
    assert table.classes().tolist() == [1, 2]
    assert table.particles["myLabNote"].tolist() == ["keep", "007"]


def test_relion_4_tomo_names_stay_strings_and_weights_resolve(write):
    table = read_star(write(STAR_4))
    assert table.version == "4"
    assert table.particles["rlnTomoName"].tolist() == ["00255", "00255"]
    np.testing.assert_allclose(table.pixel_sizes(), 5.4)
    np.testing.assert_allclose(table.origins_px()[0], [1.0, 0.0, -2.0])
    assert table.weight_paths()[1].name == "2_weights.mrc"
    assert table.half_sets().tolist() == [1, 2]


def test_relion_5_centered_coordinates_and_subtomogram_frame(write):
    table = read_star(write(STAR_5))
    assert table.version == "5"
    np.testing.assert_allclose(table.pixel_sizes(), 6.0)  # tilt-series pixel × binning
    frames = table.subtomogram_matrices()
    from scipy.spatial.transform import Rotation

    np.testing.assert_allclose(frames[1], Rotation.from_euler("ZYZ", [30, 60, 90], degrees=True).as_matrix().T, atol=1e-12)
    assert table.particles["rlnCenteredCoordinateXAngst"].tolist() == ["-120.5", "220.5"]


@pytest.mark.parametrize("text", [STAR_30, STAR_31, STAR_4, STAR_5])
def test_round_trip_keeps_every_column_and_value(write, tmp_path, text):
    table = read_star(write(text))
    out = tmp_path / "out.star"
    write_star(table, out, box_size=32)
    again = read_star(out)
    raw = starfile.read(out, always_dict=True)
    assert set(raw) == {"optics", "particles"}  # 3.1 style
    assert again.version in ("3.1", "4", "5")
    for column in table.particles.columns:
        if column in ("rlnOriginX", "rlnOriginY", "rlnOriginZ"):
            continue  # 3.0 pixel origins are written as rlnOrigin*Angst
        assert again.particles[column].tolist() == table.particles[column].tolist(), column
    np.testing.assert_allclose(again.origins_angst(), table.origins_angst())
    np.testing.assert_allclose(again.angles(), table.angles())
    np.testing.assert_allclose(again.pixel_sizes(), table.pixel_sizes())


def test_with_alignment_writes_relion_meaning(write, tmp_path):
    table = read_star(write(STAR_30))
    from gumalign.geometry import euler_to_matrix

    mats = euler_to_matrix(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    aligned = table.with_alignment(mats, np.array([[5.0, 0, 0], [0, 5.0, 0]]), gumAlignScore=[0.5, 0.6])
    out = tmp_path / "a.star"
    write_star(aligned, out, box_size=32)
    again = read_star(out)
    np.testing.assert_allclose(again.angles(), [[1, 2, 3], [4, 5, 6]], atol=1e-5)
    np.testing.assert_allclose(again.origins_px()[1], [0, 1.0, 0])
    assert "rlnOriginX" not in again.particles.columns
    assert again.particles["rlnMicrographName"].tolist() == ["00255", "00256"]


def test_missing_column_names_column_and_file(write):
    path = write(STAR_31.replace("_rlnAngleTilt #3", "_rlnSomethingElse #3"))
    table = read_star(path)
    with pytest.raises(GumalignError, match=r"in\.star: missing column _rlnAngleTilt"):
        table.angles()


def test_not_a_star_file(tmp_path):
    path = tmp_path / "x.star"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(GumalignError, match="x.star"):
        read_star(path)
    with pytest.raises(GumalignError, match="no such file"):
        read_star(tmp_path / "missing.star")


def test_relative_image_paths_follow_the_star_file(write, tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("p1.mrc", "p2.mrc"):
        (tmp_path / "sub" / name).write_bytes(b"")
    table = read_star(write(STAR_30))
    out = tmp_path / "deeper" / "out.star"
    write_star(table, out, box_size=32)
    again = read_star(out)
    assert again.particles["rlnImageName"].tolist() == ["../sub/p1.mrc", "../sub/p2.mrc"]
    assert [p.resolve() for p in again.image_paths()] == [p.resolve() for p in table.image_paths()]


def test_paths_of_any_column_follow_the_star_file_and_name_a_missing_column(write):
    table = read_star(write(STAR_4))
    assert table.paths("rlnCtfImage") == table.weight_paths()
    assert table.paths("rlnImageName") == table.image_paths()
    with pytest.raises(GumalignError, match="missing column _gumPairReference"):
        table.paths("gumPairReference")
