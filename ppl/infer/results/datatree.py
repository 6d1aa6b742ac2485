"""Draws + the log density's site metadata -> an ArviZ ``DataTree``, for every engine.

One builder, :func:`draws_to_datatree`, labels draws of a model's sites with dimension names
and adds the groups ArviZ reads (log_likelihood for LOO, observed_data); the engines' own
converters call it: :func:`mcmc_to_datatree` (``MCMC.to_datatree``), :func:`guide_to_datatree`
(a fitted autoguide), :func:`pathfinder_to_datatree` (``PathfinderResult.to_datatree``) and
:func:`vi_datatree` (the command line's variational runs, :mod:`ppl.runs`). Dimension names
come from the plates that own each axis (``SiteInfo.dims`` of :class:`ppl.LogDensity`);
axes without a plate get ``{site}_dim_{i}``. Users can override both with ``dims`` and
``coords``. Pointwise log-likelihoods come from :mod:`ppl.infer.results.predictive`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import jax
import numpy as np

from ppl.density import LogDensity
from ppl.infer.results.discrete import enumerated_log_likelihood
from ppl.infer.results.pointwise import pointwise_log_likelihood as log_likelihood_in_blocks
from ppl.infer.results.pointwise import record_skip, skip_reason
from ppl.sites import subsampled_plates

__all__ = [
    "add_group",
    "draws_to_datatree",
    "guide_to_datatree",
    "mcmc_to_datatree",
    "observed_data",
    "pathfinder_to_datatree",
    "site_dims",
    "vi_datatree",
]


def site_dims(ld: LogDensity, names, user_dims: dict | None = None) -> dict[str, list[str]]:
    """ArviZ dims for each site in ``names``: the user's, else plate names, else defaults."""
    user_dims = dict(user_dims or {})
    out = {}
    for name in names:
        if name in user_dims:
            out[name] = list(user_dims[name])
            continue
        info = ld.sites.get(name)
        if info is None:
            continue
        out[name] = [d if d is not None else f"{name}_dim_{i}" for i, d in enumerate(info.dims)]
    return out


def observed_data(ld: LogDensity) -> dict[str, np.ndarray]:
    """The observed sites' values, ``site -> array`` (empty for a plain function)."""
    return {
        name: np.asarray(ld.prototype_trace[name]["value"])
        for name, info in ld.sites.items()
        if info.kind == "observed"
    }


def draws_to_datatree(
    ld: LogDensity,
    posterior: dict[str, np.ndarray],
    *,
    sample_stats: dict[str, np.ndarray] | None = None,
    observed: bool = True,
    pointwise_log_likelihood: bool = True,
    dims: dict | None = None,
    coords: dict | None = None,
):
    """A DataTree of draws of ``ld``'s sites.

    Args:
        ld: the log density the draws are of.
        posterior: ``site -> (chain, draw, *site shape)`` constrained draws (latent and
            deterministic sites).
        sample_stats: ``stat -> (chain, draw)``, or None.
        observed: add ``observed_data`` (when the model has observed sites).
        pointwise_log_likelihood: with ``observed``, also add ``log_likelihood``: each
            observed site's pointwise log-likelihood at every draw, computed a block of
            draws at a time and left out (noted in the root attribute
            ``ppl_pointwise_skipped``) where the current
            :func:`~ppl.infer.results.pointwise.pointwise_policy` says so. For a model with
            enumerated discrete sites, sites outside ``ppl.scan`` get their marginal
            (the enumerated sites summed out), sites in a scan their log-likelihood given
            the enumerated sites' draws in ``posterior`` (left out without them); see
            :func:`ppl.infer.results.discrete.enumerated_log_likelihood`.
        dims, coords: ArviZ dims (``site -> [dim names]``) and coords, overriding the plate
            names.

    Returns:
        An ``xarray.DataTree`` with the groups posterior and, as asked and available,
        sample_stats, log_likelihood and observed_data.
    """
    groups: dict[str, dict] = {"posterior": posterior}
    if sample_stats is not None:
        groups["sample_stats"] = sample_stats
    data = observed_data(ld) if observed else {}
    enumerated = getattr(ld, "enumerated_names", ())
    skipped = None
    if data:
        latent = {k: v for k, v in posterior.items() if ld.sites[k].kind == "latent"}
        if pointwise_log_likelihood and posterior:
            num_draws = math.prod(np.shape(next(iter(posterior.values())))[:2])
            skipped = skip_reason(ld, "log_likelihood", num_draws)
        if pointwise_log_likelihood and skipped is None and enumerated:
            have = all(name in posterior for name in enumerated)
            discrete = {k: posterior[k] for k in enumerated} if have else None
            ll = enumerated_log_likelihood(ld, latent, 2, discrete)
            if ll:
                groups["log_likelihood"] = {k: np.asarray(v) for k, v in ll.items()}
        elif pointwise_log_likelihood and skipped is None:
            # a block of draws at a time (ppl.infer.results.pointwise): bounded memory
            groups["log_likelihood"] = log_likelihood_in_blocks(ld, latent, 2)
        groups["observed_data"] = data
    all_dims = site_dims(ld, list(posterior) + list(data), dims)
    tree = _arviz_base().from_dict(groups, dims=all_dims, coords=coords)
    if skipped is not None:
        record_skip(tree, "log_likelihood", skipped)
    return tree


def mcmc_to_datatree(
    mcmc: Any,
    dims: dict | None = None,
    coords: dict | None = None,
    *,
    discrete: bool = True,
    discrete_key: jax.Array | None = None,
    pointwise_log_likelihood: bool = True,
):
    """An ArviZ DataTree of a finished (or interrupted) :class:`ppl.infer.MCMC` run.

    Groups: posterior (latent and deterministic sites, (chain, draw, ...)),
    sample_stats, and for model-based runs log_likelihood (pointwise, every
    observed site) and observed_data. With ``discrete`` (the default) the model's
    enumerated discrete sites are in the posterior too, one draw from their exact
    conditional posterior per draw (:func:`ppl.infer.infer_discrete` with
    ``discrete_key``, by default ``PRNGKey(0)``). ``pointwise_log_likelihood=False`` leaves
    the log_likelihood group out (see :func:`draws_to_datatree`).
    """
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    ld = mcmc.logdensity_
    if discrete and getattr(ld, "enumerated_names", ()):
        from ppl.infer.results.discrete import infer_discrete

        key = jax.random.PRNGKey(0) if discrete_key is None else discrete_key
        latent = {k: samples[k] for k in ld.latent_names}
        draws = infer_discrete(ld, latent, rng_key=key, batch_ndims=2)
        samples.update({k: np.asarray(v) for k, v in draws.items()})
    tree = draws_to_datatree(
        mcmc.logdensity_,
        samples,
        sample_stats=mcmc.get_sample_stats(),
        pointwise_log_likelihood=pointwise_log_likelihood,
        dims=dims,
        coords=coords,
    )
    for name in getattr(ld, "enumerated_names", ()):
        if name in tree.posterior:  # drawn after sampling, not by the Markov chains
            tree.posterior[name].attrs["ppl_enumerated"] = 1
    for name in getattr(ld, "latent_names", ()):
        # sampled by the chains, with some unconstrained dimension (the report checks that
        # they move; an LKJ Cholesky factor of size 1 is the constant [[1]])
        if name in tree.posterior and ld.sites[name].size > 0:
            tree.posterior[name].attrs["ppl_latent"] = 1
    if getattr(mcmc, "rescue", None) is not None and "sample_stats" in tree.children:
        # the chains restarted during warmup (ppl.infer.driver.rescue), as JSON
        records = [r.as_dict() for r in getattr(mcmc, "rescues", [])]
        tree["sample_stats"].attrs["ppl_rescues"] = json.dumps(records)
    kernel = getattr(mcmc, "kernel", None)
    if getattr(kernel, "switches_metric", False) and "sample_stats" in tree.children:
        switched = mcmc.metric_switched
        tree["sample_stats"].attrs["ppl_metric"] = (
            "diag" if switched is None else f"low_rank (from warmup iteration {switched})"
        )
    return tree


def guide_to_datatree(
    guide: Any,
    params: dict,
    rng_key: jax.Array,
    num_samples: int = 1000,
    *,
    dims: dict | None = None,
    coords: dict | None = None,
):
    """An ArviZ DataTree of a fitted autoguide's posterior.

    Groups: ``posterior`` (latent and deterministic sites, dims ``(chain, draw, ...)`` with
    one chain), and, when the model has observed sites and no subsampled plate,
    ``log_likelihood`` (pointwise, for LOO) and ``observed_data``.

    Args:
        guide: a set-up autoguide (:mod:`ppl.infer.vi.guides`).
        params: its fitted constrained params.
        rng_key: a ``jax.random`` key for the draws.
        num_samples: number of draws.
        dims, coords: ArviZ dims and coords overriding the plate names (as in
            ``MCMC.to_datatree``).
    """
    ld = guide._ld()
    draws = guide.sample_posterior(rng_key, params, num_samples)
    posterior = {k: np.asarray(v)[None] for k, v in draws.items()}
    return draws_to_datatree(
        ld, posterior, observed=not subsampled_plates(ld.prototype_trace), dims=dims, coords=coords
    )


def pathfinder_to_datatree(result: Any, dims: dict | None = None, coords: dict | None = None):
    """An ArviZ DataTree of a :class:`~ppl.infer.vi.pathfinder.PathfinderResult`.

    Groups: posterior (one chain of the draws), sample_stats (``lp``, ``log_q``),
    observed_data for model-based targets; ``pareto_k``, the paths' ELBOs and gradient
    counts as attributes of the root and the posterior group.
    """
    posterior = {k: np.asarray(v)[None] for k, v in result.samples.items()}
    stats = {
        "lp": np.asarray(result.log_density)[None],
        "log_q": np.asarray(result.log_q)[None],
    }
    tree = draws_to_datatree(
        result.logdensity,
        posterior,
        sample_stats=stats,
        pointwise_log_likelihood=False,
        dims=dims,
        coords=coords,
    )
    attrs = {
        "inference_library": "ppl",
        "inference_method": "pathfinder",
        "pareto_k": float(result.pareto_k),
        "elbo": [float(e) for e in result.elbo],
        "num_paths": int(result.elbo.shape[0]),
        "num_gradient_evals": result.num_gradient_evals,
        "importance_resampled": bool(result.resampled),
    }
    tree.attrs.update(attrs)
    tree["posterior"].attrs.update(attrs)
    return tree


def vi_datatree(
    ld: LogDensity,
    samples: dict,
    loss: np.ndarray,
    loss_dims: tuple[str, ...],
    pareto_k: float,
    dims: dict | None = None,
    coords: dict | None = None,
):
    """A variational run's DataTree: one chain of draws, the loss, Pareto k as attribute.

    Args:
        ld: the log density the draws are of.
        samples: ``site -> (num_draws, *site shape)`` constrained draws.
        loss: the optimizer's loss, shape ``(steps,)`` or ``(paths, steps)``.
        loss_dims: the loss's dimension names, e.g. ``("step",)`` or ``("path", "step")``.
        pareto_k: the PSIS Pareto k of the draws' importance ratios.
        dims, coords: ArviZ dims and coords overriding the plate names.

    Returns:
        A DataTree with the groups posterior and ``optimization`` (``loss``) and the root
        attribute ``ppl_pareto_k``.
    """
    import xarray as xr

    posterior = {k: np.asarray(v)[None] for k, v in samples.items()}
    tree = draws_to_datatree(ld, posterior, observed=False, dims=dims, coords=coords)
    tree["optimization"] = xr.DataTree(xr.Dataset({"loss": (loss_dims, loss)}))
    tree.attrs["ppl_pareto_k"] = float(pareto_k)
    return tree


def add_group(
    tree,
    group: str,
    values: dict,
    ld: LogDensity,
    dims: dict | None = None,
    coords: dict | None = None,
) -> None:
    """Add (or replace) ``tree[group]`` with ``values`` (``site -> (chain, draw, ...)``)
    labelled like the other groups."""
    all_dims = site_dims(ld, list(values), dims)
    extra = _arviz_base().from_dict({group: values}, dims=all_dims, coords=coords)
    tree[group] = extra[group]


def _arviz_base():
    """arviz_base, imported on first use: ``import ppl`` stays light (a second or more saved
    at start-up for scripts and the command line that never build a DataTree)."""
    import arviz_base

    return arviz_base
