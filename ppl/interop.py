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

import functools
from collections.abc import Callable
from typing import Any

import numpyro.primitives as numpyro_primitives
from numpyro.distributions.distribution import ExpandedDistribution, Independent, Unit

from ppl.density import LogDensity
from ppl.primitives import validate_observed
from ppl.runtime import CondIndepStackFrame, apply_stack, new_message

__all__ = ["from_numpyro", "numpyro_model"]

_FORWARDED = ("sample", "param", "deterministic", "plate")


def _is_unit(fn) -> bool:
    while isinstance(fn, (ExpandedDistribution, Independent)):
        fn = fn.base_dist
    return isinstance(fn, Unit)


class _NumPyroBridge(numpyro_primitives.Messenger):
    """Forward NumPyro sites to ppl's handler stack and take back their values."""

    def process_message(self, msg: dict) -> None:
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


def numpyro_model(model: Callable) -> Callable:
    """Wrap a NumPyro model so that it runs as a ppl model."""

    @functools.wraps(model)
    def wrapped(*args: Any, **kwargs: Any):
        with _NumPyroBridge():
            return model(*args, **kwargs)

    return wrapped


def from_numpyro(model: Callable, *args: Any, **kwargs: Any) -> LogDensity:
    """Compile an unchanged NumPyro model and its data into a :class:`ppl.LogDensity`.

    Args:
        model: a model written with ``numpyro.sample`` / ``numpyro.plate`` / ...
        *args, **kwargs: the model's arguments (data).

    Returns:
        A LogDensity; sample it with ``ppl.infer.MCMC(ppl.infer.NUTS(ld), ...)``.
    """
    return LogDensity(numpyro_model(model), args, kwargs)
