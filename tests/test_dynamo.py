"""Dynamo tables (.tbl) wherever a STAR is accepted: Dynamo's ZXZ Euler angles and shifts in RELION's meaning,
pinned against the eulerangles package (its 'dynamo' and 'relion' metadata) and the closed-form formulas."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gumalign.errors import GumalignError
from gumalign.io.dynamo import dynamo_matrices, dynamo_to_relion, relion_to_dynamo
from gumalign.io.star import read_star, write_star


def _table_text(rows):
    lines = []
    for tag, (dx, dy, dz), (tdrot, tilt, narot), tomo, cls, (x, y, z), apix in rows:
        values = [0.0] * 41
        values[0], values[1] = tag, 1
        values[3:6] = dx, dy, dz
        values[6:9] = tdrot, tilt, narot
        values[9] = 0.5
        values[19], values[21] = tomo, cls
        values[23:26] = x, y, z
        values[35] = apix
        lines.append(" ".join(f"{v:g}" for v in values))
    return "\n".join(lines) + "\n"


ROWS = [
    (1, (1.5, -2.0, 0.5), (30.0, 60.0, -45.0), 1, 1, (100.0, 200.0, 50.0), 4.0),
    (2, (0.0, 1.0, -1.0), (-120.0, 100.0, 170.0), 2, 2, (110.0, 210.0, 60.0), 4.0),
    (7, (0.0, 0.0, 0.0), (10.0, 0.0, 20.0), 1, 1, (1.0, 2.0, 3.0), 4.0),  # tilt 0: gimbal lock
]


def test_euler_conversion_matches_eulerangles_and_the_closed_form():
    from eulerangles import convert_eulers

    rng = np.random.default_rng(0)
    dynamo = np.column_stack([rng.uniform(-180, 180, 50), rng.uniform(0, 180, 50), rng.uniform(-180, 180, 50)])
    relion = dynamo_to_relion(dynamo)
    reference = convert_eulers(dynamo, source_meta="dynamo", target_meta="relion")  # independent package
    same = Rotation.from_euler("ZYZ", relion, degrees=True).as_matrix()
    np.testing.assert_allclose(same, Rotation.from_euler("ZYZ", reference, degrees=True).as_matrix(), atol=1e-9)
    # Closed form: rot = narot - 90, tilt = tilt, psi = tdrot + 90 (the same rotation as extrinsic zxz).
    closed = np.column_stack([dynamo[:, 2] - 90, dynamo[:, 1], dynamo[:, 0] + 90])
    np.testing.assert_allclose(same, Rotation.from_euler("ZYZ", closed, degrees=True).as_matrix(), atol=1e-9)
    # RELION's A (reference -> particle) is that matrix transposed; the round trip returns the same matrices.
    np.testing.assert_allclose(dynamo_matrices(dynamo), np.transpose(same, (0, 2, 1)), atol=1e-9)
    np.testing.assert_allclose(dynamo_matrices(relion_to_dynamo(dynamo_matrices(dynamo))), dynamo_matrices(dynamo),
                               atol=1e-9)


def test_read_table_gives_the_same_particle_in_relions_meaning(tmp_path):
    path = tmp_path / "parts.tbl"
    path.write_text(_table_text(ROWS))
    (tmp_path / "parts.doc").write_text("1 tomos/TS_01.mrc\n2 tomos/00255.rec\n")
    table = read_star(path)
    assert table.version == "dynamo" and len(table) == 3
    expected = np.stack([dynamo_matrices(np.array(r[2]))[0] for r in ROWS])
    for row, angles in enumerate(r[2] for r in ROWS):
        # Dynamo's extrinsic zxz, transposed: RELION's A for the same particle.
        np.testing.assert_allclose(table.matrices()[row], Rotation.from_euler("zxz", angles, degrees=True)
                                   .as_matrix().T, atol=1e-9)
    np.testing.assert_allclose(table.matrices(), expected, atol=1e-9)
    # Dynamo's centre is x + dx; RELION's is coordinate - origin: origin = -dx.
    np.testing.assert_allclose(table.origins_px()[0], [-1.5, 2.0, -0.5])
    np.testing.assert_allclose(table.origins_angst()[0], [-6.0, 8.0, -2.0])
    np.testing.assert_allclose(table.pixel_sizes(), 4.0)
    assert table.particles["rlnTomoName"].tolist() == ["TS_01", "00255", "TS_01"]
    assert table.particles["rlnImageName"].tolist()[2] == "particle_000007.mrc"
    assert table.classes().tolist() == [1, 2, 1]


def test_star_and_tbl_round_trips_keep_the_matrices(tmp_path):
    path = tmp_path / "parts.tbl"
    path.write_text(_table_text(ROWS))
    (tmp_path / "parts.doc").write_text("1 TS_01.mrc\n2 TS_02.mrc\n")
    table = read_star(path)
    star = tmp_path / "parts.star"
    write_star(table, star, box_size=32)
    from_star = read_star(star)
    assert from_star.version in ("3.1", "4")  # written as 3.1; its rlnTomoName reads as 4
    np.testing.assert_allclose(from_star.matrices(), table.matrices(), atol=1e-5)
    back = tmp_path / "back.tbl"
    write_star(from_star, back)
    again = read_star(back)
    np.testing.assert_allclose(again.matrices(), table.matrices(), atol=1e-5)
    np.testing.assert_allclose(again.origins_px(), table.origins_px(), atol=1e-5)
    raw = np.loadtxt(back)
    np.testing.assert_allclose(raw[:, 23:26], [r[5] for r in ROWS])  # x, y, z in columns 24-26
    np.testing.assert_allclose(raw[:, 0], [1, 2, 7])  # tags kept
    assert (tmp_path / "back.doc").read_text().split() == ["1", "TS_01.mrc", "2", "TS_02.mrc"]


def test_bad_table_is_one_clear_error(tmp_path):
    path = tmp_path / "bad.tbl"
    path.write_text("1 2 3\n")
    with pytest.raises(GumalignError, match=r"bad\.tbl: a Dynamo table has at least 26 columns"):
        read_star(path)
    rows = _table_text(ROWS[:1]).split()
    rows[6] = "nan"
    path.write_text(" ".join(rows) + "\n")
    with pytest.raises(GumalignError, match="tdrot has a non-numeric or non-finite value"):
        read_star(path)
