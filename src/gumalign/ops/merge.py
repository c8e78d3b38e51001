"""The `merge` operation: the outputs of one run from the N shards of a split one (SLURM arrays, gumalign.distributed).

    from gumalign.ops import Runtime
    from gumalign.ops.merge import MergeRequest, merge

    merge(MergeRequest(shards=(Path("aligned.star.shard1of2"), Path("aligned.star.shard2of2"))), Runtime())
    merge(MergeRequest(out=Path("avg.mrc")))   # finds avg_shard*of*.npz beside it

- `align --shard I/N` results (``<out>.shardIofN``): the STAR file the run names, byte for byte the one a single
  `align` writes. The particles STAR and the reference are read again from the paths the shards recorded (relative
  ones from the folder the shards ran in), and their fingerprint must be the one the shards recorded.
- `average --shard I/N` sums (``<out>_shardIofN.npz``): added in shard order, then the full map, half maps and PNG
  of `average` (equal to one run's to float64 rounding of the summation order).

Every shard 1..N of one run must be there exactly once; a missing or unfinished one is named, to be rerun alone. The
shard files are kept (delete them once the merged output is checked).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from gumalign.errors import GumalignError
from gumalign.ops.runtime import Runtime

_ALIGN_SHARD = re.compile(r"\.shard(\d+)of(\d+)$")
_AVERAGE_SHARD = re.compile(r"_shard(\d+)of(\d+)\.npz$")


@dataclass(frozen=True)
class MergeRequest:
    """What `gumalign merge` is asked.

    Attributes:
        shards: the shard files (all of one run); empty: those found beside ``out``.
        out: where the merged output goes (default: the output the shards name); without ``shards``, the output
            whose shards to find (``aligned.star`` -> ``aligned.star.shard*of*``, ``avg.mrc`` ->
            ``avg_shard*of*.npz``).
    """

    shards: tuple[Path, ...] = ()
    out: Path | None = None


@dataclass
class MergeReport:
    kind: str  # 'align' or 'average'
    out: Path
    shards: list[Path]
    particles: int
    files: list[Path]

    def summary(self) -> dict:
        return {"kind": self.kind, "shards": len(self.shards), "particles": self.particles, "out": str(self.out)}


def find_shards(out: Path) -> list[Path]:
    """The finished shard files of ``out`` (one shard count only), in shard order."""
    out = Path(out)
    if out.suffix.lower() in (".mrc", ".map"):
        pattern, candidates = _AVERAGE_SHARD, out.parent.glob(f"{out.stem}_shard*of*.npz")
        prefix = out.stem
    else:
        pattern, candidates = _ALIGN_SHARD, out.parent.glob(f"{out.name}.shard*of*")
        prefix = out.name
    found = {}
    for path in candidates:
        match = pattern.search(path.name)
        if match and path.name[: match.start()] == prefix:
            found[path] = (int(match.group(2)), int(match.group(1)))
    if not found:
        raise GumalignError(f"{out}: no shards found beside it (run `gumalign align/average --shard I/N --out {out}`)")
    counts = sorted({n for n, _ in found.values()})
    if len(counts) > 1:
        raise GumalignError(
            f"{out}: shards of several splits beside it ({', '.join(f'of {n}' for n in counts)}); name the files to merge"
        )
    return sorted(found, key=lambda p: found[p][1])


def merge(request: MergeRequest, runtime: Runtime | None = None) -> MergeReport:
    """Write the outputs of one run from its shards (see the module docstring)."""
    runtime = runtime or Runtime()
    shards = [Path(p) for p in request.shards]
    if not shards:
        if request.out is None:
            raise GumalignError("give the shard files to merge, or --out to find them beside it")
        shards = find_shards(Path(request.out))
    for path in shards:
        if not path.is_file():
            raise GumalignError(f"{path}: no such file")
    averages = [p.suffix.lower() == ".npz" for p in shards]
    if any(averages) and not all(averages):
        raise GumalignError("shards of `align` (.shardIofN) and of `average` (.npz) cannot be merged together")
    if all(averages):
        return _merge_average(shards, request.out, runtime)
    return _merge_align(shards, request.out, runtime)


def _recorded(path: str, cwd: str) -> Path:
    """A path a shard recorded, relative ones taken from the folder the shard ran in."""
    return Path(path) if Path(path).is_absolute() else Path(cwd) / path


def _merge_align(shards: list[Path], out: Path | None, runtime: Runtime) -> MergeReport:
    from dataclasses import fields

    from gumalign.align.pipeline import merge_shards, shard_results
    from gumalign.align.spec import AlignerSpec
    from gumalign.io.atomic import check_output_file, refuse_overwriting_inputs
    from gumalign.io.mrc import read_volume
    from gumalign.io.star import read_star
    from gumalign.ops.star_output import StarOutput

    key, values = shard_results(shards)
    if "cwd" not in key or "star" not in key:
        raise GumalignError(f"{shards[0]}: a shard without the record merge needs (made by another gumalign?)")
    star = key["star"]
    relative = [p for p in (key["reference"], key["particles"], key["out"], star.get("tomograms")) if p and
                not Path(p).is_absolute()]
    if relative and Path(key["cwd"]).resolve() != Path.cwd().resolve():
        raise GumalignError(
            f"the shards ran in {key['cwd']} with paths relative to it ({relative[0]}, ...): run gumalign merge there"
        )
    target = Path(out) if out is not None else Path(key["out"])
    check_output_file(target)
    spec = AlignerSpec(**{f.name: key[f.name] for f in fields(AlignerSpec)})
    output = StarOutput(star.get("version"), Path(star["tomograms"]) if star.get("tomograms") else None,
                        bool(star.get("optimisation_set")))
    table = output.prepare(read_star(key["particles"]), runtime.log)
    reference = read_volume(key["reference"])
    refuse_overwriting_inputs([target], [Path(key["reference"]), Path(key["particles"]), *shards])
    tilt_range = tuple(key["tilt_range"]) if key.get("tilt_range") else None
    aligned = merge_shards(table, reference, target, key, values, spec, tilt_range, key["reference"], shards)
    runtime.log(f"wrote {target}: {len(aligned)} particles from {len(shards)} shards")
    files = [target]
    if output.optimisation_set:
        from gumalign.io.star import optimisation_set_path

        files.append(optimisation_set_path(target))
    return MergeReport("align", target, shards, len(aligned), files)


def _merge_average(shards: list[Path], out: Path | None, runtime: Runtime) -> MergeReport:
    from gumalign.average.compensated import add_sums, load_partial_sums, maps_from_sums, symmetrise_sums
    from gumalign.distributed import check_shard_set
    from gumalign.io.atomic import check_output_file, refuse_overwriting_inputs
    from gumalign.ops.average import output_files, write_maps

    with runtime.applied() as device:
        loaded = {path: load_partial_sums(path, device) for path in shards}
        common, count, paths = check_shard_set({path: meta for path, (meta, _, _) in loaded.items()}, "average",
                                               per_shard=("shard", "rows"))
        by_index = {index: (path, *loaded[path]) for index, path in paths.items()}
        n, end = int(common["n"]), 0
        for index in range(1, count + 1):  # the shards' rows, in order, cover every particle once
            path, meta = by_index[index][:2]
            start, stop = meta["rows"]
            if start != end and stop > start:
                raise GumalignError(f"{path}: rows {start}..{stop} do not follow shard {index - 1}'s (..{end})")
            end = max(end, stop)
        if end != n:
            raise GumalignError(f"the shards hold rows 0..{end} of {n} particles")
        total = by_index[1][2]
        for index in range(2, count + 1):
            add_sums(total, by_index[index][2])
        if total[1].count + total[2].count != n:
            raise GumalignError(f"the shards hold {total[1].count + total[2].count} particles of {n}")
        symmetrise_sums(total, common.get("symmetry", "C1"))  # the shards' --sym, as average_particles applies it
        target = Path(out) if out is not None else _recorded(common["out"], common["cwd"])
        check_output_file(target)
        refuse_overwriting_inputs(output_files(target, 0), shards)
        result = maps_from_sums(total, by_index[1][3], bool(common["halves_assigned"]), common["regularisation"],
                                device)
        files = write_maps(result, target, float(common["voxel_size"]), runtime.log)
    return MergeReport("average", target, shards, n, files)
