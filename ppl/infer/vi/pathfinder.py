"""Pathfinder: quasi-Newton variational inference (Zhang, Carpenter, Gelman & Vehtari, 2022).

Single path: run L-BFGS on ``-log p`` from a starting point; at every iterate form the
normal approximation whose covariance is the L-BFGS inverse-Hessian estimate (diagonal
plus low rank, :mod:`ppl.infer.vi.lbfgs`); estimate its ELBO with a few Monte Carlo draws;
keep the iterate with the highest ELBO and draw from its approximation. The whole path
(optimizer, approximations, ELBOs, draws) is one compiled JAX function.

Multi-path: several paths from dispersed starting points run vectorized (``vmap``);
their draws are pooled and importance-resampled with Pareto-smoothed importance weights
(PSIS), whose Pareto k diagnoses how well the approximation covers the posterior
(k > 0.7: the draws are not reliable as posterior draws).

Example:
    >>> import jax, jax.numpy as jnp
    >>> import ppl, ppl.distributions as dist
    >>> def model(y):
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 10.0))
    ...     sigma = ppl.sample("sigma", dist.HalfNormal(5.0))
    ...     with ppl.plate("obs", y.shape[0]):
    ...         ppl.sample("y", dist.Normal(mu, sigma), obs=y)
    >>> y = jnp.array([1.2, 0.4, 2.3, 1.9, 0.7])
    >>> result = pathfinder(jax.random.PRNGKey(0), model, y, num_draws=500)  # doctest: +SKIP
    >>> result.samples["sigma"].shape  # doctest: +SKIP
    (500,)
    >>> result.draws.shape  # unconstrained  # doctest: +SKIP
    (500, 2)

(The calls are skipped in the doctest run to save a compilation; the tests in
``tests/infer/vi/test_pathfinder.py`` exercise them.)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl.density import FunctionLogDensity, LogDensity
from ppl.infer.core.psis import PARETO_K_THRESHOLD, psis
from ppl.infer.keys import check_key
from ppl.infer.vi.lbfgs import STATUS, NormalApproximation, PathInfo, single_path

__all__ = [
    "PathInfo",
    "PathfinderResult",
    "STATUS",
    "pathfinder",
    "pathfinder_init",
    "single_path",
]


class _Config(NamedTuple):
    """Static settings of one path (hashable: they are part of the compiled program)."""

    num_draws: int = 1000
    num_elbo_draws: int = 25
    history_size: int = 6
    max_iterations: int = 1000
    ftol: float | None = None  # default: see single_path
    gtol: float = 1e-8
    max_linesearch_steps: int = 20


# ---------------------------------------------------------------------- importance weights


def _importance_weights(log_ratios: np.ndarray) -> tuple[np.ndarray, float]:
    """PSIS where possible; with too few finite ratios (or a degenerate tail), plain
    self-normalised importance weights and k = nan (with a warning)."""
    try:
        return psis(log_ratios)
    except ValueError as err:
        warnings.warn(
            f"pathfinder: no Pareto-smoothed weights ({err}); using plain importance "
            "weights, Pareto k is nan",
            RuntimeWarning,
            stacklevel=5,
        )
    finite = np.isfinite(log_ratios)
    out = np.full(log_ratios.shape, -np.inf)
    out[finite] = log_ratios[finite] - np.logaddexp.reduce(log_ratios[finite])
    return out, math.nan


# ---------------------------------------------------------------------- results


@dataclass(frozen=True)
class PathfinderResult:
    """Draws and diagnostics of a (multi-path) Pathfinder run.

    Attributes:
        draws: unconstrained draws, shape (num_draws, dim).
        samples: ``{site: constrained values}`` with leading axis num_draws (latent and
            deterministic sites).
        log_density: ``log p`` of each draw (up to the target's constant), (num_draws,).
        log_q: log density of each draw under its path's approximation, (num_draws,).
        pareto_k: PSIS Pareto k of the pooled draws' importance ratios.
        approximations: each path's chosen approximation; fields with a leading
            (num_paths,) axis.
        paths: each path's :class:`PathInfo`, fields with a leading (num_paths,) axis.
        initial_positions: the paths' starting points, (num_paths, dim).
        logdensity: the :class:`ppl.LogDensity` the draws are for.
        resampled: whether the draws were importance-resampled.
    """

    draws: jax.Array
    samples: dict
    log_density: jax.Array
    log_q: jax.Array
    pareto_k: float
    approximations: NormalApproximation
    paths: PathInfo
    initial_positions: jax.Array
    logdensity: LogDensity
    resampled: bool

    @property
    def best_path(self) -> int:
        """Index of the path with the highest ELBO."""
        return int(np.argmax(np.asarray(self.paths.elbo)))

    @property
    def elbo(self) -> np.ndarray:
        """Each path's best ELBO estimate, shape (num_paths,)."""
        return np.asarray(self.paths.elbo)

    @property
    def num_gradient_evals(self) -> int:
        """Gradient evaluations of ``log p`` the paths needed, all paths together (as run one
        after another, the count Stan reports; vectorized paths that finish early idle
        through masked evaluations until the last one finishes, so the device computes up
        to ``num_paths * max(paths.num_gradient_evals)``)."""
        return int(np.sum(np.asarray(self.paths.num_gradient_evals)))

    @property
    def approximation(self) -> NormalApproximation:
        """The best path's normal approximation (mean, alpha, beta, gamma)."""
        best = self.best_path
        return NormalApproximation(*(jnp.asarray(np.asarray(x)[best]) for x in self.approximations))

    @property
    def mean(self) -> np.ndarray:
        """The best path's approximation mean, shape (dim,)."""
        return np.asarray(self.approximations.mean)[self.best_path]

    @property
    def variance(self) -> np.ndarray:
        """Diagonal of the best path's approximation covariance, shape (dim,) (computed on
        the host: no compilation)."""
        alpha, beta, gamma = (
            np.asarray(x)[self.best_path]
            for x in (
                self.approximations.alpha,
                self.approximations.beta,
                self.approximations.gamma,
            )
        )
        return alpha + np.einsum("ij,jk,ik->i", beta, gamma, beta)

    def to_datatree(self, dims: dict | None = None, coords: dict | None = None):
        """An ArviZ DataTree: posterior (one chain of the draws), sample_stats (``lp``,
        ``log_q``), observed_data for model-based targets; ``pareto_k``, the paths' ELBOs
        and gradient counts as attributes of the root and the posterior group
        (:func:`ppl.infer.results.datatree.pathfinder_to_datatree`)."""
        from ppl.infer.results.datatree import pathfinder_to_datatree

        return pathfinder_to_datatree(self, dims=dims, coords=coords)


# ---------------------------------------------------------------------- driver


def _as_logdensity(target, args, kwargs, logdensity_fn, init_position) -> LogDensity:
    if (target is None) == (logdensity_fn is None):
        raise ValueError(
            "pathfinder needs exactly one of a target (model or LogDensity) and logdensity_fn="
        )
    if logdensity_fn is not None:
        if not callable(logdensity_fn):
            raise TypeError(f"logdensity_fn must be callable, got {logdensity_fn!r}")
        if init_position is None:
            raise ValueError(
                "pathfinder(logdensity_fn=...) needs init_position= of shape (dim,) or "
                "(num_paths, dim): a plain function has no dimension or prior to start from"
            )
        if args or kwargs:
            raise ValueError("pathfinder(logdensity_fn=...) takes no model arguments")
        return FunctionLogDensity(logdensity_fn, int(np.shape(init_position)[-1]))
    if isinstance(target, LogDensity):
        if args or kwargs:
            raise ValueError(
                "the target is a LogDensity, which already holds its data: call "
                "pathfinder(key, ld) without model arguments"
            )
        return target
    if not callable(target):
        raise TypeError(f"target must be a model function or a LogDensity, got {target!r}")
    return LogDensity(target, args, kwargs)


def _check_start(ld: LogDensity, positions: jax.Array) -> None:
    """Raise a ValueError naming the path and the site(s) if a start is not usable."""
    value, grad = ld._batch_value_and_grad()(positions)
    value, grad = np.asarray(value), np.asarray(grad)
    for i in range(positions.shape[0]):
        if np.isfinite(value[i]) and np.isfinite(grad[i]).all():
            continue
        what = (
            f"log density {value[i]}"
            if not np.isfinite(value[i])
            else "gradient not finite in coordinate(s) "
            f"{np.flatnonzero(~np.isfinite(grad[i]))[:10].tolist()}"
        )
        detail = ""
        if not isinstance(ld, FunctionLogDensity):
            terms = jax.jit(ld.log_density_terms)(positions[i])
            bad = [n for n, t in terms.items() if not np.isfinite(np.asarray(t))]
            if bad:
                detail = f" (log-probability not finite at site(s) {bad})"
        raise ValueError(
            f"pathfinder: the initial position of path {i} is not usable: {what}{detail}; "
            "give init_position= with a finite log density and gradient"
        )


def _initial_positions(key, ld: LogDensity, init_position, num_paths, init_strategy, radius):
    if init_position is None:
        return ld.init(key, init_strategy, num_chains=num_paths, radius=radius)
    if isinstance(init_position, dict):
        return ld.init(key, init_position, num_chains=num_paths, radius=radius)
    theta = jnp.asarray(init_position)
    if not jnp.issubdtype(theta.dtype, jnp.floating):
        theta = theta.astype(jnp.result_type(float))
    if theta.shape == (ld.dim,):
        theta = jnp.broadcast_to(theta, (num_paths, ld.dim))
    if theta.shape != (num_paths, ld.dim):
        raise ValueError(
            f"init_position has shape {theta.shape}; expected ({ld.dim},) or "
            f"({num_paths}, {ld.dim}) for num_paths={num_paths}"
        )
    _check_start(ld, theta)
    return theta


def _run_paths(ld: LogDensity, keys, positions, config: _Config):
    """All paths, vmapped, in one compiled program shared by LogDensity objects of one layout.

    A single path is not vmapped (its program compiles in about half the time); its outputs
    get the same leading axis of size 1.
    """

    def run(ld, keys, positions):
        def one(key, position):
            return single_path(key, ld, position, **config._asdict())

        if keys.shape[0] == 1:
            return jax.tree.map(lambda x: x[None], one(keys[0], positions[0]))
        return jax.vmap(one)(keys, positions)

    return ld.shared_jit(("pathfinder", config), run)(keys, positions)


def pathfinder(
    key: jax.Array,
    target: Callable | LogDensity | None = None,
    *args: Any,
    logdensity_fn: Callable | None = None,
    init_position: Any = None,
    num_paths: int | None = None,
    num_draws: int = 1000,
    num_draws_per_path: int | None = None,
    num_elbo_draws: int = 25,
    history_size: int = 6,
    max_iterations: int = 1000,
    ftol: float | None = None,
    gtol: float = 1e-8,
    max_linesearch_steps: int = 20,
    importance_resampling: bool | None = None,
    init_strategy: str = "uniform",
    init_radius: float = 2.0,
    **kwargs: Any,
) -> PathfinderResult:
    """Single- or multi-path Pathfinder on a model, a LogDensity or a plain log density.

    Args:
        key: a ``jax.random`` key.
        target: a model function (with its data in ``*args``, ``**kwargs``) or a
            :class:`ppl.LogDensity`.
        *args, **kwargs: the model's arguments.
        logdensity_fn: instead of ``target``, a function ``theta (dim,) -> log p``; needs
            ``init_position``.
        init_position: starting points, shape (dim,) or (num_paths, dim) on the
            unconstrained scale, or a dict of constrained values for some latent sites;
            default: ``init_strategy`` (Stan's uniform(-2, 2) on the unconstrained scale).
        num_paths: independent L-BFGS paths (vectorized); default: the leading size of a
            2-D ``init_position``, else 4.
        num_draws: draws returned.
        num_draws_per_path: draws from each path's approximation before pooling
            (default ``num_draws``).
        num_elbo_draws: Monte Carlo draws per ELBO estimate (K; the paper uses 5, Stan 25:
            with 5 the noisy ELBO often picks a worse iterate).
        history_size: L-BFGS history size (J in the paper).
        max_iterations, ftol, gtol, max_linesearch_steps: L-BFGS settings, see
            :func:`single_path`.
        importance_resampling: resample the pooled draws with their PSIS weights
            (default: when ``num_paths > 1``; a single path returns its approximation's
            draws, as in the paper). The Pareto k is computed in both cases.
        init_strategy, init_radius: how to draw the starting points (see
            :meth:`ppl.LogDensity.init`).

    Returns:
        A :class:`PathfinderResult`. Warns when Pareto k exceeds 0.7 or a path failed.

    Raises:
        ValueError: bad settings, an unusable starting point (naming the path and the
            sites), or every path failed (ELBO -inf everywhere).
    """
    run = _run_pathfinder(
        check_key(key),
        target,
        args,
        kwargs,
        logdensity_fn=logdensity_fn,
        init_position=init_position,
        num_paths=num_paths,
        num_draws=num_draws,
        num_draws_per_path=num_draws_per_path,
        num_elbo_draws=num_elbo_draws,
        history_size=history_size,
        max_iterations=max_iterations,
        ftol=ftol,
        gtol=gtol,
        max_linesearch_steps=max_linesearch_steps,
        importance_resampling=importance_resampling,
        init_strategy=init_strategy,
        init_radius=init_radius,
    )
    if run.resampled:
        index = _numpy_rng(run.key_resample).choice(
            run.pool.log_weights.shape[0], size=num_draws, p=_probabilities(run.pool.log_weights)
        )
    else:
        index = np.arange(num_draws)
    return _result(run, index)


class _Run(NamedTuple):
    ld: LogDensity
    pool: _Pool
    approximations: NormalApproximation
    paths: PathInfo
    initial_positions: jax.Array
    resampled: bool
    key_resample: jax.Array


def _run_pathfinder(
    key,
    target,
    args,
    kwargs,
    *,
    logdensity_fn,
    init_position,
    num_paths,
    num_draws,
    num_draws_per_path,
    num_elbo_draws,
    history_size,
    max_iterations,
    ftol,
    gtol,
    max_linesearch_steps,
    importance_resampling,
    init_strategy,
    init_radius,
) -> _Run:
    """Validate the settings, run the paths, pool their draws (see :func:`pathfinder`)."""
    if num_paths is None:
        shape = np.shape(init_position) if not isinstance(init_position, dict) else ()
        num_paths = shape[0] if len(shape) == 2 else 4
    for name, value, low in (
        ("num_paths", num_paths, 1),
        ("num_draws", num_draws, 1),
        ("num_elbo_draws", num_elbo_draws, 1),
        ("history_size", history_size, 1),
        ("max_iterations", max_iterations, 0),
        ("max_linesearch_steps", max_linesearch_steps, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    per_path = num_draws if num_draws_per_path is None else num_draws_per_path
    if not isinstance(per_path, int) or isinstance(per_path, bool) or per_path < 1:
        raise ValueError(f"num_draws_per_path must be a positive int, got {per_path!r}")
    resample = num_paths > 1 if importance_resampling is None else bool(importance_resampling)
    if not resample and num_paths > 1:
        raise ValueError(
            "several paths need importance_resampling=True: pooled draws from different "
            "approximations are only posterior draws after reweighting"
        )
    if not resample and per_path < num_draws:
        raise ValueError(
            f"without importance resampling the {num_draws} draws come from one path: "
            f"num_draws_per_path ({per_path}) must be at least num_draws"
        )
    ld = _as_logdensity(target, args, kwargs, logdensity_fn, init_position)
    if ld.dim == 0:
        raise ValueError("the model has no latent variables to approximate")
    key_init, key_paths, key_resample = jax.random.split(key, 3)
    positions = _initial_positions(
        key_init, ld, init_position, num_paths, init_strategy, init_radius
    )
    config = _Config(
        num_draws=per_path,
        num_elbo_draws=num_elbo_draws,
        history_size=history_size,
        max_iterations=max_iterations,
        ftol=ftol,
        gtol=gtol,
        max_linesearch_steps=max_linesearch_steps,
    )
    draws, log_p, log_q, approx, info = _run_paths(
        ld, jax.random.split(key_paths, num_paths), positions, config
    )
    pool = _pool(ld, draws, log_p, log_q, info)
    return _Run(ld, pool, approx, info, positions, resample, key_resample)


class _Pool(NamedTuple):
    """All paths' draws together (numpy, leading axis num_paths * num_draws_per_path)."""

    draws: np.ndarray
    log_p: np.ndarray
    log_q: np.ndarray
    log_weights: np.ndarray  # PSIS, normalised
    pareto_k: float


def _pool(ld, draws, log_p, log_q, info: PathInfo) -> _Pool:
    """Pool the paths' draws, drop failed paths (warning), PSIS weights and Pareto k."""
    num_paths = draws.shape[0]
    ok = np.isfinite(np.asarray(info.elbo))
    if not ok.any():
        raise ValueError(
            f"pathfinder: every path failed ({num_paths} of {num_paths}): the ELBO estimate "
            "was -inf (or nan) at every iterate, i.e. draws from each normal approximation "
            "had a non-finite log density. Check the model for regions where the density "
            "is nan or -inf, or start elsewhere (init_position=)"
        )
    if not ok.all():
        warnings.warn(
            f"pathfinder: path(s) {np.flatnonzero(~ok).tolist()} of {num_paths} failed (ELBO "
            "-inf at every iterate); their draws get zero weight",
            RuntimeWarning,
            stacklevel=4,
        )
    log_p = np.asarray(log_p, dtype=np.float64)
    log_q = np.asarray(log_q, dtype=np.float64)
    log_ratios = log_p - log_q
    log_ratios[~ok] = -np.inf
    log_weights, k = _importance_weights(log_ratios.reshape(-1))
    if k > PARETO_K_THRESHOLD:
        warnings.warn(
            f"pathfinder: Pareto k = {k:.2f} > {PARETO_K_THRESHOLD}: the approximation does "
            "not cover the posterior well; treat the draws as a rough initialisation, not as "
            "posterior draws",
            RuntimeWarning,
            stacklevel=4,
        )
    return _Pool(
        draws=np.asarray(draws).reshape(-1, ld.dim),
        log_p=log_p.reshape(-1),
        log_q=log_q.reshape(-1),
        log_weights=log_weights,
        pareto_k=k,
    )


def _numpy_rng(key: jax.Array) -> np.random.Generator:
    """A numpy generator seeded from a JAX key (host-side resampling, no compilation)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, dtype=np.uint32).reshape(-1).tolist())


def _probabilities(log_weights: np.ndarray) -> np.ndarray:
    w = np.exp(log_weights - np.max(log_weights))
    return w / w.sum()


def _result(run: _Run, index: np.ndarray) -> PathfinderResult:
    ld, pool = run.ld, run.pool
    chosen = jnp.asarray(pool.draws[index])
    samples = ld.shared_jit("constrain_batch", lambda ld, t: jax.vmap(ld.constrain)(t))(chosen)
    return PathfinderResult(
        draws=chosen,
        samples=samples,
        log_density=jnp.asarray(pool.log_p[index]),
        log_q=jnp.asarray(pool.log_q[index]),
        pareto_k=pool.pareto_k,
        approximations=run.approximations,
        paths=run.paths,
        initial_positions=run.initial_positions,
        logdensity=ld,
        resampled=run.resampled,
    )


def pathfinder_init(
    key: jax.Array,
    logdensity: LogDensity,
    num_chains: int,
    *,
    num_paths: int = 4,
    num_draws_per_path: int = 250,
    **options: Any,
) -> tuple[jax.Array, jax.Array, PathfinderResult]:
    """Starting points and a diagonal inverse mass matrix for MCMC from multi-path Pathfinder.

    Args:
        key: a ``jax.random`` key.
        logdensity: the :class:`ppl.LogDensity` to sample.
        num_chains: number of starting points.
        num_paths, num_draws_per_path: see :func:`pathfinder`.
        **options: other :func:`pathfinder` settings (``init_position``, ``history_size``,
            ``num_elbo_draws``, ...).

    Returns:
        ``(positions, inverse_mass_diag, result)``: ``num_chains`` distinct draws of the
        pooled paths picked with probabilities proportional to their PSIS weights, without
        replacement, shape (num_chains, dim); the diagonal of the best path's approximation
        covariance, shape (dim,); and the :class:`PathfinderResult` (its draws are all
        ``num_paths * num_draws_per_path`` pooled draws resampled;
        ``result.num_gradient_evals`` is the gradient cost).
    """
    if not isinstance(logdensity, LogDensity):
        raise TypeError(f"pathfinder_init needs a ppl.LogDensity, got {logdensity!r}")
    if not isinstance(num_chains, int) or isinstance(num_chains, bool) or num_chains < 1:
        raise ValueError(f"num_chains must be a positive int, got {num_chains!r}")
    key_run, key_pick = jax.random.split(key)
    pool_size = num_paths * num_draws_per_path
    settings = {
        "logdensity_fn": None,
        "init_position": None,
        "num_elbo_draws": 25,
        "history_size": 6,
        "max_iterations": 1000,
        "ftol": None,
        "gtol": 1e-8,
        "max_linesearch_steps": 20,
        "importance_resampling": None,
        "init_strategy": "uniform",
        "init_radius": 2.0,
    }
    unknown = sorted(set(options) - set(settings))
    if unknown:
        raise TypeError(f"pathfinder_init got unknown option(s) {unknown}")
    settings.update(options)
    run = _run_pathfinder(
        key_run,
        logdensity,
        (),
        {},
        num_paths=num_paths,
        num_draws=pool_size,
        num_draws_per_path=num_draws_per_path,
        **settings,
    )
    p = _probabilities(run.pool.log_weights)
    rng = _numpy_rng(key_pick)
    # distinct starting points, drawn with probabilities proportional to the PSIS weights
    index = rng.choice(p.shape[0], size=num_chains, replace=np.count_nonzero(p) < num_chains, p=p)
    positions = jnp.asarray(run.pool.draws[index])
    if run.resampled:
        result = _result(run, rng.choice(p.shape[0], size=pool_size, p=p))
    else:
        result = _result(run, np.arange(pool_size))
    return positions, jnp.asarray(result.variance), result
