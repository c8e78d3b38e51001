"""Point-group symmetry (gumalign.geometry.symmetry) pinned against RELION's symmetry operators.

The facts come from 3dem/relion 5.0.1 (commit 73f0a3c0):
- src/symmetries.cpp, SymList::fill_symmetry_class: the generator lines per group (copied verbatim below in
  RELION_LINES, decimals included; I3's commas are RELION's: its sscanf("%lf") stops at them).
- src/symmetries.cpp, SymList::read_sym_file: for a line "rot_axis n x y z" the stored matrices are
  R = rotation3DMatrix(rot_ang, axis)ᵀ for rot_ang = 360/n, 2·360/n, ... (accumulated by +=), each after
  setSmallValuesToZero (1e-6).
- src/transformations.cpp, rotation3DMatrix(ang, axis) = alignWithZ(axis)ᵀ · rotation3DMatrix(ang, 'Z') ·
  alignWithZ(axis), with 'Z' = [[c, -s, 0], [s, c, 0], [0, 0, 1]] and alignWithZ's explicit matrix (ported below).
- src/symmetries.cpp, SymList::compute_subgroup and found_not_tried: the closure order; products R_i·R_j not the
  identity and not equal (Matrix2D::equal, XMIPP_EQUAL_ACCURACY = 1e-6, src/macros.h) to a listed one are appended.
- src/symmetries.cpp, SymList::writeDefinition: the identity is printed first as R(1), stored matrix i as R(i+2).
- src/euler.cpp, Euler_apply_transf: new Euler matrix = L·A·R; relion_particle_symmetry_expand
  (src/apps/particle_symmetry_expand.cpp) applies it with each stored (L, R), L = I for rotation groups: the mates
  of A are A·R, which is what symmetry_mates returns.
The port below is written from those functions independently of the module, reads RELION's literal decimals and is
compared with point_group matrix by matrix, in order.
"""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from scipy.spatial.transform import Rotation

from gumalign.align.scoring import constrained_correlation
from gumalign.errors import GumalignError
from gumalign.fourier import wedge_mask
from gumalign.geometry import euler_to_matrix, matrix_to_euler, transform_volumes
from gumalign.geometry.errors import closest_mate, rotation_error, rotation_error_sym
from gumalign.geometry.symmetry import (
    RELION_GENERATORS,
    asymmetric_unit_index,
    asymmetric_unit_mate,
    distinct_modulo,
    group_order,
    in_asymmetric_unit,
    operators,
    parse_group,
    point_group,
    relion_frame,
    symmetrise,
    symmetry_mates,
)
from gumalign.fourier.symmetrise import symmetrise_fourier_sums, symmetrise_weights

# SymList::fill_symmetry_class, verbatim.
RELION_LINES = {
    "T": ["rot_axis 3  0. 0. 1.", "rot_axis 2 0. 0.816496 0.577350"],
    "O": ["rot_axis 3  .5773502  .5773502 .5773502", "rot_axis 4 0 0 1"],
    "I2": [
        "rot_axis 2  0 0 1",
        "rot_axis 5  0.525731114  0 0.850650807",
        "rot_axis 3  0 0.356822076 0.934172364",
    ],
    "I1": [
        "rot_axis 2  1  \t   0\t       0",
        "rot_axis 5 0.85065080702670 0 -0.5257311142635",
        "rot_axis 3 0.9341723640 0.3568220765 0",
    ],
    "I3": [
        "rot_axis 2  -0.5257311143 0 0.8506508070",
        "rot_axis 5  0. 0. 1.",
        "rot_axis 3  -0.4911234778630044, 0.3568220764705179, 0.7946544753759428",
    ],
    "I4": [
        "rot_axis 2  0.5257311143 0 0.8506508070",
        "rot_axis 5  0.8944271932547096 0 0.4472135909903704",
        "rot_axis 3  0.4911234778630044 0.3568220764705179 0.7946544753759428",
    ],
}


def relion_lines(name: str) -> list[str]:
    if name[0] == "C":
        return [f"rot_axis {int(name[1:])} 0 0 1"]
    if name[0] == "D":
        n = int(name[1:])
        return ([f"rot_axis {n} 0 0 1"] if n > 1 else []) + ["rot_axis 2 1 0 0"]
    return RELION_LINES[name]


def relion_align_with_z(axis):
    x, y, z = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    proj_mod = np.sqrt(y * y + z * z)
    if proj_mod > 1e-6:
        return np.array(
            [[proj_mod, -x * y / proj_mod, -x * z / proj_mod], [0.0, z / proj_mod, -y / proj_mod], [x, y, z]]
        )
    sign = -1.0 if x > 0 else 1.0
    return np.array([[0.0, 0.0, sign], [0.0, 1.0, 0.0], [-sign, 0.0, 0.0]])


def relion_rotation3d(ang_deg, axis):
    a = relion_align_with_z(axis)
    c, s = np.cos(np.deg2rad(ang_deg)), np.sin(np.deg2rad(ang_deg))
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return a.T @ rz @ a


def relion_symlist(name: str) -> list[np.ndarray]:
    """RELION's stored matrices (no identity) for a group, by its own algorithm on its literal decimals."""
    mats = []
    for line in relion_lines(name):
        tokens = line.split()
        assert tokens[0] == "rot_axis"
        fold = int(tokens[1])
        axis = [float(t.rstrip(",")) for t in tokens[2:5]]
        ang_incr, rot_ang = 360.0 / fold, 360.0 / fold
        for _ in range(1, fold):
            r = relion_rotation3d(rot_ang, axis)
            r[np.abs(r) < 1e-6] = 0.0
            mats.append(r.T)
            rot_ang += ang_incr
    # compute_subgroup: after each product, the first untried pair in found_not_tried's scan order (restarted from
    # (0, 0) every time, as RELION does); `tried` grows with the list, old entries kept (Matrix2D::resize).
    tried = np.zeros((len(mats), len(mats)), dtype=int)
    while True:
        order = found_not_tried_order(tried.shape[0])
        untried = np.flatnonzero(tried[order[:, 0], order[:, 1]] == 0)
        if len(untried) == 0:
            return mats
        i, j = order[untried[0]]
        tried[i, j] = 1
        new = mats[i] @ mats[j]
        if np.all(np.abs(new - np.eye(3)) <= 1e-6):
            continue
        if any(np.all(np.abs(new - m) <= 1e-6) for m in mats):
            continue
        new[np.abs(new) < 1e-6] = 0.0
        mats.append(new)
        tried = np.pad(tried, ((0, 1), (0, 1)))
        assert len(mats) < 200


_SCAN_ORDERS = {}


def found_not_tried_order(size):
    """(size², 2) the (i, j) visited by found_not_tried's loop for a `tried` matrix of this size, in order."""
    if size not in _SCAN_ORDERS:
        visits = []
        i = j = n = 0
        while n != size:
            visits.append((i, j))
            if i != n:
                i += 1
            else:
                j -= 1
                if j == -1:
                    n += 1
                    j = n
                    i = 0
        _SCAN_ORDERS[size] = np.array(visits, dtype=int).reshape(-1, 2)
    return _SCAN_ORDERS[size]


ALL_GROUPS = ["C1", "C2", "C3", "C4", "C7", "C12", "D1", "D2", "D3", "D7", "D12", "T", "O", "I1", "I2", "I3", "I4"]
ORDERS = {"T": 12, "O": 24, "I1": 60, "I2": 60, "I3": 60, "I4": 60}


def expected_order(name):
    if name[0] == "C":
        return int(name[1:])
    if name[0] == "D":
        return 2 * int(name[1:])
    return ORDERS[name]


def set_distance(a, b):
    """Largest distance from an element of a to the nearest element of b (and back)."""
    d = np.abs(a.reshape(-1, 1, 9) - b.reshape(1, -1, 9)).max(-1)
    return max(d.min(1).max(), d.min(0).max())


# --- RELION's operators -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_GROUPS)
def test_point_group_is_relions_list_in_relions_order(name):
    ours = point_group(name)
    relion = np.array([np.eye(3)] + relion_symlist(name))
    assert ours.shape == relion.shape == (expected_order(name), 3, 3)
    # T's axis has 6 decimals in RELION: its matrices differ from exact ones by ~1e-6.
    np.testing.assert_allclose(ours, relion, atol=1e-5 if name == "T" else 1e-7)


def test_relion_facts_written_out():
    # Cn: R(2) = rotation3DMatrix(360/n, z)ᵀ, the right-handed rotation by -360/n about z.
    np.testing.assert_allclose(point_group("C4")[1], [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-15)
    np.testing.assert_allclose(point_group("C4")[2], np.diag([-1.0, -1.0, 1.0]), atol=1e-15)
    # Dn: the 2-fold about x comes right after the n-fold's n-1 matrices.
    np.testing.assert_allclose(point_group("D7")[7], np.diag([1.0, -1.0, -1.0]), atol=1e-15)
    np.testing.assert_allclose(point_group("D1")[1], np.diag([1.0, -1.0, -1.0]), atol=1e-15)
    # The Euler angles writeDefinition prints for C4's R(2): RELION's A for (rot, tilt, psi) = (90, 0, 0)...
    np.testing.assert_allclose(euler_to_matrix([90.0, 0.0, 0.0]), point_group("C4")[1], atol=1e-15)
    # ...and D2's 2-fold about x is (0, 180, 180) up to the gimbal-lock convention: tilt 180.
    assert matrix_to_euler(point_group("D2")[3])[1] == pytest.approx(180.0)
    # RELION_GENERATORS in the module carries RELION's literal decimals: the exact axes it uses round to them.
    for name, lines in RELION_LINES.items():
        literal = [(int(t.split()[1]), tuple(float(v.rstrip(",")) for v in t.split()[2:5])) for t in lines]
        assert [(n, a) for n, a in RELION_GENERATORS[name]] == literal


def axes_of(ops):
    """{order: (m, 3) unit axes (sign fixed)} of the operators other than the identity."""
    out = {}
    for r in ops:
        rv = Rotation.from_matrix(r).as_rotvec()
        angle = np.linalg.norm(rv)
        if angle < 1e-9:
            continue  # the identity (scipy's groups do not list it first)
        order = int(round(2 * np.pi / angle))
        axis = rv / angle
        axis = axis if axis[np.argmax(np.abs(axis))] > 0 else -axis
        out.setdefault(order, []).append(axis)
    for order, axes in out.items():
        unique = []
        for a in axes:
            if not any(np.allclose(a, u, atol=1e-7) for u in unique):
                unique.append(a)
        out[order] = np.array(unique)
    return out


def find_conjugator(ours, theirs):
    """A rotation Q with Q·theirs·Qᵀ = ours as sets, or None."""
    a_ours, a_theirs = axes_of(ours), axes_of(theirs)
    top = max(a_theirs)
    b1 = a_theirs[top][0]
    b2 = next(a for a in a_theirs[2] if abs(abs(a @ b1) - 1) > 1e-6)
    for a1 in np.concatenate([a_ours.get(top, np.zeros((0, 3))), -a_ours.get(top, np.zeros((0, 3)))]):
        for a2 in np.concatenate([a_ours[2], -a_ours[2]]):
            if abs(a1 @ a2 - b1 @ b2) > 1e-9:
                continue
            frame_b = np.stack([b1, np.cross(b1, b2), np.cross(b1, np.cross(b1, b2))], axis=1)
            frame_a = np.stack([a1, np.cross(a1, a2), np.cross(a1, np.cross(a1, a2))], axis=1)
            frame_a /= np.linalg.norm(frame_a, axis=0)
            frame_b /= np.linalg.norm(frame_b, axis=0)
            q = frame_a @ frame_b.T
            if set_distance(ours, q @ theirs @ q.T) < 1e-9:
                return q
    return None


@pytest.mark.parametrize(
    "name, scipy_name", [("T", "T"), ("O", "O"), ("I1", "I"), ("I2", "I"), ("I3", "I"), ("I4", "I")]
)
def test_t_o_i_are_scipys_groups_up_to_their_orientation(name, scipy_name):
    theirs = Rotation.create_group(scipy_name).as_matrix()
    ours = point_group(name)
    assert len(theirs) == len(ours)
    q = find_conjugator(ours, theirs)
    assert q is not None and np.linalg.det(q) == pytest.approx(1.0)
    # The orientation change, as documented in the module: O and I1 are scipy's own (2- or 4-folds on x, y, z);
    # I2 is I1 turned by 90° about y (its 2-fold on z, 5-fold in the xz plane); T has its 3-fold on z.
    if name in ("O", "I1"):
        assert set_distance(ours, theirs) < 1e-12
    if name == "I2":
        turn = Rotation.from_euler("y", 90, degrees=True).as_matrix()
        assert set_distance(ours, turn @ point_group("I1") @ turn.T) < 1e-12
    if name == "T":
        three_folds = axes_of(ours)[3]
        assert any(np.allclose(a, [0, 0, 1]) for a in three_folds)
    if name in ("I3", "I4"):
        assert any(np.allclose(a, [0, 0, 1]) for a in axes_of(ours)[5])


# --- group properties ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_GROUPS)
def test_group_properties(name):
    ops = point_group(name)
    k = len(ops)
    assert k == expected_order(name) == group_order(name)
    assert ops.dtype == np.float64
    np.testing.assert_array_equal(ops[0], np.eye(3))
    np.testing.assert_allclose(np.linalg.det(ops), 1.0, atol=1e-12)
    np.testing.assert_allclose(ops @ np.swapaxes(ops, 1, 2), np.broadcast_to(np.eye(3), ops.shape), atol=1e-12)
    flat = ops.reshape(k, 9)
    pair = np.abs(flat[:, None] - flat[None]).max(-1)
    assert np.all(pair[~np.eye(k, dtype=bool)] > 1e-3), "duplicate operators"
    products = np.einsum("aij,bjk->abik", ops, ops).reshape(-1, 3, 3)
    assert set_distance(products, ops) < 1e-12, "not closed under multiplication"


def test_cn_about_z_and_dn_two_fold_about_x():
    for n in (2, 5, 7):
        ops = point_group(f"C{n}")
        np.testing.assert_allclose(ops @ [0, 0, 1.0], np.broadcast_to([0, 0, 1.0], (n, 3)), atol=1e-12)
        d = point_group(f"D{n}")
        assert set_distance(d[:n], ops) < 1e-12  # Dn starts with Cn
        assert any(np.allclose(r, np.diag([1.0, -1.0, -1.0]), atol=1e-12) for r in d)


def test_names_are_parsed_like_relion():
    assert parse_group("c7") == "C7" and parse_group(" D7 ") == "D7" and parse_group("d07") == "D7"
    assert parse_group("i") == "I2" and parse_group("I") == "I2" and parse_group("i3") == "I3"
    np.testing.assert_array_equal(point_group("i"), point_group("I2"))
    np.testing.assert_array_equal(point_group("c7"), point_group("C7"))
    result = point_group("D7")
    result[0] = 0  # a copy: the cache is not changed by the caller
    np.testing.assert_array_equal(point_group("D7")[0], np.eye(3))


@pytest.mark.parametrize("bad", ["", "C0", "D0", "X", "I5", "Ih", "C-1", "C2h", "D7v", "Oh", "tetra", "C 7"])
def test_bad_names_raise_one_clear_line(bad):
    with pytest.raises(GumalignError) as info:
        point_group(bad)
    message = str(info.value)
    assert "\n" not in message and repr(bad) in message
    for form in ("C1", "Cn", "Dn", "T", "O", "I"):
        assert form in message


def test_operators_accepts_arrays_and_checks_them():
    ops = point_group("D3")
    np.testing.assert_array_equal(operators(ops), ops)
    np.testing.assert_array_equal(operators(np.eye(3)), np.eye(3)[None])
    with pytest.raises(ValueError):
        operators(ops[1:])  # identity not first
    with pytest.raises(ValueError):
        operators(-ops)  # improper
    with pytest.raises(ValueError):
        operators(np.zeros((2, 3)))


# --- mates, errors, asymmetric unit -------------------------------------------------------------------------------


def test_symmetry_mates_are_a_times_s_and_round_trip_through_relion_angles():
    rots = Rotation.random(5, random_state=3).as_matrix()
    ops = point_group("D7")
    mates = symmetry_mates(rots, "D7")
    assert mates.shape == (5, 14, 3, 3)
    np.testing.assert_allclose(mates[:, 0], rots, atol=1e-15)
    np.testing.assert_allclose(mates[2, 9], rots[2] @ ops[9], atol=1e-15)
    assert symmetry_mates(rots[0], "C1").shape == (1, 3, 3)
    # The rlnAngle* of each mate (what relion_particle_symmetry_expand writes) give back the mate.
    angles = matrix_to_euler(mates)
    np.testing.assert_allclose(euler_to_matrix(angles), mates, atol=1e-10)


def test_rotation_error_sym_is_zero_for_every_mate():
    rots = Rotation.random(20, random_state=4).as_matrix()
    for name in ("C4", "D7", "T", "O", "I"):
        mates = symmetry_mates(rots, name)
        k = mates.shape[1]
        errors = rotation_error_sym(rots[:, None], mates, name)
        np.testing.assert_allclose(errors, 0.0, atol=1e-12)
        plain = rotation_error(rots[:, None], mates[:, 1:])
        assert np.all(plain > 0.1)  # the mates really are different rotations
        # Against a random estimate: the symmetric error is the min over mates, never above the plain one.
        other = Rotation.random(20, random_state=5).as_matrix()
        sym = rotation_error_sym(rots, other, name)
        assert np.all(sym <= rotation_error(rots, other) + 1e-12)
        assert np.all(sym <= 2 * np.sqrt(2) + 1e-12)
        np.testing.assert_allclose(rotation_error(rots, closest_mate(rots, other, name)), sym, atol=1e-12)
        assert k == group_order(name)
    # C1 is the plain error.
    other = Rotation.random(20, random_state=6).as_matrix()
    np.testing.assert_allclose(rotation_error_sym(rots, other, "C1"), rotation_error(rots, other))
    np.testing.assert_allclose(rotation_error_sym(rots, other, np.eye(3)[None]), rotation_error(rots, other))


def test_symmetric_error_shrinks_the_chance_level():
    # Haar-random guesses: the mean error against the nearest of K mates falls with K (2.40 for C1, DESIGN.md).
    truth = Rotation.random(2000, random_state=7).as_matrix()
    guess = Rotation.random(2000, random_state=8).as_matrix()
    means = [rotation_error_sym(truth, guess, g).mean() for g in ("C1", "C7", "D7", "O", "I")]
    assert means[0] == pytest.approx(2.40, abs=0.05)
    assert all(a > b for a, b in zip(means, means[1:]))


@pytest.mark.parametrize("name", ["C7", "D7", "T", "O", "I"])
def test_asymmetric_unit_mate_is_one_per_orbit(name):
    rots = Rotation.random(300, random_state=9).as_matrix()
    ops = point_group(name)
    canon = asymmetric_unit_mate(rots, name)
    # Same answer from every mate of the same orientation (deterministic, independent of which mate came in).
    for k in (1, len(ops) // 2, len(ops) - 1):
        np.testing.assert_allclose(asymmetric_unit_mate(rots @ ops[k], name), canon, atol=1e-12)
    # It is a mate, it is in the unit, and it has the smallest angle (largest trace) of all mates.
    assert np.all(rotation_error_sym(rots, canon, name) < 1e-12)
    assert np.all(in_asymmetric_unit(canon, name))
    traces = np.trace(symmetry_mates(rots, name), axis1=-2, axis2=-1)
    np.testing.assert_allclose(np.trace(canon, axis1=-2, axis2=-1), traces.max(-1), atol=1e-12)
    index = asymmetric_unit_index(rots, name)
    np.testing.assert_allclose(rots @ ops[index], canon, atol=1e-15)
    # Haar-random rotations: about 1/K of them are already in the unit.
    share = in_asymmetric_unit(rots, name).mean()
    assert share == pytest.approx(1 / len(ops), abs=3 * np.sqrt(1 / len(ops) / 300) + 0.01)


def test_ties_of_exact_group_elements_do_not_depend_on_the_representative():
    # Exact rotations of a larger group tie often on the trace; every mate must still get the same answer.
    starts = Rotation.create_group("I").as_matrix()
    for name in ("D2", "T", "O", "I2"):
        ops = point_group(name)
        canon = asymmetric_unit_mate(starts, name)
        for k in range(len(ops)):
            np.testing.assert_allclose(asymmetric_unit_mate(starts @ ops[k], name), canon, atol=1e-9)


def test_distinct_modulo_counts_start_classes():
    starts = Rotation.create_group("I").as_matrix()  # = RELION's I1 (Gum-Net's 60 starts)
    # 60 / |G ∩ I1|: I1 ∩ I2 and I1 ∩ O are tetrahedral (12), D7 ∩ I1 is the 2-fold about x, C5 about z is not in I1.
    expected = {"C1": 60, "C2": 60 // 2, "C5": 60, "D2": 15, "D7": 30, "O": 5, "I1": 1, "I2": 5, "I3": 30}
    for name, count in expected.items():
        keep = distinct_modulo(starts, name)
        assert len(keep) == count, name
        assert np.all(np.diff(keep) > 0) and keep[0] == 0
        # Every start is a mate of a kept one.
        errors = rotation_error_sym(starts[:, None], starts[keep][None], name).min(axis=1)
        assert errors.max() < 1e-9


def test_asymmetric_unit_with_a_prior_and_c1():
    rots = Rotation.random(50, random_state=10).as_matrix()
    np.testing.assert_array_equal(asymmetric_unit_mate(rots, "C1"), rots)
    prior = Rotation.random(50, random_state=11).as_matrix()
    chosen = asymmetric_unit_mate(rots, "O", prior=prior)
    np.testing.assert_allclose(rotation_error(prior, chosen), rotation_error_sym(prior, rots, "O"), atol=1e-12)
    # An exact tie (the identity and the C2 turn, with a prior halfway between): one answer from either mate.
    ops = point_group("C2")
    halfway = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    first = asymmetric_unit_mate(np.eye(3), ops, prior=halfway)
    np.testing.assert_array_equal(asymmetric_unit_mate(ops[1], ops, prior=halfway), first)
    assert asymmetric_unit_index(np.eye(3), ops, prior=halfway) in (0, 1)


# --- symmetrised maps ---------------------------------------------------------------------------------------------

N = 32


def smooth_asymmetric(seed=0, sigma=2.0, radius=12.0):
    gen = np.random.default_rng(seed)
    vol = gaussian_filter(gen.standard_normal((N, N, N)), sigma)
    z, y, x = np.indices((N, N, N)) - N // 2
    vol *= np.exp(-np.clip(np.sqrt(x**2 + y**2 + z**2) - radius + 3, 0, None) ** 2 / 4)
    vol *= (x**2 + y**2 + z**2) <= radius**2
    return vol.astype(np.float32)


def inner_sphere(radius=12.0):
    z, y, x = np.indices((N, N, N)) - N // 2
    return torch.from_numpy((x**2 + y**2 + z**2) <= radius**2)


def relative_error(a, b, mask):
    return float((a - b)[..., mask].norm() / b[..., mask].norm())


def test_c1_symmetrise_is_the_identity():
    vol = torch.from_numpy(smooth_asymmetric(1))
    torch.testing.assert_close(symmetrise(vol, "C1"), vol, rtol=0, atol=0)
    np.testing.assert_array_equal(symmetrise(vol.numpy(), "c1").numpy(), vol.numpy())


@pytest.mark.parametrize("name", ["C4", "D7", "O"])
def test_symmetrised_map_equals_its_own_symmetry_images(name):
    vol = torch.from_numpy(smooth_asymmetric(2))
    sym = symmetrise(vol, name)
    assert sym.shape == vol.shape and sym.dtype == torch.float32
    mask = inner_sphere()
    ops = point_group(name)
    images = transform_volumes(sym[None].expand(len(ops), -1, -1, -1), ops)
    errors = [relative_error(images[k], sym, mask) for k in range(len(ops))]
    if name in ("C4", "O"):
        # Their operators permute the voxel grid: the images are exact.
        assert max(errors) < 1e-5
    else:
        # D7's 7-fold does not: the images differ by trilinear interpolation only, less than half of what one
        # generic rotation there and back costs (measured: 3.6% against 9%).
        turns = Rotation.random(4, random_state=1).as_matrix()
        there = transform_volumes(sym[None].expand(4, -1, -1, -1), turns)
        back = transform_volumes(there, np.swapaxes(turns, 1, 2))
        round_trip = min(relative_error(back[k], sym, mask) for k in range(4))
        assert max(errors) < 0.5 * round_trip, (errors, round_trip)
    # The unsymmetrised map is far from its images (so the check means something).
    raw_images = transform_volumes(vol[None].expand(len(ops) - 1, -1, -1, -1), ops[1:])
    assert min(relative_error(raw_images[k], vol, mask) for k in range(len(ops) - 1)) > 0.5


def test_symmetrise_is_batched_and_sums_weights():
    vols = torch.from_numpy(np.stack([smooth_asymmetric(s) for s in (3, 4)]))
    both = symmetrise(vols, "D3", batch=2)
    assert both.shape == vols.shape
    for b in range(2):
        torch.testing.assert_close(both[b], symmetrise(vols[b], "D3"), rtol=0, atol=1e-6)
    torch.testing.assert_close(symmetrise(vols, "D3", reduce="sum"), both * 6, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        symmetrise(vols, "C2", reduce="max")


def test_symmetrised_weights():
    from gumalign.fourier.layout import rotate_centred

    # A missing-wedge weight summed over D7 is symmetric about D7 (about the zero frequency), and counts mates.
    wedge = torch.from_numpy(wedge_mask((N,) * 3, (-60, 60), "centred").astype(np.float32))
    summed = symmetrise_weights(wedge, "D7")
    assert summed.shape == wedge.shape and float(summed.max()) <= 14 + 1e-4
    ops = point_group("D7")
    inside = inner_sphere(N // 2 - 1)
    for k in (1, 3, 8):
        image = rotate_centred(summed[None], torch.as_tensor(ops[k:k + 1], dtype=torch.float32))[0]
        assert relative_error(image, summed, inside) < 0.04  # a 0/1 wedge: sharp edges, trilinear (measured 2.2%)
    # The wedge is partly filled: 67% of the frequencies inside the sphere are observed in one particle, 87% by
    # some mate (D7 cannot fill the cone about kz: every operator maps the z axis onto itself).
    assert float((wedge[inside] > 0.5).float().mean()) < 0.7
    assert float((summed[inside] > 0.5).float().mean()) > 0.85
    # A cube of ones stays ones (the layout's edge rule), corners included; "mean" is sum / K.
    ones = torch.ones((N, N, N))
    torch.testing.assert_close(symmetrise_weights(ones, "O", reduce="mean"), ones, rtol=0, atol=1e-5)
    torch.testing.assert_close(symmetrise_weights(wedge, "C4", reduce="mean") * 4, symmetrise_weights(wedge, "C4"))
    # C4 permutes the centred grid: the sum is a plain sum of index permutations out(k) = w(Sᵀk) about N // 2.
    w = wedge.numpy()
    zyx = np.indices((N, N, N)).reshape(3, -1) - N // 2
    xyz = zyx[::-1]
    by_hand = np.zeros_like(w)
    for op in point_group("C4"):
        sx, sy, sz = np.clip(np.rint(op.T @ xyz).astype(int) + N // 2, 0, N - 1)
        by_hand += w[sz, sy, sx].reshape(N, N, N)
    inner = inner_sphere(N // 2 - 1).numpy()
    np.testing.assert_allclose(symmetrise_weights(wedge, "C4").numpy()[inner], by_hand[inner], atol=1e-5)


def test_symmetrised_fourier_sums_give_a_symmetric_wedge_filled_map():
    from gumalign.fourier.layout import centred_to_rfft

    # Two particles of a D7 reference, each with a missing wedge, in the reference frame: the sums as the
    # compensated average accumulates them.
    reference = symmetrise(torch.from_numpy(smooth_asymmetric(6)), "D7").double()
    wedge = torch.from_numpy(wedge_mask((N,) * 3, (-60, 60), "centred").astype(np.float64))
    turn = torch.as_tensor(Rotation.random(random_state=14).as_matrix())
    weights = torch.stack([wedge, transform_volumes(wedge, turn)[0].clamp(0, 1)])  # two orientations' wedges
    w_rfft = centred_to_rfft(weights)
    numerator = (torch.fft.rfftn(reference, dim=(-3, -2, -1))[None] * w_rfft).sum(0)
    denominator = w_rfft.sum(0)
    num, den = symmetrise_fourier_sums(numerator, denominator, "D7")
    assert num.shape == numerator.shape and num.dtype == numerator.dtype and den.dtype == denominator.dtype
    unsym = torch.fft.irfftn(numerator / denominator.clamp_min(1e-3), s=(N,) * 3, dim=(-3, -2, -1))
    sym = torch.fft.irfftn(num / den.clamp_min(1e-3), s=(N,) * 3, dim=(-3, -2, -1))
    mask = inner_sphere()
    # The symmetrised reconstruction is closer to the truth (the mates fill the wedges) ...
    assert relative_error(sym, reference, mask) < 0.6 * relative_error(unsym, reference, mask)  # measured 0.20, 0.40
    # ... and equals its own images.
    ops = point_group("D7")
    images = transform_volumes(sym[None].expand(len(ops), -1, -1, -1), ops)
    assert max(relative_error(images[k], sym, mask) for k in range(len(ops))) < 0.06
    # C1 returns the sums unchanged; the sums are linear (halves can be symmetrised apart and added).
    same = symmetrise_fourier_sums(numerator, denominator, "C1")
    assert same[0] is numerator and same[1] is denominator
    half_a = symmetrise_fourier_sums(numerator * 0.25, denominator * 0.25, "D7")
    half_b = symmetrise_fourier_sums(numerator * 0.75, denominator * 0.75, "D7")
    torch.testing.assert_close(half_a[0] + half_b[0], num)
    torch.testing.assert_close(half_a[1] + half_b[1], den)


# --- the check: a D7 particle rotated by a symmetry mate scores as the truth -------------------------------


def test_d7_particle_at_a_symmetry_mate_scores_as_the_truth():
    # Less smoothing than above, so that rotations that are not mates score visibly lower.
    reference = symmetrise(torch.from_numpy(smooth_asymmetric(5, sigma=1.2)), "D7")[None]
    ops = point_group("D7")
    truth = Rotation.random(1, random_state=12).as_matrix()[0]
    mates = truth @ ops  # (14, 3, 3): A·S_k
    wedge = torch.from_numpy(wedge_mask((N,) * 3, (-60, 60), "centred").astype(np.float32))[None]
    full = torch.ones_like(wedge)

    # A particle made at each mate is the particle made at the truth (up to interpolation).
    particles = transform_volumes(reference.expand(len(ops), -1, -1, -1), mates)
    mask = inner_sphere()
    for k in range(len(ops)):
        assert relative_error(particles[k], particles[0], mask) < 0.06  # measured 4.6% (trilinear)

    # The wedge-constrained correlation of the reference with the particle is the same at A and at every A·S_k...
    particle = particles[:1].expand(len(ops), -1, -1, -1)
    scores = constrained_correlation(reference, full, particle, wedge, mates, np.zeros((len(ops), 3)))
    assert float(scores[0]) > 0.999
    np.testing.assert_allclose(scores.numpy(), float(scores[0]), atol=0.005)  # measured: 0.9989 to 1.0000
    # ...while rotations that are not mates score clearly lower: halfway between two 7-fold mates (25.7° about the
    # 7-fold axis; measured 0.89), 20° about another axis (0.83), a random rotation (0.62).
    off = np.stack(
        [
            truth @ Rotation.from_euler("z", 360 / 14, degrees=True).as_matrix(),
            Rotation.from_rotvec([0.0, 0.35, 0.0]).as_matrix() @ truth,
            Rotation.random(1, random_state=3).as_matrix()[0],
        ]
    )
    particle3 = particles[:1].expand(3, -1, -1, -1)
    off_scores = constrained_correlation(reference, full, particle3, wedge, off, np.zeros((3, 3)))
    assert float(off_scores.max()) < float(scores.min()) - 0.05
    assert np.all(rotation_error_sym(truth, off, "D7") > 0.3)

    # Every mate scores 0 with the symmetric error, while the plain error is large.
    np.testing.assert_allclose(rotation_error_sym(truth, mates, "D7"), 0.0, atol=1e-12)
    plain = rotation_error(truth, mates[1:])
    assert plain.min() > 0.7  # D7's closest mates are 360/7 ≈ 51° away: 2√2·sin(25.7°) = 1.23
    # And all mates have one answer in the asymmetric unit.
    canon = asymmetric_unit_mate(truth, "D7")
    np.testing.assert_allclose(asymmetric_unit_mate(mates, "D7"), np.broadcast_to(canon, mates.shape), atol=1e-12)


# --- templates with their own axes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["C1", "C2", "C7", "D1", "D2", "D7", "T", "O", "I1", "I2", "I3", "I4"])
def test_relion_frame_undoes_any_turn_of_the_operators(name):
    ops = point_group(name)
    turn = Rotation.random(random_state=13).as_matrix()
    turned = turn.T @ ops @ turn  # a map turned by turnᵀ has these operators
    turned[0] = np.eye(3)
    q = relion_frame(turned, name)
    np.testing.assert_allclose(q @ q.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(q) == pytest.approx(1.0)
    assert set_distance(q @ turned @ q.T, ops) < 1e-9
    np.testing.assert_array_equal(relion_frame(ops, name), np.eye(3))  # already there: the identity


def test_relion_frame_of_scipys_groups_and_refusals():
    for name, scipy_name in (("T", "T"), ("I", "I")):
        theirs = Rotation.create_group(scipy_name).as_matrix()
        theirs = np.concatenate([np.eye(3)[None], [m for m in theirs if not np.allclose(m, np.eye(3))]])
        q = relion_frame(theirs, name)
        assert set_distance(q @ theirs @ q.T, point_group(name)) < 1e-9
    with pytest.raises(GumalignError):
        relion_frame(point_group("D7"), "C14")  # same order, different group
    with pytest.raises(GumalignError):
        relion_frame(point_group("D6"), "D7")


def test_a_proteasome_turned_out_of_relions_frame_is_brought_back_by_relion_frame():
    """The built-in proteasome (D7) ships in RELION's frame; turned off it (its 7-fold then off z, as the deposited
    3J9I has it), the axes found by gumalign.train.symmetry give the rotation Q back to a frame where point_group('D7')
    holds."""
    from scipy.spatial.transform import Rotation

    from gumalign.train.data import load_templates
    from gumalign.train.symmetry import self_correlations, symmetry_operators

    shipped = next(iter(load_templates(["builtin:proteasome"], 32, 12.0).values()))
    off = Rotation.from_euler("ZYZ", [30, 50, -70], degrees=True).as_matrix()
    density = transform_volumes(torch.from_numpy(shipped), off)[0].numpy()
    found = symmetry_operators(density, "D7")
    assert self_correlations(density, point_group("D7")).min() < 0.8  # RELION's axes are not this map's
    q = relion_frame(found, "D7")
    turned = transform_volumes(torch.from_numpy(density), q)[0].numpy()
    assert self_correlations(turned, point_group("D7")).min() > 0.95
