"""``ppl loo RUN``: PSIS-LOO of a saved run, a block of observations at a time.

PSIS-LOO of one observation needs only that observation's log-likelihood at every draw, so
the pointwise log-likelihood never has to be held whole: :func:`run_loo` takes blocks of
observations, from the run's ``log_likelihood`` group when it was stored, else recomputed
from the model (re-resolved from the run's ``ppl_model``/``ppl_model_file``) and its data
(the run's ``ppl_data_source`` or ``--data``; refused when the data or the model's source
differ from the fingerprints the run recorded), and smooths them with
:func:`ppl.infer.core.psis_loo.psis_loo_pointwise` (arviz-stats' arithmetic, vectorized).
The memory beyond the posterior draws and the data stays at a few hundred MB for any
number of observations; the numbers equal ``arviz_stats.loo`` on the same draws.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from ppl.infer.core.psis_loo import loo_totals, psis_loo_pointwise
from ppl.runs.errors import RunError, UsageError

__all__ = ["LOO_BLOCK_VALUES", "LooResult", "loo_elpd_data", "relative_efficiency", "run_loo"]

LOO_BLOCK_VALUES = 1 << 26
"""Values (draws x observations) per block of observations (64M: 256 MB in float32)."""

_PSIS_ROWS_VALUES = 1 << 22  # observations smoothed at once: ~100 MB of float64 temporaries


@dataclasses.dataclass
class LooResult:
    """PSIS-LOO of a run.

    Attributes:
        var_name: the observed site.
        elpd, se, p_loo: elpd_loo, its standard error and the effective number of
            parameters.
        pareto_k: per observation (flattened), NaN where no Pareto fit was possible.
        good_k: the Pareto k threshold for these draws (``min(1 - 1/log10(S), 0.7)``).
        num_draws: draws (all chains).
        source: "stored" (the run's log_likelihood group) or "recomputed".
        seconds: wall time.
    """

    var_name: str
    elpd: float
    se: float
    p_loo: float
    pareto_k: np.ndarray
    good_k: float
    num_draws: int
    source: str
    seconds: float = 0.0

    def k_counts(self) -> dict[str, int]:
        """Observations by Pareto k: good (≤ good_k), bad (to 1), very bad (> 1), NaN."""
        k = self.pareto_k
        finite = np.isfinite(k)
        return {
            "good": int((k <= self.good_k).sum()),
            "bad": int(((k > self.good_k) & (k <= 1)).sum()),
            "very bad": int((k > 1).sum()),
            "no fit": int((~finite).sum()),
        }

    def text(self) -> str:
        """The result as a few lines for the terminal."""
        k = self.pareto_k
        counts = self.k_counts()
        largest = f"{np.nanmax(k):.2f}" if np.isfinite(k).any() else "none"
        lines = [
            f"PSIS-LOO of {self.var_name}: {k.size} observations, {self.num_draws} draws "
            f"({'stored' if self.source == 'stored' else 'recomputed'} log-likelihood, "
            f"{self.seconds:.1f} s)",
            f"elpd_loo {self.elpd:.2f} ± {self.se:.2f} (SE)",
            f"p_loo    {self.p_loo:.2f}",
            f"Pareto k: {counts['good']} good (≤ {self.good_k:.2f}), {counts['bad']} bad "
            f"(≤ 1), {counts['very bad']} very bad (> 1)"
            + (f", {counts['no fit']} without a fit" if counts["no fit"] else "")
            + f"; largest {largest}",
        ]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        k = self.pareto_k
        return {
            "var_name": self.var_name,
            "elpd_loo": self.elpd,
            "se": self.se,
            "p_loo": self.p_loo,
            "num_observations": int(k.size),
            "num_draws": self.num_draws,
            "good_k": self.good_k,
            "pareto_k_counts": self.k_counts(),
            "pareto_k_max": float(np.nanmax(k)) if np.isfinite(k).any() else None,
            "source": self.source,
            "seconds": round(self.seconds, 3),
        }


def relative_efficiency(posterior) -> float:
    """r_eff as ``arviz_stats.loo`` takes it: the mean "mean" ESS of every posterior
    variable element over the number of draws (1 for a single chain)."""
    import arviz_stats  # noqa: F401  (registers the azstats accessor)

    dataset = posterior.to_dataset() if hasattr(posterior, "to_dataset") else posterior
    chains = int(dataset.sizes.get("chain", 1))
    if chains == 1:
        return 1.0
    ess = dataset.azstats.ess(method="mean")
    values = np.hstack([ess[v].values.ravel() for v in ess.data_vars])
    return float(values.mean() / (chains * int(dataset.sizes["draw"])))


def _good_k(num_draws: int) -> float:
    return float(min(1 - 1 / np.log10(num_draws), 0.7)) if num_draws > 1 else 0.7


def _pointwise(columns, num_obs: int, num_draws: int, r_eff: float):
    """PSIS-LOO of every observation; ``columns(start, stop)`` gives the log-likelihood of
    observations ``start:stop`` as (draws, stop - start)."""
    elpd_i, k, p_i = (np.empty(num_obs) for _ in range(3))
    rows = max(1, LOO_BLOCK_VALUES // max(num_draws, 1))
    sub = max(1, _PSIS_ROWS_VALUES // max(num_draws, 1))
    for start in range(0, num_obs, rows):
        stop = min(start + rows, num_obs)
        block = columns(start, stop)
        for s in range(0, stop - start, sub):
            part = np.asarray(block[:, s : s + sub].T, dtype=np.float64)
            at = slice(start + s, start + s + part.shape[0])
            elpd_i[at], k[at], p_i[at] = psis_loo_pointwise(part, r_eff)
    return elpd_i, k, p_i


def loo_elpd_data(log_lik, r_eff: float):
    """``arviz_stats.loo``'s result (an ``ELPDDataLOO``, pointwise, without log weights)
    for a log-likelihood DataArray with dims (chain, draw, *observation dims)."""
    import xarray as xr
    from arviz_stats.utils import ELPDDataLOO

    obs_dims = [d for d in log_lik.dims if d not in ("chain", "draw")]
    values = log_lik.transpose("chain", "draw", *obs_dims).values
    num_draws = values.shape[0] * values.shape[1]
    flat = values.reshape(num_draws, -1)
    elpd_i, k, p_i = _pointwise(lambda a, b: flat[:, a:b], flat.shape[1], num_draws, r_eff)
    elpd, se, p = loo_totals(elpd_i, p_i)
    shape = values.shape[2:]
    coords = {d: log_lik.coords[d] for d in obs_dims if d in log_lik.coords}
    good_k = _good_k(num_draws)
    kept = k[np.isfinite(k)]
    return ELPDDataLOO(
        elpd=elpd,
        se=se,
        p=p,
        n_samples=num_draws,
        n_data_points=int(flat.shape[1]),
        scale="log",
        warning=bool((kept > good_k).any()),
        good_k=good_k,
        elpd_i=xr.DataArray(elpd_i.reshape(shape), dims=obs_dims, coords=coords),
        pareto_k=xr.DataArray(k.reshape(shape), dims=obs_dims, coords=coords),
    )


def _stored(tree, var_name: str | None, r_eff: float) -> LooResult:
    group = tree["log_likelihood"].to_dataset()
    name = var_name or next(iter(group.data_vars))
    if name not in group.data_vars:
        raise UsageError(f"the run's log_likelihood has no variable {name!r}")
    loo = loo_elpd_data(group[name], r_eff)
    k = np.asarray(loo.pareto_k.values).reshape(-1)
    return LooResult(name, loo.elpd, loo.se, loo.p, k, loo.good_k, loo.n_samples, "stored")


def _recomputed(tree, spec, data: dict, var_name: str | None, r_eff: float) -> LooResult:
    import jax

    from ppl.density import LogDensity
    from ppl.infer.results.predictive import log_likelihood

    ld = LogDensity(spec.model, (), data)
    observed = [n for n, s in ld.sites.items() if s.kind == "observed"]
    name = var_name or (observed[0] if observed else None)
    if name not in observed:
        raise UsageError(
            f"the model has no observed site {name!r}"
            if name
            else "the model has no observed site: there is nothing to cross-validate"
        )
    if ld.enumerated_names:
        raise UsageError(
            "ppl loo cannot recompute the log-likelihood of a model with enumerated discrete "
            "sites; sample with --pointwise always to store it"
        )
    posterior = tree["posterior"].to_dataset()
    missing = [n for n in ld.latent_names if n not in posterior.data_vars]
    if missing:
        raise RunError(f"the run's posterior lacks the model's latent site(s) {missing}")
    chains, draws = int(posterior.sizes["chain"]), int(posterior.sizes["draw"])
    num_draws = chains * draws
    latent = {
        n: np.asarray(posterior[n].values).reshape(num_draws, *posterior[n].shape[2:])
        for n in ld.latent_names
    }
    info = ld.sites[name]
    shape = tuple(info.shape)[: len(info.shape) - len(info.event_shape)]
    num_obs = math.prod(shape)
    per_block = max(1, (1 << 23) // max(num_obs, 1))  # draws per compiled call
    rows = max(1, min(num_obs, LOO_BLOCK_VALUES // num_draws))

    def block_fn(data_tree, block, start):
        ld_ = ld.with_data_tree(data_tree)
        ll = log_likelihood(ld_.model, block, *ld_.args, batch_ndims=1, **ld_.kwargs)[name]
        flat = ll.reshape(ll.shape[0], -1)
        return jax.lax.dynamic_slice_in_dim(flat, start, rows, axis=1)

    jitted = jax.jit(block_fn)
    data_tree = ld.data_tree()

    def columns(start: int, stop: int) -> np.ndarray:
        first = min(start, num_obs - rows)  # the last block is taken from its end
        out = None
        for d in range(0, num_draws, per_block):
            index = np.minimum(np.arange(d, d + per_block), num_draws - 1)
            values = np.asarray(jitted(data_tree, {k: v[index] for k, v in latent.items()}, first))
            if out is None:  # the model's precision (float32 unless x64)
                out = np.empty((num_draws, rows), values.dtype)
            out[d : d + per_block] = values[: num_draws - d]
        return out[:, start - first : stop - first]

    elpd_i, k, p_i = _pointwise(columns, num_obs, num_draws, r_eff)
    elpd, se, p = loo_totals(elpd_i, p_i)
    return LooResult(name, elpd, se, p, k, _good_k(num_draws), num_draws, "recomputed")


def _model_and_data(attrs, run: Path, data_file: str | None):
    """The run's model and data again, refused when they differ from the sampled ones."""
    from ppl.runs.inputs import changes_since, run_inputs

    spec, data, _ = run_inputs(attrs, run, data_file=data_file)
    changes = changes_since(attrs, spec, data)
    if changes:
        raise UsageError(
            f"{run} was sampled with other {' and '.join(changes)}: its draws are not of this "
            "model and data, so their log-likelihood would mean nothing; pass the run's data "
            "with --data, or sample anew"
        )
    return spec, data


def run_loo(
    run: str | Path,
    data_file: str | None = None,
    var_name: str | None = None,
    recompute: bool = False,
) -> LooResult:
    """PSIS-LOO of the run file ``run`` (see the module's docstring).

    Args:
        run: a run saved by ``ppl sample``.
        data_file: the data to recompute the log-likelihood with (default: the run's).
        var_name: the observed site (default: the first).
        recompute: recompute the log-likelihood even when the run stored it.

    Raises:
        UsageError: the model or data cannot be found, or differ from the run's.
        RunError: the run cannot be read.
    """
    from ppl.runs.files import load_run

    began = time.perf_counter()
    run = Path(run)
    groups = ("posterior",) if recompute else ("posterior", "log_likelihood")
    tree = load_run(run, groups=groups)
    posterior = tree["posterior"].to_dataset()
    r_eff = relative_efficiency(posterior)
    if "log_likelihood" in tree.children and tree["log_likelihood"].data_vars:
        result = _stored(tree, var_name, r_eff)
    else:
        spec, data = _model_and_data(tree.attrs, run, data_file)
        result = _recomputed(tree, spec, data, var_name, r_eff)
    result.seconds = time.perf_counter() - began
    return result
