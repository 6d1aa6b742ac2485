"""Pipelines: a model, its data and :class:`Settings` in, a run's DataTree out.

:func:`sample_run` checks the data (:mod:`ppl.runs.data`), runs the method's runner
(:data:`METHODS`: NUTS/HMC via :class:`ppl.infer.MCMC`, ADVI, Pathfinder) on a
:class:`~ppl.runs.models.ModelSpec`, adds the predictive groups and sets the root
attributes of a saved run (:data:`ppl.runs.files.RUN_ATTRS`); :mod:`ppl.runs.files`
saves the result. The DataTrees are built with :mod:`ppl.infer.results.datatree`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ppl.runs.data import check_data, data_fingerprint
from ppl.runs.errors import UsageError
from ppl.runs.files import _INCOMPLETE, RUN_FORMAT, save_run
from ppl.runs.models import ModelSpec
from ppl.runs.pointwise import SKIPPED_ATTR, pointwise_policy

__all__ = ["METHODS", "Settings", "sample_run", "source_fingerprint"]


# ---------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class Settings:
    """Settings of one run.

    Attributes:
        method: "nuts", "hmc", "advi" or "pathfinder" (see :data:`METHODS`).
        num_chains: number of chains.
        num_warmup: warmup (adaptation) iterations per chain.
        num_samples: kept draws per chain.
        seed: the integer seed of ``jax.random.PRNGKey``.
        max_tree_depth: NUTS: the most trajectory doublings per draw (a draw whose tree
            depth reaches it was cut short).
        target_accept_prob: the step-size adaptation's target acceptance statistic.
        num_steps: HMC: leapfrog steps per draw.
        dense_mass: adapt a dense inverse mass matrix.
        vi_steps: ADVI: optimizer steps.
        learning_rate: ADVI: Adam's learning rate.
        discrete: put draws of enumerated discrete sites into the posterior.
        rescue: restart a chain that falls away from the others during warmup
            (:mod:`ppl.infer.driver.rescue`).
        pointwise: "auto", "always" or "never": whether the pointwise groups
            (log_likelihood, posterior_predictive) are computed and stored; "auto" leaves
            out a group of more than ``POINTWISE_MAX_VALUES`` values (:mod:`ppl.runs.pointwise`).
    """

    method: str = "nuts"
    num_chains: int = 4
    num_warmup: int = 1000
    num_samples: int = 1000
    seed: int = 0
    max_tree_depth: int = 10
    target_accept_prob: float = 0.8
    num_steps: int = 16
    dense_mass: bool = False
    vi_steps: int = 10_000
    learning_rate: float = 0.01
    discrete: bool = True
    rescue: bool = True
    pointwise: str = "auto"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Settings:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})


# ---------------------------------------------------------------------- methods


def _mcmc_kernel(settings: Settings, model: Callable):
    from ppl.infer import HMC, NUTS

    if settings.method == "nuts":
        return NUTS(
            model,
            max_tree_depth=settings.max_tree_depth,
            target_accept_prob=settings.target_accept_prob,
            dense_mass=settings.dense_mass,
        )
    return HMC(
        model,
        num_steps=settings.num_steps,
        target_accept_prob=settings.target_accept_prob,
        dense_mass=settings.dense_mass,
    )


def _observed(ld) -> list[str]:
    return [n for n, info in ld.sites.items() if info.kind == "observed"]


def _add_predictive_groups(tree, spec, data, ld, latent, settings, progress, timing) -> None:
    """Add log_likelihood (if missing) and posterior_predictive for the observed sites.

    ``latent`` holds the constrained latent draws with leading (chain, draw) dims.
    """
    import jax

    from ppl.infer.results.datatree import add_group, observed_data
    from ppl.runs.pointwise import add_log_likelihood, add_posterior_predictive

    observed = _observed(ld)
    if not observed:
        return
    dims, coords = spec.dims or None, spec.coords or None
    began = time.perf_counter()
    # with enumerated sites the pointwise log-likelihood needs their draws (to_datatree
    # adds it with them; ppl sample --no-discrete leaves it out)
    # (both a block of draws at a time, or left out under --pointwise: ppl.runs.pointwise)
    if "log_likelihood" not in tree.children and not ld.enumerated_names:
        add_log_likelihood(tree, ld, latent, dims, coords)
    if "observed_data" not in tree.children:
        add_group(tree, "observed_data", observed_data(ld), ld, dims, coords)
    key = jax.random.fold_in(jax.random.PRNGKey(settings.seed), 1)
    add_posterior_predictive(tree, ld, latent, observed, key, dims, coords, progress)
    timing["predictive_s"] = time.perf_counter() - began


def _run_mcmc(
    spec: ModelSpec,
    data: dict,
    settings: Settings,
    progress: bool,
    timing: dict,
    resume_state: dict | None = None,
    autosave: Callable | None = None,
    save_every: float | None = None,
):
    """NUTS or HMC: warm up and sample; the DataTree (posterior, sample_stats, ...).

    An interrupted run (Ctrl-C, or SIGTERM in the command-line tool) gives the draws kept so
    far, marked incomplete, with the sampler state to resume from (see
    :func:`ppl.runs.files.save_run`); ``resume_state`` continues such a run. ``autosave``
    is given such a tree of the run so far about every ``save_every`` seconds (None:
    :class:`ppl.infer.MCMC`'s default) while it runs (``MCMC(autosave=...)``).
    """
    import jax

    from ppl.infer import MCMC

    mcmc = MCMC(
        _mcmc_kernel(settings, spec.model),
        num_warmup=settings.num_warmup,
        num_samples=settings.num_samples,
        num_chains=settings.num_chains,
        progress_bar=progress,
        rescue=settings.rescue,
        autosave=None if autosave is None else lambda m: autosave(_partial_tree(m, spec)),
        **({} if save_every is None else {"autosave_seconds": save_every}),
    )
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="sampling interrupted")
        if resume_state is None:
            mcmc.run(jax.random.PRNGKey(settings.seed), **data)
        else:
            mcmc.resume_from(resume_state, **data)
    timing["sampling_s"] = time.perf_counter() - began
    if not mcmc.complete:
        return _partial_tree(mcmc, spec)
    began = time.perf_counter()
    tree = mcmc.to_datatree(
        dims=spec.dims or None, coords=spec.coords or None, discrete=settings.discrete
    )
    timing["conversion_s"] = time.perf_counter() - began
    ld = mcmc.logdensity_
    latent = {
        k: v
        for k, v in mcmc.get_samples(group_by_chain=True).items()
        if ld.sites[k].kind == "latent"
    }
    _add_predictive_groups(tree, spec, data, ld, latent, settings, progress, timing)
    return tree


def _partial_tree(mcmc, spec: ModelSpec):
    """An unfinished run's DataTree: the posterior and sample_stats of the draws so far (no
    pointwise or discrete groups: they come with the complete run), marked incomplete with
    the sampler state to resume from."""
    import xarray as xr

    from ppl.infer.results.datatree import mcmc_to_datatree

    if mcmc.num_completed_samples:
        tree = mcmc_to_datatree(
            mcmc,
            dims=spec.dims or None,
            coords=spec.coords or None,
            discrete=False,
            pointwise_log_likelihood=False,
        )
    else:
        tree = xr.DataTree.from_dict({"posterior": xr.Dataset()})
    tree.attrs[_INCOMPLETE] = {"state": mcmc.sampler_state(), "kept": mcmc.num_completed_samples}
    return tree


def _run_advi(spec: ModelSpec, data: dict, settings: Settings, progress: bool, timing: dict):
    """ADVI: a mean-field normal guide (AutoNormal) fitted by SVI with Adam; PSIS Pareto k
    of the draws' importance ratios log p - log q (on the unconstrained scale)."""
    import jax
    import jax.numpy as jnp
    import optax

    from ppl.density import LogDensity
    from ppl.infer import SVI, AutoNormal
    from ppl.infer.core.psis import psis
    from ppl.infer.results.datatree import vi_datatree

    key_fit, key_draws = jax.random.split(jax.random.PRNGKey(settings.seed))
    guide = AutoNormal(spec.model)
    svi = SVI(spec.model, guide, optax.adam(settings.learning_rate))
    began = time.perf_counter()
    result = svi.run(key_fit, settings.vi_steps, progress_bar=progress, **data)
    timing["optimization_s"] = time.perf_counter() - began
    began = time.perf_counter()
    ld = LogDensity(spec.model, (), data)
    loc, scale = guide.loc(result.params), guide.scale(result.params)
    n = settings.num_samples
    z = loc + scale * jax.random.normal(key_draws, (n, loc.shape[0]), loc.dtype)
    log_q = jnp.sum(jax.scipy.stats.norm.logpdf(z, loc, scale), axis=-1)
    log_p = jax.vmap(ld)(z)
    _, k = psis(np.asarray(log_p - log_q))
    samples = jax.vmap(ld.constrain)(z)
    loss = np.asarray(result.losses)
    tree = vi_datatree(ld, samples, loss, ("step",), k, spec.dims or None, spec.coords or None)
    timing["draws_s"] = time.perf_counter() - began
    latent = {k_: v[None] for k_, v in samples.items() if ld.sites[k_].kind == "latent"}
    _add_predictive_groups(tree, spec, data, ld, latent, settings, progress, timing)
    return tree


def _run_pathfinder(spec: ModelSpec, data: dict, settings: Settings, progress, timing: dict):
    """Multi-path Pathfinder: one path per chain, pooled and importance-resampled draws."""
    import jax

    from ppl.infer import pathfinder
    from ppl.infer.results.datatree import vi_datatree

    if progress:
        print(f"pathfinder: {settings.num_chains} path(s) ...", file=sys.stderr, flush=True)
    began = time.perf_counter()
    result = pathfinder(
        jax.random.PRNGKey(settings.seed),
        spec.model,
        num_paths=settings.num_chains,
        num_draws=settings.num_samples,
        **data,
    )
    timing["optimization_s"] = time.perf_counter() - began
    ld = result.logdensity
    # the loss of each path: the negative ELBO at each L-BFGS iterate (nan after its end)
    loss = -np.asarray(result.paths.elbo_history, float).reshape(settings.num_chains, -1)
    tree = vi_datatree(
        ld,
        result.samples,
        loss,
        ("path", "step"),
        result.pareto_k,
        spec.dims or None,
        spec.coords or None,
    )
    latent = {k: v[None] for k, v in result.samples.items() if ld.sites[k].kind == "latent"}
    _add_predictive_groups(tree, spec, data, ld, latent, settings, progress, timing)
    return tree


METHODS: dict[str, Callable] = {
    "nuts": _run_mcmc,
    "hmc": _run_mcmc,
    "advi": _run_advi,
    "pathfinder": _run_pathfinder,
}
"""``method -> runner(spec, data, settings, progress, timing) -> DataTree``.

A variational runner returns a DataTree with a posterior of iid draws (one chain), a
group ``optimization`` holding ``loss`` along the dim ``step`` (and ``path`` for
Pathfinder), and the root attribute ``ppl_pareto_k`` (the Pareto k of the importance
weights of the draws); the report then shows the loss curve and Pareto k instead of the
MCMC diagnostics.
"""


# ---------------------------------------------------------------------- running


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in (
        "ppl",
        "jax",
        "jaxlib",
        "numpyro",
        "numpy",
        "arviz",
        "arviz-base",
        "arviz-stats",
        "arviz-plots",
        "xarray",
        "h5netcdf",
    ):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


#: groups with a value per draw *and* per observation, the bulk of a run on large data:
#: stored in float32 (7 significant digits, ample for PSIS-LOO and predictive checks)
POINTWISE_GROUPS = ("log_likelihood", "posterior_predictive")


def _pointwise_as_float32(tree) -> None:
    """Cast the float64 variables of :data:`POINTWISE_GROUPS` to float32, in place (halves
    their memory and file size; the posterior and sample_stats keep their precision)."""
    for group in POINTWISE_GROUPS:
        if group not in tree.children:
            continue
        dataset = tree[group].to_dataset(inherit=False)
        wide = [n for n, v in dataset.data_vars.items() if v.dtype == np.float64]
        if wide:
            tree[group] = tree[group].assign({n: dataset[n].astype(np.float32) for n in wide})


def source_fingerprint(source: str) -> str:
    """SHA-256 of a model's source text."""
    return hashlib.sha256(source.encode()).hexdigest()


def sample_run(
    spec: ModelSpec,
    data: dict,
    settings: Settings,
    *,
    progress: bool = True,
    data_source: str | None = None,
    command: str = "",
    resume_state: dict | None = None,
    overrides: list[str] | None = None,
    autosave_to: str | Path | None = None,
    save_every: float | None = None,
):
    """Run ``settings.method`` on ``spec.model`` with ``data``; the DataTree with attributes.

    The attributes include SHA-256 fingerprints of the data (per key) and of the model's
    source, which ``--resume`` checks; ``overrides`` (e.g. ``["data"]``) records what a
    resume was allowed to change. With ``autosave_to``, a nuts or hmc run saves itself
    there while it runs (:func:`ppl.runs.files.save_run`, marked incomplete, with the
    sampler state), about every ``save_every`` seconds: a killed process leaves a run
    that ``--resume`` continues to the draws of an uninterrupted one.

    Raises:
        UsageError: an unknown method, a method that is not available yet, or data that
            do not fit the model.
    """
    if settings.method not in METHODS:
        raise UsageError(f"unknown method {settings.method!r}; choose one of {', '.join(METHODS)}")
    check_data(spec.model, data, f"data for model {spec.name}")
    if resume_state is not None and settings.method not in ("nuts", "hmc"):
        raise UsageError(f"a {settings.method} run cannot be resumed; only nuts and hmc runs")
    timing: dict[str, float] = {}
    began = time.perf_counter()

    def with_attributes(tree):
        timing["total_s"] = time.perf_counter() - began
        _pointwise_as_float32(tree)
        incomplete = tree.attrs.get(_INCOMPLETE)
        tree.attrs.update(
            {
                "ppl_format": RUN_FORMAT,
                "ppl_settings": settings.to_json(),
                "ppl_seed": int(settings.seed),
                "ppl_method": settings.method,
                "ppl_max_tree_depth": int(settings.max_tree_depth),
                "ppl_model": spec.name,
                "ppl_model_file": spec.file,
                "ppl_model_source": spec.source,
                "ppl_model_sha256": source_fingerprint(spec.source),
                "ppl_data_sha256": json.dumps(data_fingerprint(data), sort_keys=True),
                "ppl_resume_overrides": json.dumps(list(overrides or [])),
                "ppl_data_source": data_source or spec.data_source,
                "ppl_versions": json.dumps(_versions(), sort_keys=True),
                "ppl_timing": json.dumps({k: round(v, 4) for k, v in timing.items()}),
                "ppl_complete": 0 if incomplete else 1,
                SKIPPED_ATTR: tree.attrs.get(SKIPPED_ATTR, "{}"),
                "ppl_command": command,
                "ppl_created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            }
        )
        if "sample_stats" in tree.children:
            tree["sample_stats"].attrs["max_tree_depth"] = int(settings.max_tree_depth)
        return tree

    with pointwise_policy(settings.pointwise):  # float32, a block of draws at a time
        if settings.method in ("nuts", "hmc"):
            save = None
            if autosave_to is not None:
                save = lambda t: save_run(with_attributes(t), autosave_to)  # noqa: E731
            tree = _run_mcmc(
                spec,
                data,
                settings,
                progress,
                timing,
                resume_state=resume_state,
                autosave=save,
                save_every=save_every,
            )
        else:
            tree = METHODS[settings.method](spec, data, settings, progress, timing)
    return with_attributes(tree)
