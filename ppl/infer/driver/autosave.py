"""Saves of a run in progress, by time: what a kill -9 can lose is bounded.

:class:`Autosave` wraps a callback that writes the run so far (``ppl sample`` writes the draws
and the sampler state to the run file, :mod:`ppl.runs.files`). :class:`~ppl.infer.driver.chains.
ChainRun` asks :meth:`Autosave.due` between chunks of iterations, with every chain group idle
(a threaded run pauses its groups after their current chunk), and calls it when due.

A save is due once ``every`` seconds have passed since the last one ended, and never sooner
than ``cost_ratio`` times the last save's own duration after it: a save that takes 0.5 s
comes at most every 10 s (``cost_ratio=20``), so saving costs at most about 1/``cost_ratio``
of the run's time however large its draws get. The first save's duration does not count:
it pays one-time costs (imports, compiling the conversion of the draws) that would
otherwise put the second save far off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["AUTOSAVE_SECONDS", "Autosave"]

AUTOSAVE_SECONDS = 10.0
"""Default seconds between saves of a run in progress."""


@dataclass
class Autosave:
    """A callback run between chunks every ``every`` seconds (or less often, see module).

    Attributes:
        save: writes the run so far; called with no argument.
        every: least seconds between the end of a save and the next (> 0).
        cost_ratio: a save comes at least this many times its own duration after the last.
        last: ``time.monotonic()`` at the end of the last save (or at the start).
        seconds: duration of the last save.
        count: saves made so far.
        pace: the duration that spaces the saves (that of the last save, 0 after the first).
    """

    save: Callable[[], None]
    every: float = AUTOSAVE_SECONDS
    cost_ratio: float = 20.0
    last: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    count: int = 0
    pace: float = 0.0

    def __post_init__(self):
        if not self.every > 0:
            raise ValueError(f"autosave every must be > 0 seconds, got {self.every!r}")

    def due(self) -> bool:
        """Whether a save is due now."""
        wait = max(self.every, self.cost_ratio * self.pace)
        return time.monotonic() - self.last >= wait

    def __call__(self) -> None:
        began = time.monotonic()
        self.save()
        self.last = time.monotonic()
        self.seconds = self.last - began
        self.pace = self.seconds if self.count else 0.0
        self.count += 1
