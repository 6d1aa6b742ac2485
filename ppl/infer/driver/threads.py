"""``chain_method="threaded"``: a run's chain groups advanced at once, one thread each.

:func:`advance_threads` runs each group (a :class:`~ppl.infer.driver.chains.Segment`) through
the same compiled program in its own thread (XLA runs a computation on the thread that calls
it), round by round: every group runs to the next of the run's stops (chain rescue's
checkpoints, the warmup's own stops, the end), then the main thread does the checkpoint's
work. Between rounds, and within one when an :class:`~ppl.infer.driver.autosave.Autosave`
is due, the groups pause after their current chunk so that the main thread sees every
group idle.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import TYPE_CHECKING

from ppl.infer.driver.progress import SharedProgress

if TYPE_CHECKING:
    from ppl.infer.driver.chains import ChainRun

__all__ = ["advance_threads"]

POLL_SECONDS = 0.2  # the main thread's waits: Ctrl-C and due saves act within this


def advance_threads(run: ChainRun) -> None:
    """Advance ``run``'s segments (chain groups) at once, one thread each, with one progress
    bar that follows the slowest group. An exception in any thread (an interrupt included)
    stops the others after their current chunk and is raised here."""
    segments = run.segments
    run.init_segments(segments)
    with run._progress("", min(s.next_iteration for s in segments)) as bar:
        shared = SharedProgress(bar, segments, run.sizes.num_warmup)
        with concurrent.futures.ThreadPoolExecutor(
            len(segments), thread_name_prefix="ppl-chains"
        ) as pool:
            for stop_at in run.stops():
                if stop_at <= run.checked:
                    continue
                while not _round(run, pool, shared, stop_at):  # paused for a save
                    run.autosave()
                run._checkpoint(stop_at)
                if run.autosave is not None and not run.complete and run.autosave.due():
                    run.autosave()


def _round(run: ChainRun, pool, shared: SharedProgress, stop_at: int) -> bool:
    """Run every segment to ``stop_at`` in the pool's threads; ``False`` when they were
    paused (each after its current chunk) because a save is due."""
    halt = threading.Event()  # the groups stop after their current chunk once it is set
    advance = run.compiled_advance(run.segments[0])  # the program may have switched
    futures = [
        pool.submit(run.run_segment, seg, shared.reporter(g), halt, advance, stop_at)
        for g, seg in enumerate(run.segments)
    ]
    paused = False
    try:
        pending = set(futures)
        while pending:  # short waits: Ctrl-C reaches this thread
            done, pending = concurrent.futures.wait(
                pending, timeout=POLL_SECONDS, return_when="FIRST_EXCEPTION"
            )
            failed = [f for f in done if f.exception() is not None]
            if failed:  # the others stop after their current chunk (finally)
                raise failed[0].exception()
            if pending and run.autosave is not None and run.autosave.due():
                paused = True
                break
    finally:
        halt.set()
        concurrent.futures.wait(futures)
    failed = [f for f in futures if f.exception() is not None]
    if failed:
        raise failed[0].exception()
    return not paused or all(s.next_iteration >= stop_at for s in run.segments)
