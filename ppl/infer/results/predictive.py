"""Prior and posterior predictive draws, pointwise log-likelihoods, replicated data.

:class:`Predictive` and :func:`log_likelihood` run the model once per draw, vectorized with
``jax.vmap``, under the effect handlers (:mod:`ppl.handlers`: seed, substitute, trace);
:func:`posterior_predictive` replicates a model's observed data at each posterior draw (the
command line's checks, :mod:`ppl.runs`). The DataTree builders
(:mod:`ppl.infer.results.datatree`) take their log-likelihoods from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ppl.handlers import Messenger, seed, substitute, trace
from ppl.infer.keys import check_key

__all__ = ["Predictive", "log_likelihood", "posterior_predictive"]


def _batch_size(samples: dict[str, Any], batch_ndims: int) -> tuple[int, ...]:
    shapes = {name: jnp.shape(v)[:batch_ndims] for name, v in samples.items()}
    distinct = set(shapes.values())
    if len(distinct) != 1:
        raise ValueError(
            f"posterior draws disagree on their leading {batch_ndims} batch dim(s): {shapes}"
        )
    batch_shape = distinct.pop()
    if len(batch_shape) != batch_ndims:
        raise ValueError(
            f"posterior draws need {batch_ndims} leading batch dim(s), got shapes {shapes}"
        )
    return batch_shape


def _flatten_batch(samples: dict, batch_ndims: int) -> tuple[dict, tuple[int, ...]]:
    batch_shape = _batch_size(samples, batch_ndims)
    n = 1
    for d in batch_shape:
        n *= d
    flat = {k: jnp.reshape(v, (n, *jnp.shape(v)[batch_ndims:])) for k, v in samples.items()}
    return flat, batch_shape


class Predictive:
    """Draw from the prior predictive, or the posterior predictive given draws.

    Sites are sampled where the model gives them no value: pass ``None`` for
    observed data (e.g. ``y=None``) to draw replicated data.

    Args:
        model: the model function.
        posterior_samples: dict ``site -> array`` of draws with ``batch_ndims``
            leading dims (e.g. (num_draws, ...) or (chains, draws, ...)), or
            None for the prior predictive.
        num_samples: number of prior draws (needed without posterior_samples).
        return_sites: names to return; default: every sample site that is not
            observed and not in ``posterior_samples``, and every deterministic site.
        batch_ndims: leading batch dims of ``posterior_samples``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import ppl, ppl.distributions as dist
        >>> def model(y=None):
        ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ...     with ppl.plate("obs", 3):
        ...         ppl.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> prior = Predictive(model, num_samples=100)(jax.random.PRNGKey(0))
        >>> prior["y"].shape
        (100, 3)
    """

    def __init__(
        self,
        model: Callable,
        posterior_samples: dict[str, Any] | None = None,
        *,
        num_samples: int | None = None,
        return_sites: Sequence[str] | None = None,
        batch_ndims: int = 1,
    ):
        if posterior_samples is None and num_samples is None:
            raise ValueError("Predictive needs posterior_samples or num_samples")
        self.model = model
        self.batch_ndims = batch_ndims if posterior_samples is not None else 1
        if posterior_samples is not None:
            self.posterior_samples, self._batch_shape = _flatten_batch(
                dict(posterior_samples), batch_ndims
            )
            n = self.posterior_samples[next(iter(self.posterior_samples))].shape[0]
            if num_samples is not None and num_samples != n:
                raise ValueError(
                    f"num_samples={num_samples} disagrees with the {n} posterior draws given"
                )
        else:
            self.posterior_samples = {}
            self._batch_shape = (int(num_samples),)
        self.num_samples = 1
        for d in self._batch_shape:
            self.num_samples *= d
        self.return_sites = None if return_sites is None else list(return_sites)

    def _one(self, key: jax.Array, draw: dict, args: tuple, kwargs: dict) -> dict:
        model = substitute(seed(self.model, rng_seed=key), data=draw)
        tr = trace(model).get_trace(*args, **kwargs)
        if self.return_sites is not None:
            missing = [n for n in self.return_sites if n not in tr]
            if missing:
                raise KeyError(f"return_sites {missing} are not sites of the model")
            names = self.return_sites
        else:
            names = [
                name
                for name, site in tr.items()
                if (site["type"] == "sample" and not site["is_observed"] and name not in draw)
                or site["type"] == "deterministic"
            ]
        return {name: tr[name]["value"] for name in names}

    def __call__(self, key: jax.Array, *args: Any, **kwargs: Any) -> dict[str, jax.Array]:
        """Draws of the returned sites, each with the batch shape prepended."""
        keys = jax.random.split(check_key(key), self.num_samples)
        out = jax.vmap(lambda k, d: self._one(k, d, args, kwargs))(keys, self.posterior_samples)
        return {k: jnp.reshape(v, self._batch_shape + jnp.shape(v)[1:]) for k, v in out.items()}


def log_likelihood(
    model: Callable,
    posterior_samples: dict[str, Any],
    *args: Any,
    batch_ndims: int = 1,
    **kwargs: Any,
) -> dict[str, jax.Array]:
    """Pointwise log-likelihood of every observed site for each posterior draw.

    Args:
        model: the model function.
        posterior_samples: dict ``site -> array`` with ``batch_ndims`` leading dims.
        *args, **kwargs: the model's arguments, including the observed data.
        batch_ndims: leading batch dims of the draws.

    Returns:
        dict ``observed site -> array`` of shape batch shape + the site's batch
        shape (one log-probability per observation; masked entries are 0).
    """
    draws, batch_shape = _flatten_batch(dict(posterior_samples), batch_ndims)

    def one(draw):
        tr = trace(substitute(seed(model, rng_seed=0), data=draw)).get_trace(*args, **kwargs)
        out = {}
        for name, site in tr.items():
            if site["type"] != "sample" or not site["is_observed"]:
                continue
            if site["infer"].get("is_factor"):
                continue
            lp = site["fn"].log_prob(site["value"])
            if site["mask"] is not None:
                lp = jnp.where(site["mask"], lp, 0.0)
            out[name] = lp
        return out

    out = jax.vmap(one)(draws)
    return {k: jnp.reshape(v, batch_shape + jnp.shape(v)[1:]) for k, v in out.items()}


def _unobserved(model: Callable, names: set[str]) -> Callable:
    """``model`` with the observed sites in ``names`` turned into draws from their likelihood."""

    class unobserve(Messenger):
        def process_message(self, msg: dict) -> None:
            if msg["type"] == "sample" and msg["is_observed"] and msg["name"] in names:
                msg["value"] = None
                msg["is_observed"] = False

    return unobserve(model)


def posterior_predictive(
    model: Callable,
    latent_draws: dict[str, Any],
    observed_names: list[str],
    data: dict,
    key: Any,
) -> dict[str, np.ndarray]:
    """Replicated data of the observed sites, one set per posterior draw.

    The model runs with its data unchanged (so sizes taken from the data still
    work), under a handler that turns each observed site into a draw from its
    likelihood given the substituted latent draws; this needs no convention on
    which argument holds the observations.

    Args:
        model: the model function.
        latent_draws: ``latent site -> (chains, draws, ...)`` constrained draws.
        observed_names: the observed sites to replicate.
        data: the model's keyword arguments.
        key: a ``jax.random`` key.

    Returns:
        ``site -> (chains, draws, *site shape)``.
    """
    predictive = Predictive(
        _unobserved(model, set(observed_names)),
        latent_draws,
        return_sites=list(observed_names),
        batch_ndims=2,
    )
    return {k: np.asarray(v) for k, v in predictive(key, **data).items()}
