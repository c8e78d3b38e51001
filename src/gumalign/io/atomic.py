"""Atomic output: write to a temporary file in the target's folder, then rename over the target.

A reader never sees a half-written file, and a failure or Ctrl-C leaves the previous file (or none) in place.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from gumalign.errors import GumalignError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``, on failure delete it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp files are owner-only; give the output the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


class PartialOutputError(OSError):
    """Renaming a group of finished outputs into place failed part-way; ``kept`` names those already in place."""

    def __init__(self, cause: OSError, kept: list[Path], missing: list[Path]):
        super().__init__(cause.errno, cause.strerror, cause.filename)
        self.kept, self.missing = kept, missing


@contextlib.contextmanager
def atomic_outputs(targets: list[str | os.PathLike]) -> Iterator[dict[Path, Path]]:
    """All-or-nothing output of several files: yield {target: temporary path with the target's name}.

    The temporary paths lie in a hidden folder beside each target (the same file system, so the final renames are
    cheap and cannot run out of space). When the block finishes, every file is renamed onto its target; when it
    raises (a full disk, Ctrl-C, an error), the temporary folders are removed and no target is touched.

    Raises:
        PartialOutputError: a rename failed part-way (rare: a target replaced by a folder meanwhile); the files
            already in place are named in the exception and the others removed.
    """
    import shutil

    targets = [Path(t) for t in targets]
    if len({os.path.abspath(t) for t in targets}) != len(targets):
        raise ValueError(f"atomic_outputs: duplicate targets in {targets}")
    folders: dict[Path, Path] = {}
    mapping: dict[Path, Path] = {}
    try:
        for target in targets:
            parent = target.parent
            if parent not in folders:
                parent.mkdir(parents=True, exist_ok=True)
                folders[parent] = Path(tempfile.mkdtemp(prefix=".gumalign-", suffix=".tmp", dir=parent))
            mapping[target] = folders[parent] / target.name
        yield mapping
        missing = [t for t, tmp in mapping.items() if not tmp.is_file()]
        if missing:
            raise RuntimeError(f"atomic_outputs: nothing was written for {missing}")
        mask = 0o666 & ~_current_umask()
        kept: list[Path] = []
        for target, tmp in mapping.items():
            try:
                os.chmod(tmp, mask)
                os.replace(tmp, target)
            except OSError as exc:
                raise PartialOutputError(exc, kept, [t for t in targets if t not in kept]) from exc
            kept.append(target)
    finally:
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)


def _same_file_key(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def refuse_overwriting_inputs(outputs, inputs) -> None:
    """Raise a GumalignError when any output would replace one of the inputs (the same file through links, '..' or
    another spelling), before any work is done.

    Args:
        outputs: the paths a command is about to write (``--out`` and every file written beside it).
        inputs: every file it reads (reference, STAR, particle images, weights, masks, models).
    """
    by_key, by_name = {}, {}
    for path in inputs:
        if path is None:
            continue
        path = Path(path)
        key = _same_file_key(path)
        if key is not None:
            by_key.setdefault(key, path)
        by_name.setdefault(os.path.realpath(path), path)
    for out in outputs:
        out = Path(out)
        key = _same_file_key(out)
        hit = by_key.get(key) if key is not None else None
        if hit is None:
            hit = by_name.get(os.path.realpath(out))
        if hit is not None:
            raise GumalignError(f"{out}: this output would overwrite the input file {hit}; choose another --out")


def check_output_file(path: Path, option: str = "--out") -> None:
    """Refuse, before any work, an output file path that is a folder, lies under a file, or in a folder that cannot
    be written (read-only, permission denied)."""
    path = Path(path)
    if path.is_dir():
        raise GumalignError(f"{option} {path}: is a folder; give a file name")
    _check_writable_folder(path.parent, option, path)


def check_output_folder(path: Path, option: str = "--out") -> None:
    """Refuse, before any work, an output folder that is a file or cannot be created or written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise GumalignError(f"{option} {path}: exists and is not a folder")
    _check_writable_folder(path if path.exists() else path.parent, option, path)


def _check_writable_folder(folder: Path, option: str, target: Path) -> None:
    folder = Path(folder) if str(folder) else Path(".")
    existing = folder
    while not existing.exists():  # the folders still to be created: check the nearest that exists
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise GumalignError(f"{option} {target}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GumalignError(f"{option} {target}: cannot write into {existing} (read-only or permission denied)")
    if existing != folder and existing.exists():
        # A mistyped path should not grow a tree of folders silently (issue 17): as cp and RELION, the folder must
        # exist; only an output folder itself (train, simulate) is created.
        raise GumalignError(f"{option} {target}: folder {folder} does not exist (create it with mkdir -p, or check "
                            "the path)")
