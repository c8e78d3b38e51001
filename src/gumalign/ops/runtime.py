"""How an operation runs, apart from what it computes: device, CPU threads, progress and log callbacks.

Every operation (gumalign.ops.align, average, ...) takes a request (what the user asked) and a :class:`Runtime`
(where and how to run it). ``with runtime.applied() as device:`` is the one place process settings are made:
torch's CPU thread count is set for the duration and restored afterwards, and glibc's heap is told to return large
blocks (gumalign.memory), so a Python caller gets what the command line gets and keeps its own settings afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from gumalign.progress import ProgressFactory, no_progress


def _no_log(message: str) -> None:
    pass


@dataclass
class Runtime:
    """Where and how an operation runs; none of it changes a result (the device changes floats at rounding level).

    Attributes:
        device: 'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.
        threads: torch CPU threads while the operation runs (None: leave torch's setting as it is).
        progress: a ProgressFactory (default: silent).
        log: called with each log line (default: silent).
    """

    device: str = "auto"
    threads: int | None = None
    progress: ProgressFactory = field(default=no_progress)
    log: Callable[[str], None] = field(default=_no_log)

    @contextmanager
    def applied(self) -> Iterator["object"]:
        """Apply the process settings, yield the resolved torch.device, restore torch's thread count on exit.

        The first progress bar opened inside is preceded by one log line naming the device (and the CPU threads), so
        a batch job's log says where it ran, while bad input found before any work still reports one line only.
        """
        import torch

        from gumalign.devices import resolve_device
        from gumalign.errors import GumalignError
        from gumalign.memory import limit_heap_fragmentation

        if self.threads is not None and self.threads < 1:
            raise GumalignError(f"--threads must be at least 1, got {self.threads}")
        device = resolve_device(self.device)
        limit_heap_fragmentation()
        before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        progress, logged = self.progress, []

        def progress_after_device_line(description: str, total: int):
            if not logged:
                logged.append(True)
                threads = f", {torch.get_num_threads()} CPU threads" if device.type == "cpu" else ""
                name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
                self.log(f"device: {device}{name}{threads}")
            return progress(description, total)

        self.progress = progress_after_device_line
        try:
            yield device
        finally:
            self.progress = progress
            torch.set_num_threads(before)


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask, e.g. a SLURM allocation), at least 1."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
