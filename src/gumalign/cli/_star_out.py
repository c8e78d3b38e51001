"""The options every command that writes a STAR file shares: --star-version, --tomograms, --optimisation-set.

No heavy imports here (the CLI's --help must not load torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

StarVersion = Annotated[
    Optional[str],
    typer.Option(
        "--star-version",
        help="RELION flavour of the STAR written: 3.1, 4 or 5 (default: the input's; 3.0 and Dynamo input: 3.1). "
        "An output ending in .tbl is a Dynamo table.",
        show_default=False,
    ),
]
Tomograms = Annotated[
    Optional[Path],
    typer.Option(
        "--tomograms",
        help="RELION 5 tomograms.star: tomogram sizes to centre rlnCoordinate* for --star-version 5; named in the "
        "optimisation set.",
    ),
]
OptimisationSet = Annotated[
    bool,
    typer.Option(
        "--optimisation-set", help="Also write <out>_optimisation_set.star (RELION 5) naming the particles file."
    ),
]
