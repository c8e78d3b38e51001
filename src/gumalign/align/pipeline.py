"""Align a STAR file's particles to a reference, streaming, resumable, with RELION-compatible output.

Results of finished batches are appended to ``<out>.partial`` (one line per particle, flushed and synced), so a
killed run continues with ``resume=True`` from what it wrote. The STAR file itself is written once, atomically, at
the end, and the partial file is then removed.

The partial file's first line is the run's key: every option that changes the results and a fingerprint (size and
modification time) of every input file (reference, STAR, particle images, weights, model); a partial file with
another key is refused. Values are stored as Python's shortest exact repr of each float64, so a resumed run writes
the same STAR, bit for bit, as an uninterrupted one. A resumed run keeps whole batches only (a batch the kill cut is
redone whole), so every batch is the one an uninterrupted run forms: the aligners' numbers depend, at rounding
level, on the other particles of their batch.

Split runs (gumalign.distributed): shard I of N takes the rows ``shard_rows(n, I - 1, N, batch size)`` and keeps
its results in ``<out>.shardIofN.partial`` (the key then also names the shard and, for ``gumalign merge``, the
output and the working folder).
- ``--shard I/N`` (no torchrun): the finished partial file is renamed ``<out>.shardIofN``, the shard's result;
  :func:`merge_shards` writes the STAR of all N, the same bytes as one run.
- torchrun, rank R of N: rank R works as shard R+1/N; the results are gathered on every rank, rank 0 writes the
  STAR once, atomically, and each rank then removes its partial file (kept when that write fails). ``resume`` works
  per rank, from each rank's own partial file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from gumalign.align.base import AlignmentResult
from gumalign.align.spec import AlignerSpec
from gumalign.align.particles import check_images_exist, check_pixel_size, iter_particle_batches, weight_source_for
from gumalign.distributed import SHARD_UNDER_TORCHRUN, SINGLE, Shard, World, check_shard_set
from gumalign.errors import GumalignError
from gumalign.io.atomic import refuse_overwriting_inputs
from gumalign.io.mrc import Volume
from gumalign.io.star import ParticleTable, write_star

SCORE_COLUMN = "gumAlignScore"
METHOD_COLUMN = "gumAlignMethod"


def partial_path(out: Path, shard: Shard | None = None) -> Path:
    """``<out>.partial``, or ``<out>.shardIofN.partial`` for one shard of a split run."""
    out = Path(out)
    return out.with_name(out.name + (f".shard{shard.label}" if shard is not None else "") + ".partial")


def shard_result_path(out: Path, shard: Shard) -> Path:
    """``<out>.shardIofN``: a finished ``--shard I/N`` run's results (its complete partial file, renamed)."""
    out = Path(out)
    return out.with_name(out.name + f".shard{shard.label}")


def files_fingerprint(paths: list[Path]) -> str:
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
        "inputs": files_fingerprint(inputs),
    }
    return json.loads(json.dumps(key))  # the form it takes when read back


_KEY_LABELS = {"inputs": "input files (reference, STAR, particles, weights or model changed since)"}


def _read_partial(path: Path, key: dict | None, n: int, rows: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """{row: 13 floats (A row-major, shift xyz, score)} from a partial file of the same run.

    A last line without its newline was cut by the kill and is dropped (it is recomputed); any other malformed line
    is an error naming the line. ``key`` None accepts any key (read_header() gives it); ``rows``: the rows the file
    may hold (a shard's), default 0..n-1.
    """
    allowed = None if rows is None else set(int(r) for r in rows)
    text = path.read_text()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:
        lines.pop()  # no newline at the end: the write was cut short
    if not lines:
        return {}
    header = _parse_header(lines[0], path, "; delete it to start over")
    if key is not None and header != key:
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
            if not 0 <= row < n or row in done or (allowed is not None and row not in allowed):
                raise ValueError(f"row {row} is out of range or repeated")
            if not np.all(np.isfinite(values)):
                raise ValueError("non-finite values")
        except ValueError as exc:
            raise GumalignError(f"{path}: line {number} is corrupt ({exc}); delete the file to start over") from None
        done[row] = values
    return done


def _parse_header(line: str, path: Path, advice: str = "") -> dict:
    """The run key a partial or shard-result file starts with (its first line, a JSON object)."""
    try:
        header = json.loads(line)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict):
        raise GumalignError(f"{path}: not a gumalign partial-results file{advice}")
    return header


def read_header(path: Path) -> dict:
    """The key (first line) of a partial or shard-result file."""
    try:
        with open(path) as handle:
            first = handle.readline()
    except UnicodeDecodeError:
        first = ""
    return _parse_header(first, path)


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


def _rewrite_partial(path: Path, key: dict, done: dict[int, np.ndarray]) -> None:
    """Replace a partial file, atomically, by ``key`` and the lines of ``done`` (rows in order)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(json.dumps(key) + "\n")
        rows = np.array(sorted(done), dtype=int)
        if len(rows):
            _append_partial(handle, rows, np.stack([done[int(r)] for r in rows]))
        else:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)


def _whole_batches(done: dict[int, np.ndarray], rows: np.ndarray, batch_size: int) -> dict[int, np.ndarray]:
    """The entries of ``done`` whose batch (consecutive ``batch_size`` rows of ``rows``) is complete."""
    kept = {}
    for start in range(0, len(rows), batch_size):
        batch = [int(r) for r in rows[start : start + batch_size]]
        if all(r in done for r in batch):
            kept.update((r, done[r]) for r in batch)
    return kept


@dataclass
class _Prepared:
    """What align_table checked and found before any work: the box, pixel sizes, images, weights, input files."""

    box: int
    pixel_sizes: np.ndarray
    paths: list[Path]
    weights: object  # gumalign.align.particles.WeightSource
    inputs: list[Path]


def _prepare(table: ParticleTable, reference: Volume, spec: AlignerSpec, tilt_range, reference_name: str) -> _Prepared:
    """The checks of align_table (and of merge_shards), before anything is written."""
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
    return _Prepared(box, pixel_sizes, paths, weights, inputs)


def _aligned(table: ParticleTable, values: np.ndarray, pixel_sizes: np.ndarray, label: str) -> ParticleTable:
    """``table`` with the alignment of ``values`` ((n, 13): A row-major, shift xyz px, score) in RELION's meaning."""
    rotations = values[:, :9].reshape(-1, 3, 3)
    shifts_px = values[:, 9:12]
    scores = values[:, 12]
    # Aligner shift s means particle ≈ shift(rotate(ref, A), s); RELION's origin is -s (in Å here).
    origins_angst = -shifts_px * pixel_sizes[:, None]
    return table.with_alignment(rotations, origins_angst, **{SCORE_COLUMN: scores, METHOD_COLUMN: label})


def _write(aligned: ParticleTable, out: Path, box: int, voxel_size: float, kept: list[Path], rerun: str) -> None:
    """Write the STAR; a failure (a full disk at the very end) names the files that keep the work."""
    try:
        write_star(aligned, out, box_size=box, default_pixel_size=voxel_size or None)
    except OSError as exc:
        raise GumalignError(
            f"{exc.filename or out}: {exc.strerror or exc}; the {len(aligned)} aligned particles are kept in "
            f"{', '.join(map(str, kept))}: fix that and {rerun}"
        ) from None


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
    shard: Shard | None = None,
    world: World = SINGLE,
    record: dict | None = None,
) -> ParticleTable:
    """Align every particle of ``table`` to ``reference`` and write the aligned STAR to ``out``.

    Args:
        spec: the aligner, on a resolved device (AlignerSpec.with_device); its batch size sets the batches read.
        tilt_range: the wedge of particles without rlnCtfImage.
        shard: align only this shard's rows and write its result file (:func:`shard_result_path`), not the STAR.
        world: the ranks of a torchrun run (gumalign.distributed.init_if_launched): each aligns its shard, rank 0
            writes the STAR. Not together with ``shard``.
        record: more entries for a split run's key (the ops layer's: output, working folder, STAR flavour), which
            :func:`merge_shards` reads back.

    Particles with angles (and origins) in the STAR file pass them to the aligner as its prior: 'local' starts
    there; the global methods ignore it.

    Returns:
        The aligned table (angles and origins in RELION's meaning, plus gumAlignScore and gumAlignMethod): all
        particles (on every rank of a world), or with ``shard`` the shard's particles only.

    Raises:
        GumalignError: box or voxel size mismatch, a missing image (before anything is written), unknown method.
    """
    if shard is not None and world.size > 1:
        raise GumalignError(SHARD_UNDER_TORCHRUN)
    prepared = _prepare(table, reference, spec, tilt_range, reference_name)
    box, paths, weights = prepared.box, prepared.paths, prepared.weights
    batch_size = spec.effective_batch_size
    n = len(table)
    part = world.shard if world.size > 1 else shard
    rows_mine = part.rows(n, batch_size) if part is not None else np.arange(n)
    ppath = partial_path(out, part)
    result_path = shard_result_path(out, shard) if shard is not None else None
    refuse_overwriting_inputs([out, ppath] + ([result_path] if result_path else []), prepared.inputs)

    key = _run_key(table, reference_name, spec, tilt_range, prepared.inputs)
    if part is not None:
        key = json.loads(json.dumps({**key, "shard": [part.index + 1, part.count], **(record or {})}))
    prior = _prior(table, reference.voxel_size if reference.voxel_size > 0 else None)
    done: dict[int, np.ndarray] = {}
    source = ppath if ppath.exists() else result_path if result_path is not None and result_path.exists() else None
    resumed = resume and source is not None
    if resumed:
        read = _read_partial(source, key, n, rows_mine)
        done = _whole_batches(read, rows_mine, batch_size)
        if source != ppath or len(done) != len(read):
            _rewrite_partial(ppath, key, done)  # whole batches only, so the batches redone are the straight run's
        else:
            _drop_cut_line(ppath)
    progress(len(done))
    todo = np.array([r for r in rows_mine if int(r) not in done], dtype=int)
    out.parent.mkdir(parents=True, exist_ok=True)
    if len(todo) or not resumed:
        aligner = spec.build()
        ref_batch = reference.data[None]
        ref_weight = np.ones((1, box, box, box), dtype=np.float32)
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

    mine = np.stack([done[int(r)] for r in rows_mine]) if len(rows_mine) else np.zeros((0, 13))
    if shard is not None:
        os.replace(ppath, result_path)  # the shard's result, complete: gumalign merge reads it
        return _aligned(table.subset(rows_mine), mine, prepared.pixel_sizes[rows_mine], spec.label)
    values = world.gather_shards(mine, n, batch_size) if world.size > 1 else mine
    aligned = _aligned(table, values, prepared.pixel_sizes, spec.label)
    failure = None
    if world.is_main:
        kept = [partial_path(out, Shard(r, world.size)) for r in range(world.size)] if world.size > 1 else [ppath]
        try:
            _write(aligned, out, box, reference.voxel_size, kept, "rerun with --continue")
        except GumalignError as exc:
            failure = exc
    if world.any(failure is not None):  # every rank keeps its partial file when rank 0 could not write
        if failure is not None:
            raise failure
        raise GumalignError(f"rank 0 could not write {out}; this rank's results are kept in {ppath} (--continue)")
    ppath.unlink(missing_ok=True)
    return aligned


def shard_results(paths: list[Path]) -> tuple[dict, np.ndarray]:
    """The common key and the (n, 13) values of the N shard-result files of one split run, checked complete.

    Raises:
        GumalignError: a file that is not a shard result, shards of different runs, a missing or repeated shard, or a
            shard without all its rows (an unfinished shard: rerun it, with --continue).
    """
    if not paths:
        raise GumalignError("no shard files to merge")
    headers = {Path(p): read_header(Path(p)) for p in paths}
    for path, header in headers.items():
        if "shard" not in header:
            raise GumalignError(f"{path}: not a shard result of `gumalign align --shard`")
    common, count, by_index = check_shard_set(headers, "align", _KEY_LABELS)
    n, batch_size = int(common["n"]), int(common["batch_size"])
    values = np.zeros((n, 13))
    for index in range(1, count + 1):
        path = by_index[index]
        rows = Shard(index - 1, count).rows(n, batch_size)
        done = _read_partial(path, None, n, rows)
        if len(done) != len(rows):
            raise GumalignError(
                f"{path}: holds {len(done)} of its shard's {len(rows)} particles; rerun shard {index}/{count} "
                "with --continue"
            )
        for r in rows:
            values[r] = done[int(r)]
    return common, values


def merge_shards(
    table: ParticleTable, reference: Volume, out: Path, key: dict, values: np.ndarray, spec: AlignerSpec,
    tilt_range, reference_name: str, shard_files: list[Path],
) -> ParticleTable:
    """Write the STAR of a split run from its shards (:func:`shard_results`): the same bytes as one run's.

    ``table``, ``reference``, ``spec``, ``tilt_range`` and ``reference_name`` are the run's, read again; the input
    files' fingerprint must still be the one the shards recorded.
    """
    prepared = _prepare(table, reference, spec, tilt_range, reference_name)
    expected = _run_key(table, reference_name, spec, tilt_range, prepared.inputs)
    changed = sorted(k for k in expected if key.get(k) != expected[k])
    if changed:
        what = ", ".join(_KEY_LABELS.get(k, k) for k in changed)
        raise GumalignError(f"{out}: the shards were made with different {what}; rerun them")
    aligned = _aligned(table, values, prepared.pixel_sizes, spec.label)
    _write(aligned, out, prepared.box, reference.voxel_size, shard_files, "merge again")
    return aligned
