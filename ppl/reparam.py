"""Reparameterizers for :class:`ppl.handlers.reparam`.

A reparameterizer is called as ``reparameterizer(name, fn, obs)`` and returns
``(new_fn, value)``: ``new_fn`` None with a value turns the site into a
deterministic function of new auxiliary sites.
"""

from __future__ import annotations

import jax.numpy as jnp
from numpyro.distributions import (
    Cauchy,
    Distribution,
    Gumbel,
    Laplace,
    Logistic,
    Normal,
    StudentT,
)
from numpyro.distributions.distribution import ExpandedDistribution, Independent

from ppl.primitives import sample

__all__ = ["LocScaleReparam"]

_LOC_SCALE_FAMILIES = (Normal, StudentT, Cauchy, Laplace, Logistic, Gumbel)


class LocScaleReparam:
    """Non-center a location-scale site: ``x = loc + scale * x_decentered``.

    With ``centered`` c in [0, 1] the auxiliary site ``{name}_decentered`` has
    location ``c * loc`` and scale ``scale ** c`` (c = 0, the default, is the
    fully non-centered parameterization; c = 1 leaves the site as it was).
    Supported families: Normal, StudentT, Cauchy, Laplace, Logistic, Gumbel,
    also when expanded by plates or made an event with ``to_event``.
    """

    def __init__(self, centered: float = 0.0):
        if not 0.0 <= centered <= 1.0:
            raise ValueError(f"LocScaleReparam: centered must be in [0, 1], got {centered}")
        self.centered = centered

    def __call__(self, name: str, fn: Distribution, obs):
        if obs is not None:
            raise ValueError(
                f"LocScaleReparam: site '{name}' is observed; only latent sites can be "
                "reparameterized"
            )
        base, full_shape, event_dim = _peel(fn)
        if not isinstance(base, _LOC_SCALE_FAMILIES):
            raise TypeError(
                f"LocScaleReparam: site '{name}' has a {type(base).__name__} distribution; "
                f"supported: {', '.join(c.__name__ for c in _LOC_SCALE_FAMILIES)}"
            )
        c = self.centered
        loc, scale = base.loc, base.scale
        params = {"loc": c * loc, "scale": scale**c}
        if isinstance(base, StudentT):
            params["df"] = base.df
        aux_fn = type(base)(**params).expand(full_shape)
        if event_dim:
            aux_fn = aux_fn.to_event(event_dim)
        decentered = sample(f"{name}_decentered", aux_fn)
        value = loc + jnp.power(scale, 1.0 - c) * (decentered - c * loc)
        return None, value


def _peel(fn: Distribution):
    """Strip Independent / ExpandedDistribution wrappers: (base, full shape, event dims)."""
    full_shape = tuple(fn.batch_shape) + tuple(fn.event_shape)
    event_dim = len(fn.event_shape)
    while isinstance(fn, (Independent, ExpandedDistribution)):
        fn = fn.base_dist
    return fn, full_shape, event_dim
