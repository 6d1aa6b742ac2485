"""Step-size adaptation shared by the warmups: dual averaging and Stan's step-size heuristic.

* :func:`dual_averaging` -> :class:`DualAveraging` ``(init, update, final)``: Nesterov dual
  averaging of ``log step_size`` towards a target acceptance statistic (Hoffman & Gelman 2014,
  §3.2; Stan's ``stepsize_adaptation.hpp``), an optax-like trio of pure functions.
* :func:`find_reasonable_step_size`: Stan's ``init_stepsize`` heuristic, jittable.

Stan's warmup (:mod:`ppl.infer.warmup.stan`), nutpie's (:mod:`ppl.infer.warmup.nutpie`) and
ChEES's (:mod:`ppl.infer.warmup.ensemble`) use them; the heuristic integrates with
:mod:`ppl.infer.core.integrators`.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ppl.infer.base import StepParameters
from ppl.infer.core.integrators import IntegratorState, energy_error, velocity_verlet
from ppl.infer.core.metrics import kinetic_energy, momentum_factor, sample_momentum
from ppl.infer.kernels.hmc import HMCState

__all__ = [
    "DualAveraging",
    "DualAveragingState",
    "dual_averaging",
    "find_reasonable_step_size",
    "sampling_step_parameters",
    "step_parameters",
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


def step_parameters(warmup_state, in_warmup) -> StepParameters:
    """The HMC-family kernel's parameters from a warmup state with ``step_size``,
    ``inverse_mass_matrix`` and ``dual_averaging``: the current step size during warmup,
    dual averaging's averaged one once the state is frozen for sampling."""
    w = warmup_state
    sampling = dual_averaging().final(w.dual_averaging).astype(w.step_size.dtype)
    return StepParameters(jnp.where(in_warmup, w.step_size, sampling), w.inverse_mass_matrix)


def sampling_step_parameters(warmup_state) -> tuple[Array, Any]:
    """``(step_size, inverse_mass_matrix)`` sampling uses (a warmup's ``final``): the averaged
    step size, or the initial one when no warmup iteration ran (dual averaging never started)."""
    w = warmup_state
    averaged = dual_averaging().final(w.dual_averaging).astype(w.step_size.dtype)
    return jnp.where(w.dual_averaging.count > 0, averaged, w.step_size), w.inverse_mass_matrix
