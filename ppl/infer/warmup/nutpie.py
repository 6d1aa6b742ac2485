"""nutpie's gradient-based warmup: the metric from draws *and* their gradients.

For a Gaussian target with covariance ``Σ``, draws have covariance ``Σ`` and gradients
``∇log π(x) = -Σ⁻¹(x - μ)`` have covariance ``Σ⁻¹``. So the per-coordinate estimate
``sqrt(Var(x) / Var(∇log π))`` recovers the variances of an independent Gaussian exactly,
and it settles after a few dozen draws because every gradient carries curvature information
(Seyboldt et al., nutpie; the Rust core is nuts-rs). This module provides:

- (from :mod:`ppl.infer.warmup.draw_grad`, re-exported here) :class:`DrawGradStats` and
  its pure functions: weighted Welford estimators of the draws' and the gradients'
  variances; :func:`grad_diagonal`, the diagonal inverse mass matrix of the early window,
  and :func:`bounded_diagonal`, the same raised where the draws' variance exceeds it many
  times, the diagonal after the early window (the gradient-based estimate falls far below
  the marginal variance of coordinates tied to others, e.g. hierarchical scales).
- :func:`grad_window_schedule`: nutpie's schedule as per-iteration flags. Two estimators run
  side by side, a foreground one that sets the metric after every draw and a background one
  that starts empty; every ``early_switch_freq`` draws during the first ``early_window`` of
  warmup (later after windows growing from ``switch_freq`` by ``window_growth``) the
  background becomes the foreground and a new background starts, so early, poor draws are
  forgotten quickly. The last ``step_size_window`` of warmup keeps the metric fixed and only
  settles the step size: dual averaging restarts where it begins (as after Stan's last slow
  window; nuts-rs runs on through it), and takes the symmetric acceptance statistic once no
  further window fits.
- :func:`nutpie_warmup`: the per-chain warmup as a :class:`ppl.infer.base.Warmup`, the
  protocol the driver runs; with a low-rank or dense metric its estimates come from
  :mod:`ppl.infer.warmup.low_rank`, the step size from :mod:`ppl.infer.warmup.step_size`.

Shapes: positions and gradients are ``(dim,)``; the low-rank buffer holds ``(buffer, dim)``
draws and gradients. The step size is in units of the integration time of one leapfrog.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ppl.infer.base import StepParameters, Warmup
from ppl.infer.core.metrics import LowRankInverseMass, low_rank_to_dense
from ppl.infer.warmup.auto_metric import AUTO_MAX_DIM, auto_wants_low_rank, judge_iterations
from ppl.infer.warmup.draw_grad import (
    DrawGradStats,
    bounded_diagonal,
    grad_diagonal,
    initial_diagonal,
    stats_init,
    stats_update,
)
from ppl.infer.warmup.low_rank import LowRankSettings, low_rank_metric
from ppl.infer.warmup.step_size import (
    DualAveragingState,
    dual_averaging,
    find_reasonable_step_size,
    sampling_step_parameters,
    step_parameters,
)

__all__ = [
    "METRICS",
    "DrawGradBuffer",
    "DrawGradStats",
    "NutpieSchedule",
    "NutpieWarmupState",
    "buffer_size",
    "bounded_diagonal",
    "grad_diagonal",
    "grad_window_schedule",
    "initial_diagonal",
    "nutpie_warmup",
    "stats_init",
    "stats_update",
]

METRICS = ("auto", "diag", "low_rank", "dense")

#: the early window's share of warmup (grad_window_schedule's default)
EARLY_WINDOW = 0.3


# --------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------


class NutpieSchedule(NamedTuple):
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
        adapt: bool, True on every warmup iteration. The driver pads every flag with False
            after warmup; ``after`` changes nothing where ``adapt`` is False, so the driver
            may call it on every iteration instead of inside a conditional (which would copy
            the whole warmup state, low-rank buffer included, on every iteration).
            :func:`nutpie_warmup` drops it (``None``) for the diagonal and "auto" metrics.
    """

    collect: np.ndarray
    switch: np.ndarray
    update: np.ndarray
    restart: np.ndarray
    fg_start: np.ndarray
    late: np.ndarray
    adapt: np.ndarray | None = None


def grad_window_schedule(
    num_warmup: int,
    early_window: float = 0.3,
    step_size_window: float = 0.15,
    early_switch_freq: int = 10,
    switch_freq: int = 80,
    window_growth: float = 1.5,
    update_every: int = 10,
    final_restart: bool = True,
) -> NutpieSchedule:
    """nutpie's warmup schedule (nuts-rs defaults) as per-iteration flags.

    Every draw before the final ``step_size_window`` of warmup enters both the foreground and
    the background estimator (the initial point counts as one draw). After a draw, if the
    background holds at least the current window's number of draws (``early_switch_freq``
    during the first ``early_window`` of warmup; later ``switch_freq``, growing by
    ``window_growth`` after each switch) and the next window would still end before the final
    window, the background becomes the foreground and a new empty background starts. The
    metric is recomputed from the foreground after every draw (the low-rank one at switches
    and every ``update_every`` draws) once it holds 3 draws. The step-size heuristic runs and
    dual averaging starts at iteration 0, again after the first metric update and (with
    ``final_restart``) where the final window begins, whose metric stays fixed; its averaged
    step size at the end of warmup is used for sampling.

    Args:
        num_warmup: number of warmup iterations (a Python int ≥ 0).
        early_window, step_size_window: fractions of ``num_warmup``.
        early_switch_freq, switch_freq: draws in the background before a switch (early, and
            the first window after the early phase).
        window_growth: factor (≥ 1) by which each later window exceeds the one before.
        update_every: cadence of low-rank recomputation, in draws.
        final_restart: restart the step-size heuristic and dual averaging where the final
            window begins (as Stan does after its last slow window); ``False``: dual
            averaging runs on to the end of warmup, as nuts-rs's does. The restart gives a
            smaller, more conservative sampling step size (its short average ends biased
            low, as Stan's does): on funnel-like posteriors (a horseshoe) it avoids chains
            sticking with many divergences; on smooth ones it costs some ESS per gradient.

    Returns:
        A :class:`NutpieSchedule`.
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
    fg_start = np.full(n, -1, np.int32)
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
        restart[final_start] |= final_restart
    fg_start[final_start:] = fg_begin
    return NutpieSchedule(collect, switch, update, restart, fg_start, late, np.ones(n, bool))


def buffer_size(schedule: NutpieSchedule) -> int:
    """Rows the low-rank buffer needs: the longest foreground span of the schedule, plus the
    initial point."""
    if not schedule.collect.any():
        return 1
    i = np.arange(schedule.collect.size)
    spans = np.where(schedule.collect, i - np.maximum(schedule.fg_start, 0) + 1, 0)
    return int(spans.max()) + 1


# --------------------------------------------------------------------------------------------
# The warmup
# --------------------------------------------------------------------------------------------


class DrawGradBuffer(NamedTuple):
    """The recent draws and gradients kept for the low-rank estimate (a ring buffer).

    Attributes:
        draws, grads: ``(size, dim)``; the last row is scratch (written by draws that are not
            kept, always empty).
        stamp: ``(size,)`` int32, the warmup iteration that wrote each row (-1: the initial
            point, -2: empty).
        weight: ``(size,)``, 1 for a usable row, 0 for an empty or divergent one.
    """

    draws: Array
    grads: Array
    stamp: Array
    weight: Array


class NutpieWarmupState(NamedTuple):
    """One chain's state during gradient-based warmup.

    Attributes:
        step_size: the step size for the next iteration.
        inverse_mass_matrix: ``(dim,)``, ``(dim, dim)`` or a ``LowRankInverseMass``.
        dual_averaging: the step-size adaptation state.
        foreground, background: the ``DrawGradStats`` estimators.
        buffer: a ``DrawGradBuffer`` for the low-rank metric, ``None`` for the diagonal one.
        hold_until: int32, the first iteration whose draw may feed the estimators again after
            a reset (see :func:`nutpie_warmup`); 0 otherwise.
        resets: int32, the resets so far.
        diagonal: ``metric="auto"``: the ``(dim,)`` diagonal metric its diagonal view
            samples with, where the low-rank view's metric starts when the driver switches
            (``None`` otherwise).
        wants_low_rank: ``metric="auto"``: ``()`` bool, the diagonal view's last judgement
            of the draws (:func:`~ppl.infer.warmup.auto_metric.auto_wants_low_rank`), which
            the driver reads (``None`` otherwise).
    """

    step_size: Array
    inverse_mass_matrix: Any
    dual_averaging: DualAveragingState
    foreground: DrawGradStats
    background: DrawGradStats
    buffer: DrawGradBuffer | None
    hold_until: Array
    resets: Array
    diagonal: Any = None
    wants_low_rank: Any = None


def nutpie_warmup(
    num_warmup: int,
    dim: int,
    *,
    metric: str = "diag",
    low_rank: LowRankSettings | None = None,
    initial_step_size: float = 1.0,
    target_accept: float = 0.8,
    saturation_steps: int | None = None,
    hold: int = 50,
    max_resets: int = 2,
    max_scaled_variance: float | None = 2.0,
    final_restart: bool = True,
    auto_view: str = "diag",
) -> Warmup:
    """nutpie's gradient-based warmup as a :class:`~ppl.infer.base.Warmup` for HMC and NUTS.

    ``init`` enters the initial point into the estimators and starts the metric at
    ``1/|∇log π(x₀)|`` (or at the given diagonal). ``before`` runs the step-size heuristic
    from the current step size with the current metric and restarts dual averaging at ``mu =
    log(10 ε)`` where ``flags.restart`` is set. ``after`` gives dual averaging the acceptance
    statistic (the symmetric one where ``flags.late``); a non-divergent draw in the
    collection phase enters both estimators (and the low-rank buffer); the background may
    become the foreground; the metric is recomputed (see :func:`grad_window_schedule`).

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
        num_warmup: warmup iterations (a Python int; sets the schedule).
        dim: the dimension of the target (sizes the low-rank estimate).
        metric: "diag", "low_rank" (nutpie's diagonal plus low-rank correction), "dense"
            (the low-rank estimator at full rank, kept as a dense matrix so that each
            leapfrog is one matrix-vector product) or "auto": the diagonal metric until the
            driver finds the draws' correlations worth the low-rank metric, then the
            low-rank metric as "low_rank" estimates it (see ``auto_view``).
        low_rank: the :class:`~ppl.infer.warmup.low_rank.LowRankSettings` of "low_rank" and
            "dense" (default settings if ``None``; "dense" takes rank ``dim``, cutoff 1).
        initial_step_size: where the first step-size heuristic starts.
        target_accept: the dual-averaging target.
        saturation_steps: leapfrog steps that mark a saturated transition (``None``: no
            reset, e.g. for static HMC).
        hold: iterations on the identity metric after a reset.
        max_resets: the most resets per chain.
        max_scaled_variance: after the early window, the diagonal metric is
            :func:`bounded_diagonal` with this bound on the preconditioned marginal variances
            (``None``: nutpie's :func:`grad_diagonal` throughout). The early window (the
            first ``0.3 num_warmup`` iterations, short windows, a chain still in its
            transient) always uses the gradient-based one. The low-rank and dense metrics
            are unaffected.
        final_restart: see :func:`grad_window_schedule`.
        auto_view: ``metric="auto"`` only: "diag", the warmup that gives the kernel the
            diagonal metric and runs no host computation (its state keeps the recent draws
            in the low-rank buffer), or "low_rank", the same state read as the low-rank
            metric and updated as ``metric="low_rank"`` does. The two share one state
            layout: the diagonal view judges its buffer with
            :func:`~ppl.infer.warmup.auto_metric.auto_wants_low_rank` at the end of a chunk
            that ends after an iteration of
            :func:`~ppl.infer.warmup.auto_metric.judge_iterations` (``wants_low_rank``), and
            the driver switches a run to the low-rank view between chunks of warmup once a
            chain says yes (:mod:`ppl.infer.driver.chains`). Until the switch the draws are
            those of ``metric="diag"``.

    Returns:
        A ``Warmup`` whose ``parameters`` are :class:`~ppl.infer.base.StepParameters`.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if max_scaled_variance is not None and not max_scaled_variance > 0:
        raise ValueError(f"max_scaled_variance must be > 0, got {max_scaled_variance!r}")
    settings = LowRankSettings() if low_rank is None else low_rank
    if metric == "diag":
        low_rank, update_every = None, 1
    elif metric == "dense":  # the low-rank estimator at full rank
        low_rank = settings._replace(rank=dim, cutoff=1.0)
        update_every = low_rank.update_every
    else:
        low_rank = settings._replace(rank=min(settings.rank, dim))
        update_every = low_rank.update_every
    dense = metric == "dense"
    auto = metric == "auto"
    if auto_view not in ("diag", "low_rank"):
        raise ValueError(f"auto_view must be 'diag' or 'low_rank', got {auto_view!r}")
    diagonal_view = auto and auto_view == "diag"
    schedule = grad_window_schedule(
        num_warmup, update_every=update_every, final_restart=final_restart
    )
    if low_rank is None or auto:
        # the driver's conditional around after() costs less than running it (inert) on
        # every sampling iteration (measured: eight schools, a 100-d Gaussian); with the
        # low-rank metric's host updates in after() it is the other way
        schedule = schedule._replace(adapt=None)
    # the early window's end, as grad_window_schedule's default early_window computes it
    early_end = int(EARLY_WINDOW * int(num_warmup))
    # metric="auto": after these iterations the diagonal view judges its draws
    judged = judge_iterations(int(num_warmup), early_end) if dim <= AUTO_MAX_DIM else ()
    buffer_rows = buffer_size(schedule) + 1  # and a scratch row
    da = dual_averaging(target_accept=target_accept)

    def init(state, logdensity_fn, inverse_mass_diag=None) -> NutpieWarmupState:
        dim, dtype = state.position.shape[0], state.position.dtype
        stats = stats_update(stats_init(dim, dtype), state.position, state.grad, 1.0)
        if inverse_mass_diag is None:
            diag = initial_diagonal(state.grad).astype(dtype)
        else:
            diag = jnp.asarray(inverse_mass_diag, dtype)
        buffer = None
        metric: Any = diag
        if low_rank is not None:
            rank = low_rank.rank
            metric = LowRankInverseMass(
                jnp.sqrt(diag), jnp.zeros((dim, rank), dtype), jnp.ones(rank, dtype)
            )
            if dense:
                metric = jnp.diag(diag)
            buffer = DrawGradBuffer(
                draws=jnp.zeros((buffer_rows, dim), dtype).at[0].set(state.position),
                grads=jnp.zeros((buffer_rows, dim), dtype).at[0].set(state.grad),
                stamp=jnp.full((buffer_rows,), -2, jnp.int32).at[0].set(-1),
                weight=jnp.zeros(buffer_rows, dtype).at[0].set(1.0),
            )
        step_size = jnp.asarray(initial_step_size, dtype)
        return NutpieWarmupState(
            step_size=step_size,
            inverse_mass_matrix=metric,
            dual_averaging=da.init(step_size),
            foreground=stats,
            background=stats,
            buffer=buffer,
            hold_until=jnp.zeros((), jnp.int32),
            resets=jnp.zeros((), jnp.int32),
            diagonal=diag if auto else None,
            wants_low_rank=jnp.zeros((), bool) if auto else None,
        )

    def before(key, w, state, iteration, flags, logdensity_fn) -> NutpieWarmupState:
        key_heuristic = jax.random.split(key)[1]

        def restart(step: tuple) -> tuple:
            metric = w.diagonal if diagonal_view else w.inverse_mass_matrix
            step_size = find_reasonable_step_size(
                key_heuristic, state, logdensity_fn, metric, step[0]
            )
            return step_size, da.init(step_size)

        # the conditional carries the step size only (not the whole state and its buffers)
        step_size, da_state = jax.lax.cond(
            flags.restart, restart, lambda step: step, (w.step_size, w.dual_averaging)
        )
        return w._replace(step_size=step_size, dual_averaging=da_state)

    def parameters(w, iteration, in_warmup) -> StepParameters:
        out = step_parameters(w, in_warmup)
        if diagonal_view:
            out = out._replace(inverse_mass_matrix=w.diagonal)
        return out

    def after(w, previous, state, info, iteration, flags) -> NutpieWarmupState:
        collect = flags.collect
        if saturation_steps is not None:
            reset = (
                collect
                & (info.num_steps >= saturation_steps)
                & (iteration >= w.hold_until)
                & (w.resets < max_resets)
            )
            big = None if w.buffer is None else (w.buffer.draws, w.buffer.grads)
            small = w if big is None else w._replace(buffer=w.buffer._replace(draws=0, grads=0))
            small = jax.lax.cond(
                jnp.any(reset),  # cheap test first: resets are rare
                lambda w: _reset(w, reset, iteration + hold, da),
                lambda w: w,
                small,
            )
            w = (
                small
                if big is None
                else small._replace(buffer=small.buffer._replace(draws=big[0], grads=big[1]))
            )
        collect = collect & (iteration >= w.hold_until)
        acceptance = jnp.where(flags.late, info.acceptance_sym, info.acceptance_rate)
        da_state = da.update(w.dual_averaging, acceptance)
        adapt = True if flags.adapt is None else flags.adapt
        da_state = jax.tree.map(
            lambda new, old: jnp.where(adapt, new, old), da_state, w.dual_averaging
        )
        step_size = jnp.exp(da_state.log_step_size).astype(w.step_size.dtype)
        w = w._replace(step_size=jnp.where(adapt, step_size, w.step_size), dual_averaging=da_state)
        weight = (collect & ~info.diverging).astype(state.position.dtype)
        fg = stats_update(w.foreground, state.position, state.grad, weight)
        bg = stats_update(w.background, state.position, state.grad, weight)
        empty = stats_init(state.position.shape[0], state.position.dtype)
        fg = jax.tree.map(lambda old, new: jnp.where(flags.switch, new, old), fg, bg)
        bg = jax.tree.map(lambda old, new: jnp.where(flags.switch, new, old), bg, empty)
        w = w._replace(foreground=fg, background=bg)
        if low_rank is None or diagonal_view:
            new_metric = grad_diagonal(fg)
            if max_scaled_variance is not None:
                bounded = bounded_diagonal(fg, max_scaled_variance)
                new_metric = jnp.where(iteration >= early_end, bounded, new_metric)
            new_metric = new_metric.astype(state.position.dtype)
            set_diagonal = collect & (fg.count >= 3)
            if low_rank is None:
                metric = jnp.where(set_diagonal, new_metric, w.inverse_mass_matrix)
                return w._replace(inverse_mass_matrix=metric)
            # auto, before the switch (the driver starts the low-rank metric from it)
            w = w._replace(diagonal=jnp.where(set_diagonal, new_metric, w.diagonal))
        buf = w.buffer
        rows = buf.stamp.shape[0] - 1  # the ring; the last row is scratch
        # row 0 holds the initial point until it is overwritten; a draw not collected goes
        # to the scratch row, which stays empty (stamp -2, weight 0): one row written in
        # place, unconditionally (a where over the buffer would copy it every draw, and a
        # where over the row costs a read and a select per array, measurable on cheap
        # targets)
        slot = jnp.where(collect, (iteration + 1) % rows, rows)
        buf = DrawGradBuffer(
            draws=buf.draws.at[slot].set(state.position),
            grads=buf.grads.at[slot].set(state.grad),
            stamp=buf.stamp.at[slot].set(jnp.where(collect, iteration.astype(jnp.int32), -2)),
            weight=buf.weight.at[slot].set(weight),
        )
        w = w._replace(buffer=buf)
        if diagonal_view:
            return w  # judged at the end of a chunk (chunk_end), not in the loop

        def recompute(current: Any) -> Any:
            member = (w.buffer.stamp >= flags.fg_start) & (w.buffer.stamp > -2)
            weights = w.buffer.weight * member
            metric = low_rank_metric(w.buffer.draws, w.buffer.grads, weights, low_rank)
            if dense:
                metric = low_rank_to_dense(metric)
            usable = (jnp.sum(weights) >= 3) & (iteration >= w.hold_until)
            return jax.tree.map(lambda new, old: jnp.where(usable, new, old), metric, current)

        # the conditional carries the metric only (the buffer is read, not copied)
        metric = jax.lax.cond(flags.update, recompute, lambda m: m, w.inverse_mass_matrix)
        return w._replace(inverse_mass_matrix=metric)

    def final(w):
        step_size, metric = sampling_step_parameters(w)
        return step_size, (w.diagonal if diagonal_view else metric)

    def chunk_end(w, next_iteration):
        # after the loop, not in it: a conditional there that reads the buffer makes XLA
        # copy the buffer every iteration (2-3x slower on cheap targets)
        buf = w.buffer
        due = jnp.isin(next_iteration, jnp.asarray(stops, jnp.int32))

        def judge(_: Any) -> Array:
            return auto_wants_low_rank(buf.draws, buf.stamp, buf.weight, early_end)

        wants = jax.lax.cond(due, judge, lambda old: old, w.wants_low_rank)
        return w._replace(wants_low_rank=wants)

    if not (diagonal_view and judged):
        return Warmup(schedule, init, before, parameters, after, final)
    stops = tuple(i + 1 for i in judged)  # the driver stops right after each judgement
    return Warmup(schedule, init, before, parameters, after, final, chunk_end, stops)


def _reset(w: NutpieWarmupState, reset: Array, hold_until: Array, da) -> NutpieWarmupState:
    """Where ``reset``: identity metric, empty estimators and buffer, fresh dual averaging,
    no collection before ``hold_until``."""
    metric = w.inverse_mass_matrix
    dim, dtype = w.foreground.mean_x.shape[0], w.foreground.mean_x.dtype
    if isinstance(metric, LowRankInverseMass):
        identity = LowRankInverseMass(
            jnp.ones(dim, dtype), jnp.zeros_like(metric.vectors), jnp.ones_like(metric.values)
        )
    elif metric.ndim == 2:
        identity = jnp.eye(dim, dtype=dtype)
    else:
        identity = jnp.ones(dim, dtype)
    empty = stats_init(dim, dtype)
    fresh_da = da.init(w.step_size)

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
        diagonal=None if w.diagonal is None else pick(jnp.ones(dim, dtype), w.diagonal),
    )
