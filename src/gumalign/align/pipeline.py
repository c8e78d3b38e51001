"""Align a STAR file's particles to a reference, streaming, resumable, with RELION-compatible output.

Results of finished batches are appended to ``<out>.partial`` (one line per particle, flushed and synced), so a
killed run continues with ``resume=True`` from what it wrote. The STAR file itself is written once, atomically, at
the end, and the partial file is then removed.

The partial file's first line is the run's key: every option that changes the results and a fingerprint (size and
modification time) of every input file (reference, STAR, particle images, weights, model); a partial file with
another key is refused. Values are stored as Python's shortest exact repr of each float64, so a resumed run writes
the same STAR, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from gumalign.align.base import AlignmentResult
from gumalign.align.spec import AlignerSpec
from gumalign.align.particles import check_images_exist, check_pixel_size, iter_particle_batches, weight_source_for
from gumalign.errors import GumalignError
from gumalign.io.atomic import refuse_overwriting_inputs
from gumalign.io.mrc import Volume
from gumalign.io.star import ParticleTable, write_star

SCORE_COLUMN = "gumAlignScore"
METHOD_COLUMN = "gumAlignMethod"


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _fingerprint(paths: list[Path]) -> str:
    """sha256 over (path, size, mtime in ns) of each file: any replaced or edited input changes it."""
    h = hashlib.sha256()
    for path in paths:
        try:
            st = Path(path).stat()
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{path}\0missing\n".encode())
    return h.hexdigest()


def _run_key(table: ParticleTable, reference_name: str, spec: AlignerSpec, tilt_range, inputs: list[Path]) -> dict:
    """What must match for a partial file to be continued: the options that change results and the input files.

    ``spec`` is on its resolved device (a CPU run is not continued on a GPU: the floats would differ)."""
    key = {
        "particles": str(table.name),
        "n": len(table),
        "reference": reference_name,
        **spec.record(),
        "batch_size": spec.effective_batch_size,
        "tilt_range": list(tilt_range) if tilt_range else None,
        "inputs": _fingerprint(inputs),
    }
    return json.loads(json.dumps(key))  # the form it takes when read back


_KEY_LABELS = {"inputs": "input files (reference, STAR, particles, weights or model changed since)"}


def _read_partial(path: Path, key: dict, n: int) -> dict[int, np.ndarray]:
    """{row: 13 floats (A row-major, shift xyz, score)} from a partial file of the same run.

    A last line without its newline was cut by the kill and is dropped (it is recomputed); any other malformed line
    is an error naming the line.
    """
    text = path.read_text()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:
        lines.pop()  # no newline at the end: the write was cut short
    if not lines:
        return {}
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict):
        raise GumalignError(f"{path}: not a gumalign partial-results file; delete it to start over")
    if header != key:
        changed = sorted(k for k in set(header) | set(key) if header.get(k) != key.get(k))
        what = ", ".join(_KEY_LABELS.get(k, k) for k in changed)
        raise GumalignError(f"{path}: belongs to a run with different {what}; delete it or drop --continue")
    done = {}
    for number, line in enumerate(lines[1:], start=2):
        parts = line.split()
        try:
            if len(parts) != 14:
                raise ValueError(f"{len(parts)} fields instead of 14")
            row = int(parts[0])
            values = np.array([float(v) for v in parts[1:]])
            if not 0 <= row < n or row in done:
                raise ValueError(f"row {row} is out of range or repeated")
            if not np.all(np.isfinite(values)):
                raise ValueError("non-finite values")
        except ValueError as exc:
            raise GumalignError(f"{path}: line {number} is corrupt ({exc}); delete the file to start over") from None
        done[row] = values
    return done


def _append_partial(handle, rows: np.ndarray, values: np.ndarray) -> None:
    for row, line in zip(rows, values):
        handle.write(f"{int(row)} " + " ".join(repr(float(v)) for v in line) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def _result_values(result: AlignmentResult, rows: np.ndarray, paths: list[Path]) -> np.ndarray:
    """(B, 13) float64: A row-major, shift xyz, score; a non-finite result is an error naming the particle."""
    values = np.concatenate(
        [np.asarray(result.rotations, np.float64).reshape(len(rows), 9), np.asarray(result.shifts, np.float64),
         np.asarray(result.scores, np.float64).reshape(len(rows), 1)], axis=1,
    )
    bad = ~np.all(np.isfinite(values), axis=1)
    if bad.any():
        row = int(rows[np.argmax(bad)])
        raise GumalignError(
            f"{paths[row]}: particle {row + 1}: alignment gave a non-finite result (an empty or constant volume?); "
            "remove it from the STAR file"
        )
    return values


def _drop_cut_line(path: Path) -> None:
    """Truncate a partial file after its last newline, so appended lines never join a line cut by a kill."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(end)


def _prior(table: ParticleTable, default_pixel_size: float | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(rotations (n, 3, 3), aligner shifts (n, 3) px = -origins) of a table with angles, else None."""
    if not table.has_angles():
        return None
    return table.matrices(), -table.origins_px(default_pixel_size)


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
    spec: AlignerSpec,
    *,
    tilt_range: tuple[float, float] | None = None,
    reference_name: str = "",
    resume: bool = False,
    progress: Callable[[int], None] = lambda n: None,
) -> ParticleTable:
    """Align every particle of ``table`` to ``reference`` and write the aligned STAR to ``out``.

    Args:
        spec: the aligner, on a resolved device (AlignerSpec.with_device); its batch size sets the batches read.
        tilt_range: the wedge of particles without rlnCtfImage.

    Particles with angles (and origins) in the STAR file pass them to the aligner as its prior: 'local' starts
    there; the global methods ignore it.

    Returns:
        The aligned table (angles and origins in RELION's meaning, plus gumAlignScore and gumAlignMethod).

    Raises:
        GumalignError: box or voxel size mismatch, a missing image (before anything is written), unknown method.
    """
    if len(table) == 0:
        raise GumalignError(f"{table.name}: no particles to align")
    box = reference.data.shape[0]
    if reference.data.shape != (box, box, box):
        raise GumalignError(f"{reference_name}: the reference must be a cube, got {reference.data.shape[::-1]}")
    pixel_sizes = table.pixel_sizes(default=reference.voxel_size if reference.voxel_size > 0 else None)
    check_pixel_size(table, reference, reference_name)
    paths = table.image_paths()
    check_images_exist(paths, table.name)
    _check_box(paths[0], box)
    weights = weight_source_for(table, box, tilt_range)
    inputs = [Path(reference_name), Path(str(table.name)), *paths, *(weights.paths or [])]
    if spec.method == "gumnet":
        from gumalign.weights import DEFAULT_MODEL, resolve_model

        inputs.append(resolve_model(spec.model or DEFAULT_MODEL)[0])
    ppath = partial_path(out)
    refuse_overwriting_inputs([out, ppath], inputs)

    aligner = spec.build()
    batch_size = spec.effective_batch_size
    ref_batch = reference.data[None]
    ref_weight = np.ones((1, box, box, box), dtype=np.float32)

    key = _run_key(table, reference_name, spec, tilt_range, inputs)
    prior = _prior(table, reference.voxel_size if reference.voxel_size > 0 else None)
    done: dict[int, np.ndarray] = {}
    resumed = resume and ppath.exists()
    if resumed:
        done = _read_partial(ppath, key, len(table))
        _drop_cut_line(ppath)
    progress(len(done))
    todo = np.array([r for r in range(len(table)) if r not in done], dtype=int)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(ppath, "a" if resumed else "w") as handle:
        if not resumed:
            handle.write(json.dumps(key) + "\n")
        try:
            for rows, volumes in iter_particle_batches(paths, todo, batch_size, box):
                part_w = weights.for_rows(rows)
                start = None if prior is None else AlignmentResult(prior[0][rows], prior[1][rows], np.zeros(len(rows)))
                result = aligner.align(ref_batch, ref_weight, volumes, part_w, prior=start)
                values = _result_values(result, rows, paths)
                _append_partial(handle, rows, values)
                for row, line in zip(rows, values):
                    done[int(row)] = line
                progress(len(rows))
        except GumalignError:
            # Bad input found on the way (a particle of another box, one that aligns to NaN): rerunning meets it
            # again, so nothing is kept for --continue.
            handle.close()
            ppath.unlink(missing_ok=True)
            raise

    values = np.stack([done[r] for r in range(len(table))])
    rotations = values[:, :9].reshape(-1, 3, 3)
    shifts_px = values[:, 9:12]
    scores = values[:, 12]
    # Aligner shift s means particle ≈ shift(rotate(ref, A), s); RELION's origin is -s (in Å here).
    origins_angst = -shifts_px * pixel_sizes[:, None]
    aligned = table.with_alignment(rotations, origins_angst, **{SCORE_COLUMN: scores, METHOD_COLUMN: spec.label})
    try:
        write_star(aligned, out, box_size=box, default_pixel_size=reference.voxel_size or None)
    except OSError as exc:  # a full disk at the very end: the work is not lost
        raise GumalignError(
            f"{exc.filename or out}: {exc.strerror or exc}; the {len(table)} aligned particles are kept in {ppath}: "
            "fix that and rerun with --continue"
        ) from None
    ppath.unlink(missing_ok=True)
    return aligned
