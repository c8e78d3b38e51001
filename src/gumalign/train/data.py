"""Training pairs for Gum-Net: (s_a, s_b) volumes, their observed-region weights and, when known, the ground truth.

Three sources:

- particles (STAR) + one reference: pairs (reference, particle), s_a = the reference;
- ``pairs.star`` written by ``gumalign simulate --pairs``: rlnImageName = s_b, gumPairReference = s_a,
  rlnCtfImage = s_b's weight, gumPairReferenceWeight = s_a's weight;
- pairs simulated on the fly from templates (gumalign.simulate.imaging.simulate_pairs).

Ground truth follows the aligner convention: s_b ≈ transform_volumes(s_a, R, t), R = RELION's A and t = -origin in
pixels (x, y, z). The unsupervised loss never uses it (it feeds the validation errors); ``gumalign train --supervised``
does, through ``PairSet.mates``: every rotation equivalent to R under the template's point group (R itself for an
asymmetric template). Training shapes can include procedurally generated asymmetric blobs
(:func:`random_blob_templates`) beside the built-ins at several voxel sizes.
Every volume is z-scored (zero mean, unit standard deviation) on loading, as the original did.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from gumalign.errors import GumalignError

PAIR_REFERENCE_COLUMN = "gumPairReference"
PAIR_REFERENCE_WEIGHT_COLUMN = "gumPairReferenceWeight"
SNR_COLUMNS = ("gumSnr", "gumSNR", "gumPairSnr")


def zscore(volumes: np.ndarray) -> np.ndarray:
    """Each volume of (n, D, H, W) shifted and scaled to zero mean and unit standard deviation (float32 numpy).

    gumalign.models.inputs.zscore, the network's input normalisation, for the numpy arrays of a PairSet; a constant
    volume becomes all zeros.
    """
    import torch

    from gumalign.models.inputs import zscore as zscore_tensor

    volumes = np.require(volumes, dtype=np.float32, requirements=["C", "W"])  # torch wants a writable array
    return zscore_tensor(torch.from_numpy(volumes)).numpy()


@dataclass
class PairSet:
    """n training pairs, stored without duplicating shared volumes and weights.

    Attributes:
        a_volumes: (Ka, N, N, N) float32 z-scored s_a volumes; pair i uses ``a_volumes[a_index[i]]``.
        a_index: (n,) int64.
        b_volumes: (n, N, N, N) float32 z-scored s_b volumes.
        weights: (K, N, N, N) float32 centred observed-region weights in [0, 1].
        weight_a, weight_b: (n,) int64 indices into ``weights`` for s_a and s_b.
        rotations: (n, 3, 3) ground-truth R (s_b ≈ transform_volumes(s_a, R, t)) or None.
        shifts: (n, 3) ground-truth t in voxels (x, y, z) or None.
        snr: (n,) SNR label of each pair (for per-SNR validation errors) or None.
        voxel_size: Å, or None when unknown.
        description: provenance written into the model record (source files, SNRs, wedge, ...).
        mates: (n, G, 3, 3) float32 rotations equivalent to ``rotations`` under each pair's template symmetry
            (R_b·g·R_aᵀ; padded by repeating R), or None (then R alone, see :meth:`mates_batch`).
    """

    a_volumes: np.ndarray
    a_index: np.ndarray
    b_volumes: np.ndarray
    weights: np.ndarray
    weight_a: np.ndarray
    weight_b: np.ndarray
    rotations: np.ndarray | None = None
    shifts: np.ndarray | None = None
    snr: np.ndarray | None = None
    voxel_size: float | None = None
    description: dict = field(default_factory=dict)
    mates: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.b_volumes)

    @property
    def box(self) -> int:
        return int(self.b_volumes.shape[-1])

    @property
    def has_truth(self) -> bool:
        return self.rotations is not None and self.shifts is not None

    def subset(self, rows: np.ndarray) -> "PairSet":
        """The pairs at ``rows`` (shared volume and weight tables are kept whole)."""
        rows = np.asarray(rows, dtype=np.int64)

        def pick(x):
            return None if x is None else x[rows]

        return replace(
            self,
            a_index=self.a_index[rows],
            b_volumes=self.b_volumes[rows],
            weight_a=self.weight_a[rows],
            weight_b=self.weight_b[rows],
            rotations=pick(self.rotations),
            shifts=pick(self.shifts),
            snr=pick(self.snr),
            mates=pick(self.mates),
        )

    def mates_batch(self, rows: np.ndarray) -> np.ndarray:
        """(B, G, 3, 3) float32 symmetry-equivalent true rotations of the pairs at ``rows`` (G = 1 without symmetry)."""
        if not self.has_truth:
            raise GumalignError("supervised training needs pairs with ground-truth orientations")
        if self.mates is not None:
            return self.mates[rows]
        return self.rotations[rows][:, None].astype(np.float32)

    def batch(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(s_a, s_b, w_a, w_b) arrays (B, N, N, N) for the pairs at ``rows``."""
        return (
            self.a_volumes[self.a_index[rows]],
            self.b_volumes[rows],
            self.weights[self.weight_a[rows]],
            self.weights[self.weight_b[rows]],
        )

    def split(self, val_fraction: float, seed: int) -> tuple["PairSet", "PairSet"]:
        """(train, validation) by a seeded random split, stratified by SNR label when there is one.

        Every stratum with at least two pairs gives at least one to validation when ``val_fraction`` > 0.
        """
        if not 0.0 <= val_fraction < 1.0:
            raise GumalignError(f"--val-fraction must lie in [0, 1), got {val_fraction}")
        rng = np.random.default_rng([seed, 7])
        labels = self.snr if self.snr is not None else np.zeros(len(self))
        val_rows = []
        for value in np.unique(labels):
            rows = np.flatnonzero(labels == value)
            rows = rows[rng.permutation(len(rows))]
            n_val = int(round(val_fraction * len(rows)))
            if val_fraction > 0 and n_val == 0 and len(rows) >= 2:
                n_val = 1
            val_rows.append(rows[:n_val])
        val = np.sort(np.concatenate(val_rows)) if val_rows else np.zeros(0, dtype=np.int64)
        train = np.setdiff1d(np.arange(len(self)), val)
        if len(train) == 0:
            raise GumalignError(f"no training pairs left after holding out {len(val)} for validation")
        return self.subset(train), self.subset(val)

    def fingerprint(self) -> str:
        """sha256 over the volumes, weights and indices: a resumed run must see exactly the same data."""
        h = hashlib.sha256()
        for array in (self.a_volumes, self.a_index, self.b_volumes, self.weights, self.weight_a, self.weight_b):
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()


def _unique_weights(weights: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicate a list of weight arrays: (table (K, N, N, N), index (n,))."""
    table: list[np.ndarray] = []
    keys: dict[bytes, int] = {}
    index = np.empty(len(weights), dtype=np.int64)
    for i, w in enumerate(weights):
        key = hashlib.sha1(np.ascontiguousarray(w, dtype=np.float32).tobytes()).digest()
        if key not in keys:
            keys[key] = len(table)
            table.append(np.asarray(w, dtype=np.float32))
        index[i] = keys[key]
    return np.stack(table), index


def _scaled_weight(data: np.ndarray) -> np.ndarray:
    """A weight volume as read (RELION may store CTF² or multiplicities) scaled to a maximum of 1."""
    peak = float(np.abs(data).max())
    return (np.abs(data) / peak if peak > 0 else data).astype(np.float32)


class _VolumeReader:
    """Reads MRC volumes once each (a reference named by many rows is read once), checking the box."""

    def __init__(self, box: int | None = None):
        self.box = box
        self.voxel_size: float | None = None
        self._cache: dict[Path, np.ndarray] = {}

    def read(self, path: Path, what: str) -> np.ndarray:
        from gumalign.io.mrc import read_volume

        if path in self._cache:
            return self._cache[path]
        if not path.is_file():
            raise GumalignError(f"{path}: {what} does not exist")
        vol = read_volume(path)
        data = vol.data
        if data.shape[0] != data.shape[1] or data.shape[1] != data.shape[2]:
            raise GumalignError(f"{path}: {what} must be a cube, got {data.shape[::-1]} (x×y×z)")
        if self.box is None:
            self.box = data.shape[0]
        elif data.shape[0] != self.box:
            raise GumalignError(f"{path}: {what} has box {data.shape[0]}, the other volumes {self.box}")
        if vol.voxel_size > 0 and self.voxel_size is None:
            self.voxel_size = vol.voxel_size
        self._cache[path] = data
        return data


def _truth_from_table(table) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(R, t) from RELION angles and origins when the table has angles: R = A, t = -origin (pixels)."""
    if not table.has_angles():
        return None, None
    return table.matrices(), -table.origins_px()


def _snr_labels(table) -> np.ndarray | None:
    for column in SNR_COLUMNS:
        if table.has(column):
            return table.numeric(column)
    return None


def pairs_from_particles(
    star: str | Path, reference: str | Path, tilt_range: tuple[float, float] | None = None
) -> PairSet:
    """Pairs (reference, particle) for every particle of a STAR file.

    The particle weights come from rlnCtfImage when present, else from ``tilt_range``, else none (DESIGN.md), read
    exactly as `gumalign align` reads them (gumalign.align.particles.WeightSource: every RELION layout of the 3D CTF,
    premultiplied data, the same scaling), so a model is fine-tuned with the weights it will align with; the
    reference is taken as fully observed. Ground truth comes from the particles' angles and origins, when present.
    """
    from gumalign.align.particles import weight_source_for
    from gumalign.io.star import read_star

    table = read_star(star)
    if len(table) == 0:
        raise GumalignError(f"{star}: no particles")
    reader = _VolumeReader()
    ref = reader.read(Path(reference), "the reference")
    box = reader.box
    particles = np.stack([reader.read(p, f"particle image ({table.name})") for p in table.image_paths()])
    weight_paths = table.weight_paths()
    source = weight_source_for(table, box, tuple(tilt_range) if tilt_range is not None else None)
    weight_list = [source.for_rows(np.array([row]))[0] for row in range(len(table))]
    # Index 0 of the table is the reference's (full) weight, the rest are the particles'.
    weights, index = _unique_weights([np.ones((box,) * 3, dtype=np.float32)] + weight_list)
    rotations, shifts = _truth_from_table(table)
    return PairSet(
        a_volumes=zscore(ref[None]),
        a_index=np.zeros(len(table), dtype=np.int64),
        b_volumes=zscore(particles),
        weights=weights,
        weight_a=np.full(len(table), index[0], dtype=np.int64),
        weight_b=index[1:],
        rotations=rotations,
        shifts=shifts,
        snr=_snr_labels(table),
        voxel_size=reader.voxel_size,
        description={
            "source": "particles",
            "particles": str(star),
            "reference": str(reference),
            "n_pairs": len(table),
            "weights": "rlnCtfImage" if weight_paths is not None else (
                f"tilt range {tilt_range[0]:g}..{tilt_range[1]:g}" if tilt_range is not None else "none"),
        },
    )


def pairs_from_pairs_star(star: str | Path) -> PairSet:
    """Pairs from a ``pairs.star`` written by ``gumalign simulate --pairs`` (columns: see the module docstring)."""
    from gumalign.io.star import read_star

    table = read_star(star)
    if len(table) == 0:
        raise GumalignError(f"{star}: no pairs")
    if not table.has(PAIR_REFERENCE_COLUMN):
        raise GumalignError(
            f"{star}: missing column _{PAIR_REFERENCE_COLUMN}; is this a pairs.star from `gumalign simulate --pairs`?"
        )
    reader = _VolumeReader()
    a_paths = table.paths(PAIR_REFERENCE_COLUMN)  # the same relative-path rule as rlnImageName
    b_paths = table.image_paths()
    unique_a = list(dict.fromkeys(a_paths))
    a_volumes = np.stack([reader.read(p, f"pair reference ({table.name})") for p in unique_a])
    where = {p: i for i, p in enumerate(unique_a)}
    b_volumes = np.stack([reader.read(p, f"pair image ({table.name})") for p in b_paths])
    box = reader.box
    ones = np.ones((box,) * 3, dtype=np.float32)

    def weight_list(column: str) -> list[np.ndarray]:
        if not table.has(column):
            return [ones] * len(table)
        paths = table.paths(column)
        return [_scaled_weight(reader.read(p, f"_{column} ({table.name})")) for p in paths]

    weights, index = _unique_weights(weight_list(PAIR_REFERENCE_WEIGHT_COLUMN) + weight_list("rlnCtfImage"))
    rotations, shifts = _truth_from_table(table)
    return PairSet(
        a_volumes=zscore(a_volumes),
        a_index=np.array([where[p] for p in a_paths], dtype=np.int64),
        b_volumes=zscore(b_volumes),
        weights=weights,
        weight_a=index[: len(table)],
        weight_b=index[len(table):],
        rotations=rotations,
        shifts=shifts,
        snr=_snr_labels(table),
        voxel_size=reader.voxel_size,
        description={"source": "pairs", "pairs": str(star), "n_pairs": len(table)},
    )


def simulated_pairs(
    templates: dict[str, np.ndarray],
    snrs: list[float],
    n_pairs: int,
    seed: int,
    *,
    tilt_range_b: tuple[float, float] = (-60.0, 60.0),
    max_shift: float = 7.0,
    voxel_size: float = 12.0,
    max_angle: float | None = None,
    jobs: int = 1,
    symmetries: dict[str, np.ndarray] | None = None,
) -> PairSet:
    """``n_pairs`` pairs simulated from every template at every SNR, via gumalign.simulate.imaging.simulate_pairs:
    s_a without a missing wedge (±90°), s_b with the ``tilt_range_b`` wedge, each at a random pose.

    Pairs are spread evenly over the (template, SNR) combinations (the first ones get the remainder); each combination
    draws from its own generator seeded by (seed, template index, SNR index), so the same arguments give the same data.

    Args:
        templates: {name: (N, N, N) float32 density} (all the same box), protein positive.
        snrs: SNR values (signal/noise variance ratio of each subtomogram).
        n_pairs: total number of pairs.
        voxel_size: Å, for the CTF and MTF.
        max_angle: largest relative rotation between s_a and s_b in degrees (None: any rotation).
        jobs: worker threads, one (template, SNR) combination each (the numerical work releases the GIL); the pairs
            do not depend on it.
        symmetries: {name: (G, 3, 3) point-group operators} (gumalign.train.symmetry.template_symmetries); when given,
            the result carries ``mates`` (templates not named get the identity).
    """
    from concurrent.futures import ThreadPoolExecutor

    try:
        from gumalign.simulate.imaging import ImagingParams, precompute, simulate_pairs
    except ImportError as exc:  # the simulator lives in its own subpackage
        raise GumalignError(f"pair simulation is unavailable ({exc})") from None

    if not templates or not snrs:
        raise GumalignError("--simulate needs at least one structure and one --snr")
    combos = [(ti, si) for ti in range(len(templates)) for si in range(len(snrs))]
    if n_pairs < len(combos):
        raise GumalignError(f"--n-pairs {n_pairs} is fewer than the {len(combos)} structure × SNR combinations")
    per = [n_pairs // len(combos) + (1 if k < n_pairs % len(combos) else 0) for k in range(len(combos))]
    names = list(templates)

    def simulate_combo(combo, count):
        ti, si = combo
        pairs = simulate_pairs(
            np.asarray(templates[names[ti]], dtype=np.float32), count, snr=float(snrs[si]),
            rng=np.random.default_rng([seed, ti, si]), max_shift=max_shift, tilt_range_b=tuple(tilt_range_b),
            voxel_size=voxel_size, max_relative_angle=max_angle,
        )
        return pairs, zscore(pairs.s_a), zscore(pairs.s_b)

    # Build the projectors and filters once, before the workers share them.
    box = int(np.asarray(next(iter(templates.values()))).shape[-1])
    for tilt_range in ((-90.0, 90.0), tuple(tilt_range_b)):
        precompute(box, tilt_range, 1.0, ImagingParams(), voxel_size)
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(combos)))) as pool:
        results = list(pool.map(simulate_combo, combos, per))
    s_a = [r[1] for r in results]
    s_b = [r[2] for r in results]
    rots = [np.asarray(r[0].rotations, dtype=np.float64) for r in results]
    shifts = [np.asarray(r[0].shifts, dtype=np.float64) for r in results]
    labels = [np.full(count, float(snrs[si])) for (_, si), count in zip(combos, per)]
    mates = None
    if symmetries is not None:
        from gumalign.train.symmetry import equivalent_rotations

        groups = [np.asarray(symmetries.get(names[ti], np.eye(3)[None])) for ti, _ in combos]
        size = max(len(g) for g in groups)
        mates = np.concatenate([
            _pad_mates(equivalent_rotations(r[0].rotations_a, r[0].rotations_b, g), size)
            for r, g in zip(results, groups)
        ]).astype(np.float32)
    last = results[-1][0]
    weights = np.stack([last.weight_a, last.weight_b]).astype(np.float32)
    n = sum(per)
    return PairSet(
        a_volumes=np.concatenate(s_a),
        a_index=np.arange(n, dtype=np.int64),
        b_volumes=np.concatenate(s_b),
        weights=weights,
        weight_a=np.zeros(n, dtype=np.int64),
        weight_b=np.ones(n, dtype=np.int64),
        rotations=np.concatenate(rots),
        shifts=np.concatenate(shifts),
        snr=np.concatenate(labels),
        voxel_size=voxel_size,
        mates=mates,
        description={
            "source": "simulated",
            "structures": names,
            "snrs": [float(s) for s in snrs],
            "n_pairs": n,
            "tilt_range_a": [-90.0, 90.0],
            "tilt_range_b": [float(tilt_range_b[0]), float(tilt_range_b[1])],
            "max_shift_per_subtomogram": float(max_shift),
            "voxel_size": float(voxel_size),
            "max_relative_angle": None if max_angle is None else float(max_angle),
            "seed": seed,
        },
    )


def _pad_mates(mates: np.ndarray, size: int) -> np.ndarray:
    """(n, G, 3, 3) -> (n, size, 3, 3) by repeating the first mate (a repeated mate changes no min or set)."""
    if mates.shape[1] == size:
        return mates
    return np.concatenate([mates, np.repeat(mates[:, :1], size - mates.shape[1], axis=1)], axis=1)


def concatenate_pairsets(sets: list[PairSet]) -> PairSet:
    """One PairSet holding every pair of ``sets`` in order (volume and weight tables stacked, indices offset).

    Ground truth and mates are kept when every set has them; ``voxel_size`` is kept when all agree; the descriptions
    are listed under 'parts'.
    """
    if not sets:
        raise GumalignError("no pair sets to concatenate")
    if len(sets) == 1:
        return sets[0]
    a_off = np.cumsum([0] + [len(s.a_volumes) for s in sets[:-1]])
    w_off = np.cumsum([0] + [len(s.weights) for s in sets[:-1]])
    truth = all(s.has_truth for s in sets)
    with_mates = truth and any(s.mates is not None for s in sets)
    mates = None
    if with_mates:
        parts = [s.mates if s.mates is not None else s.rotations[:, None].astype(np.float32) for s in sets]
        size = max(m.shape[1] for m in parts)
        mates = np.concatenate([_pad_mates(m, size) for m in parts]).astype(np.float32)
    sizes = {s.voxel_size for s in sets}
    return PairSet(
        a_volumes=np.concatenate([s.a_volumes for s in sets]),
        a_index=np.concatenate([s.a_index + o for s, o in zip(sets, a_off)]),
        b_volumes=np.concatenate([s.b_volumes for s in sets]),
        weights=np.concatenate([s.weights for s in sets]),
        weight_a=np.concatenate([s.weight_a + o for s, o in zip(sets, w_off)]),
        weight_b=np.concatenate([s.weight_b + o for s, o in zip(sets, w_off)]),
        rotations=np.concatenate([s.rotations for s in sets]) if truth else None,
        shifts=np.concatenate([s.shifts for s in sets]) if truth else None,
        snr=np.concatenate([s.snr for s in sets]) if all(s.snr is not None for s in sets) else None,
        voxel_size=sizes.pop() if len(sizes) == 1 else None,
        mates=mates,
        description={"source": "combined", "n_pairs": int(sum(len(s) for s in sets)),
                     "parts": [s.description for s in sets]},
    )


_PAIRSET_ARRAYS = ("a_volumes", "a_index", "b_volumes", "weights", "weight_a", "weight_b", "rotations", "shifts",
                   "snr", "mates")


def save_pairset(pairs: PairSet, path: str | Path, key: str = "") -> None:
    """Write a PairSet to an .npz (no pickle; description as JSON) with a ``key`` naming how it was made."""
    import json

    from gumalign.io.atomic import atomic_path

    arrays = {name: getattr(pairs, name) for name in _PAIRSET_ARRAYS if getattr(pairs, name) is not None}
    meta = json.dumps({"key": key, "voxel_size": pairs.voxel_size, "description": pairs.description})
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, _meta=np.frombuffer(meta.encode(), dtype=np.uint8), **arrays)


def load_pairset(path: str | Path, key: str | None = None) -> PairSet | None:
    """A PairSet written by :func:`save_pairset`, or None when the file is missing or was made with another ``key``."""
    import json

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["_meta"]).decode())
            if key is not None and meta.get("key") != key:
                return None
            arrays = {name: data[name] for name in _PAIRSET_ARRAYS if name in data.files}
    except (OSError, ValueError, KeyError) as exc:
        raise GumalignError(f"{path}: unreadable pair cache ({exc})") from None
    return PairSet(voxel_size=meta.get("voxel_size"), description=meta.get("description") or {}, **arrays)


MAX_BLOB_SELF_CORRELATION = 0.85


def _max_self_correlation(density: np.ndarray) -> float:
    """Highest self-correlation of ``density`` under 2-, 3- and 4-fold rotations about its principal axes (where a
    near-symmetry of a random shape would show)."""
    from gumalign.train.symmetry import rotation_about, self_correlations

    n = density.shape[0]
    z, y, x = np.indices(density.shape, dtype=np.float64) - n // 2
    coords = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    w = density.ravel().astype(np.float64)
    _, vectors = np.linalg.eigh((coords.T * w) @ coords / w.sum())
    rotations = np.stack([rotation_about(vectors[:, i], 2 * np.pi / k) for i in range(3) for k in (2, 3, 4)])
    return float(self_correlations(density, rotations).max())


def random_blob_templates(count: int, seed: int, box: int = 32, radius: float = 6.0) -> dict[str, np.ndarray]:
    """``count`` procedurally generated asymmetric shapes: random sums of anisotropic Gaussians.

    Each shape has 6-16 Gaussian components of random orientation, widths of 0.7-2.2 voxels per axis and positive
    weights, at centres spread over a random anisotropic ellipsoid of about ``radius`` voxels (some components
    chained off others for arms and lobes); it is then moved so that its centre of mass sits at the box centre N // 2
    and scaled to a maximum of 1. A draw that a 2-, 3- or 4-fold rotation about one of its principal axes leaves
    with a self-correlation above 0.85 is drawn again (nearly symmetric shapes would make the supervised targets
    ambiguous). Shape i depends only on (seed, i).

    Returns:
        {'blob<seed>-<i>': (box³) float32 density}.
    """
    from scipy.ndimage import shift as nd_shift
    from scipy.spatial.transform import Rotation

    out: dict[str, np.ndarray] = {}
    centre = box // 2
    zz, yy, xx = np.indices((box,) * 3, dtype=np.float64) - centre
    coords = np.stack([xx, yy, zz], axis=-1)  # (x, y, z) relative to the centre
    for i in range(count):
        for attempt in range(20):
            rng = np.random.default_rng([seed, 5150, i, attempt])
            n = int(rng.integers(6, 17))
            extent = radius * rng.uniform(0.5, 1.1, size=3)
            centres = rng.uniform(-1, 1, size=(n, 3)) * extent
            for j in range(1, n):  # chain some components off earlier ones: arms and lobes, not a round cloud
                if rng.random() < 0.4:
                    centres[j] = centres[rng.integers(0, j)] + rng.normal(0, 2.5, size=3)
            density = np.zeros((box,) * 3)
            for j in range(n):
                axes = Rotation.random(random_state=rng).as_matrix()
                sigmas = rng.uniform(0.7, 2.2, size=3)
                local = (coords - centres[j]) @ axes  # coordinates in the component's own axes
                density += rng.uniform(0.3, 1.0) * np.exp(-0.5 * np.sum((local / sigmas) ** 2, axis=-1))
            com = (coords * density[..., None]).reshape(-1, 3).sum(axis=0) / density.sum()
            density = np.clip(nd_shift(density, shift=-com[::-1], order=1, mode="constant"), 0, None)  # [z, y, x]
            density = (density / density.max()).astype(np.float32)
            if _max_self_correlation(density) <= MAX_BLOB_SELF_CORRELATION:
                break
        out[f"blob{seed}-{i}"] = density
    return out


def load_templates(structures: list[str], box: int, voxel_size: float, resolution: float | None = None) -> dict[str, np.ndarray]:
    """{name: (box³) float32 density} for each structure spec that gumalign.simulate reads: 'builtin:NAME', a density
    map (MRC) or an atomic model (PDB/mmCIF), at ``voxel_size`` Å and ``resolution`` Å (default: the voxel size, or
    for built-ins their own 12 Å).

    Raises:
        GumalignError: unknown built-in, missing or unreadable file, a structure that does not fit the box.
    """
    from gumalign.simulate.structures import load_structure
    from gumalign.simulate.templates import BUILTIN_PREFIX, template_record

    templates: dict[str, np.ndarray] = {}
    for spec in structures:
        if resolution is not None:
            res = resolution
        elif spec.lower().startswith(BUILTIN_PREFIX):  # built-ins exist at their own resolution only
            res = float(template_record()["resolution"])
        else:
            res = voxel_size
        structure = load_structure(spec, box=box, voxel_size=voxel_size, resolution=res)
        name = structure.name if structure.name not in templates else spec
        templates[name] = np.asarray(structure.density, dtype=np.float32)
    return templates


def simulated_training_pairs(
    structures: list[str],
    snrs: list[float],
    n_pairs: int,
    seed: int,
    *,
    voxel_sizes: list[float] = (12.0,),
    blobs: int = 0,
    tilt_range_b: tuple[float, float] = (-60.0, 60.0),
    max_shift: float = 7.0,
    max_angle: float | None = None,
    jobs: int = 1,
    with_mates: bool = False,
    box: int = 32,
) -> PairSet:
    """Simulated pairs from ``structures`` at every voxel size of ``voxel_sizes`` plus ``blobs`` procedurally
    generated asymmetric shapes (:func:`random_blob_templates`, simulated at the first voxel size).

    The ``n_pairs`` are split over the (structure, voxel size) templates and the blob set in proportion to their
    counts; a structure that does not fit the box at a voxel size is skipped there (and named in the description).
    With ``with_mates`` the pairs carry their symmetry mates (gumalign.train.symmetry) for the supervised loss.
    Templates are named 'NAME@VOXEL' ('blob<seed>-<i>' for blobs). Same arguments, same pairs.
    """
    groups: list[tuple[float, dict[str, np.ndarray]]] = []
    skipped: list[str] = []
    for v, size in enumerate(voxel_sizes):
        templates: dict[str, np.ndarray] = {}
        for spec in structures:
            try:
                one = load_templates([spec], box=box, voxel_size=float(size))
            except GumalignError as exc:
                if "fit" not in str(exc).lower() and "box" not in str(exc).lower():
                    raise
                skipped.append(f"{spec}@{size:g}")
                continue
            for name, density in one.items():
                templates[f"{name}@{size:g}"] = density
        if v == 0 and blobs:
            templates.update(random_blob_templates(blobs, seed, box))
        if templates:
            groups.append((float(size), templates))
    if not groups:
        raise GumalignError("no training templates fit the box at the given voxel sizes")
    total = sum(len(t) for _, t in groups)
    sets = []
    done = 0
    for g, (size, templates) in enumerate(groups):
        count = n_pairs - done if g == len(groups) - 1 else int(round(n_pairs * len(templates) / total))
        done += count
        symmetries = None
        if with_mates:
            from gumalign.train.symmetry import template_symmetries

            symmetries = template_symmetries(templates)
        sets.append(simulated_pairs(
            templates, snrs, count, seed + 1000 * g, tilt_range_b=tilt_range_b, max_shift=max_shift, voxel_size=size,
            max_angle=max_angle, jobs=jobs, symmetries=symmetries,
        ))
    data = concatenate_pairsets(sets)
    if len(sets) > 1:
        data.description = {
            "source": "simulated", "structures": [n for _, t in groups for n in t], "snrs": [float(s) for s in snrs],
            "n_pairs": len(data), "voxel_sizes": [float(v) for v in voxel_sizes], "blobs": int(blobs),
            "skipped": skipped, "tilt_range_a": [-90.0, 90.0],
            "tilt_range_b": [float(tilt_range_b[0]), float(tilt_range_b[1])],
            "max_shift_per_subtomogram": float(max_shift),
            "max_relative_angle": None if max_angle is None else float(max_angle), "seed": seed,
            "symmetry_mates": bool(with_mates),
        }
    else:
        data.description = dict(data.description, voxel_sizes=[float(v) for v in voxel_sizes], blobs=int(blobs),
                                skipped=skipped, symmetry_mates=bool(with_mates))
    return data
