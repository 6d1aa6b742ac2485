"""Static-length Hamiltonian Monte Carlo, and the chain state every HMC-family kernel shares.

:class:`HMCState` (position, log density, gradient) is the state of an HMC, NUTS or ensemble
chain; :func:`init` makes it and :func:`step` is one HMC transition (fresh momentum, a
fixed-length leapfrog trajectory from :mod:`ppl.infer.core.integrators`, Metropolis
acceptance). Kernels are pure functions over NamedTuple states, so ``jit``, ``vmap`` and
``lax.scan`` apply unchanged; the driver (:mod:`ppl.infer.driver`) gets its step size and
metric from a warmup (:mod:`ppl.infer.warmup`). A log density is a plain JAX function
``logdensity_fn(theta) -> scalar`` of a flat ``(dim,)`` array; the inverse mass matrix is
``(dim,)`` (diagonal), ``(dim, dim)`` (dense) or a low-rank-plus-diagonal pytree.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ppl.infer.kernels import hmc
    >>> logdensity_fn = lambda x: -0.5 * jnp.sum(x**2)
    >>> state = hmc.init(jnp.zeros(3), logdensity_fn)
    >>> state, info = hmc.step(jax.random.key(0), state, logdensity_fn, 0.5, jnp.ones(3),
    ...                        num_integration_steps=8)
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ppl.infer.base import Kernel, StepParameters
from ppl.infer.core.integrators import (
    IntegratorState,
    energy_error,
    symmetric_acceptance,
    velocity_verlet,
)
from ppl.infer.core.metrics import kinetic_energy, sample_momentum

__all__ = ["HMCInfo", "HMCState", "init", "jittered_step_size", "kernel", "step", "step_kernel"]


class HMCState(NamedTuple):
    """The state of an HMC-family chain (shared by HMC and NUTS).

    Attributes:
        position: shape ``(dim,)``.
        log_density: scalar log density at ``position``.
        grad: shape ``(dim,)``, its gradient.
    """

    position: Array
    log_density: Array
    grad: Array


class HMCInfo(NamedTuple):
    """Diagnostics of one HMC transition.

    Attributes:
        acceptance_rate: scalar ``min(1, exp(H0 - H1))``, the Metropolis acceptance probability.
        acceptance_sym: scalar ``2 / (1 + exp(|H1 - H0|))`` (:func:`symmetric_acceptance`).
        diverging: bool, energy error ``H1 - H0`` above ``max_delta_energy`` (or NaN).
        energy: scalar Hamiltonian of the returned state (with its momentum).
        num_steps: int32, leapfrog steps (= gradient evaluations) in this transition.
        is_accepted: bool, whether the proposal was accepted.
    """

    acceptance_rate: Array
    acceptance_sym: Array
    diverging: Array
    energy: Array
    num_steps: Array
    is_accepted: Array


def init(position: Array, logdensity_fn: Callable[[Array], Array]) -> HMCState:
    """Create the chain state at ``position`` (one log density and gradient evaluation).

    Args:
        position: shape ``(dim,)``.
        logdensity_fn: ``(dim,) -> scalar`` log density.

    Returns:
        An ``HMCState``.
    """
    position = jnp.asarray(position)
    if position.ndim != 1:
        raise ValueError(
            f"position must be a flat 1-D array of shape (dim,); got shape {position.shape}. "
            "Flatten the parameters (e.g. with jax.flatten_util.ravel_pytree) first."
        )
    log_density, grad = jax.value_and_grad(logdensity_fn)(position)
    return HMCState(position, log_density, grad)


def step(
    key: Array,
    state: HMCState,
    logdensity_fn: Callable[[Array], Array],
    step_size: Array,
    inverse_mass_matrix: Array,
    num_integration_steps: int | Array | None = None,
    trajectory_length: float | Array | None = None,
    jitter: bool = False,
    max_delta_energy: float = 1000.0,
) -> tuple[HMCState, HMCInfo]:
    """One HMC transition: fresh momentum, a fixed-length leapfrog trajectory, Metropolis accept.

    Give exactly one of ``num_integration_steps`` and ``trajectory_length``. With a trajectory
    length the number of steps is ``max(1, ceil(L / step_size))``; with ``jitter=True`` the length
    is first multiplied by ``u ~ Uniform(0, 1)``.

    Args:
        key: a JAX PRNG key.
        state: the current ``HMCState``.
        logdensity_fn: ``(dim,) -> scalar`` log density.
        step_size: scalar leapfrog step size.
        inverse_mass_matrix: shape ``(dim,)`` or ``(dim, dim)``.
        num_integration_steps: int (may be traced), leapfrog steps per transition.
        trajectory_length: scalar integration time ``L``.
        jitter: whether to jitter ``L`` uniformly (only with ``trajectory_length``).
        max_delta_energy: energy error above which the transition is flagged divergent.

    Returns:
        ``(new_state, info)``: an ``HMCState`` and an ``HMCInfo``.
    """
    if (num_integration_steps is None) == (trajectory_length is None):
        raise ValueError(
            "hmc.step needs exactly one of num_integration_steps and trajectory_length; "
            f"got num_integration_steps={num_integration_steps!r}, "
            f"trajectory_length={trajectory_length!r}."
        )
    key_momentum, key_jitter, key_accept = jax.random.split(key, 3)
    if num_integration_steps is None:
        length = jnp.asarray(trajectory_length)
        if jitter:
            length = length * jax.random.uniform(key_jitter, dtype=jnp.result_type(length))
        num_steps = jnp.maximum(1, jnp.ceil(length / step_size)).astype(jnp.int32)
    else:
        num_steps = jnp.asarray(num_integration_steps, dtype=jnp.int32)

    momentum = sample_momentum(key_momentum, state.position, inverse_mass_matrix)
    integrator = velocity_verlet(logdensity_fn, inverse_mass_matrix)
    start = IntegratorState(state.position, momentum, state.log_density, state.grad)
    end = jax.lax.fori_loop(0, num_steps, lambda _, z: integrator(z, step_size), start)

    initial_energy = -state.log_density + kinetic_energy(momentum, inverse_mass_matrix)
    new_energy = -end.log_density + kinetic_energy(end.momentum, inverse_mass_matrix)
    delta = energy_error(initial_energy, new_energy)
    acceptance_rate = jnp.exp(jnp.minimum(0.0, -delta))
    is_accepted = jax.random.uniform(key_accept, dtype=acceptance_rate.dtype) < acceptance_rate

    proposal = HMCState(end.position, end.log_density, end.grad)
    new_state = jax.tree.map(lambda a, b: jnp.where(is_accepted, a, b), proposal, state)
    info = HMCInfo(
        acceptance_rate=acceptance_rate,
        acceptance_sym=symmetric_acceptance(delta),
        diverging=delta > max_delta_energy,
        energy=jnp.where(is_accepted, new_energy, initial_energy),
        num_steps=num_steps,
        is_accepted=is_accepted,
    )
    return new_state, info


def jittered_step_size(key: Array, step_size: Array, jitter: float) -> Array:
    """The step size drawn uniformly within ``jitter`` of ``step_size`` (nutpie's step-size
    jitter), from ``fold_in(key, 2)`` of the iteration's key; unchanged when ``jitter`` is 0.

    Args:
        key: the iteration's key.
        step_size: the adapted step size (scalar).
        jitter: a static float in [0, 1).
    """
    if not jitter:
        return step_size
    u = jax.random.uniform(jax.random.fold_in(key, 2), dtype=step_size.dtype)
    return step_size * (1.0 - jitter + 2.0 * jitter * u)


def step_kernel(step_fn: Callable, step_size_jitter: float = 0.0, **settings) -> Kernel:
    """An HMC-family transition as a :class:`~ppl.infer.base.Kernel` taking
    :class:`~ppl.infer.base.StepParameters`.

    Its ``step(key, state, logdensity_fn, parameters)`` runs ``step_fn(split(key)[0], state,
    logdensity_fn, step_size, inverse_mass_matrix, **settings)`` (the paired warmup uses
    ``split(key)[1]``) with the step size jittered by :func:`jittered_step_size`.

    Args:
        step_fn: :func:`step` or :func:`ppl.infer.kernels.nuts.step`.
        step_size_jitter: see :func:`jittered_step_size`.
        **settings: the transition's static settings (e.g. ``max_tree_depth``).
    """

    def transition(key, state, logdensity_fn, parameters: StepParameters):
        return step_fn(
            jax.random.split(key)[0],
            state,
            logdensity_fn,
            jittered_step_size(key, parameters.step_size, step_size_jitter),
            parameters.inverse_mass_matrix,
            **settings,
        )

    return Kernel(init, transition)


def kernel(
    *,
    num_integration_steps: int | None = None,
    trajectory_length: float | None = None,
    jitter: bool = False,
    step_size_jitter: float = 0.0,
) -> Kernel:
    """Static HMC as a :class:`~ppl.infer.base.Kernel` (see :func:`step_kernel`).

    Args:
        num_integration_steps, trajectory_length, jitter: as for :func:`step`.
        step_size_jitter: see :func:`jittered_step_size`.
    """
    return step_kernel(
        step,
        step_size_jitter,
        num_integration_steps=num_integration_steps,
        trajectory_length=trajectory_length,
        jitter=jitter,
    )
