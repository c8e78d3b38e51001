"""Training pairs for Gum-Net: (s_a, s_b) volumes, their observed-region weights and, when known, the ground truth.

Three sources:

- particles (STAR) + one reference: pairs (reference, particle), s_a = the reference;
- ``pairs.star`` written by ``gumalign simulate --pairs``: rlnImageName = s_b, gumPairReference = s_a,
  rlnCtfImage = s_b's weight, gumPairReferenceWeight = s_a's weight;
- pairs simulated on the fly from templates (gumalign.simulate.imaging.simulate_pairs).

Ground truth follows the aligner convention: s_b ≈ transform_volumes(s_a, R, t), R = RELION's A and t = -origin in
pixels (x, y, z). It is used only to report validation errors, never in the loss.
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
    """Each volume of (n, D, H, W) shifted and scaled to zero mean and unit standard deviation (float32).

    A constant volume becomes all zeros rather than NaN.
    """
    v = np.asarray(volumes, dtype=np.float32)
    mean = v.mean(axis=(-3, -2, -1), keepdims=True)
    std = v.std(axis=(-3, -2, -1), keepdims=True)
    return ((v - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


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
        )

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
    return table.matrices(), -table.shifts_px()


def _snr_labels(table) -> np.ndarray | None:
    for column in SNR_COLUMNS:
        if table.has(column):
            return table.numeric(column)
    return None


def pairs_from_particles(
    star: str | Path, reference: str | Path, tilt_range: tuple[float, float] | None = None
) -> PairSet:
    """Pairs (reference, particle) for every particle of a STAR file.

    The particle weights come from rlnCtfImage when present, else from ``tilt_range``, else none (DESIGN.md); the
    reference is taken as fully observed. Ground truth comes from the particles' angles and origins, when present.
    """
    from gumalign.io.star import read_star
    from gumalign.fourier.wedge import wedge_mask

    table = read_star(star)
    if len(table) == 0:
        raise GumalignError(f"{star}: no particles")
    reader = _VolumeReader()
    ref = reader.read(Path(reference), "the reference")
    box = reader.box
    particles = np.stack([reader.read(p, f"particle image ({table.name})") for p in table.image_paths()])
    weight_paths = table.weight_paths()
    if weight_paths is not None:
        weight_list = [_scaled_weight(reader.read(p, f"rlnCtfImage ({table.name})")) for p in weight_paths]
    elif tilt_range is not None:
        weight_list = [wedge_mask((box,) * 3, tuple(tilt_range), "centred")] * len(table)
    else:
        weight_list = [np.ones((box,) * 3, dtype=np.float32)] * len(table)
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
    # Private resolver of ParticleTable: the same relative-path rule as rlnImageName (the STAR file's folder first).
    a_paths = table._resolve(table.particles[PAIR_REFERENCE_COLUMN], PAIR_REFERENCE_COLUMN)
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
        paths = table._resolve(table.particles[column], column)
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
