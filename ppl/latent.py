"""The handlers that set a compiled model's latent sites, and the init strategies.

While :mod:`ppl.density` runs a model, these handlers put a value into each
latent site: from the flat unconstrained vector (with the log-Jacobian), from
given constrained values, or from an init strategy's draw; plates and params
keep their prototype values. They use the site table and transforms of
:mod:`ppl.sites`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from numpyro.distributions.transforms import biject_to
from numpyro.distributions.util import sum_rightmost

from ppl.handlers import Messenger, at_step
from ppl.sites import is_real_support

__all__ = ["INIT_STRATEGIES"]

INIT_STRATEGIES = ("uniform", "median", "prior")


class _LatentSetter(Messenger):
    """Base of the handlers that set latent sites: plates and params keep their prototype
    values, unknown latent sites are refused, and :meth:`set_latent` fills in the rest."""

    def __init__(self, fixed: dict, sites: dict):
        self.fixed = fixed
        self.sites = sites
        self.step: Any = None  # inside a ppl.scan body: the traced step index
        super().__init__()

    def scan_handler(self, length: int) -> Callable[[Any], Messenger]:
        def step_view(step):
            view = copy.copy(self)
            view.step = step
            view.length = length
            return view

        return step_view

    def process_message(self, msg: dict) -> None:
        name = msg["name"]
        if msg["type"] in ("plate", "param"):
            if name in self.fixed:
                msg["value"] = self.fixed[name]
            return
        if msg["type"] != "sample" or msg["is_observed"]:
            return
        if name in self.sites and self.sites[name].kind == "enumerated":
            return  # summed out by ppl.enumeration
        if name not in self.sites or self.sites[name].kind != "latent":
            _unexpected_site(name, self.sites)
        self.set_latent(msg)

    def set_latent(self, msg: dict) -> None:
        raise NotImplementedError


class _Unconstrain(_LatentSetter):
    """Set latent sites from unconstrained values, recording the log-Jacobian."""

    def __init__(self, unconstrained: dict, fixed: dict, sites: dict):
        self.unconstrained = unconstrained
        super().__init__(fixed, sites)

    def set_latent(self, msg: dict) -> None:
        u = self.unconstrained[msg["name"]]
        if self.step is not None:  # the site's whole sequence is (length, ...)
            u = u[self.step]
        support = msg["fn"].support
        if is_real_support(support):
            msg["value"] = u
            return
        transform = biject_to(support)
        value = transform(u)
        log_det = transform.log_abs_det_jacobian(u, value)
        event_dim = len(msg["fn"].event_shape)
        msg["value"] = value
        msg["log_det"] = sum_rightmost(log_det, jnp.ndim(log_det) - jnp.ndim(value) + event_dim)


class _SetLatent(_LatentSetter):
    """Set latent sites to ``site_value(msg)`` (constrained values).

    With ``rng_key`` each latent site's message gets its own key (for random
    init strategies) before ``site_value`` is called.
    """

    def __init__(
        self,
        site_value: Callable[[dict], Any],
        fixed: dict,
        sites: dict,
        rng_key: jax.Array | None = None,
    ):
        self.site_value = site_value
        self.rng_key = rng_key
        super().__init__(fixed, sites)

    def set_latent(self, msg: dict) -> None:
        if self.rng_key is not None:
            self.rng_key, msg["kwargs"]["rng_key"] = jax.random.split(self.rng_key)
        if self.step is not None:
            msg["scan_length"] = self.length
        value = self.site_value(msg)
        if self.step is not None:
            value = at_step(value, msg, self.step, self.length)
        msg["value"] = value

    def scan_handler(self, length: int) -> Callable[[Any], Messenger]:
        if self.rng_key is None:
            return super().scan_handler(length)
        self.rng_key, key = jax.random.split(self.rng_key)

        def step_view(step):
            view = copy.copy(self)
            view.rng_key = jax.random.fold_in(key, step)
            view.step = step
            view.length = length
            return view

        return step_view


def _unexpected_site(name: str, sites: dict) -> None:
    raise ValueError(
        f"latent site '{name}' appeared that was not in the model's first trace: a model "
        "compiled by ppl.logdensity must have the same sites on every run (no "
        "data-dependent Python control flow over random values)"
    )


def _strategy(strategy, latent_names, radius) -> Callable[[dict], Any]:
    """Per-site function ``msg -> constrained value`` for an init strategy."""

    def shape(msg):
        return tuple(msg["kwargs"].get("sample_shape", ())) + tuple(msg["fn"].shape())

    def uniform(msg):
        transform = biject_to(msg["fn"].support)
        ushape = transform.inverse_shape(shape(msg))
        key = msg["kwargs"]["rng_key"]
        return transform(jax.random.uniform(key, ushape, minval=-radius, maxval=radius))

    def prior(msg):
        sample_shape = tuple(msg["kwargs"].get("sample_shape", ()))
        try:
            return msg["fn"](rng_key=msg["kwargs"]["rng_key"], sample_shape=sample_shape)
        except NotImplementedError:  # improper prior: fall back to uniform
            return uniform(msg)

    def median(msg):
        fn, key = msg["fn"], msg["kwargs"]["rng_key"]
        try:
            draws = fn(rng_key=key, sample_shape=(15, *msg["kwargs"].get("sample_shape", ())))
        except NotImplementedError:  # improper prior: fall back to uniform
            return uniform(msg)
        med = jnp.median(draws, axis=0)
        inside = jnp.all(fn.support(med))
        return jnp.where(inside, med, draws[0])

    if isinstance(strategy, dict):
        unknown = sorted(set(strategy) - set(latent_names))
        if unknown:
            raise KeyError(
                f"init values given for {unknown}, which are not latent sites of the model "
                f"(latent sites: {list(latent_names)})"
            )
        given = {k: jnp.asarray(v) for k, v in strategy.items()}

        def from_values(msg):
            if msg["name"] in given:
                value = given[msg["name"]]
                expected = shape(msg)
                # inside a ppl.scan body a site's value may be its whole sequence
                whole = (msg.get("scan_length"), *expected)
                if value.shape != expected and value.shape != whole:
                    raise ValueError(
                        f"init value for site '{msg['name']}' has shape {value.shape}, "
                        f"expected {expected}"
                    )
                return value
            return uniform(msg)

        return from_values
    table = {"uniform": uniform, "prior": prior, "median": median}
    if strategy not in table:
        raise ValueError(
            f"unknown init strategy {strategy!r}: use one of {INIT_STRATEGIES} or a dict of "
            "initial values"
        )
    return table[strategy]
