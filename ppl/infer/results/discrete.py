"""Draws of enumerated discrete sites from their exact conditional posterior.

A model whose discrete sites are enumerated (:mod:`ppl.enumeration`) is sampled over its
continuous sites only. :func:`infer_discrete` gives the discrete sites back: for each draw
of the continuous sites it draws the discrete ones from ``p(discrete | continuous, data)``
exactly (``temperature=1``), or takes their joint most probable values
(``temperature=0``: the MAP assignment, the Viterbi path of a hidden Markov model).

How: the sites are drawn one after another by the chain rule, each from its marginal with
the sites not yet drawn summed out (:func:`ppl.contraction.sum_product`). Sites in fewer
plates go first, so that the elements of a site along its plates are independent given
what was drawn before and are drawn at once. The sites a ``ppl.scan`` carries from step to
step are drawn as a chain: a backward pass of the chain's sums, then forward sampling step
by step (forward-filtering backward-sampling, in reverse), O(T K^2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ppl import contraction
from ppl.contraction import Factor, has_dim
from ppl.density import LogDensity

__all__ = ["discrete_draw", "enumerated_log_likelihood", "infer_discrete"]


def infer_discrete(
    model: LogDensity | Callable,
    samples: dict[str, Any],
    *args: Any,
    rng_key: jax.Array | None = None,
    temperature: int = 1,
    batch_ndims: int | None = None,
    **kwargs: Any,
) -> dict[str, jax.Array]:
    """Draw a model's enumerated discrete sites given draws of its continuous sites.

    Args:
        model: a :class:`ppl.LogDensity` with enumerated sites, or a model function
            (compiled with ``*args, **kwargs``).
        samples: ``{latent site: draws}`` with leading batch dims, e.g. the
            ``(chain, draw)`` or ``(draw,)`` draws of ``MCMC.get_samples``.
        rng_key: a ``jax.random`` key (needed for ``temperature=1``).
        temperature: 1 draws from the exact conditional posterior; 0 gives the joint
            MAP values (max-product).
        batch_ndims: number of leading batch dims of ``samples`` (default: inferred
            from the first latent site).

    Returns:
        ``{enumerated site: draws}``, each with the batch dims of ``samples`` followed by
        the site's shape.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import ppl, ppl.distributions as dist
        >>> @ppl.infer.config_enumerate
        ... def mixture(y):
        ...     mu = ppl.sample("mu", dist.Normal(jnp.array([-2.0, 2.0]), 1.0).to_event(1))
        ...     with ppl.plate("obs", y.shape[0]):
        ...         z = ppl.sample("z", dist.Categorical(jnp.array([0.5, 0.5])))
        ...         ppl.sample("y", dist.Normal(mu[z], 0.5), obs=y)
        >>> y = jnp.array([-2.1, 1.9, 2.2])
        >>> infer_discrete(mixture, {"mu": jnp.array([[-2.0, 2.0]])}, y, temperature=0)["z"]
        Array([[0, 1, 1]], dtype=int32)
    """
    ld = model if isinstance(model, LogDensity) else LogDensity(model, args, kwargs)
    if not ld.enumerated_names:
        raise ValueError(
            "infer_discrete: the model has no enumerated sites (mark discrete sites "
            "infer={'enumerate': 'parallel'} or wrap the model in ppl.infer.config_enumerate)"
        )
    if temperature not in (0, 1):
        raise ValueError(f"infer_discrete: temperature must be 0 or 1, got {temperature!r}")
    if temperature == 1 and rng_key is None:
        raise ValueError("infer_discrete: temperature=1 draws at random and needs rng_key=")
    if rng_key is None:
        rng_key = jax.random.PRNGKey(0)
    missing = [n for n in ld.latent_names if n not in samples]
    if missing:
        raise KeyError(f"infer_discrete: no draws given for the latent site(s) {missing}")
    first = ld.latent_names[0] if ld.latent_names else None
    if batch_ndims is None:
        if first is None:
            raise ValueError("infer_discrete: the model has no latent sites; give batch_ndims")
        batch_ndims = jnp.ndim(samples[first]) - len(ld.sites[first].shape)
    values = {n: jnp.asarray(samples[n]) for n in ld.latent_names}
    batch_shape = jnp.shape(values[first])[:batch_ndims] if first else ()
    n = math.prod(batch_shape)
    flat = {k: jnp.reshape(v, (n, *ld.sites[k].shape)) for k, v in values.items()}
    thetas = jax.vmap(ld.unconstrain)(flat) if first else jnp.zeros((n, 0))
    keys = jax.random.split(rng_key, n)
    draw = jax.jit(jax.vmap(lambda k, th: discrete_draw(ld, th, k, temperature)))
    out = draw(keys, thetas)
    return {k: jnp.reshape(v, (*batch_shape, *jnp.shape(v)[1:])) for k, v in out.items()}


def discrete_draw(
    ld: LogDensity, theta: jax.Array, key: jax.Array, temperature: int = 1
) -> dict[str, jax.Array]:
    """One draw of ``ld``'s enumerated sites at flat unconstrained ``theta`` (dim,)."""
    op = "logsumexp" if temperature == 1 else "max"
    fixed: dict[str, jax.Array] = {}
    tr = ld.trace_at(theta)
    chains = {}  # scan id -> its carried sites
    order = []
    for name in ld.enumerated_names:
        scan = tr[name]["infer"].get("scan")
        dim = tr[name]["infer"]["enum_dim"]
        if scan is not None and any(window[0] == dim for window in scan.markov):
            chains.setdefault(scan.id, []).append(name)
        else:
            order.append(name)
    # sites outside chains, fewest plates first (chains are summed out meanwhile)
    order.sort(key=lambda n: (tr[n]["infer"].get("scan") is not None, len(ld.sites[n].dims)))
    outside = [n for n in order if tr[n]["infer"].get("scan") is None]
    inside = [n for n in order if tr[n]["infer"].get("scan") is not None]
    for name in outside:
        key, sub = jax.random.split(key)
        fixed[name] = _draw_site(ld, theta, fixed, name, sub, temperature, op)
    for names in chains.values():
        key, sub = jax.random.split(key)
        fixed.update(_draw_chain(ld, theta, fixed, names, sub, temperature, op))
    for name in inside:
        key, sub = jax.random.split(key)
        fixed[name] = _draw_site(ld, theta, fixed, name, sub, temperature, op)
    return fixed


def _draw_site(ld, theta, fixed, name, key, temperature, op) -> jax.Array:
    """Draw every element of one site from its marginal given ``fixed``."""
    tr = ld.trace_at(theta, fixed)
    site = tr[name]
    dim = site["infer"]["enum_dim"]
    _, outer, scanned = contraction.factors(tr)
    var_plates, site_of = contraction.variable_plates(tr)
    scan = site["infer"].get("scan")
    mine: list[Factor] = []
    for scan_id, group in scanned.items():
        info = contraction._scan_info(tr, scan_id)
        if scan is not None and info.id == scan.id:
            mine.extend(contraction.chain_factor(group, info, var_plates, site_of, op, keep=(dim,)))
        else:
            outer.extend(contraction.chain_factor(group, info, var_plates, site_of, op))
    if scan is None:
        eliminate = set(site_of) - {dim}
        mine = contraction.sum_product(outer, eliminate, var_plates, site_of, op)
    mine = [f for f in mine if has_dim(f.tensor, dim)]
    logits = mine[0].tensor
    for f in mine[1:]:
        logits = logits + f.tensor
    info = ld.sites[name]
    batch_shape = info.shape[: len(info.shape) - len(info.event_shape)]
    time_dim = None if scan is None else -(scan.batch_ndim + 1)
    logits = _site_logits(logits, dim, batch_shape, time_dim)
    index = _choose(key, logits, temperature)
    return _support_values(site["fn"], index)


def _site_logits(tensor: jax.Array, dim: int, batch_shape: tuple, time_dim: int | None):
    """``tensor``'s values along enumeration ``dim`` for each element of a site: (K, *batch)."""
    rank = max(jnp.ndim(tensor), -dim, -(time_dim or -1), len(batch_shape))
    tensor = jnp.reshape(tensor, (1,) * (rank - jnp.ndim(tensor)) + jnp.shape(tensor))
    r = len(batch_shape)
    axes = [time_dim if (time_dim is not None and j == 0) else j - r for j in range(r)]
    axes = [rank + a for a in axes]
    front = [rank + dim, *axes]
    tensor = jnp.moveaxis(tensor, front, list(range(len(front))))
    tensor = jnp.reshape(tensor, tensor.shape[: len(front)])
    return jnp.broadcast_to(tensor, (tensor.shape[0], *batch_shape))


def _choose(key, logits: jax.Array, temperature: int) -> jax.Array:
    if temperature == 0:
        return jnp.argmax(logits, axis=0)
    return jax.random.categorical(key, logits, axis=0)


def _support_values(fn, index: jax.Array) -> jax.Array:
    support = fn.enumerate_support(expand=False)
    support = jnp.reshape(support, (support.shape[0], *fn.event_shape))
    return support[index]


def _draw_chain(ld, theta, fixed, names, key, temperature, op) -> dict:
    """Draw the sites a scan carries, jointly over time: backward sums, forward draws.

    The backward pass keeps the chain's sums ``beta_t`` (over the current step and the
    ``history - 1`` before it); step t is then drawn from ``step factor + beta_t`` at the
    values drawn for the steps before.
    """
    tr = ld.trace_at(theta, fixed)
    scanned = contraction.factors(tr)[2]
    var_plates, site_of = contraction.variable_plates(tr)
    info = tr[names[0]]["infer"]["scan"]  # scan ids differ from one run to the next
    markov = info.markov
    step = contraction.step_factor(scanned[info.id], info, var_plates, site_of, op)
    reduce = contraction._reduce(op)
    now = [window[0] for window in markov]

    def back(beta, factor):
        m = contraction.reduce_all(factor + beta, now, reduce)
        return contraction.shift_back(m, markov), beta

    beta0 = jnp.zeros(contraction.initial_beta_shape(step.shape[1:], markov))
    _, betas = lax.scan(back, beta0, step, reverse=True)
    joint = step + betas  # (T, ...): per step, over each site's window and the plates
    rank = joint.ndim - 1
    lags = [d for window in markov for d in window[1:]]
    axes = [1 + rank + d for d in lags + now]
    moved = jnp.moveaxis(joint, axes, list(range(1, 1 + len(axes))))
    lag_sizes = [moved.shape[1 + i] for i in range(len(lags))]
    now_sizes = [moved.shape[1 + len(lags) + i] for i in range(len(now))]
    rest = moved.shape[1 + len(axes) :]
    moved = jnp.reshape(moved, (moved.shape[0], math.prod(lag_sizes), math.prod(now_sizes), *rest))
    keys = jax.random.split(key, moved.shape[0])
    history = [len(window) - 1 for window in markov]

    def forward(prev, inputs):
        table, k = inputs
        pick = jnp.broadcast_to(prev, rest)[None, None]
        logits = jnp.take_along_axis(table, pick, axis=0)[0]
        index = _choose(k, logits, temperature).astype(jnp.int32)
        # the window moves on: this step's values, then the older ones but the oldest
        new_now = jnp.unravel_index(index, now_sizes) if len(now) > 1 else (index,)
        old = jnp.unravel_index(prev, lag_sizes) if len(lags) > 1 else (prev,)
        parts, at = [], 0
        for v, h in enumerate(history):
            parts.extend([new_now[v], *old[at : at + h - 1]])
            at += h
        new_prev = (
            jnp.ravel_multi_index(parts, lag_sizes, mode="clip") if len(lags) > 1 else parts[0]
        )
        return jnp.asarray(new_prev, jnp.int32), index

    start = jnp.zeros(rest, dtype=jnp.int32)
    _, indices = lax.scan(forward, start, (moved, keys))  # (T, *rest)
    out = {}
    per_var = jnp.unravel_index(indices, now_sizes) if len(now) > 1 else (indices,)
    dims = [tr[n]["infer"]["enum_dim"] for n in names]
    for name, index in zip(names, _by_dim(per_var, now, dims), strict=True):
        info_ = ld.sites[name]
        batch_shape = info_.shape[1 : len(info_.shape) - len(info_.event_shape)]
        index = jnp.reshape(index, (index.shape[0], *index.shape[index.ndim - len(batch_shape) :]))
        index = jnp.broadcast_to(index, (index.shape[0], *batch_shape))
        out[name] = _support_values(tr[name]["fn"], index).reshape(info_.shape)
    return out


def _by_dim(per_var, now: list[int], dims: list[int]):
    lookup = dict(zip(now, per_var, strict=True))
    return [lookup[d] for d in dims]


def enumerated_log_likelihood(
    ld: LogDensity,
    samples: dict[str, Any],
    batch_ndims: int,
    discrete: dict[str, Any] | None = None,
) -> dict[str, jax.Array]:
    """Pointwise log-likelihoods of the observed sites of a model with enumerated sites.

    Observed sites outside ``ppl.scan`` get their marginal per element, the enumerated
    sites summed out (:func:`ppl.contraction.pointwise_log_marginal`: for a mixture,
    ``log sum_k w_k p(y_i | k)``, what PSIS-LOO needs). Sites in a scan get their
    log-likelihood given the draws ``discrete`` of the enumerated sites, and are left out
    without them.

    Args:
        ld: the log density.
        samples: ``{latent site: draws}`` with ``batch_ndims`` leading dims.
        batch_ndims: leading batch dims of the draws.
        discrete: draws of the enumerated sites (e.g. of :func:`infer_discrete`), or None.
    """
    observed = [n for n, info in ld.sites.items() if info.kind == "observed"]
    first = ld.latent_names[0]
    batch_shape = jnp.shape(samples[first])[:batch_ndims]
    n = math.prod(batch_shape)
    flat = {
        k: jnp.reshape(jnp.asarray(samples[k]), (n, *ld.sites[k].shape)) for k in ld.latent_names
    }
    thetas = jax.vmap(ld.unconstrain)(flat)
    flat_discrete = None
    if discrete is not None:
        flat_discrete = {
            k: jnp.reshape(jnp.asarray(discrete[k]), (n, *ld.sites[k].shape))
            for k in ld.enumerated_names
        }

    def one(theta, fixed):
        tr = ld.trace_at(theta)
        out = {}
        for name in observed:
            if tr[name]["infer"].get("scan") is None:
                out[name] = contraction.pointwise_log_marginal(tr, name)
        if fixed is not None:
            given = ld.trace_at(theta, fixed=fixed)
            for name in observed:
                if name not in out:
                    site = given[name]
                    log_prob = site["fn"].log_prob(site["value"])
                    if site["mask"] is not None:
                        log_prob = jnp.where(site["mask"], log_prob, 0.0)
                    out[name] = log_prob
        return out

    out = jax.jit(jax.vmap(one))(thetas, flat_discrete)
    return {k: jnp.reshape(v, (*batch_shape, *v.shape[1:])) for k, v in out.items()}
