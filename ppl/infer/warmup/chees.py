"""ChEES-HMC's warmup: step size, trajectory length and metric tuned across many chains.

Hoffman, Radul & Sountsov (AISTATS 2021), "An Adaptive-MCMC Scheme for Setting Trajectory
Lengths in Hamiltonian Monte Carlo". Every chain runs plain HMC with the same step size,
diagonal metric and number of leapfrog steps at a given iteration, so hundreds of chains
vectorize without the control-flow divergence of NUTS. During warmup, from statistics across
the chains:

* the **step size** follows dual averaging (Stan's constants) on the *harmonic* mean of the
  chains' acceptance probabilities, target 0.651 (the harmonic mean punishes a few stuck
  chains more than the arithmetic mean);
* the **trajectory length** ``T`` follows Adam (ascent, ``β1 = 0``, ``β2 = 0.95``, learning
  rate 0.025, log-space steps clipped to ±0.35) on a stochastic gradient of the ChEES
  criterion ``E[(‖θ' - E θ‖² - ‖θ - E θ‖²)²] / 4`` with respect to ``log T``: per chain
  ``t · (‖θ' - θ̄'‖² - ‖θ - θ̄‖²) · (θ' - θ̄')·v'`` (``v'`` the velocity at the end of the
  trajectory, ``t`` its jittered length), weighted by the acceptance probabilities; distances
  are measured in the preconditioned coordinates;
* the **diagonal preconditioner** (inverse mass matrix) is the cross-chain variance of the
  positions (``preconditioner="variance"``) or, as in nutpie, ``sqrt(Var θ / Var ∇log p)``
  across chains (``"gradient"``, the default: exact for a Gaussian from the first iteration),
  smoothed over iterations and held fixed for the last ``final_fraction`` of warmup.

Each iteration's length is ``u_i · T`` with ``u_i`` the base-2 Halton sequence (quasi-random
jitter, the same for all chains); the number of leapfrog steps is ``ceil(u_i T / ε)``, at most
``max_num_steps``. After warmup the step size, ``T`` and the metric are frozen: sampling is
then jittered HMC with fixed parameters, an ordinary Markov chain per chain.

The transition is :func:`ppl.infer.kernels.ensemble.jittered_hmc_kernel`; the user-facing
settings are :class:`ppl.infer.ChEES` (:mod:`ppl.infer.driver.config`). Cross-chain
statistics come from :mod:`ppl.infer.core.chain_stats`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ppl.infer.base import Warmup
from ppl.infer.core.chain_stats import (
    chain_mean,
    chain_variance,
    initial_inverse_mass,
    max_eigenvalue,
    replicate,
    shared,
)
from ppl.infer.core.rng import halton
from ppl.infer.kernels.ensemble import JitteredHMCParameters
from ppl.infer.kernels.hmc import HMCState
from ppl.infer.warmup.step_size import DualAveragingState, dual_averaging

__all__ = ["PRECONDITIONERS", "ChEESState", "chees_warmup"]

PRECONDITIONERS = ("gradient", "variance")
_LOG_UPDATE_CLIP = 0.35  # at most a factor exp(0.35) ≈ 1.42 per iteration on T


class ChEESState(NamedTuple):
    """ChEES adaptation state (shared by all chains; stored once per chain in the carry).

    Attributes:
        dual_averaging: step-size dual-averaging state (``log ε`` in warmup, its average after).
        log_trajectory_length: ``log T``, Adam's iterate.
        log_trajectory_length_avg: ``log T`` averaged with weights ``t^-1/2``: the length used.
        adam_m: Adam's first moment of the ChEES gradient (``β1 = 0``: the last gradient).
        adam_v: Adam's second moment.
        count: warmup iterations adapted so far.
        inverse_mass_diag: (dim,) the diagonal inverse mass matrix in use.
        log_precond_avg: (dim,) smoothed log of the per-iteration preconditioner estimates.
    """

    dual_averaging: DualAveragingState
    log_trajectory_length: Array
    log_trajectory_length_avg: Array
    adam_m: Array
    adam_v: Array
    count: Array
    inverse_mass_diag: Array
    log_precond_avg: Array


def chees_warmup(
    num_warmup: int,
    num_iterations: int,
    num_chains: int,
    *,
    target_accept: float = 0.651,
    initial_step_size: float | None = None,
    preconditioner: str = "gradient",
    learning_rate: float = 0.025,
    max_num_steps: int = 1024,
    jitter: float = 1.0,
    final_fraction: float = 0.15,
) -> Warmup:
    """ChEES's warmup over all chains as a :class:`~ppl.infer.base.Warmup`.

    Its ``parameters`` are the :class:`~ppl.infer.kernels.ensemble.JitteredHMCParameters`
    of iteration ``i`` (the length jittered by the Halton number of ``i + 1``); ``after``
    adapts from the transition's info (its ``proposal``: the trajectories' ends). The
    adaptation state is replicated once per chain (:func:`~ppl.infer.core.chain_stats.replicate`).

    Args:
        num_warmup: warmup iterations.
        num_iterations: all iterations of the run (warmup and sampling; sizes the Halton bits).
        num_chains: the number of chains.
        target_accept: target of the harmonic-mean acceptance probability.
        initial_step_size: the first step size; ``None``: ``0.5 / sqrt(λ_max)`` of the
            preconditioned gradients' second moment, across the chains.
        preconditioner: "gradient" (``sqrt(Var θ / Var ∇log p)`` across chains) or "variance".
        learning_rate: Adam's learning rate on ``log T``.
        max_num_steps: the most leapfrog steps per iteration (caps ``T / ε``).
        jitter: the fraction of ``T`` that is jittered.
        final_fraction: fraction of warmup, at its end, with the preconditioner held fixed.
    """
    da = dual_averaging(target_accept=target_accept)
    hold_from = math.floor(num_warmup * (1.0 - final_fraction))
    max_bits = max(1, math.ceil(math.log2(num_iterations + 2)))

    def precond_estimate(state: HMCState) -> Array:
        """This iteration's estimate of the diagonal inverse mass matrix (dim,)."""
        var_x = chain_variance(state.position)
        if preconditioner == "variance":
            estimate = var_x
        else:
            var_g = chain_variance(state.grad)
            estimate = jnp.sqrt(var_x / jnp.maximum(var_g, 1e-30))
            estimate = jnp.where(var_g > 1e-30, estimate, var_x)
        estimate = jnp.where(jnp.isfinite(estimate) & (estimate > 0), estimate, 1.0)
        return jnp.clip(estimate, 1e-10, 1e10)

    def first_step_size(state: HMCState, imm: Array) -> Array:
        if initial_step_size is not None:
            return jnp.asarray(initial_step_size, state.position.dtype)
        scaled = state.grad * jnp.sqrt(imm)
        eps = 0.5 / jnp.sqrt(max_eigenvalue(scaled))
        return jnp.where(jnp.isfinite(eps) & (eps > 0), jnp.minimum(eps, 1.0), 0.1)

    def init(state, logdensity_fn, inverse_mass_diag=None) -> ChEESState:
        if inverse_mass_diag is None:
            imm = precond_estimate(state)
        else:
            imm = initial_inverse_mass(state.position, inverse_mass_diag)
        eps = first_step_size(state, imm)
        f = state.position.dtype
        zero = jnp.zeros((), f)
        a = ChEESState(
            dual_averaging=da.init(eps),
            log_trajectory_length=jnp.log(eps).astype(f),
            log_trajectory_length_avg=jnp.log(eps).astype(f),
            adam_m=zero,
            adam_v=zero,
            count=jnp.zeros((), jnp.int32),
            inverse_mass_diag=imm,
            log_precond_avg=jnp.log(imm),
        )
        return replicate(a, num_chains)

    def before(key, w, state, iteration, flags, logdensity_fn) -> ChEESState:
        return w

    def lengths(a: ChEESState, iteration, in_warmup) -> tuple[Array, Array, Array]:
        """The step size, the jittered trajectory length and its number of leapfrog steps."""
        eps = jnp.where(
            in_warmup, jnp.exp(a.dual_averaging.log_step_size), da.final(a.dual_averaging)
        ).astype(a.inverse_mass_diag.dtype)
        length = jnp.exp(a.log_trajectory_length_avg)
        u = 1.0 - jitter + jitter * halton(iteration + 1, max_bits).astype(eps.dtype)
        num_steps = jnp.clip(jnp.ceil(u * length / eps), 1, max_num_steps).astype(jnp.int32)
        return eps, u * length, num_steps

    def parameters(w, iteration, in_warmup) -> JitteredHMCParameters:
        a = shared(w)
        eps, _, num_steps = lengths(a, iteration, in_warmup)
        return JitteredHMCParameters(eps, a.inverse_mass_diag, num_steps)

    def adapt(a: ChEESState, i, start, end, new_state, acceptance, diverging, length):
        f = acceptance.dtype
        ok = ~diverging
        count = a.count + 1
        t = count.astype(f)

        # step size: dual averaging on the harmonic mean acceptance of non-divergent chains
        inv = jnp.where(ok, 1.0 / jnp.maximum(acceptance, 1e-20), 0.0)
        num_ok = jnp.sum(ok)
        harmonic = jnp.where(num_ok > 0, num_ok / jnp.maximum(jnp.sum(inv), 1e-20), 0.0)
        da_state = da.update(a.dual_averaging, harmonic)
        da_state = jax.tree.map(
            lambda new, old: jnp.where(jnp.isfinite(da_state.log_step_size), new, old),
            da_state,
            a.dual_averaging,
        )
        eps = jnp.exp(da_state.log_step_size)

        # trajectory length: Adam ascent on the ChEES gradient w.r.t. log T
        sd = jnp.sqrt(a.inverse_mass_diag)
        weights = jnp.where(ok, acceptance, 0.0)
        z1 = end.position / sd
        z0 = start.position / sd
        c1 = z1 - chain_mean(z1, weights)
        c0 = z0 - chain_mean(z0)
        velocity = end.momentum * sd  # d z / d t in the preconditioned coordinates
        per_chain = length * (jnp.sum(c1**2, -1) - jnp.sum(c0**2, -1)) * jnp.sum(c1 * velocity, -1)
        good = ok & jnp.isfinite(per_chain)
        used = jnp.where(good, weights, 0.0)
        grad = jnp.sum(used * jnp.where(good, per_chain, 0.0)) / jnp.maximum(jnp.sum(used), 1e-20)
        beta1, beta2 = 0.0, 0.95
        adam_m = beta1 * a.adam_m + (1.0 - beta1) * grad
        adam_v = beta2 * a.adam_v + (1.0 - beta2) * grad**2
        m_hat = adam_m / (1.0 - beta1**t)
        v_hat = adam_v / (1.0 - beta2**t)
        update = learning_rate * m_hat / (jnp.sqrt(v_hat) + 1e-8)
        update = jnp.clip(
            jnp.where(jnp.isfinite(update), update, 0.0), -_LOG_UPDATE_CLIP, _LOG_UPDATE_CLIP
        )
        log_eps = jnp.log(eps)
        log_max = log_eps + math.log(max_num_steps)
        log_length = jnp.clip(a.log_trajectory_length + update, log_eps, log_max)
        weight = t**-0.5
        log_length_avg = (1.0 - weight) * a.log_trajectory_length_avg + weight * log_length
        log_length_avg = jnp.clip(log_length_avg, log_eps, log_max)

        # preconditioner: smoothed cross-chain estimate, held fixed at the end of warmup
        estimate = jnp.log(precond_estimate(new_state))
        rate = jnp.maximum(0.1, 1.0 / t)
        log_precond = (1.0 - rate) * a.log_precond_avg + rate * estimate
        update_metric = i < hold_from
        log_precond = jnp.where(update_metric, log_precond, a.log_precond_avg)
        imm = jnp.where(update_metric, jnp.exp(log_precond), a.inverse_mass_diag)

        return ChEESState(
            dual_averaging=da_state,
            log_trajectory_length=log_length.astype(f),
            log_trajectory_length_avg=log_length_avg.astype(f),
            adam_m=adam_m.astype(f),
            adam_v=adam_v.astype(f),
            count=count,
            inverse_mass_diag=imm.astype(f),
            log_precond_avg=log_precond.astype(f),
        )

    def after(w, previous, state, info, iteration, flags) -> ChEESState:
        a = shared(w)
        _, length, _ = lengths(a, iteration, True)
        new = adapt(
            a,
            iteration,
            previous,
            info.proposal,
            state,
            info.acceptance_rate,
            info.diverging,
            length,
        )
        return replicate(new, num_chains)

    def final(w) -> tuple[Array, Array]:
        a = shared(w)
        step_size = jnp.where(
            a.count > 0, da.final(a.dual_averaging), jnp.exp(a.dual_averaging.log_step_size)
        )
        return (
            jnp.broadcast_to(step_size.astype(a.inverse_mass_diag.dtype), (num_chains,)),
            jnp.broadcast_to(a.inverse_mass_diag, (num_chains, a.inverse_mass_diag.shape[-1])),
        )

    return Warmup((), init, before, parameters, after, final)
