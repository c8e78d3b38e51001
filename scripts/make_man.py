#!/usr/bin/env python3
"""Generate man/gumalign.1 and man/gumalign-<command>.1 from the CLI's own help, so they never drift.

Usage: python scripts/make_man.py [OUTDIR]   (default: man/)
The pages come from gumalign.cli.manpages (NAME, SYNOPSIS, DESCRIPTION, OPTIONS, EXAMPLES, EXIT STATUS, SEE ALSO);
pip installs man/*.1 to share/man/man1, and `gumalign man CMD` prints the same pages from the package.
tests/test_cli.py regenerates the pages into a temporary folder and compares them with the committed ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gumalign.cli.manpages import pages


def main(outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    generated = pages()
    for stale in outdir.glob("gumalign*.1"):
        if stale.name not in generated:
            stale.unlink()
    for file_name, text in generated.items():
        (outdir / file_name).write_text(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "man")
