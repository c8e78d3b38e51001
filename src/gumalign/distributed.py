"""Running on several devices: torch.distributed under torchrun, and SLURM-array shards without it.

Two ways to split a command's particles, one rule for which rows each part takes (:func:`shard_rows`):

* torchrun (``torchrun --nproc-per-node 4 $(which gumalign) align ...``) starts one process per device and sets
  RANK, WORLD_SIZE and LOCAL_RANK. The operations call :func:`init_if_launched`, which joins the process group once
  (NCCL when the rank runs on CUDA, gloo on the CPU) and returns the :class:`World`; each rank takes the CUDA device
  of its LOCAL_RANK (:func:`rank_device`), works on its shard and meets the others in collectives (sums of Fourier
  accumulators, the gathering of alignment results, DistributedDataParallel's gradient sums). Rank 0 writes.
* ``--shard I/N`` (1-based, a SLURM array's ``$((SLURM_ARRAY_TASK_ID + 1))/N``): one independent process does shard
  I of N, writes that shard's results and exits; ``gumalign merge`` combines the N shards. Rank R of a torchrun world
  of N takes exactly the rows of ``--shard R+1/N``.

Shards are contiguous runs of rows, split in whole blocks (an aligner's batch): results of Gum-Net and F&A change at
rounding level with the other particles of their batch (batched FFTs and convolutions), so a shard that starts on a
batch boundary of the single-process run sees the very same batches and writes the very same numbers.

Without torchrun (WORLD_SIZE unset or 1) nothing here touches torch.distributed, and :data:`SINGLE` is the world of
one process whose collectives return their input.
"""

from __future__ import annotations

import atexit
import os
import re
from dataclasses import dataclass

import numpy as np

from gumalign.errors import GumalignError

_ENV_RANK, _ENV_SIZE, _ENV_LOCAL = "RANK", "WORLD_SIZE", "LOCAL_RANK"
_SHARD_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (0-based) of ``count`` equal parts of a command's rows."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise GumalignError(f"--shard must be I/N with 1 <= I <= N, got {self.index + 1}/{self.count}")

    @property
    def label(self) -> str:
        """'2of4' for shard 2/4 (1-based, as file names show it)."""
        return f"{self.index + 1}of{self.count}"

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"

    def rows(self, n: int, block: int = 1) -> np.ndarray:
        """This shard's rows of n (see :func:`shard_rows`)."""
        return shard_rows(n, self.index, self.count, block)


def parse_shard(text: str) -> Shard:
    """``'I/N'`` (1-based, as SLURM arrays count from 1 when given ``--array=1-N``) -> Shard(I - 1, N)."""
    match = _SHARD_PATTERN.match(str(text))
    if not match:
        raise GumalignError(f"--shard must be I/N (e.g. 2/8: the second of 8 shards), got {text!r}")
    i, n = int(match.group(1)), int(match.group(2))
    if n < 1 or not 1 <= i <= n:
        raise GumalignError(f"--shard must be I/N with 1 <= I <= N, got {text!r}")
    return Shard(i - 1, n)


def shard_rows(n: int, index: int, count: int, block: int = 1) -> np.ndarray:
    """Rows of shard ``index`` (0-based) of ``count``: a contiguous run of 0..n-1 that starts on a multiple of
    ``block``.

    The ceil(n / block) blocks are dealt out contiguously, the first (blocks mod count) shards taking one block more;
    the shards of 0..count-1 are disjoint, in order, and cover every row once. With block = an aligner's batch size,
    every batch a shard forms is a batch of the single-process run. A shard can be empty (fewer blocks than shards).
    """
    if block < 1:
        raise GumalignError(f"block must be at least 1, got {block}")
    if count < 1 or not 0 <= index < count:
        raise GumalignError(f"shard {index} of {count} does not exist")
    blocks = -(-n // block)
    per, extra = divmod(blocks, count)
    first = index * per + min(index, extra)
    last = first + per + (1 if index < extra else 0)
    return np.arange(min(first * block, n), min(last * block, n))


SHARD_UNDER_TORCHRUN = "--shard is for runs without torchrun; under torchrun each rank takes its shard itself"


def refuse_shard_under_torchrun(shard: Shard | None) -> None:
    """A --shard run must not also be a torchrun rank (the two ways of splitting would take other rows)."""
    if shard is not None and launched():
        raise GumalignError(SHARD_UNDER_TORCHRUN)


def launched() -> bool:
    """Whether this process is one rank of several started by torchrun (WORLD_SIZE > 1)."""
    try:
        return int(os.environ.get(_ENV_SIZE, "1")) > 1
    except ValueError:
        return False


@dataclass(frozen=True)
class World:
    """The processes of one run: this one's rank (0-based), their number, and its rank on its node.

    The collectives are no-ops for a world of one; for more they need the process group of :func:`init_if_launched`.
    Every rank must call the same collectives in the same order (the operations do, by construction).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes outputs and logs."""
        return self.rank == 0

    @property
    def shard(self) -> Shard:
        """The shard this rank works on (rank R of N: ``--shard R+1/N``)."""
        return Shard(self.rank, self.size)

    def rows(self, n: int, block: int = 1) -> np.ndarray:
        """This rank's rows of n (:func:`shard_rows`)."""
        return shard_rows(n, self.rank, self.size, block)

    def sum_(self, *tensors) -> None:
        """All-reduce each torch tensor in place to the sum over ranks (complex tensors as their real views)."""
        if self.size == 1:
            return
        import torch
        import torch.distributed as dist

        for tensor in tensors:
            target = torch.view_as_real(tensor) if tensor.is_complex() else tensor
            moved = target.to(_collective_device())
            dist.all_reduce(moved)
            if moved is not target:
                target.copy_(moved)

    def sum_numbers(self, *values: float) -> list[float]:
        """The sum over ranks of each number (float64)."""
        if self.size == 1:
            return [float(v) for v in values]
        import torch

        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
        self.sum_(tensor)
        return tensor.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (a decision all ranks must share)."""
        return self.sum_numbers(1.0 if flag else 0.0)[0] > 0

    def gather_rows(self, values: np.ndarray, counts: list[int]) -> np.ndarray:
        """Every rank's (counts[rank], ...) array stacked in rank order, on every rank.

        Args:
            values: this rank's rows (float64, or anything exactly representable in it).
            counts: the number of rows of each rank, known to all (shards are a function of n).
        """
        values = np.asarray(values, dtype=np.float64)
        if len(values) != counts[self.rank]:
            raise GumalignError(f"rank {self.rank} has {len(values)} rows, expected {counts[self.rank]}")
        if self.size == 1:
            return values
        import torch
        import torch.distributed as dist

        tail = values.shape[1:]
        most = max(max(counts), 1)
        padded = np.zeros((most, *tail), dtype=np.float64)
        padded[: len(values)] = values
        device = _collective_device()
        local = torch.from_numpy(padded).to(device)
        parts = [torch.empty_like(local) for _ in range(self.size)]
        dist.all_gather(parts, local)
        return np.concatenate([p.cpu().numpy()[:c] for p, c in zip(parts, counts)])

    def gather_shards(self, values: np.ndarray, n: int, block: int = 1) -> np.ndarray:
        """Every rank's rows of its shard of n (:meth:`rows` with ``block``) stacked in row order, on every rank."""
        counts = [len(shard_rows(n, rank, self.size, block)) for rank in range(self.size)]
        return self.gather_rows(values, counts)

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()


SINGLE = World()

_backend: str | None = None


def _collective_device():
    import torch

    if _backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def current() -> World:
    """The world of the initialised process group (:func:`init_if_launched`), else :data:`SINGLE`."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get(_ENV_LOCAL, "0")))


def rank_device(name: str, local_rank: int | None = None) -> str:
    """The device a rank runs on: under torchrun, 'auto' (with CUDA present) and 'cuda' become ``cuda:LOCAL_RANK``;
    'cpu' and an explicit 'cuda:N' are kept. Outside torchrun, ``name`` itself."""
    if not launched() or str(name) not in ("auto", "cuda"):
        return str(name)
    import torch

    if not torch.cuda.is_available():
        return str(name)  # 'auto' runs on the CPU; 'cuda' fails with resolve_device's line
    local = int(os.environ.get(_ENV_LOCAL, "0")) if local_rank is None else local_rank
    count = torch.cuda.device_count()
    if local >= count:
        raise GumalignError(
            f"rank with LOCAL_RANK {local} has no GPU of its own: this node has {count}; start at most {count} "
            "processes per node (torchrun --nproc-per-node)"
        )
    return f"cuda:{local}"


def init_if_launched(device: str = "auto") -> World:
    """Join torchrun's process group once (NCCL for a CUDA rank, gloo for a CPU rank) and return the World; outside
    torchrun, :data:`SINGLE` without touching torch.distributed.

    Args:
        device: the rank's device name (:func:`rank_device`), which picks the backend.
    """
    global _backend
    if not launched():
        return SINGLE
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise GumalignError("started by torchrun, but this torch has no torch.distributed")
    if not dist.is_initialized():
        try:
            rank, size = int(os.environ[_ENV_RANK]), int(os.environ[_ENV_SIZE])
        except (KeyError, ValueError):
            raise GumalignError("WORLD_SIZE is set but RANK is not: start gumalign with torchrun") from None
        from gumalign.devices import resolve_device

        resolved = resolve_device(device)  # a GumalignError for CUDA where there is none
        cuda = resolved.type == "cuda"
        if cuda:
            torch.cuda.set_device(resolved.index if resolved.index is not None else int(os.environ.get(_ENV_LOCAL, "0")))
        _backend = "nccl" if cuda else "gloo"
        dist.init_process_group(_backend, rank=rank, world_size=size)
        atexit.register(_destroy)
    return current()


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_runtime(runtime, world: World):
    """The Runtime a rank works with: its device (:func:`rank_device`), and on ranks other than 0 no log lines and no
    progress (rank 0 speaks for the run; an error on any rank is still reported by the command line)."""
    from dataclasses import replace

    from gumalign.progress import no_progress

    if world.size == 1:
        return runtime
    changed = replace(runtime, device=rank_device(runtime.device, world.local_rank))
    if not world.is_main:
        changed = replace(changed, log=lambda message: None, progress=no_progress)
    return changed


def rank_line(world: World, count: int, what: str = "particles") -> str:
    """'rank R/N: K particles': the one line each rank writes, so a log shows how the work was split."""
    return f"rank {world.rank}/{world.size}: {count} {what}"


def check_shard_set(headers: dict, command: str, labels: dict | None = None,
                    per_shard: tuple[str, ...] = ("shard",)) -> tuple[dict, int, dict]:
    """The shard files of one split run, checked: ``(common, N, {I: path})``.

    Args:
        headers: {path: the file's record}, each with ``'shard': [I, N]`` (1-based).
        command: 'align' or 'average', for the line that names the missing shards.
        labels: longer names of record keys for the error lines.
        per_shard: the keys allowed to differ between the shards of one run.

    Raises:
        GumalignError: a file of another run (naming what differs), a repeated shard, or missing ones.
    """
    labels = labels or {}
    first_path, first = next(iter(headers.items()))
    common = {k: v for k, v in first.items() if k not in per_shard}
    count = int(first["shard"][1])
    by_index: dict[int, object] = {}
    for path, header in headers.items():
        other = {k: v for k, v in header.items() if k not in per_shard}
        if other != common or int(header["shard"][1]) != count:
            changed = sorted(k for k in set(other) | set(common) if other.get(k) != common.get(k))
            what = ", ".join(labels.get(k, k) for k in changed) or "shard count"
            raise GumalignError(f"{path}: belongs to another run than {first_path} (different {what})")
        index = int(header["shard"][0])
        if index in by_index:
            raise GumalignError(f"{path} and {by_index[index]} are both shard {index}/{count}")
        by_index[index] = path
    missing = [i for i in range(1, count + 1) if i not in by_index]
    if missing:
        names = ", ".join(f"{i}/{count}" for i in missing)
        raise GumalignError(f"shard(s) {names} missing: run them (gumalign {command} ... --shard I/{count}) and "
                            "merge again")
    return common, count, by_index
