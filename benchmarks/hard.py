"""Hard posteriors: does a sampler lose chains, diverge, or get the answer wrong?

``python -m benchmarks.hard`` runs five models with known difficulties, each for several
seeds, with ppl's default NUTS (``ppl.infer.MCMC(ppl.infer.NUTS(model), ...)``), ppl's NUTS
with Stan's warmup (``ppl:adaptation=stan``) and NumPyro's NUTS, on the same model code
(each model written once as a function of a PPL module ``P``, ``ppl`` or ``numpyro``, like
the suite's in :mod:`benchmarks.models`), in float64:

- ``funnel``: Neal's funnel, centred: v ~ N(0, 3), x_i ~ N(0, exp(v / 2)), i = 1..9. The
  truth is known (v has mean 0 and sd 3); a run is *right* when both are within
  :data:`TRUTH_Z` Monte Carlo standard errors, else it must at least be *flagged* by
  divergences.
- ``mixture``: two normals with ordered locations, marginalized by hand (``logsumexp`` of
  the two components in a ``factor``), 300 points from components 4 sds apart with weights
  0.3 / 0.7; the known failure is a chain stuck where one component is nearly empty.
- ``horseshoe``: NumPyro's horseshoe regression example (N = 100, D = 32, three non-zero
  coefficients, noise sd 0.05), centred coefficients.
- ``arma``: ARMA(1, 1) with the error recursion in a ``jax.lax.scan``, priors of Stan's ARMA
  example, T = 200.
- ``hierarchical``: centred normal hierarchy with four groups (eight-schools-like, one noisy
  measurement per group), tau ~ HalfCauchy(5): tau is weakly identified.

Every (model, sampler, seed) runs in this process, one after another (a sampler's first
seed includes its compilation, see ``compile_s``); a crash is reported and the rest go on.
Per run: lost chains (:func:`lost_chains`), divergences, minimum bulk ESS and maximum R-hat
over the latent sites' elements (``arviz_stats``, the same function for every sampler),
wall time, step size per chain and, for ppl, the rescues it recorded (``mcmc.rescues`` if
the installed ppl has it). See ``benchmarks/README.md``, section "Hard posteriors".
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import constraints

from benchmarks.models import BenchModel, ModelChoice, parse_choice

__all__ = [
    "MODELS",
    "arma",
    "arma_errors",
    "build_parser",
    "funnel",
    "horseshoe",
    "lost_chains",
    "main",
    "mixture",
    "parse_hard_model",
    "truth_check",
]

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "hard.json"
SAMPLERS = ("ppl", "numpyro")
DEFAULT_SAMPLERS = "ppl,ppl:adaptation=stan,numpyro"

FULL = {"chains": 4, "warmup": 1000, "draws": 1000, "seeds": (0, 1, 2, 3, 4)}
QUICK = {"chains": 2, "warmup": 150, "draws": 150, "seeds": (0,)}

# The lost-chain rule (:func:`lost_chains`).
LOST_LP_FLOOR = 10.0  # a chain's mean log density at least this far below the median chain ...
LOST_LP_SDS = 5.0  # ... and this many within-chain sds below it
LOST_STEP_RATIO = 20.0  # step size below 1/20 of the median chain's
STUCK_MOVE_FRACTION = 0.05  # moved in fewer than 5% of its draws
# The funnel's truth check (:func:`truth_check`).
TRUTH_Z = 4.0  # |estimate - truth| within 4 Monte Carlo standard errors
TRUTH_MIN_ESS = 50.0  # and a bulk ESS of v of at least 50, else the MCSE is not trusted
RHAT_BAD = 1.01


# ---------------------------------------------------------------------- the models


def funnel(P: ModuleType) -> Callable[..., None]:
    """Neal's funnel, centred: ``v`` ~ N(0, 3) (scalar), ``x`` (n,) ~ N(0, exp(v / 2)).

    The prior is the posterior (nothing is observed): v has mean 0 and sd 3."""

    def funnel_model(n):
        v = P.sample("v", dist.Normal(0.0, 3.0))
        with P.plate("x_dim", n):
            P.sample("x", dist.Normal(0.0, jnp.exp(v / 2.0)))

    return funnel_model


def funnel_data(dim: int = 9) -> dict[str, Any]:
    """No data: the number of x's, a Python int."""
    return {"n": int(dim)}


def mixture(P: ModuleType) -> Callable[..., None]:
    """Two-component normal mixture, the labels summed out by hand.

    Latent sites: ``locs`` (2,) ordered (an improper uniform on ordered vectors plus a
    N(0, 5) prior on each element as a ``factor``), ``weight`` ~ Beta(1, 1) (the first,
    lower component's), ``scale`` (2,) ~ HalfNormal(2) in a plate. The likelihood of y (N,)
    is ``sum_n logsumexp_k(log w_k + log N(y_n | locs_k, scale_k))``, a ``factor``.
    """

    def mixture_model(y):
        locs = P.sample("locs", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
        P.factor("locs_prior", jnp.sum(dist.Normal(0.0, 5.0).log_prob(locs)))
        weight = P.sample("weight", dist.Beta(1.0, 1.0))
        with P.plate("component", 2):
            scale = P.sample("scale", dist.HalfNormal(2.0))
        log_weights = jnp.stack([jnp.log(weight), jnp.log1p(-weight)])
        per_component = log_weights + dist.Normal(locs, scale).log_prob(y[:, None])  # (N, 2)
        P.factor("y", jnp.sum(jax.nn.logsumexp(per_component, axis=-1)))

    return mixture_model


def mixture_data(N: int = 300, seed: int = 11) -> dict[str, Any]:
    """N points: weights (0.3, 0.7), locations (-2, 2), scale 1 (4 sds apart)."""
    rng = np.random.default_rng(seed)
    z = rng.random(N) < 0.3
    y = np.where(z, -2.0, 2.0) + rng.normal(size=N)
    return {"y": jnp.asarray(y)}


def horseshoe(P: ModuleType) -> Callable[..., None]:
    """NumPyro's horseshoe regression example (``examples/horseshoe_regression.py``).

    Latent sites: ``tau`` ~ HalfCauchy(1) (global scale), ``lambdas`` (D,) ~ HalfCauchy(1)
    (local scales), ``unscaled_betas`` (D,) ~ N(0, 1), ``prec_obs`` ~ Gamma(3, 1); betas =
    tau * lambdas * unscaled_betas (deterministic); Y (N,) ~ N(X @ betas, prec_obs^-1/2).
    """

    def horseshoe_model(X, Y):
        n, d = X.shape
        tau = P.sample("tau", dist.HalfCauchy(1.0))
        with P.plate("predictor", d):
            lambdas = P.sample("lambdas", dist.HalfCauchy(1.0))
            unscaled = P.sample("unscaled_betas", dist.Normal(0.0, 1.0))
        betas = P.deterministic("betas", tau * lambdas * unscaled)
        prec_obs = P.sample("prec_obs", dist.Gamma(3.0, 1.0))
        with P.plate("row", n):
            P.sample("Y", dist.Normal(X @ betas, 1.0 / jnp.sqrt(prec_obs)), obs=Y)

    return horseshoe_model


def horseshoe_data(N: int = 100, D: int = 32, seed: int = 0) -> dict[str, Any]:
    """X (N, D) standard normal; Y from the first three columns only (coefficients 2, -1,
    0.5), centred, plus N(0, 0.05) noise: as the example's ``get_data``."""
    if D < 3:
        raise ValueError(f"horseshoe needs D >= 3, got D={D}")
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D))
    Y = X[:, :3] @ np.array([2.0, -1.0, 0.5])
    Y = Y - Y.mean() + 0.05 * rng.normal(size=N)
    return {"X": jnp.asarray(X), "Y": jnp.asarray(Y)}


def arma_errors(y: jax.Array, mu: jax.Array, phi: jax.Array, theta: jax.Array) -> jax.Array:
    """The ARMA(1, 1) one-step errors (T,) of y (T,), as in Stan's ARMA example:
    err_1 = y_1 - (mu + phi mu), err_t = y_t - (mu + phi y_{t-1} + theta err_{t-1})."""
    first = y[0] - (mu + phi * mu)

    def step(err_prev, pair):
        y_prev, y_t = pair
        err = y_t - (mu + phi * y_prev + theta * err_prev)
        return err, err

    _, rest = jax.lax.scan(step, first, (y[:-1], y[1:]))
    return jnp.concatenate([first[None], rest])


def arma(P: ModuleType) -> Callable[..., None]:
    """ARMA(1, 1): ``mu`` ~ N(0, 10), ``phi``, ``theta`` ~ N(0, 2), ``sigma`` ~
    HalfCauchy(2.5); the errors (:func:`arma_errors`, a ``lax.scan``) ~ N(0, sigma), a
    ``factor``. Neither stationarity nor invertibility is imposed (as in Stan's example)."""

    def arma_model(y):
        mu = P.sample("mu", dist.Normal(0.0, 10.0))
        phi = P.sample("phi", dist.Normal(0.0, 2.0))
        theta = P.sample("theta", dist.Normal(0.0, 2.0))
        sigma = P.sample("sigma", dist.HalfCauchy(2.5))
        err = arma_errors(y, mu, phi, theta)
        P.factor("y", jnp.sum(dist.Normal(0.0, sigma).log_prob(err)))

    return arma_model


ARMA_TRUTH = {"mu": 0.5, "phi": 0.6, "theta": 0.3, "sigma": 1.0}


def arma_data(T: int = 200, seed: int = 12) -> dict[str, Any]:
    """y (T,) from ARMA(1, 1) with :data:`ARMA_TRUTH`, after 100 discarded steps."""
    if T < 2:
        raise ValueError(f"arma needs T >= 2, got T={T}")
    rng = np.random.default_rng(seed)
    mu, phi, theta, sigma = (ARMA_TRUTH[k] for k in ("mu", "phi", "theta", "sigma"))
    burn = 100
    e = sigma * rng.normal(size=T + burn)
    y = np.zeros(T + burn)
    for t in range(1, T + burn):
        y[t] = mu + phi * y[t - 1] + theta * e[t - 1] + e[t]
    return {"y": jnp.asarray(y[burn:])}


def hierarchical(P: ModuleType) -> Callable[..., None]:
    """Centred hierarchical normal, one measurement per group (eight-schools-like):
    ``mu`` ~ N(0, 5), ``tau`` ~ HalfCauchy(5), ``theta`` (J,) ~ N(mu, tau), y_j ~
    N(theta_j, sigma_j) with sigma (J,) known."""

    def hierarchical_model(sigma, y):
        mu = P.sample("mu", dist.Normal(0.0, 5.0))
        tau = P.sample("tau", dist.HalfCauchy(5.0))
        with P.plate("group", sigma.shape[0]):
            theta = P.sample("theta", dist.Normal(mu, tau))
            P.sample("y", dist.Normal(theta, sigma), obs=y)

    return hierarchical_model


def hierarchical_data(J: int = 4, seed: int = 13) -> dict[str, Any]:
    """J groups: sigma evenly spaced from 9 to 18, theta_j ~ N(4, 3), y_j ~ N(theta_j,
    sigma_j): the measurements are much noisier than the spread of the groups."""
    rng = np.random.default_rng(seed)
    sigma = np.linspace(9.0, 18.0, J)
    theta = 4.0 + 3.0 * rng.normal(size=J)
    y = theta + sigma * rng.normal(size=J)
    return {"sigma": jnp.asarray(sigma), "y": jnp.asarray(y)}


MODELS: dict[str, BenchModel] = {
    m.name: m
    for m in (
        BenchModel("funnel", "Neal's funnel, centred, 1 + 9 dims", funnel, funnel_data, {"dim": 9}),
        BenchModel(
            "mixture",
            "2 normals, ordered locations, labels summed out",
            mixture,
            mixture_data,
            {"N": 300},
        ),
        BenchModel(
            "horseshoe",
            "horseshoe regression (NumPyro example)",
            horseshoe,
            horseshoe_data,
            {"N": 100, "D": 32},
        ),
        BenchModel("arma", "ARMA(1,1), errors in a lax.scan", arma, arma_data, {"T": 200}),
        BenchModel(
            "hierarchical",
            "centred hierarchical normal, few groups",
            hierarchical,
            hierarchical_data,
            {"J": 4},
        ),
    )
}

# Known posterior moments, checked by :func:`truth_check`: model -> site -> (mean, sd).
TRUTH = {"funnel": {"v": (0.0, 3.0)}}


def parse_hard_model(text: str) -> ModelChoice:
    """``"arma:T=100"`` -> ModelChoice (sizes are positive ints)."""
    return parse_choice(text, MODELS, kind="hard model")


def model_sites(choice: ModelChoice, data: dict[str, Any]) -> tuple[list[str], int]:
    """``(latent site names, unconstrained dimension)`` of the model, from ppl's log density
    (the NumPyro version has the same sites: it is the same code)."""
    import ppl

    ld = ppl.logdensity(choice.build(ppl), **data)
    return [n for n, s in ld.sites.items() if s.kind == "latent"], int(ld.dim)


# ---------------------------------------------------------------------- diagnostics


def lost_chains(
    lp: np.ndarray, step_size: np.ndarray | None = None, moved: np.ndarray | None = None
) -> dict[int, list[str]]:
    """The chains of one run that are lost, each with its reasons.

    A chain is lost when (1) its mean post-warmup log density is more than
    max(:data:`LOST_LP_FLOOR`, :data:`LOST_LP_SDS` x s) below the median of the chains'
    means, s the median of the chains' within-chain sds of the log density; or (2) its
    adapted step size is below 1 / :data:`LOST_STEP_RATIO` of the median chain's; or (3) it
    moved (any latent element changed from the previous draw) in fewer than
    :data:`STUCK_MOVE_FRACTION` of its draws. Rules 1 and 2 need two chains or more (with
    two, the median is their midpoint, so the gap between them must be twice the bound).

    Args:
        lp: log density of each post-warmup draw on the unconstrained scale (Jacobians
            included), (chains, draws).
        step_size: adapted step size per chain, (chains,), or None.
        moved: fraction of each chain's draws that moved, (chains,), or None.

    Returns:
        ``{chain index: [reason, ...]}`` for the lost chains only.
    """
    lp = np.asarray(lp, dtype=np.float64)
    chains = lp.shape[0]
    lost: dict[int, list[str]] = {}
    if chains >= 2:
        means = lp.mean(axis=1)
        spread = float(np.median(lp.std(axis=1, ddof=1)))
        bound = max(LOST_LP_FLOOR, LOST_LP_SDS * spread)
        reference = float(np.median(means))
        for c in range(chains):
            gap = reference - means[c]
            if not np.isfinite(gap) or gap > bound:
                lost.setdefault(c, []).append(
                    f"mean log density {gap:.1f} below the median chain's (bound {bound:.1f})"
                )
    if step_size is not None and chains >= 2:
        steps = np.asarray(step_size, dtype=np.float64)
        reference = float(np.median(steps))
        for c in range(chains):
            if steps[c] < reference / LOST_STEP_RATIO:
                lost.setdefault(c, []).append(
                    f"step size {steps[c]:.3g} < 1/{LOST_STEP_RATIO:g} of the median "
                    f"{reference:.3g}"
                )
    if moved is not None:
        for c, fraction in enumerate(np.asarray(moved, dtype=np.float64)):
            if fraction < STUCK_MOVE_FRACTION:
                lost.setdefault(c, []).append(f"moved in {100 * fraction:.1f}% of its draws")
    return dict(sorted(lost.items()))


def moved_fraction(samples: dict[str, np.ndarray], sites: list[str]) -> np.ndarray:
    """Fraction (chains,) of each chain's draws after the first at which any element of
    the latent ``sites`` (each (chains, draws, ...)) differs from the previous draw."""
    flat = np.concatenate(
        [np.asarray(samples[s]).reshape(*np.shape(samples[s])[:2], -1) for s in sites], axis=-1
    )
    if flat.shape[1] < 2:
        return np.ones(flat.shape[0])
    changed = np.any(flat[:, 1:] != flat[:, :-1], axis=-1)
    return changed.mean(axis=1)


def ess_rhat(samples: dict[str, np.ndarray], sites: list[str]) -> dict[str, Any]:
    """Minimum bulk ESS (and where) and maximum R-hat over every element of the latent
    ``sites`` (each (chains, draws, ...)), with ``arviz_stats``; R-hat is None for one chain."""
    import arviz_stats

    min_ess, min_site, max_rhat = math.inf, "", -math.inf
    for name in sites:
        x = np.asarray(samples[name], dtype=np.float64)
        chains, draws = x.shape[:2]
        x = x.reshape(chains, draws, -1)
        ess = np.atleast_1d(np.asarray(arviz_stats.ess(x, method="bulk"), dtype=float))
        ess = np.where(np.isfinite(ess), ess, 0.0)
        i = int(np.argmin(ess))
        if ess[i] < min_ess:
            min_ess, min_site = float(ess[i]), name if x.shape[-1] == 1 else f"{name}[{i}]"
        if chains > 1:
            rhat = np.atleast_1d(np.asarray(arviz_stats.rhat(x), dtype=float))
            # a non-finite R-hat (e.g. a chain that never moved) counts as infinitely bad
            max_rhat = max(max_rhat, float(np.max(np.where(np.isfinite(rhat), rhat, np.inf))))
    return {
        "min_ess_bulk": min_ess,
        "min_ess_site": min_site,
        "max_rhat": None if max_rhat == -math.inf else max_rhat,
    }


def truth_check(draws: np.ndarray, mean: float, sd: float, divergences: int) -> dict[str, Any]:
    """Is the run right about a scalar with known posterior mean and sd, or flagged?

    Args:
        draws: the scalar's draws, (chains, draws).
        mean, sd: its true posterior mean and sd.
        divergences: the run's post-warmup divergences, all chains.

    Returns:
        The estimates, their MCSEs (``arviz_stats.mcse``, methods "mean" and "sd"),
        z = (estimate - truth) / MCSE, the bulk ESS, ``right`` (both |z| <= :data:`TRUTH_Z`
        and ESS >= :data:`TRUTH_MIN_ESS`), ``flagged`` (divergences > 0) and ``ok`` (right
        or flagged: a wrong answer must at least come with a warning).
    """
    import arviz_stats

    x = np.asarray(draws, dtype=np.float64)
    est_mean, est_sd = float(x.mean()), float(x.std(ddof=1))
    mcse_mean = float(arviz_stats.mcse(x, method="mean"))
    mcse_sd = float(arviz_stats.mcse(x, method="sd"))
    ess = float(arviz_stats.ess(x, method="bulk"))
    z_mean = (est_mean - mean) / mcse_mean if mcse_mean > 0 else math.inf
    z_sd = (est_sd - sd) / mcse_sd if mcse_sd > 0 else math.inf
    right = bool(abs(z_mean) <= TRUTH_Z and abs(z_sd) <= TRUTH_Z and ess >= TRUTH_MIN_ESS)
    flagged = divergences > 0
    return {
        "mean": est_mean,
        "sd": est_sd,
        "mcse_mean": mcse_mean,
        "mcse_sd": mcse_sd,
        "z_mean": z_mean,
        "z_sd": z_sd,
        "ess_bulk": ess,
        "right": right,
        "flagged": flagged,
        "ok": right or flagged,
    }


def count_rescues(mcmc: Any) -> int | None:
    """The rescues an MCMC object recorded (``mcmc.rescues``: a count, per-chain counts or
    flags, or a list of events), or None where it records none (NumPyro)."""
    value = getattr(mcmc, "rescues", None)
    if value is None:
        return None
    try:
        return int(np.sum(np.asarray(value, dtype=np.float64)))
    except (TypeError, ValueError):
        return len(value) if hasattr(value, "__len__") else None


def rescue_records(mcmc: Any) -> list[Any]:
    """``mcmc.rescues`` as JSON-able records (``as_dict()`` where the records have it, else
    their text); [] where there are none or they are counts rather than events."""
    value = getattr(mcmc, "rescues", None)
    if not isinstance(value, list | tuple):
        return []
    return [r.as_dict() if hasattr(r, "as_dict") else str(r) for r in value]


# ---------------------------------------------------------------------- running


def split_ppl_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(for NUTS, for MCMC)``: each option goes to ``ppl.infer.NUTS`` if it takes it,
    else to ``ppl.infer.MCMC``; an option neither takes is a ValueError."""
    import ppl
    from benchmarks.samplers import _init_parameters

    nuts_names = _init_parameters(ppl.infer.NUTS)
    mcmc_names = _init_parameters(ppl.infer.MCMC)
    for_nuts = {k: v for k, v in options.items() if k in nuts_names}
    for_mcmc = {k: v for k, v in options.items() if k not in nuts_names and k in mcmc_names}
    unknown = sorted(set(options) - set(for_nuts) - set(for_mcmc))
    if unknown:
        raise ValueError(f"neither ppl.infer.NUTS nor ppl.infer.MCMC takes {unknown}")
    return for_nuts, for_mcmc


class Run:
    """One sampler on one model, run once per seed with the same MCMC object (so only the
    first seed compiles, where the library caches its program).

    ``sample(seed)`` returns the raw outcome: latent draws (chains, draws, ...), the log
    density per draw (chains, draws), divergences, gradient evaluations, step size per
    chain and rescues (ppl's ``mcmc.rescues`` if it exists, else None).
    """

    def __init__(self, name: str, options: dict[str, Any], choice: ModelChoice, data, settings):
        self.name = name
        self.options = options
        self.choice = choice
        self.data = data
        self.settings = settings
        self.mcmc = None

    def _ppl(self):
        import ppl

        for_nuts, for_mcmc = split_ppl_options(self.options)
        kernel = ppl.infer.NUTS(self.choice.build(ppl), **for_nuts)
        return ppl.infer.MCMC(
            kernel,
            num_warmup=self.settings["warmup"],
            num_samples=self.settings["draws"],
            num_chains=self.settings["chains"],
            progress_bar=False,
            **for_mcmc,
        )

    def _numpyro(self):
        import numpyro
        from numpyro.infer import MCMC, NUTS, init_to_uniform

        kernel = NUTS(self.choice.build(numpyro), init_strategy=init_to_uniform(radius=2.0))
        return MCMC(
            kernel,
            num_warmup=self.settings["warmup"],
            num_samples=self.settings["draws"],
            num_chains=self.settings["chains"],
            chain_method="vectorized",
            progress_bar=False,
        )

    def sample(self, seed: int) -> dict[str, Any]:
        key = jax.random.PRNGKey(seed)
        if self.mcmc is None:
            self.mcmc = self._ppl() if self.name == "ppl" else self._numpyro()
        mcmc = self.mcmc
        if self.name == "ppl":
            mcmc.run(key, **self.data)
            samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
            stats = mcmc.get_sample_stats()
            return {
                "samples": samples,
                "lp": stats["lp"],
                "divergences": int(np.sum(stats["diverging"])),
                "n_grad": int(np.sum(stats["n_steps"])),
                "step_size": np.asarray(mcmc.step_size),
                "rescues": count_rescues(mcmc),
                "rescue_records": rescue_records(mcmc),
            }
        fields = ("num_steps", "diverging", "adapt_state.step_size", "potential_energy")
        mcmc.run(key, extra_fields=fields, **self.data)
        samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
        extra = mcmc.get_extra_fields(group_by_chain=True)
        return {
            "samples": samples,
            "lp": -np.asarray(extra["potential_energy"]),
            "divergences": int(np.sum(extra["diverging"])),
            "n_grad": int(np.sum(extra["num_steps"])),
            "step_size": np.asarray(extra["adapt_state.step_size"])[:, -1],
            "rescues": count_rescues(mcmc),
            "rescue_records": rescue_records(mcmc),
        }


def summarize_run(
    raw: dict[str, Any], sites: list[str], truth: dict[str, tuple[float, float]]
) -> dict[str, Any]:
    """The reported fields of one run from :meth:`Run.sample`'s raw outcome."""
    samples = {s: np.asarray(raw["samples"][s], dtype=np.float64) for s in sites}
    lp = np.asarray(raw["lp"], dtype=np.float64)
    moved = moved_fraction(samples, sites)
    lost = lost_chains(lp, raw["step_size"], moved)
    result = {
        "status": "ok",
        "divergences": raw["divergences"],
        **ess_rhat(samples, sites),
        "lost_chains": len(lost),
        "lost": [{"chain": c, "reasons": reasons} for c, reasons in lost.items()],
        "rescues": raw["rescues"],
        "rescue_records": raw["rescue_records"],
        "step_size": [float(s) for s in raw["step_size"]],
        "n_grad": raw["n_grad"],
        "lp_mean": lp.mean(axis=1).tolist(),
        "lp_sd": lp.std(axis=1, ddof=1).tolist() if lp.shape[1] > 1 else None,
        "moved": moved.tolist(),
    }
    # flagged_rhat: the run's max R-hat flags it too (a weaker warning than divergences, kept
    # apart from ``ok``, which asks for divergences)
    bad_rhat = result["max_rhat"] is None or result["max_rhat"] > RHAT_BAD
    result["truth"] = {
        site: {**truth_check(samples[site], mean, sd, raw["divergences"]), "flagged_rhat": bad_rhat}
        for site, (mean, sd) in truth.items()
    }
    return result


def run_one(run: Run, seed: int, sites: list[str], truth: dict) -> dict[str, Any]:
    """One seed of one (model, sampler): timed (``wall_s``, ``compile_s``: JAX's compile time
    inside it), summarized (:func:`summarize_run`), with the warnings the run raised
    (``warnings``, each message once, e.g. ppl's ``ChainWarning``); a crash becomes
    ``{"status": "error", "reason": ...}``."""
    from benchmarks.samplers import CompileClock

    mark = CompileClock.mark()
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            raw = run.sample(seed)
        wall = time.perf_counter() - t0
        result = summarize_run(raw, sites, truth)
    except Exception as exc:  # a crash is a result, not the end of the suite
        return {
            "status": "error",
            "seed": seed,
            "reason": f"{type(exc).__name__}: {exc}",
            "wall_s": time.perf_counter() - t0,
        }
    compile_s = CompileClock.seconds_since(mark)
    messages = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    return {"seed": seed, "wall_s": wall, "compile_s": compile_s, **result, "warnings": messages}


# ---------------------------------------------------------------------- summaries and tables


def sampler_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over a sampler's runs (one model, or all): runs, crashes, lost chains, runs
    with R-hat > :data:`RHAT_BAD`, divergences, median minimum ESS, funnel-style truth."""
    ok = [r for r in runs if r.get("status") == "ok"]
    checks = [c for r in ok for c in r.get("truth", {}).values()]
    return {
        "runs": len(runs),
        "errors": len(runs) - len(ok),
        "lost_chains": sum(r["lost_chains"] for r in ok),
        "runs_with_lost_chains": sum(r["lost_chains"] > 0 for r in ok),
        "rhat_bad": sum(r["max_rhat"] is None or r["max_rhat"] > RHAT_BAD for r in ok),
        "divergences": sum(r["divergences"] for r in ok),
        "runs_with_divergences": sum(r["divergences"] > 0 for r in ok),
        "median_min_ess": statistics.median(r["min_ess_bulk"] for r in ok) if ok else None,
        "median_wall_s": statistics.median(r["wall_s"] for r in ok) if ok else None,
        "rescues": sum(r["rescues"] or 0 for r in ok)
        if any(r["rescues"] is not None for r in ok)
        else None,
        "truth_checks": len(checks),
        "truth_right": sum(c["right"] for c in checks),
        "truth_flagged": sum(c["flagged"] for c in checks),
        "truth_ok": sum(c["ok"] for c in checks),
    }


def _fmt(value: Any, digits: int = 3) -> str:
    from benchmarks.harness import _fmt as fmt

    if isinstance(value, bool):
        return "yes" if value else "no"
    return fmt(value, digits)


def _align(rows: list[list[str]]) -> list[str]:
    from benchmarks.harness import _align as align

    return align(rows)


def format_model_table(entry: dict[str, Any]) -> str:
    """One model's table: a row per (sampler, seed), then a summary row per sampler."""
    s = entry["settings"]
    lines = [
        f"== {entry['model']}: {entry['description']} (dim {entry['dim']}); "
        f"{s['chains']} chains x ({s['warmup']} warmup + {s['draws']} draws), "
        f"seeds {','.join(map(str, s['seeds']))}"
    ]
    truth_sites = list(entry["truth"])
    head = ["sampler", "seed", "wall s", "compile s", "div", "min ESS", "max R-hat", "lost"]
    head += ["rescues", "warn", "step sizes"]
    for site in truth_sites:
        head += [f"mean {site}", f"sd {site}", "right", "flagged"]
    rows, notes = [head], []
    for sampler, runs in entry["runs"].items():
        for r in runs:
            if r.get("status") != "ok":
                notes.append(f"  {sampler} seed {r['seed']}: {r['status']}: {r.get('reason', '')}")
                continue
            row = [sampler, str(r["seed"]), _fmt(r["wall_s"]), _fmt(r["compile_s"])]
            row += [_fmt(r["divergences"]), _fmt(r["min_ess_bulk"]), _fmt(r["max_rhat"])]
            lost = ",".join(str(x["chain"]) for x in r["lost"])
            row += [f"{r['lost_chains']}" + (f" ({lost})" if lost else ""), _fmt(r["rescues"])]
            row.append(str(len(r["warnings"])))
            row.append("/".join(_fmt(x, 2) for x in r["step_size"]))
            for site in truth_sites:
                c = r["truth"][site]
                row += [_fmt(c["mean"]), _fmt(c["sd"]), _fmt(c["right"]), _fmt(c["flagged"])]
            rows.append(row)
    lines += _align(rows)
    lines += notes
    lines += format_summary(entry["summary"], indent="  ")
    for sampler, runs in entry["runs"].items():
        for r in runs:
            for lost in r.get("lost", []):
                why = "; ".join(lost["reasons"])
                lines.append(f"  lost: {sampler} seed {r['seed']} chain {lost['chain']}: {why}")
            for message in r.get("warnings", []):
                text = " ".join(message.split())
                text = text if len(text) <= 200 else text[:197] + "..."
                lines.append(f"  warning: {sampler} seed {r['seed']}: {text}")
    return "\n".join(lines)


def format_summary(summary: dict[str, dict[str, Any]], indent: str = "") -> list[str]:
    """One line per sampler: lost chains, R-hat > 1.01, divergences, median min ESS."""
    lines = []
    for sampler, s in summary.items():
        line = (
            f"{indent}{sampler}: lost chains {s['lost_chains']} (in {s['runs_with_lost_chains']}"
            f" of {s['runs']} runs), R-hat > {RHAT_BAD} in {s['rhat_bad']}, divergences "
            f"{s['divergences']} (in {s['runs_with_divergences']} runs), median min ESS "
            f"{_fmt(s['median_min_ess'])}, median wall {_fmt(s['median_wall_s'])} s"
        )
        if s["rescues"] is not None:
            line += f", rescues {s['rescues']}"
        if s["truth_checks"]:
            line += (
                f", truth: right {s['truth_right']}, flagged {s['truth_flagged']}, right or "
                f"flagged {s['truth_ok']} of {s['truth_checks']}"
            )
        if s["errors"]:
            line += f", CRASHED {s['errors']}"
        lines.append(line)
    return lines


# ---------------------------------------------------------------------- main


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated ints: {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.hard",
        description=(
            "Hard posteriors: lost chains, divergences, ESS and R-hat of ppl's NUTS (default "
            "and Stan warmup) and NumPyro's NUTS on five hard models, several seeds each."
        ),
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help=f"comma- or space-separated name[:param=value] (default all: {', '.join(MODELS)})",
    )
    parser.add_argument(
        "--samplers",
        default=DEFAULT_SAMPLERS,
        help=(
            f"comma-separated, each ppl[:option=value...] or numpyro (default "
            f"{DEFAULT_SAMPLERS}); ppl options go to ppl.infer.NUTS, else ppl.infer.MCMC"
        ),
    )
    parser.add_argument("--seeds", type=_seeds, default=None, help="default 0,1,2,3,4 (quick 0)")
    parser.add_argument("--chains", type=int, default=None, help="chains (default 4; quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="warmup (default 1000; quick 150)")
    parser.add_argument("--draws", type=int, default=None, help="draws (default 1000; quick 150)")
    parser.add_argument(
        "--quick", action="store_true", help="2 chains x (150 + 150), seed 0 (options override)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    from benchmarks.harness import run_sizes

    settings = {**run_sizes(args, base, parser), "seeds": list(args.seeds or base["seeds"])}
    from benchmarks.samplers import parse_sampler

    try:
        names = [m for value in (args.models or list(MODELS)) for m in value.split(",")]
        choices = [parse_hard_model(m) for m in names if m.strip()]
        specs = [parse_sampler(s) for s in args.samplers.split(",") if s.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    bad = [s.key for s in specs if s.name not in SAMPLERS]
    if bad:
        parser.error(f"sampler(s) {bad} not in this benchmark; choose from {list(SAMPLERS)}")
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        parser.error(f"a sampler is given twice: {keys}")

    jax.config.update("jax_enable_x64", True)  # before any array is made
    from benchmarks.harness import machine_info, report_header, write_json

    report: dict[str, Any] = {
        **report_header("python -m benchmarks.hard", argv),
        "settings": {
            **settings,
            "quick": args.quick,
            "samplers": keys,
            "models": [c.key for c in choices],
            "x64": bool(jax.config.jax_enable_x64),
        },
        "rules": {
            "lost_lp_floor": LOST_LP_FLOOR,
            "lost_lp_sds": LOST_LP_SDS,
            "lost_step_ratio": LOST_STEP_RATIO,
            "stuck_move_fraction": STUCK_MOVE_FRACTION,
            "truth_z": TRUTH_Z,
            "truth_min_ess": TRUTH_MIN_ESS,
            "rhat_bad": RHAT_BAD,
        },
        "machine": machine_info(),
        "models": {},
    }
    failed = False
    all_runs: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
    for choice in choices:
        data = choice.data()
        sites, dim = model_sites(choice, data)
        truth = TRUTH.get(choice.model.name, {})
        runs: dict[str, list[dict[str, Any]]] = {}
        for spec in specs:
            run = Run(spec.name, spec.options, choice, data, settings)
            runs[spec.key] = []
            for seed in settings["seeds"]:
                print(f"running {spec.key} on {choice.key} seed {seed} ...", end=" ", flush=True)
                result = run_one(run, seed, sites, truth)
                print(f"{result['status']} ({result['wall_s']:.1f} s)", flush=True)
                if result["status"] != "ok":
                    failed = True
                    print(f"error: {result['reason']}", flush=True)
                runs[spec.key].append(result)
                all_runs[spec.key].append(result)
        entry = {
            "model": choice.key,
            "description": choice.model.description,
            "params": choice.params,
            "dim": dim,
            "latent_sites": sites,
            "truth": {site: {"mean": m, "sd": s} for site, (m, s) in truth.items()},
            "settings": settings,
            "runs": runs,
            "summary": {k: sampler_summary(v) for k, v in runs.items()},
        }
        report["models"][choice.model.name] = entry
        print()
        print(format_model_table(entry), flush=True)
        print(flush=True)
        write_json(report, args.out)
    report["summary"] = {k: sampler_summary(v) for k, v in all_runs.items()}
    write_json(report, args.out)
    print("== summary over all models")
    print("\n".join(format_summary(report["summary"])))
    print(f"\nresults written to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
