"""The effect-handler stack and message dispatch.

A primitive (``sample``, ``param``, ...) builds a *message*, a plain dict describing
the effect, and hands it to :func:`apply_stack`. Every active handler gets to
inspect and change the message on the way in (``process_message``, innermost
handler first) and to observe the result on the way out
(``postprocess_message``). A handler that sets ``msg["stop"] = True`` hides the
message from the handlers outside it.

Message keys:
    type: "sample", "param", "deterministic" or "plate".
    name: site name (str).
    fn: distribution (sample), constraint-aware initialiser (param) or
        subsample function (plate).
    args, kwargs: arguments for ``fn`` when a value has to be produced.
    value: the site's value, or None until a handler or the default
        behaviour fills it in.
    is_observed: True for observed sample sites.
    scale: multiplier of the site's log-probability (None means 1).
    mask: boolean array broadcastable to the batch shape, or None.
    cond_indep_stack: list of :class:`CondIndepStackFrame` of enclosing plates.
    infer: free-form dict for inference hints (``{"is_factor": True}``...).
    stop: when True, outer handlers do not see the message.
    done_by: handlers that already handled the message (inside a ``ppl.scan`` body, see
        :mod:`ppl.control_flow`); :func:`apply_stack` skips them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple


class _ThreadState(threading.local):
    """Per-thread state: each thread has its own handler stack, so models traced in
    different threads at once (e.g. by JAX in worker threads) do not see each other's
    handlers."""

    def __init__(self):
        self.stack: list[Any] = []


_STATE = _ThreadState()


def handler_stack() -> list[Any]:
    """The active handlers of the calling thread, outermost first (the live list)."""
    return _STATE.stack


@contextlib.contextmanager
def use_stack(stack: list[Any]) -> Iterator[list[Any]]:
    """Make ``stack`` the calling thread's handler stack for the ``with`` block.

    A ``ppl.scan`` body runs under its own stack (the step views of the outer handlers);
    the outer stack is restored afterwards, even on an error.
    """
    saved = _STATE.stack
    _STATE.stack = stack
    try:
        yield stack
    finally:
        _STATE.stack = saved


class CondIndepStackFrame(NamedTuple):
    """One enclosing plate: its name, the batch dim it owns and its (subsample) size."""

    name: str
    dim: int
    size: int


def new_message(msg_type: str, name: str, **fields: Any) -> dict:
    """A message with every key present and the defaults filled in."""
    msg = {
        "type": msg_type,
        "name": name,
        "fn": None,
        "args": (),
        "kwargs": {},
        "value": None,
        "is_observed": False,
        "scale": None,
        "mask": None,
        "cond_indep_stack": [],
        "infer": {},
        "stop": False,
        "done_by": (),
    }
    msg.update(fields)
    return msg


def apply_stack(msg: dict, outer_of: Any = None) -> dict:
    """Send ``msg`` through the active handlers and fill in its value.

    Handlers see the message innermost first. If no handler supplied a value,
    ``msg["fn"](*args, **kwargs)`` produces it (for sample sites this needs a
    ``rng_key`` put into ``kwargs`` by :class:`ppl.handlers.seed`).

    Args:
        msg: the message (see the module docstring).
        outer_of: a handler on the stack; only the handlers outside it see the
            message (used by handlers that split a site in two).
    """
    stack = _STATE.stack
    if outer_of is not None:
        stack = stack[: stack.index(outer_of)]
    done_by = msg.get("done_by", ())
    # handlers from the innermost out, until one stops the message
    seen = []
    for handler in reversed(stack):
        if any(handler is h for h in done_by):
            continue
        seen.append(handler)
        handler.process_message(msg)
        if msg["stop"]:
            break
    if msg["value"] is None:
        _default_process(msg)
    for handler in reversed(seen):
        handler.postprocess_message(msg)
    return msg


def _default_process(msg: dict) -> None:
    if msg["type"] in ("sample", "plate") and msg["kwargs"].get("rng_key") is None:
        if msg["type"] == "plate":
            raise MissingSeedError(
                f"plate '{msg['name']}' subsamples {msg['args'][1]} of {msg['args'][0]} "
                "indices and needs a random key: run the model inside "
                "ppl.handlers.seed(model, rng_seed=0), or pass the indices with "
                "ppl.handlers.substitute"
            )
        raise MissingSeedError(
            f"sample site '{msg['name']}' has no value and no random key to draw one: "
            "run the model inside ppl.handlers.seed(model, rng_seed=0) (or use "
            "`with ppl.handlers.seed(rng_seed=0): ...`; a block handler inside the seed "
            "hides sites from it), or give the site a value with obs=, condition or "
            "substitute"
        )
    msg["value"] = msg["fn"](*msg["args"], **msg["kwargs"])


class MissingSeedError(RuntimeError):
    """A random draw was needed but no :class:`ppl.handlers.seed` handler is active."""
