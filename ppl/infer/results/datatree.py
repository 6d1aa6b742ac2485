"""Draws + LogDensity metadata -> ArviZ ``DataTree``.

Dimension names come from the plates that own each axis (``SiteInfo.dims``);
axes without a plate get ``{site}_dim_{i}``. Users can override both with
``dims`` and ``coords``.
"""

from __future__ import annotations

from typing import Any

import arviz_base
import numpy as np

from ppl.density import LogDensity

__all__ = ["mcmc_to_datatree", "site_dims"]


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


def mcmc_to_datatree(mcmc: Any, dims: dict | None = None, coords: dict | None = None):
    """An ArviZ DataTree of a finished :class:`ppl.infer.MCMC` run.

    Groups: posterior (latent and deterministic sites, (chain, draw, ...)),
    sample_stats, and for model-based runs log_likelihood (pointwise, every
    observed site) and observed_data.
    """
    from ppl.infer.predictive import log_likelihood

    ld = mcmc.logdensity_
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    groups: dict[str, dict] = {"posterior": samples, "sample_stats": mcmc.get_sample_stats()}
    observed = {
        name: np.asarray(ld.prototype_trace[name]["value"])
        for name, info in ld.sites.items()
        if info.kind == "observed"
    }
    if observed:
        latent = {k: v for k, v in samples.items() if ld.sites[k].kind == "latent"}
        ll = log_likelihood(ld.model, latent, *ld.args, batch_ndims=2, **ld.kwargs)
        groups["log_likelihood"] = {k: np.asarray(v) for k, v in ll.items()}
        groups["observed_data"] = observed
    all_dims = site_dims(ld, list(samples) + list(observed), dims)
    return arviz_base.from_dict(groups, dims=all_dims, coords=coords)
