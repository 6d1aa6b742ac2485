"""One writer per run file: ``ppl sample`` holds ``RUN.lock`` while it samples and saves.

A second ``ppl sample`` (or ``--resume``) with the same ``--out`` fails at once with a
clear error instead of racing the first to the file. The lock is an OS file lock
(:mod:`filelock`): the system releases it when the holder exits, even by ``kill -9``, so a
crashed run never blocks the next one. The lock file itself stays beside the run (removing
it could let two later writers lock different files of the same name).
"""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock, Timeout

from ppl.runs.errors import UsageError

__all__ = ["RunLock", "lock_path"]


def lock_path(run_path: str | Path) -> Path:
    """``RUN.lock`` beside the run file."""
    run_path = Path(run_path)
    return run_path.with_name(run_path.name + ".lock")


class RunLock:
    """A context manager that holds the run's lock, or raises :class:`UsageError` at once
    when another process holds it (naming that process when it can)."""

    def __init__(self, run_path: str | Path):
        self.run_path = Path(run_path)
        self.path = lock_path(run_path)
        self._lock = FileLock(str(self.path))

    def __enter__(self) -> RunLock:
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            holder = self._holder()
            raise UsageError(
                f"{self.run_path} is being written by another ppl process{holder}; wait for it "
                "to finish (or stop it) before writing this run, or write another --out"
            ) from None
        except OSError as err:  # a read-only folder: no lock can be taken there
            raise UsageError(f"cannot lock {self.path}: {err.strerror or err}") from None
        try:  # for the message of a second writer (the lock is the OS lock, not this text)
            with open(self.path, "w") as f:
                f.write(str(os.getpid()))
        except OSError:
            pass
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def _holder(self) -> str:
        try:
            pid = self.path.read_text().strip()
        except OSError:
            return ""
        return f" (pid {pid})" if pid.isdigit() else ""
