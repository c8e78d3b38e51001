"""Writing a simulated data set to a folder: particles (or the seed's pairs), weights, references, STAR files.

Layout of ``out_dir``:
    particles/particle_000001.mrc ...    one MRC per particle (or pairs/pair_000001_a.mrc and _b.mrc with pairs)
    weight.mrc                           the shared observed-region weight (RELION's rlnCtfImage N³ centred cube);
                                         with pairs weight_a.mrc (s_a, all ones) and weight_b.mrc (s_b)
    ctf/particle_000001.mrc ...          with ``ctf_images``: each particle's 3D CTF (wedge × CTF × MTF, the signal's
                                         transfer, imaging.particle_transfer) in RELION's FFTW half layout
                                         (N/2+1 × N × N, x × y × z); rlnCtfImage then names these files
    reference.mrc                        the noise-free template (reference_NAME.mrc per structure for mixed sets)
    README                               the exact command, the settings and the conventions
    particles.star                       RELION 3.1 particle list with the ground truth
    pairs.star                           with pairs: one row per pair, s_b with its reference s_a

Ground truth follows RELION: particle = shift(rotate(template, A), -origin), A from rlnAngleRot/Tilt/Psi and origin
rlnOriginX/Y/ZAngst (= -shift in voxels × voxel size). In pairs.star the same holds with s_a in place of the
template (rlnImageName = s_b, gumPairReference = s_a).

Reproducibility: every random draw comes from ``seed`` through fixed streams (structure assignment, poses, and the
noise of each fixed-size chunk of particles), so the bytes written do not depend on ``jobs``. Files are written
atomically; the STAR files last, so a folder with a STAR file is complete. The whole set is written into a hidden
folder beside ``out_dir`` and moved into place when it is complete: a full disk or a kill leaves no half set.
Particles are streamed to disk chunk by chunk: memory does not grow with the number of particles.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from gumalign.errors import GumalignError
from gumalign.simulate.density import Structure
from gumalign.simulate.imaging import (
    CHUNK_SIZE,
    ImagingParams,
    particle_transfer,
    precompute,
    random_poses,
    relative_transform,
    simulate_subtomograms,
)
from gumalign.io.atomic import write_text_atomic
from gumalign.io.mrc import write_volume
from gumalign.io.star import write_star
from gumalign.simulate.tomography import tilt_angles

NO_WEDGE = (-90.0, 90.0)
STAR_FILES = ("particles.star", "pairs.star")
_STREAM_CLASSES, _STREAM_POSES, _STREAM_NOISE = 0, 1, 2


@dataclass
class SimulationPlan:
    """What to simulate.

    Attributes:
        structures: the templates (same box and voxel size); several make a mixed set with a class column.
        n: particles, or pairs with ``pairs``.
        snr: target SNR (None: noise-free).
        tilt_range, tilt_step: the tilt series of the particles (of s_b with pairs; s_a is always ±90°).
        max_shift: shifts uniform in [-max_shift, max_shift] voxels per axis.
        params: the imaging model's settings.
        seed: the seed of every random draw.
        pairs: write the seed's pair data set.
        command: the command line recorded in the README.
        ctf_images: write each particle's 3D CTF (observed region × CTF × MTF) as its own rlnCtfImage file, as
            RELION does, instead of pointing every particle at the shared 0/1 wedge (particles only, not pairs).
    """

    structures: list[Structure]
    n: int
    snr: float | None
    tilt_range: tuple[float, float] = (-60.0, 60.0)
    tilt_step: float = 1.0
    max_shift: float = 7.0
    params: ImagingParams = field(default_factory=ImagingParams)
    seed: int = 0
    pairs: bool = False
    command: str = ""
    ctf_images: bool = False

    @property
    def box(self) -> int:
        return int(self.structures[0].density.shape[0])

    @property
    def voxel_size(self) -> float:
        return float(self.structures[0].voxel_size)


@dataclass
class GroundTruth:
    """Per particle (or pair): structure class (0-based) and poses relative to the template."""

    classes: np.ndarray
    rotations: np.ndarray
    shifts: np.ndarray
    rotations_a: np.ndarray | None = None
    shifts_a: np.ndarray | None = None


def draw_ground_truth(plan: SimulationPlan) -> GroundTruth:
    """Structure classes and poses for every particle, from the plan's seed (independent of the noise)."""
    n, k = plan.n, len(plan.structures)
    class_rng = np.random.default_rng([plan.seed, _STREAM_CLASSES])
    classes = class_rng.permutation(np.arange(n) % k) if k > 1 else np.zeros(n, dtype=np.int64)
    pose_rng = np.random.default_rng([plan.seed, _STREAM_POSES])
    if plan.pairs:
        rotations_a, shifts_a = random_poses(n, plan.max_shift, pose_rng)
        rotations, shifts = random_poses(n, plan.max_shift, pose_rng)
        return GroundTruth(classes, rotations, shifts, rotations_a, shifts_a)
    rotations, shifts = random_poses(n, plan.max_shift, pose_rng)
    return GroundTruth(classes, rotations, shifts)


def particle_paths(plan: SimulationPlan) -> list[str] | tuple[list[str], list[str]]:
    """Relative file names of the particles (pairs: (s_a names, s_b names))."""
    if plan.pairs:
        a = [f"pairs/pair_{i + 1:06d}_a.mrc" for i in range(plan.n)]
        b = [f"pairs/pair_{i + 1:06d}_b.mrc" for i in range(plan.n)]
        return a, b
    return [f"particles/particle_{i + 1:06d}.mrc" for i in range(plan.n)]


def ctf_image_paths(plan: SimulationPlan) -> list[str]:
    """Relative file names of the particles' 3D CTF images (written with ``plan.ctf_images``)."""
    return [f"ctf/particle_{i + 1:06d}.mrc" for i in range(plan.n)]


def reference_names(plan: SimulationPlan) -> list[str]:
    """File name of each structure's noise-free template."""
    if len(plan.structures) == 1:
        return ["reference.mrc"]
    return [f"reference_{s.name}.mrc" for s in plan.structures]


def check_output_folder(out_dir: Path, overwrite: bool) -> None:
    """Refuse a folder that already holds a simulated set unless ``overwrite``; then remove its STAR files first,
    so an interrupted rerun never leaves an old STAR pointing at new files.

    Raises:
        GumalignError: the folder holds particles.star or pairs.star and ``overwrite`` is False, or is a file.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise GumalignError(f"{out_dir}: exists and is not a folder")
    existing = [name for name in STAR_FILES if (out_dir / name).exists()]
    if existing and not overwrite:
        raise GumalignError(f"{out_dir}: already holds {existing[0]}; choose another --out or pass --overwrite")
    for name in existing:
        (out_dir / name).unlink()


def write_dataset(
    plan: SimulationPlan,
    out_dir: str | os.PathLike,
    *,
    jobs: int = 1,
    overwrite: bool = False,
    progress: Callable[[int], None] = lambda n: None,
) -> GroundTruth:
    """Simulate and write the whole data set (see the module docstring). Returns the ground truth written.

    Args:
        plan: what to simulate.
        out_dir: the output folder (created if needed).
        jobs: worker threads (the heavy numerical work releases the GIL); results do not depend on it.
        overwrite: allow a folder that already holds a simulated set.
        progress: called with the number of particles (or pairs) finished, as chunks complete.
    """
    out_dir = Path(out_dir)
    _check_plan(plan)
    check_output_folder(out_dir, overwrite)
    # All or nothing: everything is written into a hidden folder beside out_dir, moved into place at the end.
    parent = out_dir.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=parent))
    try:
        truth = _write_all(plan, staging, jobs, progress)
        _move_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return truth


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename the finished set onto ``out_dir`` (one rename when it is new or empty; file by file, STAR files last,
    into a folder that holds other files)."""
    mask = os.umask(0)
    os.umask(mask)
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        if out_dir.exists():
            out_dir.rmdir()
        os.chmod(staging, 0o777 & ~mask)
        os.replace(staging, out_dir)
        return
    files = sorted((p for p in staging.rglob("*") if p.is_file()), key=lambda p: (p.name in STAR_FILES, str(p)))
    for path in files:
        target = out_dir / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)


def _write_all(plan: SimulationPlan, out_dir: Path, jobs: int, progress: Callable[[int], None]) -> GroundTruth:
    (out_dir / ("pairs" if plan.pairs else "particles")).mkdir(exist_ok=True)
    if plan.ctf_images:
        (out_dir / "ctf").mkdir(exist_ok=True)
    truth = draw_ground_truth(plan)

    # Build the projectors and filters once, before the workers share them.
    for tilt_range in _tilt_ranges(plan):
        precompute(plan.box, tilt_range, plan.tilt_step, plan.params, plan.voxel_size)

    chunks = [np.arange(s, min(s + CHUNK_SIZE, plan.n)) for s in range(0, plan.n, CHUNK_SIZE)]
    _run_chunks(plan, truth, chunks, out_dir, jobs, progress)
    _write_weights(plan, out_dir)
    for structure, name in zip(plan.structures, reference_names(plan)):
        write_volume(out_dir / name, structure.density, plan.voxel_size)
    write_text_atomic(out_dir / "README", readme_text(plan))
    _write_stars(plan, truth, out_dir)
    return truth


def _run_chunks(
    plan: SimulationPlan,
    truth: GroundTruth,
    chunks: list[np.ndarray],
    out_dir: Path,
    jobs: int,
    progress: Callable[[int], None],
) -> None:
    """Simulate and write the chunks on ``jobs`` threads, at most 2·jobs chunks in flight (memory stays flat)."""
    window = max(1, 2 * jobs)
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    pending: list = []
    try:
        for index, chunk in enumerate(chunks):
            pending.append((pool.submit(_write_chunk, plan, truth, index, chunk, out_dir), len(chunk)))
            while len(pending) >= window or (pending and index == len(chunks) - 1):
                future, count = pending.pop(0)
                future.result()
                progress(count)
    finally:
        # On an error or Ctrl-C, drop the chunks not started yet instead of finishing them.
        pool.shutdown(wait=True, cancel_futures=True)


def _check_plan(plan: SimulationPlan) -> None:
    if not plan.structures:
        raise GumalignError("no structure given")
    shapes = {s.density.shape for s in plan.structures}
    if len(shapes) != 1:
        raise GumalignError(f"structures have different boxes: {sorted(shapes)}")
    sizes = {round(s.voxel_size, 6) for s in plan.structures}
    if len(sizes) != 1:
        raise GumalignError(f"structures have different voxel sizes: {sorted(sizes)} Å")
    if plan.n < 1:
        raise GumalignError(f"the number of particles must be at least 1, got {plan.n}")
    if plan.snr is not None and not (np.isfinite(plan.snr) and plan.snr > 0):
        raise GumalignError(f"--snr must be positive, got {plan.snr:g}")
    try:
        tilt_angles(plan.tilt_range, plan.tilt_step)
    except ValueError as exc:
        raise GumalignError(str(exc)) from None
    if not 0 <= plan.max_shift <= plan.box / 2:
        raise GumalignError(f"--max-shift must be between 0 and half the box ({plan.box // 2}), got {plan.max_shift:g}")
    if plan.ctf_images and plan.pairs:
        raise GumalignError("--ctf-images writes particles' 3D CTFs; the seed's pairs (--pairs) have none")


def _tilt_ranges(plan: SimulationPlan) -> list[tuple[float, float]]:
    return [NO_WEDGE, tuple(plan.tilt_range)] if plan.pairs else [tuple(plan.tilt_range)]


def _write_chunk(plan: SimulationPlan, truth: GroundTruth, index: int, chunk: np.ndarray, out_dir: Path) -> None:
    """Simulate one chunk of particles (or pairs) and write their MRC files."""
    rng = np.random.default_rng([plan.seed, _STREAM_NOISE, index])
    paths = particle_paths(plan)
    common = dict(snr=plan.snr, rng=rng, tilt_step=plan.tilt_step, params=plan.params, voxel_size=plan.voxel_size)
    for k, structure in enumerate(plan.structures):
        rows = chunk[truth.classes[chunk] == k]
        if len(rows) == 0:
            continue
        if plan.pairs:
            s_a = simulate_subtomograms(structure.density, truth.rotations_a[rows], truth.shifts_a[rows],
                                        tilt_range=NO_WEDGE, **common)
            s_b = simulate_subtomograms(structure.density, truth.rotations[rows], truth.shifts[rows],
                                        tilt_range=tuple(plan.tilt_range), **common)
            for row, a, b in zip(rows, s_a, s_b):
                write_volume(out_dir / paths[0][row], a, plan.voxel_size)
                write_volume(out_dir / paths[1][row], b, plan.voxel_size)
        else:
            volumes = simulate_subtomograms(structure.density, truth.rotations[rows], truth.shifts[rows],
                                            tilt_range=tuple(plan.tilt_range), **common)
            for row, volume in zip(rows, volumes):
                write_volume(out_dir / paths[row], volume, plan.voxel_size)
    if plan.ctf_images:
        # Every particle of one tilt series and defocus shares the transfer; RELION still names one file per particle.
        ctf = particle_transfer(plan.box, tuple(plan.tilt_range), plan.params, plan.voxel_size)
        ctf_paths = ctf_image_paths(plan)
        for row in chunk:
            write_volume(out_dir / ctf_paths[row], ctf, plan.voxel_size)


def _weight_names(plan: SimulationPlan) -> list[str]:
    return ["weight_a.mrc", "weight_b.mrc"] if plan.pairs else ["weight.mrc"]


def _write_weights(plan: SimulationPlan, out_dir: Path) -> None:
    from gumalign.fourier import wedge_mask

    shape = (plan.box,) * 3
    for name, tilt_range in zip(_weight_names(plan), _tilt_ranges(plan)):
        write_volume(out_dir / name, wedge_mask(shape, tilt_range, "centred"), plan.voxel_size)


def _optics(plan: SimulationPlan) -> pd.DataFrame:
    optics = pd.DataFrame(
        {
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnOpticsGroup": [1],
            "rlnImagePixelSize": [plan.voxel_size],
            "rlnImageSize": [plan.box],
            "rlnImageDimensionality": [3],
            # RELION's ObservationModel stops without voltage and Cs; CTF::readByGroup reads the amplitude contrast.
            "rlnVoltage": [plan.params.voltage_kv],
            "rlnSphericalAberration": [plan.params.cs_mm],
            "rlnAmplitudeContrast": [plan.params.amplitude_contrast],
        }
    )
    if plan.ctf_images:
        # The particles carry the CTF once (CTF·F), and their rlnCtfImage holds the CTF, not CTF².
        optics["rlnCtfDataAreCtfPremultiplied"] = [0]
    return optics


def _pose_columns(rotations: np.ndarray, shifts: np.ndarray, voxel_size: float) -> dict[str, np.ndarray]:
    """RELION's angle and origin columns for particle = transform_volumes(reference, A, shift)."""
    from gumalign.geometry import matrix_to_euler

    angles = matrix_to_euler(rotations)
    origins = -np.asarray(shifts) * voxel_size
    names = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")
    values = [angles[:, 0], angles[:, 1], angles[:, 2], origins[:, 0], origins[:, 1], origins[:, 2]]
    return dict(zip(names, values))


def _label_columns(plan: SimulationPlan, classes: np.ndarray, halves: np.ndarray) -> dict[str, object]:
    columns: dict[str, object] = {"rlnRandomSubset": halves}
    columns["gumStructureName"] = [plan.structures[c].name for c in classes]
    if len(plan.structures) > 1:
        columns["rlnClassNumber"] = classes + 1
    return columns


def _write_stars(plan: SimulationPlan, truth: GroundTruth, out_dir: Path) -> None:
    from gumalign.io.star import ParticleTable

    halves = np.arange(plan.n) % 2 + 1
    weights = _weight_names(plan)
    if not plan.pairs:
        columns = {"rlnImageName": particle_paths(plan),
                   "rlnCtfImage": ctf_image_paths(plan) if plan.ctf_images else weights[0]}
        columns.update(_pose_columns(truth.rotations, truth.shifts, plan.voxel_size))
        columns.update(_label_columns(plan, truth.classes, halves))
        write_star(ParticleTable(pd.DataFrame(columns), _optics(plan)), out_dir / "particles.star")
        return

    paths_a, paths_b = particle_paths(plan)
    # particles.star: every subtomogram with its pose relative to the template, s_a and s_b of pair i side by side.
    order = np.stack([np.arange(plan.n), np.arange(plan.n)], axis=1).ravel()
    rotations = np.stack([truth.rotations_a, truth.rotations], axis=1).reshape(-1, 3, 3)
    shifts = np.stack([truth.shifts_a, truth.shifts], axis=1).reshape(-1, 3)
    columns = {
        "rlnImageName": [p for pair in zip(paths_a, paths_b) for p in pair],
        "rlnCtfImage": weights * plan.n,
    }
    columns.update(_pose_columns(rotations, shifts, plan.voxel_size))
    columns.update(_label_columns(plan, truth.classes[order], halves[order]))
    write_star(ParticleTable(pd.DataFrame(columns), _optics(plan)), out_dir / "particles.star")

    rotations, shifts = relative_transform(truth.rotations_a, truth.shifts_a, truth.rotations, truth.shifts)
    columns = {
        "rlnImageName": paths_b,
        "gumPairReference": paths_a,
        "rlnCtfImage": [weights[1]] * plan.n,
        "gumPairReferenceWeight": [weights[0]] * plan.n,
    }
    columns.update(_pose_columns(rotations, shifts, plan.voxel_size))
    columns.update(_label_columns(plan, truth.classes, halves))
    write_star(ParticleTable(pd.DataFrame(columns), _optics(plan)), out_dir / "pairs.star")


def readme_text(plan: SimulationPlan) -> str:
    """The README written beside the data: command, settings, files and conventions."""
    from gumalign import __version__
    from gumalign.simulate.templates import BUILTIN_PREFIX, declared_symmetries

    p = plan.params
    lines = [
        "Simulated subtomograms written by gumalign simulate",
        "",
        "Command:",
        f"    {plan.command}" if plan.command else "    (called from Python)",
        "",
        f"gumalign {__version__}; seed {plan.seed}; the same command reproduces these files byte for byte.",
        "",
        "Settings:",
        f"    {plan.n} {'pairs' if plan.pairs else 'particles'}, box {plan.box}, voxel size {plan.voxel_size:g} Å",
        f"    SNR {'none (noise-free)' if plan.snr is None else f'{plan.snr:g}'} (var(signal) / var(noise) per "
        "subtomogram; the seed's c / (1 - c))",
        f"    tilts {plan.tilt_range[0]:g}..{plan.tilt_range[1]:g} deg in {plan.tilt_step:g} deg steps about y"
        + ("; s_a -90..90 (no wedge)" if plan.pairs else ""),
        f"    random rotations (uniform), shifts uniform within +-{plan.max_shift:g} voxels per axis",
        f"    CTF {'on' if p.ctf else 'off'}: {p.voltage_kv:g} kV, defocus {p.defocus_um:g} um (negative = "
        f"underfocus), Cs {p.cs_mm:g} mm, amplitude contrast {p.amplitude_contrast:g}, envelope sigma "
        f"{p.envelope_sigma:g} x Nyquist",
        f"    MTF {'on' if p.mtf else 'off'}: Gaussian roll-off, sigma {p.mtf_sigma:g} x Nyquist",
        f"    noise: {p.projection_noise_fraction:g} of the power enters before the CTF, the rest is detector noise",
        "    weighted (Ram-Lak) back-projection"
        + ("; missing-wedge Fourier coefficients set to zero" if p.mask_missing_wedge else ""),
        "",
        "Structures:",
    ]
    symmetries = declared_symmetries()
    for k, (structure, ref) in enumerate(zip(plan.structures, reference_names(plan))):
        label = f"class {k + 1}: " if len(plan.structures) > 1 else ""
        group = symmetries.get(structure.name) if structure.source.startswith(BUILTIN_PREFIX) else None
        frame = f" ({group}, in RELION's frame: align/average with --sym {group})" if group else ""
        lines.append(f"    {label}{structure.name} from {structure.source} -> {ref}{frame}")
    lines += [
        "",
        "Files:",
        "    particles.star   RELION 3.1 particle list with the ground truth (rlnAngleRot/Tilt/Psi, "
        "rlnOriginX/Y/ZAngst),",
        "                     rlnRandomSubset 1/2, gumStructureName"
        + (", rlnClassNumber" if len(plan.structures) > 1 else ""),
    ]
    if plan.pairs:
        lines += [
            "    pairs.star       one row per pair: rlnImageName = s_b (wedge), gumPairReference = s_a (no wedge),",
            "                     rlnCtfImage / gumPairReferenceWeight their weights, and the relative transform:",
            "                     s_b = shift(rotate(s_a, A), -origin) before imaging",
            "    pairs/           pair_NNNNNN_a.mrc (s_a) and pair_NNNNNN_b.mrc (s_b)",
            "    weight_a.mrc     observed-region weight of s_a (all ones); weight_b.mrc that of s_b",
        ]
    else:
        lines += [
            "    particles/       one MRC per particle",
            "    weight.mrc       observed-region weight shared by all particles (N^3 centred, 0/1)"
            + ("" if plan.ctf_images else "; rlnCtfImage"),
        ]
        if plan.ctf_images:
            lines += [
                "    ctf/             each particle's 3D CTF (rlnCtfImage): observed region x CTF x MTF, signed,",
                "                     RELION's FFTW half layout (N/2+1 x N x N voxels, x x y x z); data not",
                "                     CTF-premultiplied (rlnCtfDataAreCtfPremultiplied 0)",
            ]
    lines += [
        "    reference*.mrc   noise-free template(s) the particles were made from",
        "",
        "Conventions: volumes [z, y, x]; RELION's ZYZ Euler angles; particle = shift(rotate(template, A), -origin);",
        "particles keep the template's contrast (protein positive, as a contrast-inverted tomogram).",
        "",
    ]
    return "\n".join(lines)
