"""Options several commands share, declared once so their names, help and defaults cannot drift apart.

No heavy imports here (the CLI's --help must not load torch). Defaults of the aligner's options are None: the one
place their values live is gumalign.align.spec.AlignerSpec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional, Tuple

import typer

Method = Annotated[str, typer.Option(help="Aligner: gumnet, ht, fa, or local (a local search from the current pose).")]
Refine = Annotated[
    bool, typer.Option("--refine", help="Follow the method with a local search that can only raise scores.")
]
MaxShift = Annotated[
    Optional[float], typer.Option(help="Largest shift (voxels) the aligner may find (default: half the box).", min=0.0)
]
MaxFrequency = Annotated[
    Optional[float],
    typer.Option(help="Low-pass radius (cycles per box) of the local search (--refine, --method local).", min=1),
]
AngularStep = Annotated[
    Optional[float],
    typer.Option(help="Angular sampling in degrees of H-T and of the local search (default: each method's own: "
                      "H-T 5, local 6 → 3 → 1.5).", min=0.1, max=90),
]
AlignBatchSize = Annotated[
    Optional[int],
    typer.Option(help="Particles per aligner call (default: the method's own, gumnet 32, ht/fa 8).", min=1),
]
Device = Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.")]
Threads = Annotated[
    Optional[int], typer.Option(help="CPU threads for torch (default: torch's own, every core it sees).", min=1)
]
TiltRange = Annotated[
    Optional[Tuple[float, float]],
    typer.Option(help="Tilt range (min max, degrees) for the missing wedge when the STAR has no rlnCtfImage."),
]
PixelSize = Annotated[Optional[float], typer.Option(help="Pixel size in Å when the STAR file has none.", min=0.0)]
JsonOut = Annotated[
    Optional[Path],
    typer.Option("--json", help="Also write the summary record as JSON to this file ('-': print it instead of the "
                                "key=value line).", show_default=False),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or log output (the summary line stays).")]
Symmetry = Annotated[
    str,
    typer.Option("--sym", help="Point group of the reference (RELION's: C1, Cn, Dn, T, O, I): scores use the "
                               "symmetrised reference and angles are written in the asymmetric unit."),
]
