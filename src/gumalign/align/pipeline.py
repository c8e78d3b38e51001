"""Align a STAR file's particles to a reference, streaming, resumable, with RELION-compatible output.

Results of finished batches are appended to ``<out>.partial`` (one line per particle, flushed and synced), so a
killed run continues with ``resume=True`` from what it wrote. The STAR file itself is written once, atomically, at
the end, and the partial file is then removed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from gumalign.align.base import AlignmentResult
from gumalign.align.particles import check_images_exist, iter_particle_batches, weight_source_for
from gumalign.errors import GumalignError
from gumalign.io.mrc import Volume
from gumalign.io.star import ParticleTable, write_star

SCORE_COLUMN = "gumAlignScore"
METHOD_COLUMN = "gumAlignMethod"


@dataclass
class AlignOptions:
    """What `gumalign align` was asked to do (see the CLI for meanings)."""

    method: str = "gumnet"
    refine: bool = False
    model: str | None = None
    batch_size: int = 32
    device: str = "auto"
    tilt_range: tuple[float, float] | None = None
    max_shift: float | None = None
    max_frequency: float | None = None


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _run_key(table: ParticleTable, reference_name: str, options: AlignOptions) -> dict:
    return {
        "particles": str(table.name),
        "n": len(table),
        "reference": reference_name,
        "method": options.method,
        "refine": options.refine,
        "model": options.model,
    }


def _read_partial(path: Path, key: dict) -> dict[int, np.ndarray]:
    """{row: 13 floats (A row-major, shift xyz, score)} from a partial file of the same run."""
    lines = path.read_text().splitlines()
    if not lines:
        return {}
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        raise GumalignError(f"{path}: not a gumalign partial-results file; delete it to start over") from None
    if header != key:
        raise GumalignError(f"{path}: belongs to a different run ({header}); delete it or drop --continue")
    done = {}
    for line in lines[1:]:
        parts = line.split()
        if len(parts) != 14:  # a line cut short by the kill: ignore, it is recomputed
            continue
        done[int(parts[0])] = np.array([float(v) for v in parts[1:]])
    return done


def _append_partial(handle, rows: np.ndarray, result: AlignmentResult) -> None:
    for i, row in enumerate(rows):
        values = np.concatenate([result.rotations[i].ravel(), result.shifts[i], [result.scores[i]]])
        handle.write(f"{int(row)} " + " ".join(f"{v:.9g}" for v in values) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def _check_box(path: Path, box: int) -> None:
    """Fail before any output if the particles' box differs from the reference's (first particle's header)."""
    import mrcfile

    try:
        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            shape = (int(mrc.header.nx), int(mrc.header.ny), int(mrc.header.nz))
    except (ValueError, OSError) as exc:
        raise GumalignError(f"{path}: not a readable MRC file ({exc})") from None
    if shape != (box,) * 3:
        raise GumalignError(f"{path}: box {shape} differs from the reference's {box}³")


def align_table(
    table: ParticleTable,
    reference: Volume,
    out: Path,
    options: AlignOptions,
    *,
    reference_name: str = "",
    resume: bool = False,
    progress: Callable[[int], None] = lambda n: None,
) -> ParticleTable:
    """Align every particle of ``table`` to ``reference`` and write the aligned STAR to ``out``.

    Returns:
        The aligned table (angles and origins in RELION's meaning, plus gumAlignScore and gumAlignMethod).

    Raises:
        GumalignError: box or voxel size mismatch, a missing image (before anything is written), unknown method.
    """
    from gumalign.align.registry import get_aligner
    from gumalign.devices import resolve_device

    box = reference.data.shape[0]
    if reference.data.shape != (box, box, box):
        raise GumalignError(f"{reference_name}: the reference must be a cube, got {reference.data.shape[::-1]}")
    pixel_sizes = table.pixel_sizes(default=reference.voxel_size if reference.voxel_size > 0 else None)
    if reference.voxel_size > 0 and not np.allclose(pixel_sizes, reference.voxel_size, rtol=0.01):
        raise GumalignError(
            f"{table.name}: pixel size {pixel_sizes[0]:.4g} Å differs from the reference's {reference.voxel_size:.4g} Å"
        )
    paths = table.image_paths()
    check_images_exist(paths, table.name)
    if len(paths):
        _check_box(paths[0], box)
    device = resolve_device(options.device)
    aligner = get_aligner(
        options.method, refine=options.refine, device=str(device), batch_size=options.batch_size,
        max_shift=options.max_shift,
        **({"max_frequency": options.max_frequency} if options.refine else {}),  # --max-frequency limits --refine
        **({"model": options.model} if options.model else {}),
    )
    weights = weight_source_for(table, box, options.tilt_range)
    ref_batch = reference.data[None]
    ref_weight = np.ones((1, box, box, box), dtype=np.float32)

    key = _run_key(table, reference_name, options)
    ppath = partial_path(out)
    done: dict[int, np.ndarray] = {}
    if resume and ppath.exists():
        done = _read_partial(ppath, key)
    elif ppath.exists():
        ppath.unlink()
    progress(len(done))
    todo = np.array([r for r in range(len(table)) if r not in done], dtype=int)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(ppath, "a") as handle:
        if not done:
            handle.write(json.dumps(key) + "\n")
        for rows, volumes in iter_particle_batches(paths, todo, options.batch_size, box):
            part_w = weights.for_rows(rows)
            result = aligner.align(ref_batch, ref_weight, volumes, part_w)
            _append_partial(handle, rows, result)
            for i, row in enumerate(rows):
                done[int(row)] = np.concatenate([result.rotations[i].ravel(), result.shifts[i], [result.scores[i]]])
            progress(len(rows))

    values = np.stack([done[r] for r in range(len(table))])
    rotations = values[:, :9].reshape(-1, 3, 3)
    shifts_px = values[:, 9:12]
    scores = values[:, 12]
    method_label = options.method + ("+refine" if options.refine else "")
    # Aligner shift s means particle ≈ shift(rotate(ref, A), s); RELION's origin is -s (in Å here).
    aligned = table.with_alignment(
        rotations, -shifts_px * pixel_sizes[:, None], **{SCORE_COLUMN: scores, METHOD_COLUMN: method_label}
    )
    write_star(aligned, out, box_size=box, default_pixel_size=reference.voxel_size or None)
    ppath.unlink(missing_ok=True)
    return aligned
