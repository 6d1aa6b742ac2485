"""Stan's windowed warmup: the dual-averaged step size and a Welford (co)variance metric.

Stan's schedule (``windowed_adaptation.hpp``): a fast window of 75 iterations, slow windows
doubling from 25 whose draws estimate the metric, a final fast window of 50; at each slow
window's end the inverse mass matrix becomes the window's regularised (co)variance and the
step-size heuristic and dual averaging restart. The pieces:

* :func:`welford_init` / :func:`welford_update` / :func:`welford_covariance`: streaming
  (co)variance with Stan's shrinkage ``(n / (n + 5)) Σ + 1e-3 (5 / (n + 5)) I``;
* :func:`stan_windows` and :func:`stan_window_schedule`: the windows as per-iteration flags;
* :func:`stan_warmup`: the whole warmup as a :class:`ppl.infer.base.Warmup` (the protocol the
  driver runs), adapting a diagonal or dense metric for HMC and NUTS; the step size comes
  from :mod:`ppl.infer.warmup.step_size`;
* :func:`window_adaptation`: one chain's warmup as a single ``lax.scan`` through that same
  protocol, for any kernel ``kernel(key, state, step_size, inverse_mass_matrix) -> (state,
  info)`` whose ``info`` has an ``acceptance_rate`` (e.g. ``nuts.step`` partially applied).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ppl.infer.kernels import nuts
    >>> from ppl.infer.warmup import stan
    >>> logdensity_fn = lambda x: -0.5 * jnp.sum(x**2 / jnp.array([1.0, 4.0]))
    >>> def kernel(key, state, step_size, inverse_mass_matrix):
    ...     return nuts.step(key, state, logdensity_fn, step_size, inverse_mass_matrix)
    >>> state, step_size, inverse_mass_matrix, info = stan.window_adaptation(
    ...     jax.random.key(0), jnp.zeros(2), logdensity_fn, kernel, num_warmup=200)
    >>> inverse_mass_matrix.shape
    (2,)
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ppl.infer.base import StepParameters, Warmup
from ppl.infer.kernels import hmc
from ppl.infer.warmup.step_size import (
    DualAveragingState,
    dual_averaging,
    find_reasonable_step_size,
    sampling_step_parameters,
    step_parameters,
)

__all__ = [
    "StanSchedule",
    "StanWarmupState",
    "WarmupInfo",
    "WelfordState",
    "stan_warmup",
    "stan_window_schedule",
    "stan_windows",
    "welford_covariance",
    "welford_init",
    "welford_update",
    "window_adaptation",
]


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
# Stan's window schedule
# --------------------------------------------------------------------------------------------


class StanSchedule(NamedTuple):
    """Per-iteration flags of Stan's warmup (numpy arrays of length ``num_warmup``).

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


def stan_window_schedule(num_warmup: int) -> StanSchedule:
    """Stan's warmup schedule as per-iteration arrays (fast 75 | slow 25, 50, ... | fast 50).

    For ``num_warmup = 1000``: fast ``[0, 75)``, slow windows of 25, 50, 100, 200, 500 ending at
    iterations 99, 149, 249, 449, 949, fast ``[950, 1000)``. For ``num_warmup < 150``: 15% / 75% /
    10% with one slow window; below 20, no slow window. See ``stan_windows``.

    Args:
        num_warmup: number of warmup iterations (a Python int).

    Returns:
        A ``StanSchedule`` of numpy bool arrays of shape ``(num_warmup,)``.
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
    return StanSchedule(
        slow=slow, window_end=window_end, fast=~slow, restart=restart, update_metric=update_metric
    )


# --------------------------------------------------------------------------------------------
# The warmup
# --------------------------------------------------------------------------------------------


class StanWarmupState(NamedTuple):
    """One chain's state during Stan's windowed warmup.

    Attributes:
        step_size: the step size for the next iteration, ``exp(log ε_t)``.
        inverse_mass_matrix: current metric, ``(dim,)`` or ``(dim, dim)``.
        dual_averaging: the step-size adaptation state.
        welford: the (co)variance estimator of the current slow window.
    """

    step_size: Array
    inverse_mass_matrix: Array
    dual_averaging: DualAveragingState
    welford: WelfordState


def stan_warmup(
    num_warmup: int,
    *,
    dense_mass: bool = False,
    initial_step_size: float = 1.0,
    target_accept: float = 0.8,
) -> Warmup:
    """Stan's windowed warmup as a :class:`~ppl.infer.base.Warmup` for HMC and NUTS.

    Stan's order within an iteration: where ``flags.restart`` is set (iteration 0 and the
    first iteration after each slow window), ``before`` sets the inverse mass matrix from
    the window that just ended (if ``flags.update_metric``) and restarts the estimator, runs
    the step-size heuristic from the current step size and restarts dual averaging with ``mu
    = log(10 ε)``; the kernel then runs with ``exp(log ε_t)``; ``after`` gives dual averaging
    the acceptance statistic and, in a slow window, the new position to the estimator.
    Doing the window-end work at the start of the next iteration keeps a single call site of
    the heuristic (one compiled copy). Sampling uses dual averaging's ``ε̄``.

    Args:
        num_warmup: warmup iterations (a Python int; sets the windows).
        dense_mass: adapt a dense ``(dim, dim)`` inverse mass matrix instead of a diagonal one.
        initial_step_size: where the first heuristic starts.
        target_accept: the dual-averaging target of the acceptance statistic.

    Returns:
        A ``Warmup`` whose ``parameters`` are :class:`~ppl.infer.base.StepParameters`. Its
        ``init`` takes a starting inverse mass matrix: ``None`` (the identity), a diagonal
        ``(dim,)`` or, with ``dense_mass``, a ``(dim, dim)`` matrix.
    """
    da = dual_averaging(target_accept=target_accept)

    def init(state, logdensity_fn, inverse_mass=None) -> StanWarmupState:
        dim, dtype = state.position.shape[0], state.position.dtype
        imm = jnp.ones(dim, dtype) if inverse_mass is None else jnp.asarray(inverse_mass, dtype)
        if dense_mass and imm.ndim == 1:
            imm = jnp.diag(imm)
        step_size = jnp.asarray(initial_step_size, dtype)
        return StanWarmupState(
            step_size, imm, da.init(step_size), welford_init(dim, dense_mass, dtype)
        )

    def before(key, w, state, iteration, flags, logdensity_fn) -> StanWarmupState:
        key_heuristic = jax.random.split(key)[1]

        def restart(w: StanWarmupState) -> StanWarmupState:
            dim, dtype = state.position.shape[0], state.position.dtype
            imm, welford = jax.lax.cond(
                flags.update_metric,
                lambda w: (
                    welford_covariance(w.welford).astype(dtype),
                    welford_init(dim, dense_mass, dtype),
                ),
                lambda w: (w.inverse_mass_matrix, w.welford),
                w,
            )
            step_size = find_reasonable_step_size(
                key_heuristic, state, logdensity_fn, imm, w.step_size
            )
            return StanWarmupState(step_size, imm, da.init(step_size), welford)

        return jax.lax.cond(flags.restart, restart, lambda w: w, w)

    def parameters(w, iteration, in_warmup) -> StepParameters:
        return step_parameters(w, in_warmup)

    def after(w, previous, state, info, iteration, flags) -> StanWarmupState:
        da_state = da.update(w.dual_averaging, info.acceptance_rate)
        welford = jax.lax.cond(
            flags.slow, lambda e: welford_update(e, state.position), lambda e: e, w.welford
        )
        return StanWarmupState(
            step_size=jnp.exp(da_state.log_step_size).astype(w.step_size.dtype),
            inverse_mass_matrix=w.inverse_mass_matrix,
            dual_averaging=da_state,
            welford=welford,
        )

    def final(w):
        return sampling_step_parameters(w)

    return Warmup(stan_window_schedule(num_warmup), init, before, parameters, after, final)


# --------------------------------------------------------------------------------------------
# One chain's warmup as one scan
# --------------------------------------------------------------------------------------------


class WarmupInfo(NamedTuple):
    """Per-iteration warmup record (each leaf has a leading ``num_warmup`` axis).

    Attributes:
        step_size: the step size used at the iteration.
        kernel_info: the kernel's info (e.g. ``NUTSInfo``) for the iteration.
    """

    step_size: Array
    kernel_info: Any


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

    The iterations of :func:`stan_warmup` (see there for Stan's order), driven through the
    :class:`~ppl.infer.base.Warmup` protocol as ``MCMC`` drives them: iteration ``i`` uses
    the key ``fold_in(key, i)``, the kernel ``split(...)[0]`` of it and the heuristic
    ``split(...)[1]``. The step size returned is dual averaging's ``ε̄``.

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
    position = jnp.asarray(position)
    if position.ndim != 1:
        raise ValueError(
            f"position must be a flat 1-D array of shape (dim,); got {position.shape}."
        )
    dim = position.shape[0]
    if initial_inverse_mass_matrix is not None:
        expected = (dim, dim) if dense_mass else (dim,)
        if jnp.shape(initial_inverse_mass_matrix) != expected:
            raise ValueError(
                f"initial_inverse_mass_matrix has shape {jnp.shape(initial_inverse_mass_matrix)} "
                f"but dense_mass={dense_mass} needs shape {expected}."
            )
    warmup = stan_warmup(
        num_warmup,
        dense_mass=dense_mass,
        initial_step_size=initial_step_size,
        target_accept=target_accept,
    )
    state = hmc.init(position, logdensity_fn)
    carry = (warmup.init(state, logdensity_fn, initial_inverse_mass_matrix), state)

    def one_iteration(carry, xs):
        w, state = carry
        i, flags = xs
        key_i = jax.random.fold_in(key, i)
        w = warmup.before(key_i, w, state, i, flags, logdensity_fn)
        parameters = warmup.parameters(w, i, True)
        new_state, kernel_info = kernel(
            jax.random.split(key_i)[0],
            state,
            parameters.step_size,
            parameters.inverse_mass_matrix,
        )
        w = warmup.after(w, state, new_state, kernel_info, i, flags)
        return (w, new_state), WarmupInfo(parameters.step_size, kernel_info)

    schedule = jax.tree.map(jnp.asarray, warmup.schedule)
    (w, state), info = jax.lax.scan(
        one_iteration, carry, (jnp.arange(num_warmup, dtype=jnp.int32), schedule)
    )
    step_size, inverse_mass_matrix = warmup.final(w)
    return state, step_size, inverse_mass_matrix, info
