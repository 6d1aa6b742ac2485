"""Run NumPyro models on ppl's engines.

``ppl.from_numpyro(model, *args, **kwargs)`` compiles an unchanged NumPyro
model (written with ``numpyro.sample``, ``numpyro.plate``, ...) into a
:class:`ppl.LogDensity`. While the model runs, a bridge handler at the bottom
of NumPyro's own handler stack forwards every site to ppl's handler stack, so
NumPyro's handlers inside the model still apply and ppl's (seed, trace, the
log-density compiler, predictive) see ordinary ppl sites.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import numpyro, numpyro.distributions as dist
    >>> import ppl
    >>> def numpyro_model(y):
    ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    ...     with numpyro.plate("obs", y.shape[0]):
    ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> ld = ppl.from_numpyro(numpyro_model, jnp.array([0.2, -0.1]))
    >>> ld.latent_names, ld.sites["y"].dims
    (('mu',), ('obs',))
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import numpyro.handlers as numpyro_handlers
import numpyro.primitives as numpyro_primitives
from numpyro.contrib.control_flow.scan import scan_wrapper as numpyro_scan_wrapper
from numpyro.distributions.distribution import ExpandedDistribution, Independent, Unit
from numpyro.ops.pytree import PytreeTrace

from ppl import handlers
from ppl.control_flow import _scan_length, scan
from ppl.density import LogDensity
from ppl.primitives import request_key, validate_observed
from ppl.runtime import CondIndepStackFrame, apply_stack, new_message

__all__ = ["from_numpyro", "numpyro_model"]

_FORWARDED = ("sample", "param", "deterministic", "plate")


def _is_unit(fn) -> bool:
    while isinstance(fn, (ExpandedDistribution, Independent)):
        fn = fn.base_dist
    return isinstance(fn, Unit)


class _NumPyroBridge(numpyro_primitives.Messenger):
    """Forward NumPyro sites to ppl's handler stack and take back their values.

    ``numpyro.prng_key()`` (also called by ``numpyro.handlers.block`` for the sites it
    hides) gets a key from ppl's :class:`ppl.handlers.seed`. Without one, e.g. while a
    compiled ``LogDensity`` evaluates the model, the n-th request of a model run gets
    ``fold_in(PRNGKey(0), n)``: fixed keys, so the log density stays a deterministic
    function of the latent values (NumPyro's MCMC also runs its potential with one fixed
    key), yet distinct for each request.
    """

    def __init__(self, fn: Callable | None = None):
        self._unseeded_requests = 0
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] == "control_flow":
            _run_numpyro_scan(msg, self)
            return
        if msg["type"] == "prng_key":
            self._give_key(msg)
            return
        if msg["type"] not in _FORWARDED:
            if msg["type"] in ("control_flow", "prng_key", "mutable"):
                raise NotImplementedError(
                    f"ppl.from_numpyro: site '{msg.get('name')}' uses numpyro's "
                    f"'{msg['type']}' primitive, which ppl does not support yet"
                )
            return
        infer = dict(msg.get("infer") or {})
        if msg["type"] == "sample" and _is_unit(msg.get("fn")):
            infer["is_factor"] = True
        ours = new_message(
            msg["type"],
            msg["name"],
            fn=msg.get("fn"),
            args=msg.get("args", ()),
            kwargs=dict(msg.get("kwargs") or {}),
            value=msg.get("value"),
            is_observed=bool(msg.get("is_observed", False)),
            scale=msg.get("scale"),
            cond_indep_stack=[
                CondIndepStackFrame(f.name, f.dim, f.size) for f in msg.get("cond_indep_stack", [])
            ],
            infer=infer,
        )
        if msg["type"] == "plate" and ours["value"] is None:
            ours["kwargs"].setdefault("rng_key", None)
        apply_stack(ours)
        if ours["type"] == "sample" and ours["is_observed"] and not ours["infer"].get("is_factor"):
            validate_observed(ours)
        msg["value"] = ours["value"]

    def _give_key(self, msg: dict) -> None:
        if msg["value"] is not None or msg["kwargs"].get("rng_key") is not None:
            return  # a numpyro.handlers.seed inside the model gave it
        key = request_key()
        if key is None:
            self._unseeded_requests += 1
            key = jax.random.fold_in(jax.random.PRNGKey(0), self._unseeded_requests)
        msg["kwargs"]["rng_key"] = key


def _run_numpyro_scan(msg: dict, bridge: _NumPyroBridge) -> None:
    """Run ``numpyro.contrib.control_flow.scan`` as :func:`ppl.scan`.

    NumPyro runs a scan body hidden from the handlers around the ``scan`` call and sends
    its sites afterwards, stacked. Here the body runs with only this bridge, NumPyro's
    plates and its other handlers that act per step (``infer_config``, ``reparam``...) on
    NumPyro's stack; the ``condition``/``substitute`` around the call (which NumPyro
    records in the message's ``substitute_stack``), and ``mask``, ``scale`` and ``block``
    around it, become ppl's handlers around :func:`ppl.scan`, which applies them to each
    step or to the stacked sites as NumPyro does. NumPyro gets back an empty trace to
    replay.
    """
    if msg["fn"] is not numpyro_scan_wrapper:
        raise NotImplementedError(
            f"ppl.from_numpyro: numpyro's control-flow primitive {msg['fn']!r} is not "
            "supported (only numpyro.contrib.control_flow.scan is)"
        )
    f, init, xs, length, reverse = msg["args"]
    history = msg["kwargs"].get("history", 1)
    stack = numpyro_primitives._PYRO_STACK
    saved = list(stack)
    position = max(i for i, h in enumerate(saved) if h is bridge)
    kept, around = [], []
    for handler in saved[position + 1 :]:  # outermost first
        if isinstance(handler, (numpyro_handlers.condition, numpyro_handlers.substitute)):
            continue  # in substitute_stack
        if isinstance(handler, numpyro_handlers.mask):
            around.append(handlers.mask(mask=handler.mask))
        elif isinstance(handler, numpyro_handlers.scale):
            around.append(handlers.scale(scale=handler.scale))
        elif isinstance(handler, numpyro_handlers.block):
            around.append(handlers.block(hide_fn=handler.hide_fn))
        else:
            kept.append(handler)
    for kind, data in reversed(msg["kwargs"].get("substitute_stack", [])):
        given = {"data": data} if isinstance(data, dict) else None
        if kind == "condition":
            around.append(handlers.condition(**(given or {"condition_fn": data})))
        elif kind == "substitute":
            around.append(handlers.substitute(**(given or {"substitute_fn": data})))
        else:
            raise NotImplementedError(
                f"ppl.from_numpyro: numpyro's {kind!r} handler around a scan is not supported"
            )
    stack[:] = [*saved[: position + 1], *kept]
    try:
        with contextlib.ExitStack() as entered:
            for handler in around:
                entered.enter_context(handler)
            carry, ys = scan(f, init, xs, length=length, reverse=reverse, history=history)
    finally:
        stack[:] = saved
    steps = _scan_length(xs, length)
    msg["value"] = ((steps, None, carry), (PytreeTrace({}), ys))


def numpyro_model(model: Callable) -> Callable:
    """Wrap a NumPyro model so that it runs as a ppl model."""

    @functools.wraps(model)
    def wrapped(*args: Any, **kwargs: Any):
        with _NumPyroBridge():
            return model(*args, **kwargs)

    return wrapped


def from_numpyro(
    model: Callable, *args: Any, rng_seed: int | None = None, **kwargs: Any
) -> LogDensity:
    """Compile an unchanged NumPyro model and its data into a :class:`ppl.LogDensity`.

    Args:
        model: a model written with ``numpyro.sample`` / ``numpyro.plate`` / ...
        *args, **kwargs: the model's arguments (data).
        rng_seed: keyword only, not passed to the model: seed of ppl's one set-up run of
            the model (its prior draws fix the site layout and the indices of subsampled
            plates; see :class:`ppl.LogDensity`); default 0. For a model that itself takes
            an argument named ``rng_seed``, use
            ``ppl.LogDensity(ppl.interop.numpyro_model(model), args, kwargs, rng_seed=...)``.

    Returns:
        A LogDensity; sample it with ``ppl.infer.MCMC(ppl.infer.NUTS(ld), ...)``.
    """
    if rng_seed is not None and "rng_seed" in _parameters(model):
        raise TypeError(
            "from_numpyro(rng_seed=...) seeds ppl's set-up run, but the model also takes an "
            "argument named 'rng_seed': pass the model's arguments with ppl.LogDensity("
            "ppl.interop.numpyro_model(model), args, kwargs, rng_seed=...) instead"
        )
    seed = 0 if rng_seed is None else rng_seed
    return LogDensity(numpyro_model(model), args, kwargs, rng_seed=seed)


def _parameters(model: Callable) -> tuple[str, ...]:
    try:
        return tuple(inspect.signature(model).parameters)
    except (TypeError, ValueError):
        return ()
