"""Hamiltonian dynamics shared by every HMC-family kernel and warmup: the leapfrog integrator.

Holds the phase-space point :class:`IntegratorState`, :func:`velocity_verlet` (the only
leapfrog in ppl: HMC, NUTS, the ensemble kernels and the step-size heuristic all use it),
and the energy-error helpers that turn a trajectory's Hamiltonians into acceptance
statistics. Talks to :mod:`ppl.infer.core.metrics` for the kinetic energy and velocity of a
momentum under an inverse mass matrix; :mod:`ppl.infer.kernels` build transitions on it.

Shapes: positions, momenta and gradients are ``(dim,)``; the log density is a scalar.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ppl.infer.core.metrics import velocity

__all__ = ["IntegratorState", "energy_error", "symmetric_acceptance", "velocity_verlet"]


class IntegratorState(NamedTuple):
    """A point in phase space with its cached log density and gradient.

    Attributes:
        position: shape ``(dim,)``.
        momentum: shape ``(dim,)``.
        log_density: scalar, ``logdensity_fn(position)``.
        grad: shape ``(dim,)``, the gradient of ``logdensity_fn`` at ``position``.
    """

    position: Array
    momentum: Array
    log_density: Array
    grad: Array


def velocity_verlet(
    logdensity_fn: Callable[[Array], Array], inverse_mass_matrix: Array
) -> Callable[[IntegratorState, Array], IntegratorState]:
    """Build one leapfrog (velocity Verlet) step; one gradient evaluation per step.

    Half kick ``p += ε/2 ∇log π(q)``, drift ``q += ε M⁻¹ p``, half kick with the new gradient.
    A negative ``step_size`` integrates backward in time. This is the only leapfrog in ppl:
    NUTS and the step-size heuristic reuse it.

    Args:
        logdensity_fn: ``(dim,) -> scalar`` log density.
        inverse_mass_matrix: shape ``(dim,)`` or ``(dim, dim)``.

    Returns:
        ``step(state, step_size) -> state`` mapping an ``IntegratorState`` to the next one.
    """
    value_and_grad = jax.value_and_grad(logdensity_fn)

    def step(state: IntegratorState, step_size: Array) -> IntegratorState:
        half_step = 0.5 * step_size
        momentum = state.momentum + half_step * state.grad
        position = state.position + step_size * velocity(momentum, inverse_mass_matrix)
        log_density, grad = value_and_grad(position)
        momentum = momentum + half_step * grad
        return IntegratorState(position, momentum, log_density, grad)

    return step


def energy_error(initial_energy: Array, energy: Array) -> Array:
    """``H - H0`` with NaN mapped to ``+inf`` (a NaN state is treated as infinitely bad)."""
    delta = energy - initial_energy
    return jnp.where(jnp.isnan(delta), jnp.inf, delta)


def symmetric_acceptance(delta: Array) -> Array:
    """nutpie's symmetric acceptance statistic of an energy error ``delta = H - H0``:
    ``2 / (1 + exp(|delta|))`` (0 for an infinite or NaN error).

    At equilibrium a state and its time reversal are equally likely, so ``min(1, exp(-delta))``
    can be averaged over the pair ``±delta`` (weights ``1`` and ``exp(-|delta|)``): the mean is
    that of the Metropolis acceptance probability, with less variance.
    """
    return 2.0 / (1.0 + jnp.exp(jnp.abs(delta)))
