"""The operations layer: what each command does, callable from Python with the same result as the command line.

Each operation takes a request (a frozen dataclass of what the user asked) and a Runtime (device, threads, progress
and log callbacks), applies process settings once inside ``Runtime.applied()`` and restores them, and returns a
report whose ``summary()`` is the command's key=value line. The CLI (gumalign.cli) only parses options into a request,
calls the operation and prints the report. See docs/architecture.md for the layers and how a parameter travels.

    from pathlib import Path
    from gumalign.align.spec import AlignerSpec
    from gumalign.ops import AlignRequest, AverageRequest, Runtime, align, average

    runtime = Runtime(device="cpu", threads=2)
    align(AlignRequest(Path("ref.mrc"), Path("parts.star"), Path("aligned.star"), AlignerSpec(method="fa")), runtime)
    average(AverageRequest(Path("aligned.star"), Path("avg.mrc")), runtime)

Heavy imports (torch, models) happen inside the operations, so importing this package is cheap.
"""

from gumalign.ops.align import AlignReport, AlignRequest, align
from gumalign.ops.average import AverageReport, AverageRequest, average
from gumalign.ops.cluster import ClusterReport, ClusterRequest, cluster
from gumalign.ops.fsc import FscReport, FscRequest, fsc
from gumalign.ops.merge import MergeReport, MergeRequest, merge
from gumalign.ops.runtime import Runtime
from gumalign.ops.simulate import SimulateReport, SimulateRequest, simulate
from gumalign.ops.star_output import StarOutput
from gumalign.ops.train import TrainReport, TrainRequest, train

__all__ = [
    "AlignReport", "AlignRequest", "align", "AverageReport", "AverageRequest", "average", "ClusterReport", "ClusterRequest", "cluster",
    "FscReport", "FscRequest", "fsc", "MergeReport", "MergeRequest", "merge", "Runtime", "SimulateReport", "SimulateRequest", "simulate", "StarOutput",
    "TrainReport", "TrainRequest", "train",
]
