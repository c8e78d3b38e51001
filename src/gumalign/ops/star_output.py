"""What every operation that reads particles and writes a STAR file shares: the RELION flavour asked for, the table's
notes, the files a table names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gumalign.errors import GumalignError


@dataclass(frozen=True)
class StarOutput:
    """The RELION flavour of the STAR written (--star-version, --tomograms, --optimisation-set).

    Attributes:
        version: '3.1', '4' or '5'; None = the input's (3.0 and Dynamo input: 3.1).
        tomograms: RELION 5 tomograms.star (tomogram sizes to centre rlnCoordinate* for version 5).
        optimisation_set: also write <out>_optimisation_set.star (RELION 5) naming the particles file.
    """

    version: str | None = None
    tomograms: Path | None = None
    optimisation_set: bool = False

    def prepare(self, table, log: Callable[[str], None] = lambda m: None):
        """``table`` set up to be written as asked (a GumalignError now, before any work, when it cannot be); the
        notes reading it produced (angles wrapped, ...) go to ``log``."""
        if self.version is not None or self.tomograms is not None or self.optimisation_set:
            table = table.for_output(self.version, tomograms=self.tomograms, optimisation_set=self.optimisation_set)
        for note in table.notes:
            log(note)
        return table


def table_input_files(table) -> list[Path]:
    """Every file a particle table names: its subtomograms and (rlnCtfImage) weights."""
    files = list(table.image_paths()) if table.has("rlnImageName") else []
    return files + list(table.weight_paths() or [])


def require_particles(table, what: str) -> None:
    """One line, exit 2, for a STAR file without particle rows."""
    if len(table) == 0:
        raise GumalignError(f"{table.name}: no particles to {what}")
