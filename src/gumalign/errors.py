"""The one exception type the core raises for problems a user can fix.

The CLI turns a :class:`GumalignError` into one red line on stderr and exit status 2; anything else is a bug and
keeps its traceback.
"""


class GumalignError(Exception):
    """A user-facing problem (bad file, bad option, inconsistent inputs). The message is the whole story."""
