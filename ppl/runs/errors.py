"""The errors of a run: bad input from the user, and a file that is not a ppl run.

Every other module of :mod:`ppl.runs` raises these; :mod:`ppl.cli` turns them into one
line and exit status 2. This module imports nothing, so any of them can use it.
"""

__all__ = ["RunError", "UsageError"]


class UsageError(Exception):
    """Bad input from the user: a missing model, mismatched data, an unreadable run file.

    The command-line tool prints its message as one line and exits with status 2.
    """


class RunError(UsageError):
    """A run file that cannot be read as a ppl run."""
