"""Progress of a run, shown between chunks of compiled iterations (never inside them).

:class:`Progress` is a tqdm bar over iterations with the phase, draws per second and the
divergences so far; :class:`SharedProgress` feeds one bar from chain groups that advance at
once in threads; :func:`next_chunk` sizes the chunks so that the bar updates about every
half second however fast the sampler is. :mod:`ppl.infer.driver.chains` reports to them
after each chunk it runs.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ppl.infer.driver import sharding

__all__ = ["INTERRUPT_SECONDS", "UPDATE_SECONDS", "Progress", "SharedProgress", "next_chunk"]

UPDATE_SECONDS = 0.5  # target time between progress-bar updates
INTERRUPT_SECONDS = 1.0  # without a bar: target time of a chunk (an interrupt waits for it)
FIRST_CHUNK_WITHOUT_BAR = 100  # ... before the segment's speed is known


def next_chunk(
    previous: int,
    elapsed: float,
    remaining: int,
    progress_bar: bool,
    chunk_size: int | None,
    seconds_per_iteration: float | None = None,
) -> int:
    """Iterations in the next chunk of a phase (``previous`` 0 before the first one).

    With a progress bar, ``chunk_size`` fixes the size; by default the first chunk is short
    and later chunks are sized to take about :data:`UPDATE_SECONDS` each, so the host syncs
    a handful of times per phase however fast the sampler is. Without one, chunks are sized
    to take about :data:`INTERRUPT_SECONDS` from the segment's ``seconds_per_iteration``
    so far (the first one: :data:`FIRST_CHUNK_WITHOUT_BAR` iterations): Ctrl-C and SIGTERM
    act between chunks, and a cheap run is still one or two chunks.
    """
    if not progress_bar:
        if seconds_per_iteration is None:
            size = FIRST_CHUNK_WITHOUT_BAR
        else:
            size = int(INTERRUPT_SECONDS / max(seconds_per_iteration, 1e-9))
    elif chunk_size:
        size = chunk_size
    elif not previous:
        size = 20
    else:
        size = int(previous * UPDATE_SECONDS / max(elapsed, 1e-4))
    return max(1, min(size, remaining))


class SharedProgress:
    """One progress bar for chain groups that advance at once in threads: it shows the
    iterations every group has finished (the slowest group's), and the divergences of all."""

    def __init__(self, bar: Progress, segments: list, num_warmup: int):
        self.bar = bar
        self.num_warmup = num_warmup
        self.lock = threading.Lock()
        self.done = [s.next_iteration for s in segments]
        self.divergent = [0] * len(segments)
        self.shown = min(self.done)

    def reporter(self, group: int) -> Callable[[int, str, Any], None]:
        """The ``report(n, phase, divergent)`` callback of one group."""

        def report(n: int, phase: str, divergent: Any) -> None:
            with self.lock:
                self.done[group] += n
                self.divergent[group] = int(np.sum(sharding.to_host(divergent)))
                slowest = min(self.done)
                if slowest > self.shown:
                    shown_phase = "warmup" if slowest <= self.num_warmup else "sampling"
                    self.bar.update(slowest - self.shown, shown_phase, sum(self.divergent))
                    self.shown = slowest

        return report


class Progress:
    """A tqdm bar over iterations, updated between chunks (never inside compiled code)."""

    def __init__(self, total: int, enabled: bool, label: str, chains: int, initial: int = 0):
        self.enabled = enabled
        self.initial = initial
        self.total = total
        self.label = label
        self.chains = chains
        self.bar = None

    def __enter__(self):
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                initial=self.initial,
                desc=f"{self.label}warmup",
                unit="it",
                file=sys.stderr,
                dynamic_ncols=True,
            )
        self.last_time = time.perf_counter()
        return self

    def update(self, n: int, phase: str, num_divergent) -> None:
        if self.bar is None:
            return
        # reading the count waits for the chunk to finish, so the rate is real
        divergent = int(np.sum(sharding.to_host(num_divergent)))
        now = time.perf_counter()
        rate = n * self.chains / max(now - self.last_time, 1e-9)
        self.last_time = now
        self.bar.set_description(f"{self.label}{phase}", refresh=False)
        self.bar.set_postfix({"draws/s": f"{rate:.0f}", "divergences": divergent}, refresh=False)
        self.bar.update(n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
