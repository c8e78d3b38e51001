"""Point-group symmetry in RELION's conventions: operators, symmetry mates, the asymmetric unit, symmetrised maps.

Operators (RELION src/symmetries.cpp, 3dem/relion 5.0.1)
--------------------------------------------------------
``SymList::fill_symmetry_class`` turns a group name into generator lines ``rot_axis n x y z`` (table
:data:`RELION_GENERATORS`): Cn one n-fold about z; Dn an n-fold about z (n > 1) and a 2-fold about x; T a 3-fold
about z and a 2-fold about (0, 0.816496, 0.577350); O a 3-fold about (1, 1, 1)/√3 and a 4-fold about z; I (= I2) a
2-fold about z, a 5-fold about (0.525731114, 0, 0.850650807) and a 3-fold about (0, 0.356822076, 0.934172364);
I1, I3, I4 the other orientations (I5 is not implemented in RELION and is refused here too).
``SymList::read_sym_file`` stores, for each ``rot_axis n a``, the matrices
``R_j = rotation3DMatrix(j·360/n, a)ᵀ`` for j = 1..n-1, where ``rotation3DMatrix(θ, a) = alignWithZ(a)ᵀ·Rz(θ)·
alignWithZ(a)`` (src/transformations.cpp) is the right-handed rotation by θ about a; so R_j is the right-handed
rotation by -j·360/n about a. ``SymList::compute_subgroup`` then closes the list under products R_i·R_j, scanning
pairs in ``found_not_tried`` order and appending each product not yet in the list (tolerance 1e-6). The identity is
not stored; ``SymList::writeDefinition`` (``relion_refine --print_symmetry_ops``) prints it first as R(1) and the
stored ones as R(2), R(3), ...; HealpixSampling::initialise keeps ``R_repository = [I, R(2), ...]`` likewise.

:func:`point_group` returns exactly that list, identity first, in RELION's order, built with the same algorithm
from exact axes (RELION's decimals are these axes rounded; tests/test_symmetry.py replays RELION's algorithm on its
literal decimals and compares matrix by matrix).

How an operator maps onto gumalign's A (particle = A·reference)
---------------------------------------------------------------
RELION's matrix A (rlnAngleRot/Tilt/Psi, Euler_angles2matrix) rotates the reference into the particle:
``particle(x) = reference(Aᵀ·x)`` (gumalign.geometry.transform). A reference with point group G satisfies
``V(Sᵀ·x) = V(x)`` for every S in G, so ``reference(Aᵀ·x) = reference(Sᵀ·Aᵀ·x) = reference((A·S)ᵀ·x)``: A and A·S
make the same particle. RELION's ``relion_particle_symmetry_expand`` writes for each stored R the angles of
``Euler_apply_transf(L = I, R, rot, tilt, psi)`` = ``Euler_matrix2angles(L·A·R)`` = the angles of A·R
(src/euler.cpp; L is the identity for every rotation group). So RELION's R(k+1) is our ``point_group(name)[k]``,
and ``matrix_to_euler(symmetry_mates(A, name)[..., k, :, :])`` are the rlnAngleRot/Tilt/Psi RELION's symmetry
expansion writes for mate k (k = 0 the particle itself).

The asymmetric unit
-------------------
:func:`asymmetric_unit_mate` picks, for each A, the mate A·S_k closest to a prior P (the identity by default) in
the Frobenius norm, i.e. the largest trace(Pᵀ·A·S_k); ties (within 1e-9) are broken by a fixed generic linear
function of the matrix A·S_k (so every mate of A gets the same answer), then by the lowest k. For P = I this is the
mate with the smallest rotation angle, and the set of rotations it returns unchanged,
``{A : trace(A) >= trace(A·S) for all S in G}`` (the Dirichlet cell of the identity), is an asymmetric unit of
SO(3) under A -> A·S: every orientation has exactly one mate in it (up to its boundary).
:func:`in_asymmetric_unit` tests membership (boundary included), to cut a search grid down by a factor |G|.
This is gumalign's choice, not RELION's (RELION restricts projection directions on the sphere and keeps psi);
both are valid asymmetric units, so only angles modulo the group should be compared between the two programs.

Orientation against scipy (tests): scipy's Rotation.create_group('O') and ('I') are RELION's O and I1 exactly
(2- or 4-folds on x, y, z); RELION's default I (= I2) is I1 turned by 90° about y; RELION's T has a 3-fold on z,
scipy's its 2-folds on x, y, z. A map whose symmetry axes lie elsewhere (a template whose axes were found, e.g. the
built-in proteasome) is brought into RELION's orientation by :func:`relion_frame`.

Maps: :func:`symmetrise` (real space, the mean of the rotated copies), :func:`symmetrise_weights` (centred Fourier
weights) and :func:`symmetrise_fourier_sums` (the two sums of a wedge-compensated average, before the division).
"""

from __future__ import annotations

import re

import numpy as np

from gumalign.errors import GumalignError
from gumalign.geometry.axes import rotation_about_axis

VALID_FORMS = "C1, Cn (n >= 1), Dn (n >= 1), T, O, I (= I2) or I1..I4 (case-insensitive, e.g. 'C7', 'd7', 'I')"

# The golden ratio: icosahedral axes are (0, ±1, ±φ) and its cyclic permutations, normalised.
_PHI = (1.0 + np.sqrt(5.0)) / 2.0

# SymList::fill_symmetry_class (src/symmetries.cpp): the generator lines RELION writes, verbatim (n, (x, y, z)).
# Dn adds the n-fold about z only for n > 1; Cn and Dn are built in _exact_generators.
RELION_GENERATORS: dict[str, list[tuple[int, tuple[float, float, float]]]] = {
    "T": [(3, (0.0, 0.0, 1.0)), (2, (0.0, 0.816496, 0.577350))],
    "O": [(3, (0.5773502, 0.5773502, 0.5773502)), (4, (0.0, 0.0, 1.0))],
    "I1": [
        (2, (1.0, 0.0, 0.0)),
        (5, (0.85065080702670, 0.0, -0.5257311142635)),
        (3, (0.9341723640, 0.3568220765, 0.0)),
    ],
    "I2": [(2, (0.0, 0.0, 1.0)), (5, (0.525731114, 0.0, 0.850650807)), (3, (0.0, 0.356822076, 0.934172364))],
    "I3": [
        (2, (-0.5257311143, 0.0, 0.8506508070)),
        (5, (0.0, 0.0, 1.0)),
        (3, (-0.4911234778630044, 0.3568220764705179, 0.7946544753759428)),
    ],
    "I4": [
        (2, (0.5257311143, 0.0, 0.8506508070)),
        (5, (0.8944271932547096, 0.0, 0.4472135909903704)),
        (3, (0.4911234778630044, 0.3568220764705179, 0.7946544753759428)),
    ],
}

_RELION_EQUAL_ACCURACY = 1e-6  # XMIPP_EQUAL_ACCURACY in double precision (src/macros.h)


def _exact_generators(canonical: str) -> list[tuple[int, np.ndarray]]:
    """The generator axes of RELION's table with their exact values (unit vectors)."""
    kind, order = canonical[0], canonical[1:]
    z, x = np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0])
    if kind == "C":
        return [(int(order), z)]
    if kind == "D":
        n = int(order)
        return ([(n, z)] if n > 1 else []) + [(2, x)]
    if canonical == "T":
        return [(3, z), (2, np.array([0.0, np.sqrt(2.0 / 3.0), np.sqrt(1.0 / 3.0)]))]
    if canonical == "O":
        return [(3, np.ones(3) / np.sqrt(3.0)), (4, z)]
    five_norm = np.sqrt(1.0 + _PHI**2)
    i2 = [
        (2, z),
        (5, np.array([1.0, 0.0, _PHI]) / five_norm),
        (3, np.array([0.0, 1.0 / _PHI, _PHI]) / np.sqrt(3.0)),
    ]
    if canonical == "I2":
        return i2
    if canonical == "I1":
        return [
            (2, x),
            (5, np.array([_PHI, 0.0, -1.0]) / five_norm),
            (3, np.array([_PHI, 1.0 / _PHI, 0.0]) / np.sqrt(3.0)),
        ]
    # I3 and I4 are I2 turned about y by ∓atan(1/φ) (the angle between I2's 2-fold on z and its 5-fold in xz):
    # I3 brings the 5-fold (1, 0, φ) onto z, I4 brings (-1, 0, φ) onto z.
    angle = np.arctan2(1.0, _PHI)
    turn = rotation_about_axis("y", -angle if canonical == "I3" else angle)
    return [(n, turn @ a) for n, a in i2]


def parse_group(name: str) -> str:
    """Canonical group name: 'C<n>', 'D<n>', 'T', 'O' or 'I1'..'I4' ('I' -> 'I2', RELION's default).

    Raises:
        GumalignError: anything else, with one line listing the valid forms.
    """
    text = str(name).strip().upper()
    match = re.fullmatch(r"([CD])(\d+)", text)
    if match and int(match.group(2)) >= 1:
        return f"{match.group(1)}{int(match.group(2))}"
    if text in ("T", "O"):
        return text
    if text == "I":
        return "I2"
    if text in ("I1", "I2", "I3", "I4"):
        return text
    raise GumalignError(f"unknown symmetry {name!r}: use {VALID_FORMS}")


def rotation_about(axis: np.ndarray, angle_rad) -> np.ndarray:
    """Right-handed rotation(s) by ``angle_rad`` about ``axis`` (Rodrigues); an array of angles gives (..., 3, 3).

    Equals RELION's ``rotation3DMatrix(angle, axis)`` (src/transformations.cpp) for the angle in degrees.
    """
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    angle = np.asarray(angle_rad, dtype=np.float64)[..., None, None]
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def relion_closure(generators: list[np.ndarray], accuracy: float = _RELION_EQUAL_ACCURACY) -> list[np.ndarray]:
    """RELION's SymList::compute_subgroup: close a list of 3×3 matrices under products, in RELION's order.

    Pairs (i, j) are tried in found_not_tried's order (for n = 0, 1, ...: (0, n), (1, n), ..., (n, n), then
    (n, n-1), ..., (n, 0)); R_i·R_j is appended when it is not the identity and not within ``accuracy``
    (entrywise) of a listed matrix. The identity itself is not in the list. RELION restarts the scan from (0, 0)
    after every product; since every pair before the one returned has been tried and a new matrix only adds pairs
    with n = its index (after all existing ones in that order), one pass over the growing list visits the same
    pairs in the same order.
    """
    mats = [np.array(g, dtype=np.float64) for g in generators]
    eye = np.eye(3)

    def consider(i: int, j: int) -> None:
        product = mats[i] @ mats[j]
        if np.all(np.abs(product - eye) <= accuracy):
            return
        stack = np.array(mats)
        if np.any(np.all(np.abs(stack - product) <= accuracy, axis=(1, 2))):
            return
        product[np.abs(product) < accuracy] = 0.0  # setSmallValuesToZero
        mats.append(product)
        if len(mats) > 1000:  # no finite point group in this module is that large
            raise RuntimeError("symmetry closure does not terminate: the generators do not form a point group")

    n = 0
    while n < len(mats):
        for i in range(n + 1):
            consider(i, n)
        for j in range(n - 1, -1, -1):
            consider(n, j)
        n += 1
    return mats


def _generator_matrices(generators) -> list[np.ndarray]:
    """read_sym_file: for each rot_axis (n, a), R_j = rotation3DMatrix(j·360/n, a)ᵀ (j = 1..n-1), small values 0."""
    out = []
    for fold, axis in generators:
        for j in range(1, fold):
            r = rotation_about(axis, 2.0 * np.pi * j / fold).T
            r[np.abs(r) < _RELION_EQUAL_ACCURACY] = 0.0
            out.append(r)
    return out


_CACHE: dict[str, np.ndarray] = {}


def point_group(name: str) -> np.ndarray:
    """RELION's rotation operators of a point group, identity first, in RELION's order.

    Args:
        name: 'C1', 'Cn', 'Dn', 'T', 'O', 'I' (= 'I2', RELION's default orientation) or 'I1'..'I4';
            case-insensitive.

    Returns:
        (K, 3, 3) float64 rotation matrices acting on (x, y, z) column vectors, K = 1, n, 2n, 12, 24 or 60;
        element k equals RELION's R(k+1) of ``relion_refine --print_symmetry_ops`` (to ~1e-6, RELION's rounding of
        its axes). A reference with this symmetry makes the same particle at A and A·S_k.

    Raises:
        GumalignError: an unknown name.
    """
    canonical = parse_group(name)
    if canonical not in _CACHE:
        mats = relion_closure(_generator_matrices(_exact_generators(canonical)))
        ops = np.concatenate([np.eye(3)[None], np.array(mats).reshape(-1, 3, 3)])
        # Clean the products' rounding: re-orthonormalise each operator (polar factor) so R·Rᵀ = I to 1e-15.
        u, _, vt = np.linalg.svd(ops)
        ops = u @ vt
        ops[np.abs(ops) < 1e-15] = 0.0
        ops.setflags(write=False)
        _CACHE[canonical] = ops
    return _CACHE[canonical].copy()


def group_order(name: str) -> int:
    """Number of operators K of a group (1, n, 2n, 12, 24, 60)."""
    canonical = parse_group(name)
    if canonical[0] == "C":
        return int(canonical[1:])
    if canonical[0] == "D":
        return 2 * int(canonical[1:])
    return {"T": 12, "O": 24}.get(canonical, 60)


def operators(group_or_ops) -> np.ndarray:
    """(K, 3, 3) float64 operators from a group name or an array of operators (validated: rotations, identity first).

    Raises:
        GumalignError: an unknown name.
        ValueError: an array that is not (K, 3, 3) rotations with the identity first.
    """
    if isinstance(group_or_ops, str):
        return point_group(group_or_ops)
    ops = np.asarray(group_or_ops, dtype=np.float64)
    if ops.ndim == 2:
        ops = ops[None]
    if ops.ndim != 3 or ops.shape[1:] != (3, 3) or len(ops) == 0:
        raise ValueError(f"symmetry operators must be (K, 3, 3), got shape {ops.shape}")
    if not np.allclose(ops[0], np.eye(3), atol=1e-6):
        raise ValueError("the first symmetry operator must be the identity")
    if not np.allclose(ops @ np.swapaxes(ops, -1, -2), np.eye(3), atol=1e-5) or np.any(np.linalg.det(ops) < 0):
        raise ValueError("symmetry operators must be proper rotations")
    return ops


def symmetry_mates(rotations: np.ndarray, group) -> np.ndarray:
    """The equivalent orientations A·S_k of each rotation (k = 0 is A itself).

    Args:
        rotations: (..., 3, 3) RELION matrices A.
        group: a group name (see :func:`point_group`) or (K, 3, 3) operators.

    Returns:
        (..., K, 3, 3) float64; ``matrix_to_euler`` of mate k gives the angles RELION's symmetry expansion writes.
    """
    a = np.asarray(rotations, dtype=np.float64)
    if a.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrices must end in (3, 3), got shape {a.shape}")
    ops = operators(group)
    return np.einsum("...ij,kjl->...kil", a, ops)


# A fixed generic matrix for the tie-break (entries with no rational relations, so that no two distinct rotations
# tie on it except on a set of measure zero; exact group elements, whose traces tie often, do not).
_TIE_BREAK = np.sqrt(np.array([[2.0, 3.0, 5.0], [7.0, 11.0, 13.0], [17.0, 19.0, 23.0]])) % 1.0 - 0.5


def _best_mate_index(rotations: np.ndarray, ops: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
    """(...) index k of the mate M_k = A·S_k with the largest trace(Pᵀ·M_k).

    Ties within 1e-9 (common for exact rotations of a larger group, e.g. start sets) are broken by the largest
    Σ _TIE_BREAK∘M_k, a function of the matrix M_k alone, so every mate A·S_j of A gets the same answer; then by
    the lowest k.
    """
    a = np.asarray(rotations, dtype=np.float64)
    p = np.eye(3) if prior is None else np.asarray(prior, dtype=np.float64)
    mates = np.einsum("...ij,kjl->...kil", a, ops)
    scores = np.einsum("...ij,...kij->...k", p, mates)  # trace(Pᵀ M_k)
    tied = scores >= scores.max(axis=-1, keepdims=True) - 1e-9
    second = np.where(tied, np.einsum("ij,...kij->...k", _TIE_BREAK, mates), -np.inf)
    return np.argmax(second >= second.max(axis=-1, keepdims=True) - 1e-9, axis=-1)


def asymmetric_unit_mate(rotations: np.ndarray, group, prior: np.ndarray | None = None) -> np.ndarray:
    """The one mate of each A that lies in gumalign's asymmetric unit: the A·S_k closest to ``prior``.

    Deterministic: the mate maximising trace(Pᵀ·A·S_k) (= the smallest ||A·S_k - P||_F); ties by a fixed function
    of the mate's matrix, so all mates of one orientation give the same answer.
    With ``prior=None`` (P = I) it is the mate with the smallest rotation angle from the identity.

    Args:
        rotations: (..., 3, 3) matrices A.
        group: a group name or (K, 3, 3) operators.
        prior: optional (..., 3, 3) rotations (broadcast against ``rotations``), e.g. a previous answer, to keep
            answers continuous with; None for the identity.

    Returns:
        (..., 3, 3) float64 (exactly A for C1).
    """
    a = np.asarray(rotations, dtype=np.float64)
    ops = operators(group)
    index = _best_mate_index(a, ops, prior)
    return a @ ops[index]


def asymmetric_unit_index(rotations: np.ndarray, group, prior: np.ndarray | None = None) -> np.ndarray:
    """(...) int index k of the operator that :func:`asymmetric_unit_mate` applies (A·S_k)."""
    return _best_mate_index(np.asarray(rotations, dtype=np.float64), operators(group), prior)


def distinct_modulo(rotations: np.ndarray, group, atol: float = 1e-6) -> np.ndarray:
    """Indices of the first rotation of each class of ``rotations`` under A ~ A·S (S in the group), in input order.

    For a start set or a small candidate list: a reference with the group's symmetry pre-rotated by A and by A·S is
    the same map, so only one start per class is needed (the 60 icosahedral starts, scipy's 'I' = RELION's I1, are
    one class under I1, 5 under RELION's default I2 and under O, which share a tetrahedral subgroup with them, 30
    under D7, which shares the 2-fold about x). A and B are in one class
    when some ||A·S_k - B||_F < atol. O(M²·K); for a grid over SO(3) use :func:`in_asymmetric_unit` instead.

    Args:
        rotations: (M, 3, 3).
        group: a group name or (K, 3, 3) operators.

    Returns:
        (m,) int indices into ``rotations``, increasing.
    """
    a = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    mates = symmetry_mates(a, group)  # (M, K, 3, 3)
    keep: list[int] = []
    for i in range(len(a)):
        if keep and np.any(np.sqrt(((mates[keep] - a[i]) ** 2).sum(axis=(-2, -1))) < atol):
            continue
        keep.append(i)
    return np.array(keep, dtype=int)


def in_asymmetric_unit(rotations: np.ndarray, group, tolerance: float = 1e-9) -> np.ndarray:
    """(...) bool: A is its own asymmetric-unit mate, trace(A) >= trace(A·S_k) - tolerance for every k.

    Boundary rotations (ties) are kept, so filtering a grid covering SO(3) keeps a grid covering the asymmetric unit
    (about 1/K of the points; every rotation is within the grid's spacing of a kept point's mate).
    """
    a = np.asarray(rotations, dtype=np.float64)
    ops = operators(group)
    traces = np.einsum("...ij,kji->...k", a, ops)  # trace(A·S_k)
    return traces[..., 0] >= traces.max(axis=-1) - tolerance


def _axes_by_order(ops: np.ndarray) -> dict[int, np.ndarray]:
    """{order: (m, 3) unit axes} of the operators other than the identity, one per axis (sign made canonical)."""
    out: dict[int, list[np.ndarray]] = {}
    for r in ops:
        # Axis and angle of a rotation: the angle from the trace, the axis from the antisymmetric part (or, near
        # 180°, from the symmetric part R + I, whose columns are multiples of the axis).
        cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
        angle = np.arccos(cos)
        if angle < 1e-6:
            continue
        if angle < np.pi - 1e-3:
            axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
        else:
            sym = r + np.eye(3)
            axis = sym[:, int(np.argmax(np.linalg.norm(sym, axis=0)))]
        axis = axis / np.linalg.norm(axis)
        axis = axis if axis[int(np.argmax(np.abs(axis)))] > 0 else -axis
        order = int(round(2.0 * np.pi / angle))
        listed = out.setdefault(order, [])
        if not any(abs(abs(axis @ a) - 1.0) < 1e-6 for a in listed):
            listed.append(axis)
    # An n-fold axis also carries rotations of order n/d: keep each axis under its highest order only.
    orders = sorted(out, reverse=True)
    for i, high in enumerate(orders):
        for low in orders[i + 1 :]:
            out[low] = [a for a in out[low] if not any(abs(abs(a @ b) - 1.0) < 1e-6 for b in out[high])]
    return {order: np.array(axes) for order, axes in out.items() if axes}


def _set_distance(a: np.ndarray, b: np.ndarray) -> float:
    d = np.abs(a.reshape(-1, 1, 9) - b.reshape(1, -1, 9)).max(-1)
    return float(max(d.min(1).max(), d.min(0).max()))


def relion_frame(ops: np.ndarray, group: str, tolerance: float = 1e-5) -> np.ndarray:
    """The rotation Q that brings a map with operators ``ops`` into RELION's orientation of ``group``.

    For a template whose symmetry was found along its own axes (e.g. gumalign.train.symmetry.symmetry_operators on
    the built-in proteasome, whose 7-fold is not on z), ``{Q·g·Qᵀ : g in ops} = point_group(group)``, so
    ``transform_volumes(template, Q)`` has RELION's operators (``--sym group`` then means what RELION means), and a
    pose A of the original template is the pose A·Qᵀ of the turned one. Q is not unique (any element of the group
    times Q works); the first one found is returned, deterministically.

    Raises:
        GumalignError: ``ops`` is not that group (different orders or no rotation makes the sets agree).
    """
    target = point_group(group)
    ops = operators(ops)
    if len(ops) != len(target):
        raise GumalignError(f"the operators form a group of order {len(ops)}, not {parse_group(group)} ({len(target)})")
    if len(target) == 1 or _set_distance(ops, target) < tolerance:
        return np.eye(3)  # already in RELION's orientation
    want, have = _axes_by_order(target), _axes_by_order(ops)
    if sorted((k, len(v)) for k, v in want.items()) != sorted((k, len(v)) for k, v in have.items()):
        raise GumalignError(f"the operators do not form {parse_group(group)}: their rotation axes differ")
    top = max(want)
    b1 = want[top][0]
    others = [(k, a) for k in sorted(want, reverse=True) for a in want[k] if abs(abs(a @ b1) - 1.0) > 1e-6]
    if others:
        order2, b2 = others[0]
    else:  # Cn: a single axis; any perpendicular direction will do
        order2, b2 = None, np.eye(3)[int(np.argmin(np.abs(b1)))]

    def frame(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        w = np.cross(u, v)
        w /= np.linalg.norm(w)
        return np.stack([u, w, np.cross(u, w)], axis=1)

    frame_b = frame(b1, b2)
    candidates_2 = [b2] if order2 is None else list(have[order2]) + [-a for a in have[order2]]
    for a1 in list(have[top]) + [-a for a in have[top]]:
        for a2 in candidates_2:
            if order2 is None:
                a2 = np.eye(3)[int(np.argmin(np.abs(a1)))]
            elif abs(a1 @ a2 - b1 @ b2) > 1e-6:
                continue
            q = frame_b @ frame(a1, a2).T
            if _set_distance(q @ ops @ q.T, target) < tolerance:
                return q
    raise GumalignError(f"the operators do not form {parse_group(group)}: no rotation maps them onto RELION's")


def symmetrise(volumes, group, *, reduce: str = "mean", batch: int = 24):
    """Average (or sum) of a map's copies rotated by every operator of the group, about the box centre N // 2.

    ``out = (1/K)·Σ_k transform_volumes(v, S_k)`` with trilinear interpolation (zeros outside the box): the result
    equals its own images under every S in the group up to interpolation error (the set {S·S_k} is the group again).
    RELION's symmetriseMap (src/symmetries.cpp) does the same in real space (it applies the inverses; same set).

    Trilinear copies low-pass the map (up to half the power of the high shells at 32³); for a map that must keep its
    resolution (the --sym reference) use gumalign.fourier.symmetrise.symmetrise_map. For centred Fourier weights use
    gumalign.fourier.symmetrise.symmetrise_weights (the Fourier layout's edge rule), for the sums of a
    wedge-compensated reconstruction gumalign.fourier.symmetrise.symmetrise_fourier_sums.

    Args:
        volumes: (N, N, N) or (B, N, N, N) float tensor or array, [z, y, x].
        group: a group name or (K, 3, 3) operators.
        reduce: "mean" (symmetrised map) or "sum".
        batch: how many rotated copies to make at once (memory: batch × B × N³ floats).

    Returns:
        Same shape, a torch tensor on the input's device (float32 for numpy input).
    """
    from gumalign.geometry.transform import transform_volumes

    return reduce_over_group(volumes, group, transform_volumes, reduce, batch)


def reduce_over_group(values, group, rotate, reduce: str = "mean", batch: int = 24):
    """The sum or mean over the group of ``rotate(values, S)`` (S_0 = I: the values themselves, not resampled).

    Args:
        values: (N, N, N) or (B, N, N, N) tensor or array (float32 for numpy input).
        group: a group name or (K, 3, 3) operators.
        rotate: ``rotate(volumes (M, N, N, N), rotations (M, 3, 3))``: real space (transform_volumes) or a centred
            Fourier layout (gumalign.fourier.layout.rotate_centred).
        reduce: "mean" or "sum".
    """
    import torch

    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    ops = operators(group)
    v = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values, dtype=np.float32))
    single = v.ndim == 3
    v4 = v[None] if single else v
    if v4.ndim != 4:
        raise ValueError(f"volumes must be (N, N, N) or (B, N, N, N), got shape {tuple(v.shape)}")
    out = rotated_copies(v4, ops, batch, rotate)
    if reduce == "mean":
        out = out / len(ops)
    return out[0] if single else out


def rotated_copies(volumes, ops: np.ndarray, batch: int, rotate):
    """Σ over ops[1:] of rotate(volumes, S) plus volumes itself, for (B, N, N, N) tensors, ``batch`` ops at a time."""
    import torch

    b = volumes.shape[0]
    out = volumes.clone()
    rest = torch.as_tensor(ops[1:], dtype=volumes.dtype, device=volumes.device)
    step = max(1, int(batch))
    for start in range(0, len(rest), step):
        chunk = rest[start : start + step]
        k = len(chunk)
        rotated = rotate(
            volumes[None].expand(k, *volumes.shape).reshape(k * b, *volumes.shape[1:]),
            chunk[:, None].expand(k, b, 3, 3).reshape(k * b, 3, 3),
        )
        out += rotated.reshape(k, *volumes.shape).sum(dim=0)
    return out
