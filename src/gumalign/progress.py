"""The two progress shapes the core takes, defined once.

- :data:`Advance`: ``advance(n)``, called with the number of items (particles, pairs) just finished, after each
  batch; the increment, not a running total. A loop over one batch of work takes one.
- :data:`ProgressFactory`: ``progress(description, total)``, a context manager that yields an ``Advance``: one
  progress bar per stage of a multi-stage operation (the CLI's ``progress_bar`` has this shape). A multi-stage
  operation (iterative averaging, reference-based clustering) takes one and passes each stage's ``advance`` on.

:func:`no_progress` is the silent ProgressFactory.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator

Advance = Callable[[int], None]
ProgressFactory = Callable[[str, int], ContextManager[Advance]]

__all__ = ["Advance", "ProgressFactory", "no_progress"]


@contextmanager
def no_progress(description: str, total: int) -> Iterator[Advance]:
    """A ProgressFactory that shows nothing."""
    yield lambda n=1: None
