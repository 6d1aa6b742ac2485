"""Variational objectives: ``Trace_ELBO``, ``TraceMeanField_ELBO`` and ``RenyiELBO``.

A loss is a small object with one pure method, ``loss(rng_key, params, model, guide, *args,
**kwargs) -> scalar``, that SVI differentiates with respect to ``params`` (the constrained
values of the ``ppl.param`` sites). Each particle runs the guide under
:class:`~ppl.handlers.seed` and :class:`~ppl.handlers.trace` (params substituted), then the
model with the guide's latent values (and plate indices) replayed into it:

    log w = sum over model sample sites of log p  -  sum over guide latent sites of log q

Every term has its site's mask and scale applied, so a subsampled plate (``ppl.plate(name,
N, subsample_size=B)``) scales its sites by ``N / B``; its indices are drawn by the seed
handler, a fresh minibatch per particle and per step. The gradient uses the
reparameterization trick: every latent guide site must be reparameterizable
(``fn.has_rsample``).

Example:
    >>> import jax, jax.numpy as jnp
    >>> import ppl, ppl.distributions as dist
    >>> def model():
    ...     ppl.sample("x", dist.Normal(0.0, 1.0))
    >>> def guide():
    ...     ppl.sample("x", dist.Normal(ppl.param("loc", 0.0), 1.0))
    >>> # the guide equals the posterior (here the prior): the ELBO is log Z = 0
    >>> abs(float(Trace_ELBO().loss(jax.random.PRNGKey(0), {"loc": 0.0}, model, guide)))
    0.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from numpyro.distributions import kl_divergence

from ppl.handlers import replay, seed, substitute, trace

__all__ = ["ELBO", "Trace_ELBO", "TraceMeanField_ELBO", "RenyiELBO", "get_traces"]


def _substitute_params(fn: Callable, params: dict) -> Callable:
    def value(msg):
        if msg["type"] == "param":
            return params.get(msg["name"])
        return None

    return substitute(fn, substitute_fn=value)


def get_traces(
    rng_key: jax.Array, params: dict, model: Callable, guide: Callable, args: tuple, kwargs: dict
) -> tuple[dict, dict]:
    """Run the guide, then the model with the guide's values replayed; return both traces.

    Args:
        rng_key: a ``jax.random`` key (split between guide and model).
        params: constrained values of the param sites, ``{name: array}``.
        model, guide: the model and guide functions (same signature).
        args, kwargs: their arguments.

    Returns:
        ``(model_trace, guide_trace)``, ordered dicts ``site -> message``.

    Raises:
        ValueError when a latent model site has no guide site, a guide latent site is
        observed in the model, or a guide latent site is not reparameterizable.
    """
    guide_key, model_key = jax.random.split(rng_key)
    guide_trace = trace(_substitute_params(seed(guide, rng_seed=guide_key), params)).get_trace(
        *args, **kwargs
    )
    model_fn = replay(_substitute_params(seed(model, rng_seed=model_key), params), guide_trace)
    model_trace = trace(model_fn).get_trace(*args, **kwargs)
    _check_traces(model_trace, guide_trace, params)
    return model_trace, guide_trace


def _check_traces(model_trace: dict, guide_trace: dict, params: dict) -> None:
    for tr in (model_trace, guide_trace):
        for name, site in tr.items():
            if site["type"] == "param" and name not in params:
                raise ValueError(
                    f"param site '{name}' appeared that was not there when SVI.init ran; "
                    "every param must be created in the first run of the model and guide"
                )
    for name, site in guide_trace.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        model_site = model_trace.get(name)
        if model_site is not None and model_site["type"] == "sample" and model_site["is_observed"]:
            raise ValueError(
                f"guide site '{name}' is observed in the model: a guide should sample only "
                "the model's latent sites"
            )
        fn = site["fn"]
        if fn.support.is_discrete or not fn.has_rsample:
            raise ValueError(
                f"guide site '{name}' has a {type(fn).__name__} distribution, which is "
                f"{'discrete' if fn.support.is_discrete else 'not reparameterizable'}: the "
                "ELBO gradient here uses the reparameterization trick; marginalize the "
                "variable out of the model or use a continuous reparameterizable family"
            )
    for name, site in model_trace.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        guide_site = guide_trace.get(name)
        if guide_site is None and site["infer"].get("enumerate") == "parallel":
            raise NotImplementedError(
                f"latent model site '{name}' is marked for enumeration, which ppl's ELBOs "
                "do not sum out (there is no TraceEnum_ELBO yet): sample the model with "
                "ppl.infer.MCMC or pathfinder, which use the marginal log density, or "
                "marginalize the site by hand"
            )
        if guide_site is None or guide_site["type"] != "sample":
            raise ValueError(
                f"latent model site '{name}' has no sample site of the same name in the "
                "guide: the guide must sample every latent site of the model (observe it "
                "with obs= or condition if it is data)"
            )


def site_log_prob(site: dict) -> jax.Array:
    """Sum of a sample site's log-probability with its mask and scale applied (scalar)."""
    log_prob = site["fn"].log_prob(site["value"])
    return _mask_scale_sum(site, log_prob)


def _mask_scale_sum(site: dict, terms: jax.Array) -> jax.Array:
    if site["mask"] is not None:
        terms = jnp.where(site["mask"], terms, 0.0)
    if site["scale"] is not None:
        terms = site["scale"] * terms
    return jnp.sum(terms)


def _log_weight(model_trace: dict, guide_trace: dict) -> jax.Array:
    """log p(x, z) - log q(z) of one particle (scalar)."""
    total = jnp.zeros(())
    for site in model_trace.values():
        if site["type"] == "sample":
            total = total + site_log_prob(site)
    for site in guide_trace.values():
        if site["type"] == "sample" and not site["is_observed"]:
            total = total - site_log_prob(site)
    return total


def _check_particles(num_particles: Any) -> int:
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
    return num_particles


class ELBO:
    """Base class of the losses: ``num_particles`` vectorized (``vmap``) Monte Carlo draws.

    Subclasses define ``particle(rng_key, params, model, guide, args, kwargs) -> scalar``
    (a per-particle ELBO estimate) and may override :meth:`combine`.
    """

    def __init__(self, num_particles: int = 1):
        self.num_particles = _check_particles(num_particles)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_particles={self.num_particles})"

    def particle(self, rng_key, params, model, guide, args, kwargs) -> jax.Array:
        raise NotImplementedError

    def combine(self, particles: jax.Array) -> jax.Array:
        """The loss from per-particle ELBO estimates of shape (num_particles,)."""
        return -jnp.mean(particles)

    def loss(
        self, rng_key: jax.Array, params: dict, model: Callable, guide: Callable, *args, **kwargs
    ) -> jax.Array:
        """The loss (negative ELBO estimate, scalar) at constrained ``params``.

        Args:
            rng_key: a ``jax.random`` key; each particle gets its own split.
            params: ``{param site: constrained value}``.
            model, guide: functions of ``*args, **kwargs``.

        Returns:
            A scalar; minimize it.
        """
        keys = jax.random.split(rng_key, self.num_particles)
        particles = jax.vmap(lambda key: self.particle(key, params, model, guide, args, kwargs))(
            keys
        )
        return self.combine(particles)


class Trace_ELBO(ELBO):
    """The evidence lower bound estimated by Monte Carlo: ``-mean_k (log p - log q)``.

    Args:
        num_particles: draws per estimate (vectorized with ``vmap``).
    """

    def particle(self, rng_key, params, model, guide, args, kwargs):
        model_trace, guide_trace = get_traces(rng_key, params, model, guide, args, kwargs)
        return _log_weight(model_trace, guide_trace)


class TraceMeanField_ELBO(ELBO):
    """The ELBO with the analytic KL divergence for sites where one is known.

    For a latent site whose guide and model distributions have a registered
    ``numpyro.distributions.kl_divergence`` (e.g. Normal/Normal), the pair
    ``log p(z) - log q(z)`` is replaced by ``-KL(q || p)`` (with the model site's mask and
    scale), which lowers the variance. Valid for mean-field guides (each guide site
    independent of the others given the params); other sites use Monte Carlo as in
    :class:`Trace_ELBO`.

    Args:
        num_particles: draws per estimate (vectorized with ``vmap``).
    """

    def particle(self, rng_key, params, model, guide, args, kwargs):
        model_trace, guide_trace = get_traces(rng_key, params, model, guide, args, kwargs)
        total = jnp.zeros(())
        analytic = set()
        for name, site in model_trace.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            guide_site = guide_trace[name]
            try:
                kl = kl_divergence(guide_site["fn"], site["fn"])
            except NotImplementedError:
                continue
            total = total - _mask_scale_sum(site, kl)
            analytic.add(name)
        for name, site in model_trace.items():
            if site["type"] == "sample" and name not in analytic:
                total = total + site_log_prob(site)
        for name, site in guide_trace.items():
            if site["type"] == "sample" and not site["is_observed"] and name not in analytic:
                total = total - site_log_prob(site)
        return total


class RenyiELBO(ELBO):
    """The Renyi alpha-divergence bound (Li & Turner, 2016).

    ``loss = -1/(1 - alpha) * log( mean_k exp((1 - alpha) * log w_k) )`` with
    ``log w_k = log p(x, z_k) - log q(z_k)``. ``alpha = 0`` gives the importance-weighted
    bound (IWAE), which tightens as ``num_particles`` grows; ``alpha -> 1`` tends to the ELBO.

    Args:
        alpha: order of the divergence, any real number but 1.
        num_particles: draws per estimate (at least 2 for the bound to differ from the ELBO).
    """

    def __init__(self, alpha: float = 0.0, num_particles: int = 2):
        alpha = float(alpha)
        if alpha == 1.0:
            raise ValueError("RenyiELBO needs alpha != 1; alpha = 1 is Trace_ELBO")
        self.alpha = alpha
        super().__init__(num_particles)

    def __repr__(self) -> str:
        return f"RenyiELBO(alpha={self.alpha}, num_particles={self.num_particles})"

    def particle(self, rng_key, params, model, guide, args, kwargs):
        model_trace, guide_trace = get_traces(rng_key, params, model, guide, args, kwargs)
        return _log_weight(model_trace, guide_trace)

    def combine(self, particles):
        scaled = (1.0 - self.alpha) * particles
        log_mean = jax.nn.logsumexp(scaled) - jnp.log(particles.shape[0])
        return -log_mean / (1.0 - self.alpha)
