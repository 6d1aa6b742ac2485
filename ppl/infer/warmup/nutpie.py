"""Gradient-based warmup (nutpie's): the metric from draws *and* their gradients.

For a Gaussian target with covariance ``Σ``, draws have covariance ``Σ`` and gradients
``∇log π(x) = -Σ⁻¹(x - μ)`` have covariance ``Σ⁻¹``. So the per-coordinate estimate
``sqrt(Var(x) / Var(∇log π))`` recovers the variances of an independent Gaussian exactly,
and it settles after a few dozen draws because every gradient carries curvature information
(Seyboldt et al., nutpie; the Rust core is nuts-rs). This module provides:

- :class:`DrawGradStats` and its pure functions: weighted Welford estimators of the draws'
  and the gradients' variances, and :func:`grad_diagonal`, the diagonal inverse mass matrix.
- :func:`low_rank_metric`: nutpie's low-rank modification. After the diagonal rescaling, the
  draws and gradients are projected on the subspace they span; there the SPD geometric mean
  ``A`` of the draws' covariance and the inverse of the gradients' covariance (``A C_g A =
  C_x``; ``A = Σ`` for a Gaussian) is eigendecomposed and the directions whose eigenvalue is
  outside ``[1/cutoff, cutoff]`` correct the metric: ``M⁻¹ = S (I + U (Λ - I) Uᵀ) S``.
- :func:`grad_window_schedule`: nutpie's schedule as per-iteration flags. Two estimators run
  side by side, a foreground one that sets the metric after every draw and a background one
  that starts empty; every ``early_switch_freq`` draws during the first ``early_window`` of
  warmup (later after windows growing from ``switch_freq`` by ``window_growth``) the
  background becomes the foreground and a new background starts, so early, poor draws are
  forgotten quickly. The last ``step_size_window`` of warmup keeps the metric fixed and only
  settles the step size; dual averaging runs on through it (not restarted), on the symmetric
  acceptance statistic once no further window fits.
- :func:`grad_warmup_init`, :func:`grad_warmup_before`, :func:`grad_warmup_after`,
  :func:`grad_warmup_final`: the per-chain warmup state machine, driven by ``ppl.infer.MCMC``.

Shapes: positions and gradients are ``(dim,)``; the low-rank buffer holds ``(buffer, dim)``
draws and gradients. The step size is in units of the integration time of one leapfrog.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ppl.infer import hmc
from ppl.infer.adaptation import DualAveragingState, dual_averaging, find_reasonable_step_size
from ppl.infer.metrics import LowRankInverseMass, low_rank_to_dense

__all__ = [
    "buffer_size",
    "DrawGradBuffer",
    "DrawGradStats",
    "GradWarmupSchedule",
    "GradWarmupState",
    "LowRankSettings",
    "grad_diagonal",
    "grad_warmup_after",
    "grad_warmup_before",
    "grad_warmup_final",
    "grad_warmup_init",
    "grad_window_schedule",
    "initial_diagonal",
    "low_rank_metric",
    "stats_init",
    "stats_update",
]

# nutpie's clamps for the diagonal (its LOWER_LIMIT / UPPER_LIMIT)
_DIAG_MIN = 1e-20
_DIAG_MAX = 1e20


# --------------------------------------------------------------------------------------------
# Running estimators of draws and gradients
# --------------------------------------------------------------------------------------------


class DrawGradStats(NamedTuple):
    """Weighted Welford estimators of the draws' and the gradients' per-coordinate variance.

    Attributes:
        count: scalar, the sum of the weights (the number of draws taken).
        mean_x, m2_x: ``(dim,)`` mean and sum of squared deviations of the draws.
        mean_g, m2_g: ``(dim,)`` the same for the gradients.
    """

    count: Array
    mean_x: Array
    m2_x: Array
    mean_g: Array
    m2_g: Array


def stats_init(dim: int, dtype: Any) -> DrawGradStats:
    """Empty estimators for ``dim`` coordinates."""
    zero = jnp.zeros(dim, dtype)
    return DrawGradStats(jnp.zeros((), dtype), zero, zero, zero, zero)


def stats_update(stats: DrawGradStats, x: Array, g: Array, weight: Array) -> DrawGradStats:
    """Add a draw ``x (dim,)`` and its gradient ``g (dim,)`` with ``weight`` 0 or 1.

    A zero weight (e.g. a divergent transition, or a non-finite gradient) leaves the estimators
    unchanged.
    """
    weight = jnp.asarray(weight, stats.count.dtype) * (
        jnp.all(jnp.isfinite(x)) & jnp.all(jnp.isfinite(g))
    )
    x = jnp.where(weight > 0, x, stats.mean_x)
    g = jnp.where(weight > 0, g, stats.mean_g)
    count = stats.count + weight
    frac = jnp.where(count > 0, weight / jnp.maximum(count, 1.0), 0.0)
    dx = x - stats.mean_x
    dg = g - stats.mean_g
    mean_x = stats.mean_x + frac * dx
    mean_g = stats.mean_g + frac * dg
    return DrawGradStats(
        count,
        mean_x,
        stats.m2_x + weight * dx * (x - mean_x),
        mean_g,
        stats.m2_g + weight * dg * (g - mean_g),
    )


def grad_diagonal(stats: DrawGradStats) -> Array:
    """nutpie's diagonal inverse mass matrix ``sqrt(Var(x) / Var(g))``, shape ``(dim,)``.

    Coordinates where the ratio is not a positive finite number (e.g. a coordinate that never
    moved and whose gradient never changed) get 1; the rest are clipped to ``[1e-20, 1e20]``.
    """
    ratio = jnp.sqrt(stats.m2_x / stats.m2_g)
    ratio = jnp.where(jnp.isfinite(ratio) & (ratio > 0), ratio, 1.0)
    return jnp.clip(ratio, _DIAG_MIN, _DIAG_MAX)


def initial_diagonal(grad: Array) -> Array:
    """The inverse mass diagonal before any draw: ``1/|∇log π(x₀)|`` (1 where that is not finite
    and positive), clipped to ``[1e-20, 1e20]``. Shape ``(dim,)``."""
    inv = 1.0 / jnp.abs(grad)
    inv = jnp.where(jnp.isfinite(inv) & (inv > 0), inv, 1.0)
    return jnp.clip(inv, _DIAG_MIN, _DIAG_MAX)


# --------------------------------------------------------------------------------------------
# Low-rank modification
# --------------------------------------------------------------------------------------------


class LowRankSettings(NamedTuple):
    """Settings of the low-rank modified metric (static).

    Attributes:
        rank: the largest number of corrected directions (a fixed-size representation; unused
            slots are inert). ``rank = dim`` with ``cutoff = 1`` gives a full-rank (dense) metric.
        cutoff: eigenvalues in ``[1/cutoff, cutoff]`` are ignored (nutpie's default 2).
        gamma: regularization of the projected covariances (nutpie's 1e-5): ``C = X Xᵀ/gamma + I``.
        update_every: the metric is recomputed every this many warmup draws (and at every
            estimator switch, i.e. every 10 draws early in warmup); its four symmetric
            eigendecompositions cost too much to repeat after every draw.
    """

    rank: int = 10
    cutoff: float = 2.0
    gamma: float = 1e-5
    update_every: int = 40


class DrawGradBuffer(NamedTuple):
    """The recent draws and gradients kept for the low-rank estimate (a ring buffer).

    Attributes:
        draws, grads: ``(size, dim)``.
        stamp: ``(size,)`` int32, the warmup iteration that wrote each row (-1: the initial
            point, -2: empty).
        weight: ``(size,)``, 1 for a usable row, 0 for an empty or divergent one.
    """

    draws: Array
    grads: Array
    stamp: Array
    weight: Array


def _sym_power(matrix: np.ndarray, power: float) -> np.ndarray:
    """``matrix ** power`` for a symmetric positive definite matrix, via ``eigh`` (float64)."""
    vals, vecs = np.linalg.eigh(matrix)
    vals = np.maximum(vals, np.finfo(np.float64).tiny)
    return (vecs * vals**power) @ vecs.T


def spd_mean(a: Any, b: Any) -> np.ndarray:
    """The SPD geometric mean of ``a`` and ``b⁻¹``: the SPD ``m`` with ``m b m = a`` (float64).

    ``m = b^(-1/2) (b^(1/2) a b^(1/2))^(1/2) b^(-1/2)``; for ``a = Σ`` and ``b = Σ⁻¹`` it is ``Σ``.
    Shapes ``(k, k)``.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    b_half = _sym_power(b, 0.5)
    b_inv_half = _sym_power(b, -0.5)
    middle = _sym_power(b_half @ a @ b_half, 0.5)
    return b_inv_half @ middle @ b_inv_half


def _low_rank_numpy(draws, grads, weight, rank, cutoff, gamma):
    """The low-rank estimate in float64 numpy: ``(scale (dim,), vectors (dim, rank), values
    (rank,))``. See :func:`low_rank_metric`."""
    draws = np.asarray(draws, np.float64)
    grads = np.asarray(grads, np.float64)
    dim = draws.shape[1]
    values = np.ones(rank)
    vectors = np.zeros((dim, rank))
    keep = np.asarray(weight) > 0
    keep &= np.all(np.isfinite(draws), axis=1) & np.all(np.isfinite(grads), axis=1)
    x, g = draws[keep], grads[keep]
    n = x.shape[0]
    if n < 2:
        return np.ones(dim), vectors, values
    dx = x - x.mean(0)
    dg = g - g.mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.sqrt(np.sqrt(np.sum(dx**2, 0)) / np.sqrt(np.sum(dg**2, 0)))
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    scale = np.clip(scale, np.sqrt(_DIAG_MIN), np.sqrt(_DIAG_MAX))
    try:
        # draws or gradients far out in a transient (a chain at log p = -1e12, say) can make
        # the projected covariances too ill-conditioned for float64: then this window gets
        # the diagonal alone (a later one, past the transient, gets its correction)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            found = _low_rank_directions(dx, dg, scale, n, gamma)
    except np.linalg.LinAlgError:
        found = None
    if found is None:
        return scale, vectors, values
    vals, vecs, basis = found
    k = vals.shape[0]
    extremeness = np.abs(np.log(vals))
    order = np.argsort(-extremeness)[: min(rank, k)]
    order = order[extremeness[order] > np.log(cutoff)]
    m = order.size
    values[:m] = vals[order]
    vectors[:, :m] = vecs[:, order] if basis is None else basis @ vecs[:, order]
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(vectors))):
        return scale, np.zeros((dim, rank)), np.ones(rank)
    return scale, vectors, values


def _low_rank_directions(dx, dg, scale, n, gamma):
    """Eigenvalues ``(k,)`` and vectors ``(k, k)`` of the SPD mean of the rescaled draws' and
    gradients' regularised covariances on the subspace they span, and that subspace's basis
    ``(dim, k)`` (``None`` for the full space); ``None`` where they are not finite."""
    dim = dx.shape[1]
    xr = (dx / (scale * n)).T  # (dim, n)
    gr = (dg * scale / n).T
    if dim <= 2 * n:  # the draws and gradients may span everything: the full space
        basis, xp, gp = None, xr, gr
    else:  # an orthonormal basis of their span
        u, sv, _ = np.linalg.svd(np.concatenate([xr, gr], axis=1), full_matrices=False)
        if not sv[0] > 0:
            return None
        basis = u[:, sv > sv[0] * 2 * n * np.finfo(np.float64).eps]
        xp = basis.T @ xr
        gp = basis.T @ gr
    k = xp.shape[0]
    cov_x = xp @ xp.T / gamma + np.eye(k)
    cov_g = gp @ gp.T / gamma + np.eye(k)
    if not (np.all(np.isfinite(cov_x)) and np.all(np.isfinite(cov_g))):
        return None
    mean = spd_mean(cov_x, cov_g)
    # the mean solves m C_g m = C_x: where precision was lost it does not
    residual = np.linalg.norm(mean @ cov_g @ mean - cov_x) / np.linalg.norm(cov_x)
    if not (np.all(np.isfinite(mean)) and residual < 1e-6):
        return None
    vals, vecs = np.linalg.eigh(mean)
    if not (np.all(np.isfinite(vals)) and np.all(vals > 0)):
        return None
    return vals, vecs, basis


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def low_rank_metric(
    draws: Array, grads: Array, weight: Array, settings: LowRankSettings
) -> LowRankInverseMass:
    """nutpie's low-rank modified inverse mass matrix from weighted draws and gradients.

    Per coordinate, ``scale = (sd(x) / sd(g))^(1/2)`` (so the diagonal part is nutpie's
    gradient-based diagonal). In the rescaled space, with ``X`` and ``G`` the centred draws
    and gradients divided by ``n``, the SPD mean ``A`` of ``C_x = X Xᵀ/gamma + I`` and
    ``C_g⁻¹ = (G Gᵀ/gamma + I)⁻¹`` is computed on the subspace spanned by ``X`` and ``G``
    (``A = Σ`` for a Gaussian, shrunk toward 1 where the draws say little), and its
    eigenvectors whose eigenvalue lies outside ``[1/cutoff, cutoff]``, the most extreme first,
    correct the metric.

    The estimate runs on the host in float64 (``jax.pure_callback``): the projected covariances
    span ~``1/(ngamma)`` orders of magnitude, beyond float32, and the few eigendecompositions per
    warmup are cheap there. It is jittable and vmappable (chains are handled one by one).

    Args:
        draws, grads: ``(n, dim)`` draws and their log-density gradients.
        weight: ``(n,)`` weights in {0, 1} (rows with weight 0, or non-finite, are ignored).
        settings: a :class:`LowRankSettings`.

    Returns:
        A ``LowRankInverseMass`` with ``settings.rank`` slots (unused ones have eigenvalue 1
        and a zero vector), in the dtype of ``draws``.
    """
    dim = draws.shape[1]
    dtype = draws.dtype
    rank = settings.rank
    # float32 out of the host: the x64 flag can be thread-local (``jax.enable_x64``) and the
    # callback's thread may not see it
    shapes = (
        jax.ShapeDtypeStruct((dim,), jnp.float32),
        jax.ShapeDtypeStruct((dim, rank), jnp.float32),
        jax.ShapeDtypeStruct((rank,), jnp.float32),
    )

    def host(d, g, w):
        # one BLAS thread: these matrices are small, and OpenBLAS's threads fight XLA's for
        # the cores (measured 145 ms per estimate with threads, 8 ms without, 89 dims)
        with _blas_controller().limit(limits=1, user_api="blas"):
            out = _low_rank_numpy(d, g, w, rank, settings.cutoff, settings.gamma)
        return tuple(np.asarray(a, np.float32) for a in out)

    scale, vectors, values = jax.pure_callback(
        host, shapes, draws, grads, weight, vmap_method="sequential"
    )
    scale, vectors, values = (a.astype(dtype) for a in (scale, vectors, values))
    if jnp.finfo(dtype).bits > 32 and rank <= dim:
        # momentum draws and kinetic energy agree exactly only for orthonormal vectors
        q, r = jnp.linalg.qr(vectors)
        vectors = q * jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0)
    return LowRankInverseMass(scale, vectors, values)


# --------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------


class GradWarmupSchedule(NamedTuple):
    """nutpie's warmup schedule as per-iteration numpy arrays of length ``num_warmup``.

    Attributes:
        collect: bool, the iteration's draw feeds the estimators (all but the final window).
        switch: bool, after the iteration the background estimator becomes the foreground.
        update: bool, after the iteration the low-rank metric is recomputed (the diagonal one
            is recomputed after every collected draw).
        restart: bool, before the iteration the step-size heuristic runs and dual averaging
            restarts: at iteration 0, after the first metric update, and where the final
            step-size window begins.
        fg_start: int, the first iteration whose draw is in the foreground estimator after this
            iteration (-1: the initial point is still in it).
        late: bool, dual averaging takes the symmetric acceptance statistic after the
            iteration (``acceptance_sym``): from where no further switch fits before the final
            window, as in nuts-rs.
    """

    collect: np.ndarray
    switch: np.ndarray
    update: np.ndarray
    restart: np.ndarray
    fg_start: np.ndarray
    late: np.ndarray


def grad_window_schedule(
    num_warmup: int,
    early_window: float = 0.3,
    step_size_window: float = 0.15,
    early_switch_freq: int = 10,
    switch_freq: int = 80,
    window_growth: float = 1.5,
    update_every: int = 10,
) -> GradWarmupSchedule:
    """nutpie's warmup schedule (nuts-rs defaults) as per-iteration flags.

    Every draw before the final ``step_size_window`` of warmup enters both the foreground and
    the background estimator (the initial point counts as one draw). After a draw, if the
    background holds at least the current window's number of draws (``early_switch_freq``
    during the first ``early_window`` of warmup; later ``switch_freq``, growing by
    ``window_growth`` after each switch) and the next window would still end before the final
    window, the background becomes the foreground and a new empty background starts. The
    metric is recomputed from the foreground after every draw (the low-rank one at switches
    and every ``update_every`` draws) once it holds 3 draws. The step-size heuristic runs and
    dual averaging starts at iteration 0 and again after the first metric update; dual
    averaging then runs to the end of warmup, whose averaged step size is used for sampling.

    Args:
        num_warmup: number of warmup iterations (a Python int ≥ 0).
        early_window, step_size_window: fractions of ``num_warmup``.
        early_switch_freq, switch_freq: draws in the background before a switch (early, and
            the first window after the early phase).
        window_growth: factor (≥ 1) by which each later window exceeds the one before.
        update_every: cadence of low-rank recomputation, in draws.

    Returns:
        A :class:`GradWarmupSchedule`.
    """
    if not window_growth >= 1.0:
        raise ValueError(f"window_growth must be >= 1, got {window_growth!r}")
    n = int(num_warmup)
    early_end = int(early_window * n)
    final_start = n - int(step_size_window * n)
    collect = np.zeros(n, bool)
    switch = np.zeros(n, bool)
    update = np.zeros(n, bool)
    restart = np.zeros(n, bool)
    fg_start = np.full(n, -1, np.int64)
    late = np.ones(n, bool)
    fg_begin, bg_begin, bg_count, fg_count = -1, -1, 1, 1
    window = switch_freq
    first_update_done = False
    if n:
        restart[0] = True
    for i in range(final_start):
        collect[i] = True
        bg_count += 1
        fg_count += 1
        early = i < early_end
        if i == early_end:  # never shrink below what the background already holds
            window = max(window, bg_count - 1)
        freq = early_switch_freq if early else window
        # round half up, as nuts-rs does
        grown = (
            early_switch_freq
            if early
            else max(window + 1, math.floor(window * window_growth + 0.5))
        )
        late[i] = grown + i > final_start
        if bg_count >= freq and not late[i]:
            switch[i] = True
            fg_begin, fg_count = bg_begin, bg_count
            bg_begin, bg_count = i + 1, 0
            if not early:
                window = grown
        fg_start[i] = fg_begin
        if fg_count >= 3:
            update[i] = switch[i] or (i + 1) % update_every == 0 or not first_update_done
            if not first_update_done and i + 1 < n:
                restart[i + 1] = True
            first_update_done = True
    if 0 < final_start < n:
        update[final_start - 1] = True
    fg_start[final_start:] = fg_begin
    return GradWarmupSchedule(collect, switch, update, restart, fg_start, late)


def buffer_size(schedule: GradWarmupSchedule) -> int:
    """Rows the low-rank buffer needs: the longest foreground span of the schedule, plus the
    initial point."""
    if not schedule.collect.any():
        return 1
    i = np.arange(schedule.collect.size)
    spans = np.where(schedule.collect, i - np.maximum(schedule.fg_start, 0) + 1, 0)
    return int(spans.max()) + 1


# --------------------------------------------------------------------------------------------
# Warmup state machine
# --------------------------------------------------------------------------------------------


class GradWarmupState(NamedTuple):
    """One chain's state during gradient-based warmup.

    Attributes:
        state: the kernel's ``HMCState``.
        step_size: the step size for the next iteration.
        inverse_mass_matrix: ``(dim,)`` or a ``LowRankInverseMass``.
        dual_averaging: the step-size adaptation state.
        foreground, background: the ``DrawGradStats`` estimators.
        buffer: a ``DrawGradBuffer`` for the low-rank metric, ``None`` for the diagonal one.
        hold_until: int32, the first iteration whose draw may feed the estimators again after
            a reset (see :func:`grad_warmup_after`); 0 otherwise.
        resets: int32, the resets so far.
    """

    state: Any
    step_size: Array
    inverse_mass_matrix: Any
    dual_averaging: DualAveragingState
    foreground: DrawGradStats
    background: DrawGradStats
    buffer: DrawGradBuffer | None
    hold_until: Array
    resets: Array


def grad_warmup_init(
    position: Array,
    logdensity_fn: Callable[[Array], Array],
    initial_step_size: float = 1.0,
    target_accept: float = 0.8,
    low_rank: LowRankSettings | None = None,
    buffer_rows: int = 1,
    dense: bool = False,
    initial_inverse_mass_diag: Array | None = None,
) -> GradWarmupState:
    """The warmup state at ``position (dim,)``: the initial point enters the estimators and the
    metric starts at ``1/|∇log π(x₀)|``.

    Args:
        position: shape ``(dim,)``.
        logdensity_fn: ``(dim,) -> scalar``.
        initial_step_size: where the first step-size heuristic starts.
        target_accept: the dual-averaging target.
        low_rank: settings for a low-rank modified metric, or ``None`` for a diagonal one.
        buffer_rows: rows of the low-rank buffer (``buffer_size(schedule)``).
        dense: keep the metric as a dense ``(dim, dim)`` matrix (the low-rank estimate at
            ``rank = dim`` and ``cutoff = 1`` is a full SPD matrix; the dense form makes each
            leapfrog one matrix-vector product).
        initial_inverse_mass_diag: ``(dim,)`` inverse mass diagonal to start from (e.g. from
            Pathfinder) instead of ``1/|∇log π(x₀)|``.
    """
    position = jnp.asarray(position)
    if position.ndim != 1:
        raise ValueError(f"position must be a flat 1-D array of shape (dim,); got {position.shape}")
    state = hmc.init(position, logdensity_fn)
    dim, dtype = position.shape[0], position.dtype
    stats = stats_update(stats_init(dim, dtype), state.position, state.grad, 1.0)
    if initial_inverse_mass_diag is None:
        diag = initial_diagonal(state.grad).astype(dtype)
    else:
        diag = jnp.asarray(initial_inverse_mass_diag, dtype)
    buffer = None
    metric: Any = diag
    if low_rank is not None:
        rank = low_rank.rank
        metric = LowRankInverseMass(
            jnp.sqrt(diag), jnp.zeros((dim, rank), dtype), jnp.ones(rank, dtype)
        )
        if dense:
            metric = jnp.diag(diag)
        rows = max(int(buffer_rows), 1)
        buffer = DrawGradBuffer(
            draws=jnp.zeros((rows, dim), dtype).at[0].set(state.position),
            grads=jnp.zeros((rows, dim), dtype).at[0].set(state.grad),
            stamp=jnp.full((rows,), -2, jnp.int32).at[0].set(-1),
            weight=jnp.zeros(rows, dtype).at[0].set(1.0),
        )
    step_size = jnp.asarray(initial_step_size, dtype)
    return GradWarmupState(
        state=state,
        step_size=step_size,
        inverse_mass_matrix=metric,
        dual_averaging=dual_averaging(target_accept=target_accept).init(step_size),
        foreground=stats,
        background=stats,
        buffer=buffer,
        hold_until=jnp.zeros((), jnp.int32),
        resets=jnp.zeros((), jnp.int32),
    )


def grad_warmup_before(
    key: Array,
    warmup_state: GradWarmupState,
    restart: Array,
    logdensity_fn: Callable[[Array], Array],
    target_accept: float = 0.8,
) -> GradWarmupState:
    """Before an iteration: where ``restart`` is set, run the step-size heuristic from the current
    step size with the current metric and restart dual averaging at ``mu = log(10 ε)``."""

    def do_restart(w: GradWarmupState) -> GradWarmupState:
        step_size = find_reasonable_step_size(
            key, w.state, logdensity_fn, w.inverse_mass_matrix, w.step_size
        )
        da = dual_averaging(target_accept=target_accept).init(step_size)
        return w._replace(step_size=step_size, dual_averaging=da)

    return jax.lax.cond(restart, do_restart, lambda w: w, warmup_state)


def grad_warmup_after(
    warmup_state: GradWarmupState,
    state: Any,
    info: Any,
    iteration: Array,
    collect: Array,
    switch: Array,
    update: Array,
    fg_start: Array,
    late: Array | bool = False,
    target_accept: float = 0.8,
    low_rank: LowRankSettings | None = None,
    dense: bool = False,
    saturation_steps: int | None = None,
    hold: int = 50,
    max_resets: int = 2,
) -> GradWarmupState:
    """After a kernel step in warmup: dual averaging takes the acceptance statistic; a
    non-divergent draw in the collection phase enters both estimators (and the low-rank
    buffer); the background may become the foreground; the metric is recomputed.

    A guard against a chain trapped far out in its transient: there the gradients of some
    coordinates can be huge and wildly varying while the chain barely moves, so the
    estimate shrinks their scale until the chain freezes along them and every transition runs
    to the maximum tree depth. A transition of ``saturation_steps`` leapfrog steps (NUTS's
    maximum) during the collection phase resets the metric to the identity, empties the
    estimators, restarts dual averaging, and lets the chain move ``hold`` iterations on the
    identity (as Stan's initial fast window does) before draws feed the estimators again.
    Saturation during that hold does not count (the identity may be a poor metric too), and a
    chain is reset at most ``max_resets`` times.

    Args:
        warmup_state: the state before the step.
        state: the kernel's new ``HMCState``.
        info: the kernel's info (``acceptance_rate``, ``diverging``).
        iteration: the warmup iteration number (int32 scalar).
        collect, switch, update, fg_start, late: this iteration's entries of the schedule.
        target_accept: the dual-averaging target.
        low_rank: the low-rank settings, or ``None`` for a diagonal metric.
        dense: the metric is kept as a dense matrix (see :func:`grad_warmup_init`).
        saturation_steps: leapfrog steps that mark a saturated transition (``None``: no reset).
        hold: iterations on the identity metric after a reset.
        max_resets: the most resets per chain.
    """
    da = dual_averaging(target_accept=target_accept)
    if saturation_steps is not None:
        reset = (
            collect
            & (info.num_steps >= saturation_steps)
            & (iteration >= warmup_state.hold_until)
            & (warmup_state.resets < max_resets)
        )
        warmup_state = jax.lax.cond(
            jnp.any(reset),  # cheap test first: resets are rare
            lambda w: _reset(w, reset, iteration + hold, target_accept),
            lambda w: w,
            warmup_state,
        )
    collect = collect & (iteration >= warmup_state.hold_until)
    acceptance = jnp.where(late, info.acceptance_sym, info.acceptance_rate)
    da_state = da.update(warmup_state.dual_averaging, acceptance)
    w = warmup_state._replace(
        state=state,
        step_size=jnp.exp(da_state.log_step_size).astype(warmup_state.step_size.dtype),
        dual_averaging=da_state,
    )
    weight = (collect & ~info.diverging).astype(state.position.dtype)
    fg = stats_update(w.foreground, state.position, state.grad, weight)
    bg = stats_update(w.background, state.position, state.grad, weight)
    empty = stats_init(state.position.shape[0], state.position.dtype)
    fg = jax.tree.map(lambda old, new: jnp.where(switch, new, old), fg, bg)
    bg = jax.tree.map(lambda old, new: jnp.where(switch, new, old), bg, empty)
    w = w._replace(foreground=fg, background=bg)
    if low_rank is None:
        new_metric = grad_diagonal(fg).astype(state.position.dtype)
        metric = jnp.where(collect & (fg.count >= 3), new_metric, w.inverse_mass_matrix)
        return w._replace(inverse_mass_matrix=metric)
    buf = w.buffer
    rows = buf.stamp.shape[0]
    slot = (iteration + 1) % rows  # row 0 holds the initial point until it is overwritten
    keep = collect
    buf = DrawGradBuffer(
        draws=jnp.where(keep, buf.draws.at[slot].set(state.position), buf.draws),
        grads=jnp.where(keep, buf.grads.at[slot].set(state.grad), buf.grads),
        stamp=jnp.where(keep, buf.stamp.at[slot].set(iteration.astype(jnp.int32)), buf.stamp),
        weight=jnp.where(keep, buf.weight.at[slot].set(weight), buf.weight),
    )
    w = w._replace(buffer=buf)

    def recompute(w: GradWarmupState) -> GradWarmupState:
        member = (w.buffer.stamp >= fg_start) & (w.buffer.stamp > -2)
        weights = w.buffer.weight * member
        metric = low_rank_metric(w.buffer.draws, w.buffer.grads, weights, low_rank)
        if dense:
            metric = low_rank_to_dense(metric)
        usable = (jnp.sum(weights) >= 3) & (iteration >= w.hold_until)
        metric = jax.tree.map(
            lambda new, old: jnp.where(usable, new, old), metric, w.inverse_mass_matrix
        )
        return w._replace(inverse_mass_matrix=metric)

    return jax.lax.cond(update, recompute, lambda w: w, w)


def _reset(w: GradWarmupState, reset: Array, hold_until: Array, target_accept: float):
    """Where ``reset``: identity metric, empty estimators and buffer, fresh dual averaging,
    no collection before ``hold_until``."""
    dim = w.state.position.shape[0]
    dtype = w.state.position.dtype
    metric = w.inverse_mass_matrix
    if isinstance(metric, LowRankInverseMass):
        identity = LowRankInverseMass(
            jnp.ones(dim, dtype), jnp.zeros_like(metric.vectors), jnp.ones_like(metric.values)
        )
    elif metric.ndim == 2:
        identity = jnp.eye(dim, dtype=dtype)
    else:
        identity = jnp.ones(dim, dtype)
    empty = stats_init(dim, dtype)
    fresh_da = dual_averaging(target_accept=target_accept).init(w.step_size)

    def pick(new, old):
        return jax.tree.map(lambda a, b: jnp.where(reset, a, b), new, old)

    buffer = w.buffer
    if buffer is not None:
        buffer = buffer._replace(weight=jnp.where(reset, 0.0, buffer.weight))
    return w._replace(
        inverse_mass_matrix=pick(identity, metric),
        foreground=pick(empty, w.foreground),
        background=pick(empty, w.background),
        dual_averaging=pick(fresh_da, w.dual_averaging),
        buffer=buffer,
        hold_until=jnp.where(reset, hold_until.astype(jnp.int32), w.hold_until),
        resets=w.resets + reset.astype(jnp.int32),
    )


def grad_warmup_final(warmup_state: GradWarmupState) -> tuple[Any, Array, Any]:
    """``(state, step_size, inverse_mass_matrix)`` for sampling: the step size is ``ε̄``."""
    step_size = dual_averaging().final(warmup_state.dual_averaging)
    return (
        warmup_state.state,
        step_size.astype(warmup_state.step_size.dtype),
        (warmup_state.inverse_mass_matrix),
    )
