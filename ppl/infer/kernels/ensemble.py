# ruff: noqa: RUF002  (the docstrings use the papers' Greek notation)
"""Transitions of the kernels that run all chains at once: jittered HMC (ChEES) and GHMC (MEADS).

Every array has the chain axis first; every chain takes the same number of leapfrog steps in
an iteration, so hundreds of chains run in lockstep on an accelerator without the
control-flow divergence of NUTS. Two :class:`~ppl.infer.base.Kernel` s:

* :func:`jittered_hmc_kernel`: plain HMC with a step size, diagonal metric and number of
  leapfrog steps shared by all chains (their values come from ChEES's warmup,
  :mod:`ppl.infer.warmup.chees`, which also needs the trajectories' ends from the info);
* :func:`ghmc_kernel`: one step of generalized HMC (Horowitz 1991) per chain with a
  persistent momentum and Neal's non-reversible slice variable, with per-chain parameters
  (from MEADS's warmup, :mod:`ppl.infer.warmup.meads`).

Each iteration's key per chain is split as documented per kernel; the warmups paired with them
use the rest (see :mod:`ppl.infer.base`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ppl.infer.base import Kernel
from ppl.infer.core.integrators import IntegratorState, energy_error, velocity_verlet
from ppl.infer.kernels.hmc import HMCState

__all__ = [
    "MAX_DELTA_ENERGY",
    "GHMCInfo",
    "GHMCParameters",
    "GHMCState",
    "JitteredHMCInfo",
    "JitteredHMCParameters",
    "ghmc_kernel",
    "init",
    "jittered_hmc_kernel",
    "leapfrog_steps",
    "metropolis_energies",
    "where_chains",
]

MAX_DELTA_ENERGY = 1000.0  # energy error above which a transition is divergent


def init(positions: Array, logdensity_fn: Callable[[Array], Array]) -> HMCState:
    """The chains' ``HMCState`` at ``positions (num_chains, dim)`` (one gradient per chain)."""
    positions = jnp.asarray(positions)
    log_density, grad = jax.vmap(jax.value_and_grad(logdensity_fn))(positions)
    return HMCState(positions, log_density, grad)


def leapfrog_steps(
    ld: Callable[[Array], Array],
    state: HMCState,
    momentum: Array,
    step_size: Array,
    inverse_mass_diag: Array,
    num_steps: Array,
) -> IntegratorState:
    """Integrate ``num_steps`` leapfrog steps of every chain (one trip count for all chains).

    Args:
        ld: ``(dim,) -> scalar`` log density.
        state: batched ``HMCState`` (num_chains, dim).
        momentum: (num_chains, dim).
        step_size: scalar, or (num_chains,) for a step size per chain.
        inverse_mass_diag: (dim,) or (num_chains, dim).
        num_steps: scalar int, the same for every chain (no control-flow divergence).

    Returns:
        The batched ``IntegratorState`` at the end of the trajectories.
    """
    step_size = jnp.broadcast_to(step_size, state.log_density.shape)
    imm = jnp.broadcast_to(inverse_mass_diag, state.position.shape)

    def one(z, eps, m):
        return velocity_verlet(ld, m)(z, eps)

    step = jax.vmap(one)
    start = IntegratorState(state.position, momentum, state.log_density, state.grad)
    return jax.lax.fori_loop(0, num_steps, lambda _, z: step(z, step_size, imm), start)


def metropolis_energies(
    state: HMCState,
    momentum: Array,
    end: IntegratorState,
    inverse_mass_diag: Array,
) -> tuple[Array, Array, Array]:
    """Initial and final Hamiltonians and the energy error of a batch of trajectories.

    A proposal with a non-finite log density, gradient or position gets an energy error of
    ``+inf`` (so it is rejected and flagged divergent).

    Returns:
        ``(h0, h1, delta)``, each of shape (num_chains,).
    """
    h0 = -state.log_density + 0.5 * jnp.sum(momentum**2 * inverse_mass_diag, axis=-1)
    h1 = -end.log_density + 0.5 * jnp.sum(end.momentum**2 * inverse_mass_diag, axis=-1)
    finite = (
        jnp.isfinite(end.log_density)
        & jnp.all(jnp.isfinite(end.grad), axis=-1)
        & jnp.all(jnp.isfinite(end.position), axis=-1)
    )
    delta = jnp.where(finite, energy_error(h0, h1), jnp.inf)
    return h0, h1, delta


def where_chains(mask: Array, a: Any, b: Any) -> Any:
    """Per chain ``a`` where ``mask (num_chains,)`` else ``b`` (pytrees with chain axis first)."""

    def pick(x, y):
        m = mask.reshape((-1,) + (1,) * (jnp.ndim(x) - 1))
        return jnp.where(m, x, y)

    return jax.tree.map(pick, a, b)


# ---------------------------------------------------------------------- jittered HMC (ChEES)


class JitteredHMCParameters(NamedTuple):
    """One iteration's parameters, shared by all chains.

    Attributes:
        step_size: scalar ``ε``.
        inverse_mass_diag: ``(dim,)`` diagonal inverse mass matrix.
        num_steps: int32 scalar, leapfrog steps (the jittered trajectory length over ``ε``).
    """

    step_size: Array
    inverse_mass_diag: Array
    num_steps: Array


class JitteredHMCInfo(NamedTuple):
    """Diagnostics of one iteration of all chains.

    Attributes:
        acceptance_rate: (num_chains,) Metropolis acceptance probability.
        diverging: (num_chains,) bool, energy error above :data:`MAX_DELTA_ENERGY` (or NaN).
        energy: (num_chains,) Hamiltonian of the returned state.
        num_steps: (num_chains,) int32 gradient evaluations.
        proposal: the trajectories' ends (``IntegratorState``, batched), accepted or not:
            ChEES's warmup measures the jump and the end velocity with them.
    """

    acceptance_rate: Array
    diverging: Array
    energy: Array
    num_steps: Array
    proposal: IntegratorState


def jittered_hmc_kernel() -> Kernel:
    """HMC over all chains at once with shared parameters (:class:`JitteredHMCParameters`).

    The step's key per chain is split in two: a fresh momentum ``N(0, M)`` from the first, the
    Metropolis uniform from the second.
    """

    def step(keys, state: HMCState, logdensity_fn, params: JitteredHMCParameters):
        eps, imm = params.step_size, params.inverse_mass_diag
        split = jax.vmap(lambda k: jax.random.split(k, 2))(keys)
        z = jax.vmap(lambda k, x: jax.random.normal(k, x.shape, x.dtype))(
            split[:, 0], state.position
        )
        momentum = z * jax.lax.rsqrt(imm)
        end = leapfrog_steps(logdensity_fn, state, momentum, eps, imm, params.num_steps)
        h0, h1, delta = metropolis_energies(state, momentum, end, imm)
        acceptance = jnp.exp(jnp.minimum(0.0, -delta))
        uniform = jax.vmap(lambda k: jax.random.uniform(k, (), acceptance.dtype))(split[:, 1])
        accepted = uniform < acceptance
        proposal = HMCState(end.position, end.log_density, end.grad)
        info = JitteredHMCInfo(
            acceptance_rate=acceptance,
            diverging=delta > MAX_DELTA_ENERGY,
            energy=jnp.where(accepted, h1, h0),
            num_steps=jnp.full(state.log_density.shape, params.num_steps, jnp.int32),
            proposal=end,
        )
        return where_chains(accepted, proposal, state), info

    return Kernel(init, step)


# ---------------------------------------------------------------------- generalized HMC (MEADS)


class GHMCState(NamedTuple):
    """The chains' state under generalized HMC (every leaf has the chain axis first).

    Attributes:
        position: (num_chains, dim).
        log_density: (num_chains,).
        grad: (num_chains, dim).
        momentum: (num_chains, dim) persistent momentum in preconditioned units: the momentum
            is ``momentum / scale`` under the inverse mass matrix ``scale²``.
        slice: (num_chains,) the non-reversible slice variable ``u`` in [-1, 1).
    """

    position: Array
    log_density: Array
    grad: Array
    momentum: Array
    slice: Array


class GHMCParameters(NamedTuple):
    """One iteration's generalized-HMC parameters, per chain.

    Attributes:
        step_size: (num_chains,) ``ε`` in the preconditioned coordinates.
        scale: (num_chains, dim) ``σ``: the metric is ``M⁻¹ = diag(σ²)``.
        alpha: (num_chains,) ``α`` in (0, 1], the fraction of the momentum's variance refreshed.
        delta: (num_chains,) ``δ``, the drift of the slice variable.
        moving: (num_chains,) bool; a chain that is not moving keeps its whole state.
        fresh: bool scalar: draw the slice variables anew (the first iteration).
    """

    step_size: Array
    scale: Array
    alpha: Array
    delta: Array
    moving: Array
    fresh: Array


class GHMCInfo(NamedTuple):
    """Diagnostics of one generalized-HMC iteration of all chains.

    Attributes:
        acceptance_rate: (num_chains,) ``min(1, exp(H₀ - H₁))``.
        diverging: (num_chains,) bool, a moving chain's energy error above
            :data:`MAX_DELTA_ENERGY` (or NaN).
        energy: (num_chains,) Hamiltonian of the returned state.
        num_steps: (num_chains,) int32 gradient evaluations (1 for each chain).
    """

    acceptance_rate: Array
    diverging: Array
    energy: Array
    num_steps: Array


def ghmc_kernel() -> Kernel:
    """Generalized HMC, one leapfrog per chain per iteration (:class:`GHMCParameters`).

    1. partial momentum refresh ``m ← sqrt(1 - α) m + sqrt(α) ξ``, ``ξ ~ N(0, I)``;
    2. the slice variable ``u ∈ [-1, 1)`` drifts by ``δ`` (Neal 2020, non-reversible
       Metropolis: ``|u|`` stays uniform but successive thresholds are correlated, so
       rejections cluster instead of scattering);
    3. one leapfrog step of size ``ε``; accept when ``log|u| ≤ H₀ - H₁`` (then
       ``u ← u·exp(H₁ - H₀)``), else stay and negate the momentum.

    The step's key per chain is split in three: ``ξ`` from the first, the fresh slice
    variable from the second; the third is MEADS's warmup's (:mod:`ppl.infer.warmup.meads`).
    """

    def init_state(positions, logdensity_fn) -> GHMCState:
        state = init(positions, logdensity_fn)
        f = state.position.dtype
        return GHMCState(
            state.position,
            state.log_density,
            state.grad,
            momentum=jnp.zeros_like(state.position),
            slice=jnp.zeros(state.position.shape[0], f),
        )

    def step(keys, state: GHMCState, logdensity_fn, params: GHMCParameters):
        f = state.position.dtype
        split = jax.vmap(lambda k: jax.random.split(k, 3))(keys)
        alpha = params.alpha
        noise = jax.vmap(lambda k, x: jax.random.normal(k, x.shape, x.dtype))(
            split[:, 0], state.position
        )
        momentum = (
            jnp.sqrt(1.0 - alpha)[:, None] * state.momentum + jnp.sqrt(alpha)[:, None] * noise
        )
        start_slice = jax.vmap(lambda k: jax.random.uniform(k, (), f, -1.0, 1.0))(split[:, 1])
        slice_ = jnp.where(params.fresh, start_slice, state.slice)
        slice_ = jnp.mod(slice_ + 1.0 + params.delta, 2.0) - 1.0

        current = HMCState(state.position, state.log_density, state.grad)
        imm = params.scale**2
        p = momentum / params.scale
        end = leapfrog_steps(logdensity_fn, current, p, params.step_size, imm, 1)
        h0, h1, delta = metropolis_energies(current, p, end, imm)
        accepted = jnp.log(jnp.abs(slice_)) <= -delta
        new_slice = jnp.where(accepted, slice_ * jnp.exp(jnp.where(accepted, delta, 0.0)), slice_)
        new_momentum = jnp.where(accepted[:, None], end.momentum * params.scale, -momentum)
        proposal = HMCState(end.position, end.log_density, end.grad)
        new_chain = where_chains(accepted, proposal, current)

        # a chain that is not moving keeps its whole state (position, momentum, slice)
        moving = params.moving
        new_chain = where_chains(moving, new_chain, current)
        new_momentum = where_chains(moving, new_momentum, state.momentum)
        new_slice = jnp.where(moving, new_slice, state.slice)
        energy = jnp.where(accepted, h1, h0)
        info = GHMCInfo(
            acceptance_rate=jnp.exp(jnp.minimum(0.0, -delta)),
            diverging=moving & (delta > MAX_DELTA_ENERGY),
            energy=jnp.where(moving, energy, h0),
            num_steps=jnp.ones(state.log_density.shape, jnp.int32),
        )
        return GHMCState(*new_chain, new_momentum, new_slice), info

    return Kernel(init_state, step)
