"""Stan's windowed warmup: dual-averaging step size, Welford mass matrix, step-size heuristic.

Pieces, each a pure function over NamedTuple state so they compose inside ``lax.scan``:

* ``dual_averaging(...)`` -> ``DualAveraging(init, update, final)``: Nesterov dual averaging of
  ``log step_size`` towards a target acceptance statistic (Hoffman & Gelman 2014, §3.2; Stan's
  ``stepsize_adaptation.hpp``).
* ``welford_init`` / ``welford_update`` / ``welford_covariance``: streaming (co)variance with
  Stan's shrinkage ``(n / (n + 5)) Σ + 1e-3 (5 / (n + 5)) I``.
* ``find_reasonable_step_size``: Stan's ``init_stepsize`` heuristic, jittable.
* ``stan_window_schedule``: Stan's windows (``windowed_adaptation.hpp``) as per-iteration arrays.
* ``window_adaptation``: the whole single-chain warmup as one ``lax.scan``, for any kernel with
  the signature ``kernel(key, state, step_size, inverse_mass_matrix) -> (state, info)`` whose
  ``info`` has an ``acceptance_rate`` field (``nuts.step`` and ``hmc.step`` partially applied).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ppl.infer import adaptation, nuts
    >>> logdensity_fn = lambda x: -0.5 * jnp.sum(x**2 / jnp.array([1.0, 4.0]))
    >>> def kernel(key, state, step_size, inverse_mass_matrix):
    ...     return nuts.step(key, state, logdensity_fn, step_size, inverse_mass_matrix)
    >>> state, step_size, inverse_mass_matrix, info = adaptation.window_adaptation(
    ...     jax.random.key(0), jnp.zeros(2), logdensity_fn, kernel, num_warmup=200)
    >>> inverse_mass_matrix.shape
    (2,)
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ppl.infer import hmc
from ppl.infer.hmc import HMCState, IntegratorState, energy_error, velocity_verlet
from ppl.infer.metrics import kinetic_energy, momentum_factor, sample_momentum

__all__ = [
    "DualAveraging",
    "DualAveragingState",
    "WarmupInfo",
    "WarmupSchedule",
    "WarmupState",
    "WelfordState",
    "dual_averaging",
    "find_reasonable_step_size",
    "stan_window_schedule",
    "stan_windows",
    "welford_covariance",
    "welford_init",
    "welford_update",
    "warmup_final",
    "warmup_init",
    "warmup_restart",
    "warmup_step",
    "warmup_update",
    "window_adaptation",
]


# --------------------------------------------------------------------------------------------
# Dual averaging
# --------------------------------------------------------------------------------------------


class DualAveragingState(NamedTuple):
    """State of dual-averaging step-size adaptation (all scalars).

    Attributes:
        log_step_size: ``log ε_t``, the iterate to sample with during warmup.
        log_step_size_avg: ``log ε̄_t``, the weighted average to sample with afterwards.
        error_avg: ``H̄_t``, the running average of ``target - acceptance``.
        count: ``t``, the number of updates since (re)start.
        mu: the shrinkage point ``log(10 ε0)``.
    """

    log_step_size: Array
    log_step_size_avg: Array
    error_avg: Array
    count: Array
    mu: Array


class DualAveraging(NamedTuple):
    """The three pure functions of dual averaging (an optax-like protocol).

    Attributes:
        init: ``init(step_size) -> DualAveragingState``; sets ``mu = log(10 step_size)``.
        update: ``update(state, acceptance_rate) -> DualAveragingState``.
        final: ``final(state) -> step_size``, ``exp(log ε̄)`` (the step size for sampling).
    """

    init: Callable[[Array], DualAveragingState]
    update: Callable[[DualAveragingState, Array], DualAveragingState]
    final: Callable[[DualAveragingState], Array]


def dual_averaging(
    target_accept: float = 0.8, gamma: float = 0.05, t0: float = 10.0, kappa: float = 0.75
) -> DualAveraging:
    """Nesterov dual averaging of ``log step_size`` with Stan's constants.

    Per update ``t`` with acceptance statistic ``a_t``:
    ``H_t = (1 - 1/(t + t0)) H_{t-1} + (target - a_t)/(t + t0)``,
    ``log eps_t = mu - sqrt(t)/gamma * H_t``,
    ``log eps_avg_t = t^(-kappa) log eps_t + (1 - t^(-kappa)) log eps_avg_{t-1}``.

    Args:
        target_accept: the target mean acceptance statistic (Stan's ``delta``).
        gamma: the adaptation regularization scale.
        t0: the iteration offset that damps early updates.
        kappa: the decay exponent of the averaging weights.

    Returns:
        A ``DualAveraging(init, update, final)``.
    """

    def init(step_size: Array) -> DualAveragingState:
        log_step_size = jnp.log(jnp.asarray(step_size, dtype=jnp.result_type(float)))
        zero = jnp.zeros_like(log_step_size)
        return DualAveragingState(
            log_step_size=log_step_size,
            log_step_size_avg=zero,
            error_avg=zero,
            count=jnp.zeros((), jnp.int32),
            mu=jnp.log(10.0) + log_step_size,
        )

    def update(state: DualAveragingState, acceptance_rate: Array) -> DualAveragingState:
        acceptance_rate = jnp.asarray(acceptance_rate, state.error_avg.dtype)
        acceptance_rate = jnp.where(
            jnp.isnan(acceptance_rate), 0.0, jnp.minimum(acceptance_rate, 1.0)
        )
        count = state.count + 1
        t = count.astype(state.error_avg.dtype)
        eta = 1.0 / (t + t0)
        error_avg = (1.0 - eta) * state.error_avg + eta * (target_accept - acceptance_rate)
        log_step_size = state.mu - jnp.sqrt(t) / gamma * error_avg
        weight = t ** (-kappa)
        log_step_size_avg = (1.0 - weight) * state.log_step_size_avg + weight * log_step_size
        return DualAveragingState(log_step_size, log_step_size_avg, error_avg, count, state.mu)

    def final(state: DualAveragingState) -> Array:
        # Before any update the average is undefined; fall back to the current iterate.
        return jnp.exp(jnp.where(state.count > 0, state.log_step_size_avg, state.log_step_size))

    return DualAveraging(init, update, final)


# --------------------------------------------------------------------------------------------
# Welford (co)variance
# --------------------------------------------------------------------------------------------


class WelfordState(NamedTuple):
    """Streaming mean and sum of squared deviations.

    Attributes:
        count: int32 scalar, number of samples added.
        mean: shape ``(dim,)``.
        m2: shape ``(dim,)`` (diagonal) or ``(dim, dim)`` (dense).
    """

    count: Array
    mean: Array
    m2: Array


def welford_init(dim: int, dense: bool = False, dtype: Any = None) -> WelfordState:
    """An empty Welford estimator.

    Args:
        dim: the dimension of the samples.
        dense: estimate the full covariance (``m2`` of shape ``(dim, dim)``) or the variances.
        dtype: float dtype (default: JAX's default float).

    Returns:
        A ``WelfordState``.
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    m2_shape = (dim, dim) if dense else (dim,)
    return WelfordState(
        jnp.zeros((), jnp.int32), jnp.zeros((dim,), dtype), jnp.zeros(m2_shape, dtype)
    )


def welford_update(state: WelfordState, x: Array) -> WelfordState:
    """Add one sample.

    Args:
        state: a ``WelfordState``.
        x: shape ``(dim,)``.

    Returns:
        The updated ``WelfordState``.
    """
    count = state.count + 1
    delta = x - state.mean
    mean = state.mean + delta / count.astype(state.mean.dtype)
    if state.m2.ndim == 2:
        m2 = state.m2 + jnp.outer(x - mean, delta)
    else:
        m2 = state.m2 + (x - mean) * delta
    return WelfordState(count, mean, m2)


def welford_covariance(state: WelfordState, regularize: bool = True) -> Array:
    """The sample (co)variance, shrunk towards ``1e-3 I`` as Stan does.

    ``Σ = m2 / (n - 1)``; with ``regularize``: ``(n / (n + 5)) Σ + 1e-3 (5 / (n + 5)) I``.

    Args:
        state: a ``WelfordState`` with at least two samples.
        regularize: apply Stan's shrinkage.

    Returns:
        Shape ``(dim,)`` (variances) or ``(dim, dim)`` (covariance), as ``state.m2``.
    """
    n = state.count.astype(state.m2.dtype)
    cov = state.m2 / jnp.maximum(n - 1.0, 1.0)
    if not regularize:
        return cov
    shrink = 1e-3 * (5.0 / (n + 5.0))
    if cov.ndim == 2:
        return (n / (n + 5.0)) * cov + shrink * jnp.eye(cov.shape[0], dtype=cov.dtype)
    return (n / (n + 5.0)) * cov + shrink


# --------------------------------------------------------------------------------------------
# Step-size heuristic
# --------------------------------------------------------------------------------------------


def find_reasonable_step_size(
    key: Array,
    state: HMCState,
    logdensity_fn: Callable[[Array], Array],
    inverse_mass_matrix: Array,
    step_size: Array,
    target_accept: float = 0.8,
    max_num_iterations: int = 100,
    max_step_size: float = 1e7,
) -> Array:
    """Stan's step-size initialisation: double or halve until one leapfrog's acceptance crosses 0.8.

    As Stan's ``init_stepsize``: one leapfrog from the current point with a fresh momentum at
    ``step_size`` sets the direction (grow if ``H0 - H > log 0.8``, else shrink); then each trial,
    again with a fresh momentum and starting with the unchanged ``step_size``, either stops on the
    first step size on the other side of 0.8 or doubles / halves. A NaN energy counts as
    ``+inf``. Jittable (one ``lax.while_loop``), at most ``max_num_iterations`` trials; a
    non-finite, non-positive or above-``max_step_size`` input is returned unchanged.

    Args:
        key: a JAX PRNG key.
        state: the ``HMCState`` to start from.
        logdensity_fn: ``(dim,) -> scalar`` log density.
        inverse_mass_matrix: shape ``(dim,)`` or ``(dim, dim)``.
        step_size: scalar starting step size.
        target_accept: the acceptance probability to cross (Stan: 0.8).
        max_num_iterations: bound on the number of trials.
        max_step_size: the search stops growing at this step size.

    Returns:
        The new step size, a scalar.
    """
    step_size = jnp.asarray(step_size, dtype=jnp.result_type(state.position))
    integrator = velocity_verlet(logdensity_fn, inverse_mass_matrix)
    factor = momentum_factor(inverse_mass_matrix)
    log_target = math.log(target_accept)

    def log_accept(trial_key: Array, eps: Array) -> Array:
        momentum = sample_momentum(trial_key, state.position, inverse_mass_matrix, factor)
        h0 = -state.log_density + kinetic_energy(momentum, inverse_mass_matrix)
        z = integrator(
            IntegratorState(state.position, momentum, state.log_density, state.grad), eps
        )
        h = -z.log_density + kinetic_energy(z.momentum, inverse_mass_matrix)
        return -energy_error(h0, h)

    key_first, key_loop = jax.random.split(key)
    grow = log_accept(key_first, step_size) > log_target
    skip = ~jnp.isfinite(step_size) | (step_size <= 0) | (step_size > max_step_size)

    def cond(carry):
        i, _, done = carry
        return ~done & (i < max_num_iterations)

    def body(carry):
        i, eps, _ = carry
        log_a = log_accept(jax.random.fold_in(key_loop, i), eps)
        crossed = jnp.where(grow, ~(log_a > log_target), ~(log_a < log_target))
        new_eps = jnp.where(crossed, eps, jnp.where(grow, 2.0 * eps, 0.5 * eps))
        done = crossed | (new_eps > max_step_size)
        return i + 1, jnp.minimum(new_eps, max_step_size), done

    _, new_step_size, _ = jax.lax.while_loop(
        cond, body, (jnp.zeros((), jnp.int32), step_size, skip)
    )
    return new_step_size


# --------------------------------------------------------------------------------------------
# Stan's window schedule
# --------------------------------------------------------------------------------------------


class WarmupSchedule(NamedTuple):
    """Per-iteration warmup schedule (numpy arrays of length ``num_warmup``).

    Attributes:
        slow: bool, the iteration is in a slow window: its draw feeds the mass-matrix estimator.
        window_end: bool, the mass matrix is updated (and the step size re-initialised) after it.
        fast: bool, the iteration is in the initial or terminal fast buffer (``~slow``).
        restart: bool, before the iteration the step-size heuristic re-runs and dual averaging
            restarts: at iteration 0 and after every window end.
        update_metric: bool, before the iteration the mass matrix is set from the window that
            just ended (``restart`` without the first iteration).
    """

    slow: np.ndarray
    window_end: np.ndarray
    fast: np.ndarray
    restart: np.ndarray
    update_metric: np.ndarray


def stan_windows(
    num_warmup: int, init_buffer: int = 75, term_buffer: int = 50, base_window: int = 25
) -> tuple[int, list[int], int]:
    """Stan's warmup windows as sizes: ``(initial buffer, slow window sizes, terminal buffer)``.

    Transcribes ``windowed_adaptation.hpp``: slow windows double from ``base_window``, and a window
    whose successor would not fit before the terminal buffer is stretched to end where the
    terminal buffer starts. If ``init_buffer + base_window + term_buffer > num_warmup`` the buffers
    become 15% / 75% / 10% of ``num_warmup`` (truncated to integers). Below 20 warmup iterations
    Stan adapts no mass matrix: no slow windows, everything is one fast buffer.

    Args:
        num_warmup: number of warmup iterations.
        init_buffer, term_buffer, base_window: Stan's defaults 75, 50, 25.

    Returns:
        ``(init_buffer, windows, term_buffer)`` with ``init_buffer + sum(windows) + term_buffer
        == num_warmup``.
    """
    if num_warmup < 20:
        return num_warmup, [], 0
    if init_buffer + base_window + term_buffer > num_warmup:
        init_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.1 * num_warmup)
        base_window = num_warmup - (init_buffer + term_buffer)
    last = num_warmup - term_buffer - 1  # the last iteration of the last slow window
    windows = []
    size = base_window
    end = init_buffer + size - 1  # Stan's adapt_next_window_
    start = init_buffer
    while True:
        windows.append(end - start + 1)
        if end == last:
            break
        # compute_next_window()
        size *= 2
        start, end = end + 1, end + size
        if end != last and end + 2 * size >= num_warmup - term_buffer:
            end = last
    return init_buffer, windows, term_buffer


def stan_window_schedule(num_warmup: int) -> WarmupSchedule:
    """Stan's warmup schedule as per-iteration arrays (fast 75 | slow 25, 50, ... | fast 50).

    For ``num_warmup = 1000``: fast ``[0, 75)``, slow windows of 25, 50, 100, 200, 500 ending at
    iterations 99, 149, 249, 449, 949, fast ``[950, 1000)``. For ``num_warmup < 150``: 15% / 75% /
    10% with one slow window; below 20, no slow window. See ``stan_windows``.

    Args:
        num_warmup: number of warmup iterations (a Python int).

    Returns:
        A ``WarmupSchedule`` of numpy bool arrays of shape ``(num_warmup,)``.
    """
    init_buffer, windows, _ = stan_windows(num_warmup)
    slow = np.zeros(num_warmup, bool)
    window_end = np.zeros(num_warmup, bool)
    start = init_buffer
    for size in windows:
        slow[start : start + size] = True
        window_end[start + size - 1] = True
        start += size
    update_metric = np.zeros(num_warmup, bool)
    update_metric[1:] = window_end[:-1]
    restart = update_metric.copy()
    restart[:1] = True
    return WarmupSchedule(
        slow=slow, window_end=window_end, fast=~slow, restart=restart, update_metric=update_metric
    )


# --------------------------------------------------------------------------------------------
# The warmup runner
# --------------------------------------------------------------------------------------------


class WarmupInfo(NamedTuple):
    """Per-iteration warmup record (each leaf has a leading ``num_warmup`` axis).

    Attributes:
        step_size: the step size used at the iteration.
        kernel_info: the kernel's info (e.g. ``NUTSInfo``) for the iteration.
    """

    step_size: Array
    kernel_info: Any


class WarmupState(NamedTuple):
    """One chain's state during windowed warmup.

    Attributes:
        state: the kernel's ``HMCState``.
        step_size: the step size for the next iteration, ``exp(log ε_t)``.
        inverse_mass_matrix: current metric, ``(dim,)`` or ``(dim, dim)``.
        dual_averaging: the step-size adaptation state.
        welford: the (co)variance estimator of the current slow window.
    """

    state: Any
    step_size: Array
    inverse_mass_matrix: Array
    dual_averaging: DualAveragingState
    welford: WelfordState


def warmup_init(
    position: Array,
    logdensity_fn: Callable[[Array], Array],
    dense_mass: bool = False,
    initial_step_size: float = 1.0,
    initial_inverse_mass_matrix: Array | None = None,
    target_accept: float = 0.8,
) -> WarmupState:
    """The warmup state before the first iteration (the step-size heuristic runs in the first
    ``warmup_step``, whose schedule entry has ``restart`` set).

    Args:
        position: shape ``(dim,)``, the initial position.
        logdensity_fn: ``(dim,) -> scalar`` log density.
        dense_mass: adapt a dense ``(dim, dim)`` inverse mass matrix instead of a diagonal one.
        initial_step_size: where the heuristic starts.
        initial_inverse_mass_matrix: ``(dim,)`` or ``(dim, dim)`` matching ``dense_mass``;
            defaults to the identity.
        target_accept: the dual-averaging target.
    """
    position = jnp.asarray(position)
    if position.ndim != 1:
        raise ValueError(
            f"position must be a flat 1-D array of shape (dim,); got {position.shape}."
        )
    dim = position.shape[0]
    dtype = position.dtype
    if initial_inverse_mass_matrix is None:
        inverse_mass_matrix = jnp.eye(dim, dtype=dtype) if dense_mass else jnp.ones(dim, dtype)
    else:
        inverse_mass_matrix = jnp.asarray(initial_inverse_mass_matrix, dtype)
        expected = (dim, dim) if dense_mass else (dim,)
        if inverse_mass_matrix.shape != expected:
            raise ValueError(
                f"initial_inverse_mass_matrix has shape {inverse_mass_matrix.shape} but "
                f"dense_mass={dense_mass} needs shape {expected}."
            )
    step_size = jnp.asarray(initial_step_size, dtype)
    da = dual_averaging(target_accept=target_accept)
    return WarmupState(
        state=hmc.init(position, logdensity_fn),
        step_size=step_size,
        inverse_mass_matrix=inverse_mass_matrix,
        dual_averaging=da.init(step_size),
        welford=welford_init(dim, dense_mass, dtype),
    )


def warmup_step(
    key: Array,
    warmup_state: WarmupState,
    restart: Array,
    update_metric: Array,
    slow: Array,
    logdensity_fn: Callable[[Array], Array],
    kernel: Callable[[Array, Any, Array, Array], tuple[Any, Any]],
    target_accept: float = 0.8,
) -> tuple[WarmupState, WarmupInfo]:
    """One warmup iteration in Stan's order.

    Before the kernel step, where ``restart`` is set (iteration 0 and the first iteration after
    each slow window): if ``update_metric``, the inverse mass matrix becomes the shrunk
    (co)variance of the window's draws and the estimator restarts; then the step-size heuristic
    runs from the current step size and dual averaging restarts with ``mu = log(10 ε)``. Then the
    kernel runs with ``exp(log ε_t)``, dual averaging takes the acceptance statistic, and in a
    slow window the new position feeds the Welford estimator. Doing the window-end work at the
    start of the next iteration keeps a single call site of the heuristic (one compiled copy).

    Args:
        key: a JAX PRNG key for this iteration.
        warmup_state: the state from ``warmup_init`` or the previous iteration.
        restart, update_metric, slow: this iteration's entries of ``stan_window_schedule``.
            When they are not batched (e.g. under ``vmap`` over chains only) the restart branch
            stays a real ``lax.cond``.
        logdensity_fn: ``(dim,) -> scalar`` log density (for the heuristic).
        kernel: ``kernel(key, state, step_size, inverse_mass_matrix) -> (state, info)`` with
            ``info.acceptance_rate``.
        target_accept: the dual-averaging target.
    """
    key_kernel, key_heuristic = jax.random.split(key)
    carry = jax.lax.cond(
        restart,
        lambda c: warmup_restart(
            key_heuristic, c, update_metric, logdensity_fn, target_accept=target_accept
        ),
        lambda c: c,
        warmup_state,
    )
    state, kernel_info = kernel(key_kernel, carry.state, carry.step_size, carry.inverse_mass_matrix)
    new_carry = warmup_update(
        carry, state, kernel_info.acceptance_rate, slow, target_accept=target_accept
    )
    return new_carry, WarmupInfo(carry.step_size, kernel_info)


def warmup_restart(
    key: Array,
    warmup_state: WarmupState,
    update_metric: Array,
    logdensity_fn: Callable[[Array], Array],
    target_accept: float = 0.8,
) -> WarmupState:
    """Start a new adaptation window: metric from the last window (if ``update_metric``), the
    step-size heuristic, and a fresh dual averaging with ``mu = log(10 ε)``."""
    carry = warmup_state
    dtype = carry.state.position.dtype
    dim = carry.state.position.shape[0]
    dense = carry.inverse_mass_matrix.ndim == 2
    imm, welford = jax.lax.cond(
        update_metric,
        lambda c: (welford_covariance(c.welford).astype(dtype), welford_init(dim, dense, dtype)),
        lambda c: (c.inverse_mass_matrix, c.welford),
        carry,
    )
    step_size = find_reasonable_step_size(key, carry.state, logdensity_fn, imm, carry.step_size)
    da = dual_averaging(target_accept=target_accept)
    return WarmupState(carry.state, step_size, imm, da.init(step_size), welford)


def warmup_update(
    warmup_state: WarmupState,
    state: Any,
    acceptance_rate: Array,
    slow: Array,
    target_accept: float = 0.8,
) -> WarmupState:
    """After a kernel step: dual averaging takes the acceptance statistic and, in a slow window,
    the new position feeds the Welford estimator."""
    da = dual_averaging(target_accept=target_accept)
    da_state = da.update(warmup_state.dual_averaging, acceptance_rate)
    welford = jax.lax.cond(
        slow, lambda w: welford_update(w, state.position), lambda w: w, warmup_state.welford
    )
    return WarmupState(
        state=state,
        step_size=jnp.exp(da_state.log_step_size).astype(warmup_state.step_size.dtype),
        inverse_mass_matrix=warmup_state.inverse_mass_matrix,
        dual_averaging=da_state,
        welford=welford,
    )


def warmup_final(warmup_state: WarmupState) -> tuple[Any, Array, Array]:
    """``(state, step_size, inverse_mass_matrix)`` for sampling: the step size is ``ε̄``."""
    da = dual_averaging()
    step_size = da.final(warmup_state.dual_averaging).astype(warmup_state.step_size.dtype)
    return warmup_state.state, step_size, warmup_state.inverse_mass_matrix


def window_adaptation(
    key: Array,
    position: Array,
    logdensity_fn: Callable[[Array], Array],
    kernel: Callable[[Array, Any, Array, Array], tuple[Any, Any]],
    num_warmup: int,
    dense_mass: bool = False,
    target_accept: float = 0.8,
    initial_step_size: float = 1.0,
    initial_inverse_mass_matrix: Array | None = None,
) -> tuple[Any, Array, Array, WarmupInfo]:
    """Run Stan's windowed warmup for one chain as a single ``lax.scan``.

    Stan's order: the step-size heuristic at the start; each iteration runs the kernel with the
    current step size ``exp(log ε_t)``, updates dual averaging with the acceptance statistic and
    adds the new position to the Welford estimator when in a slow window; at each slow window's
    end the inverse mass matrix becomes the shrunk (co)variance of that window's draws, the
    estimator restarts, the heuristic re-runs from the current step size and dual averaging
    restarts with ``mu = log(10 ε)``. The step size returned is dual averaging's ``ε̄``.

    The schedule is a trace-time constant, so under ``jax.vmap`` (over ``key`` and ``position``)
    the window-end branch stays a real ``lax.cond`` instead of running every iteration.

    Args:
        key: a JAX PRNG key.
        position: shape ``(dim,)``, the initial position.
        logdensity_fn: ``(dim,) -> scalar`` log density (used for the initial state and the
            step-size heuristic; the kernel closes over it as well).
        kernel: ``kernel(key, state, step_size, inverse_mass_matrix) -> (state, info)`` with
            ``info.acceptance_rate``, on ``HMCState`` (e.g. ``nuts.step`` / ``hmc.step``
            partially applied to ``logdensity_fn`` and its settings).
        num_warmup: number of warmup iterations (a Python int).
        dense_mass: adapt a dense ``(dim, dim)`` inverse mass matrix instead of a diagonal one.
        target_accept: the dual-averaging target for the acceptance statistic.
        initial_step_size: where the first heuristic starts.
        initial_inverse_mass_matrix: shape ``(dim,)`` or ``(dim, dim)`` matching ``dense_mass``;
            defaults to the identity.

    Returns:
        ``(state, step_size, inverse_mass_matrix, info)``: the last warmup ``HMCState``, the
        adapted scalar step size, the adapted inverse mass matrix (``(dim,)`` or ``(dim, dim)``)
        and a ``WarmupInfo`` with a leading ``num_warmup`` axis.
    """
    if not isinstance(num_warmup, int) or num_warmup < 0:
        raise ValueError(f"num_warmup must be a Python int >= 0; got {num_warmup!r}.")
    schedule = stan_window_schedule(num_warmup)
    carry = warmup_init(
        position,
        logdensity_fn,
        dense_mass=dense_mass,
        initial_step_size=initial_step_size,
        initial_inverse_mass_matrix=initial_inverse_mass_matrix,
        target_accept=target_accept,
    )

    def one_iteration(carry: WarmupState, xs):
        i, restart, update_metric, slow = xs
        return warmup_step(
            jax.random.fold_in(key, i),
            carry,
            restart,
            update_metric,
            slow,
            logdensity_fn,
            kernel,
            target_accept=target_accept,
        )

    xs = (
        jnp.arange(num_warmup, dtype=jnp.int32),
        jnp.asarray(schedule.restart),
        jnp.asarray(schedule.update_metric),
        jnp.asarray(schedule.slow),
    )
    carry, info = jax.lax.scan(one_iteration, carry, xs)
    state, step_size, inverse_mass_matrix = warmup_final(carry)
    return state, step_size, inverse_mass_matrix, info
