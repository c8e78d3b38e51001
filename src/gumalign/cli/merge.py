"""`gumalign merge`: the outputs of one run from the shards of a split one (`align --shard`, `average --shard`).

A SLURM array splits a run into N shards, one task each (`--shard I/N`); when all have finished, merge writes what a
single run writes: the aligned STAR file (byte for byte) from `align`'s <out>.shardIofN files, or the maps from
`average`'s <out>_shardIofN.npz sums. A missing or unfinished shard is named: rerun it alone (with --continue for
align) and merge again. Run merge in the folder the shards ran in when they were given relative paths.

Example usage:

    gumalign merge aligned.star.shard*of8
    gumalign merge --out aligned.star          # finds aligned.star.shard*of* beside it
    gumalign merge avg_shard*of8.npz
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from gumalign.cli._common import cli_runtime, handle_errors, print_summary
from gumalign.cli._options import Device, JsonOut, Quiet


@handle_errors
def command(
    shards: Annotated[
        Optional[List[Path]],
        typer.Argument(help="Shard files of one run: <out>.shardIofN (align) or <out>_shardIofN.npz (average).",
                       show_default=False),
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="Merged output (default: the one the shards name); without shard files, "
                                         "the output whose shards to find beside it.", show_default=False),
    ] = None,
    device: Device = "cpu",
    json_out: JsonOut = None,
    quiet: Quiet = False,
) -> None:
    """Combine the shards of a split `align` or `average` run into the outputs of one run."""
    from gumalign.ops.merge import MergeRequest, merge

    report = merge(MergeRequest(tuple(shards or ()), out), cli_runtime(device, None, quiet))
    print_summary(report.summary(), json_out)
