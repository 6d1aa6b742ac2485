"""ChEES-HMC: jittered HMC whose trajectory length is tuned across many chains.

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

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ppl.infer import MCMC
    >>> from ppl.infer.chees import ChEES
    >>> kernel = ChEES(logdensity_fn=lambda x: -0.5 * jnp.sum(x**2))
    >>> mcmc = MCMC(kernel, num_warmup=500, num_samples=500, num_chains=256, progress_bar=False)
    >>> kernel.chains_batched  # MCMC runs its program over all chains at once
    True
    >>> mcmc.run(jax.random.key(0), init_params=jnp.zeros(3))  # doctest: +SKIP

(The user guide's page "Many chains" runs complete examples.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ppl.density import LogDensity
from ppl.infer import hmc
from ppl.infer.adaptation import DualAveragingState, dual_averaging
from ppl.infer.ensemble import (
    MAX_DELTA_ENERGY,
    EnsembleCarry,
    EnsembleKernel,
    EnsembleProgram,
    IterationResult,
    chain_mean,
    chain_variance,
    halton,
    initial_inverse_mass,
    leapfrog_steps,
    max_eigenvalue,
    metropolis_energies,
    replicate,
    shared,
    where_chains,
)

__all__ = ["ChEES", "ChEESState"]

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


class ChEES(EnsembleKernel):
    """ChEES-HMC for many chains: jittered HMC with ensemble-tuned step size and length.

    Use through :class:`~ppl.infer.MCMC` with many chains (64 to 4096):
    ``MCMC(ChEES(model), num_chains=256, num_warmup=500, num_samples=500)``. Every chain
    takes the same number of leapfrog steps at an iteration, so a GPU runs them in lockstep.

    Args:
        model: a model function or a :class:`ppl.LogDensity`.
        logdensity_fn: instead of a model, ``theta (dim,) -> log density`` (give
            ``init_params`` to :meth:`MCMC.run`).
        target_accept_prob: target of the harmonic-mean acceptance probability (0.651, the
            optimum for HMC in high dimension).
        step_size: initial step size; default from the ensemble's gradients
            (``0.5 / sqrt(λ_max)`` of the preconditioned gradients' second moment).
        preconditioner: "gradient" (default; ``sqrt(Var θ / Var ∇log p)`` across chains) or
            "variance" (the cross-chain variance of the positions).
        learning_rate: Adam's learning rate on ``log T``.
        max_num_steps: the most leapfrog steps per iteration (caps ``T / ε``).
        jitter: the fraction of ``T`` that is jittered: lengths are ``(1 - jitter + jitter
            u) T`` with ``u`` the Halton sequence (1: uniform over ``(0, T]``, as the paper).
        final_fraction: fraction of warmup, at its end, with the preconditioner held fixed.
        init_strategy: "uniform", "median", "prior" or a dict of initial values.
    """

    min_chains = 2

    def __init__(
        self,
        model: Callable | LogDensity | None = None,
        *,
        logdensity_fn: Callable | None = None,
        target_accept_prob: float = 0.651,
        step_size: float | None = None,
        preconditioner: str = "gradient",
        learning_rate: float = 0.025,
        max_num_steps: int = 1024,
        jitter: float = 1.0,
        final_fraction: float = 0.15,
        init_strategy: str | dict = "uniform",
    ):
        super().__init__(
            model,
            logdensity_fn=logdensity_fn,
            step_size=1.0 if step_size is None else step_size,
            target_accept_prob=target_accept_prob,
            init_strategy=init_strategy,
        )
        if preconditioner not in PRECONDITIONERS:
            raise ValueError(
                f"preconditioner must be one of {PRECONDITIONERS}, got {preconditioner!r}"
            )
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
        if not isinstance(max_num_steps, int) or isinstance(max_num_steps, bool):
            raise ValueError(f"max_num_steps must be an int >= 1, got {max_num_steps!r}")
        if max_num_steps < 1:
            raise ValueError(f"max_num_steps must be an int >= 1, got {max_num_steps!r}")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {jitter!r}")
        if not 0.0 <= final_fraction < 1.0:
            raise ValueError(f"final_fraction must be in [0, 1), got {final_fraction!r}")
        self.initial_step_size = None if step_size is None else float(step_size)
        self.preconditioner = preconditioner
        self.learning_rate = float(learning_rate)
        self.max_num_steps = max_num_steps
        self.jitter = float(jitter)
        self.final_fraction = float(final_fraction)

    def settings(self) -> tuple:
        return (
            *super().settings(),
            self.initial_step_size,
            self.preconditioner,
            self.learning_rate,
            self.max_num_steps,
            self.jitter,
            self.final_fraction,
        )

    def program(self, template: LogDensity, mcmc) -> _ChEESProgram:
        return _ChEESProgram(template, self, mcmc)


class _ChEESProgram(EnsembleProgram):
    def __init__(self, template, kernel: ChEES, mcmc):
        super().__init__(template, kernel, mcmc)
        self.da = dual_averaging(target_accept=kernel.target_accept_prob)
        self.hold_from = math.floor(self.num_warmup * (1.0 - kernel.final_fraction))
        self.max_bits = max(1, math.ceil(math.log2(self.total + 2)))

    # -------------------------------------------------------------- estimates
    def _precond_estimate(self, state: hmc.HMCState) -> Array:
        """This iteration's estimate of the diagonal inverse mass matrix (dim,)."""
        var_x = chain_variance(state.position)
        if self.kernel.preconditioner == "variance":
            estimate = var_x
        else:
            var_g = chain_variance(state.grad)
            estimate = jnp.sqrt(var_x / jnp.maximum(var_g, 1e-30))
            estimate = jnp.where(var_g > 1e-30, estimate, var_x)
        estimate = jnp.where(jnp.isfinite(estimate) & (estimate > 0), estimate, 1.0)
        return jnp.clip(estimate, 1e-10, 1e10)

    def _initial_step_size(self, state: hmc.HMCState, imm: Array) -> Array:
        if self.kernel.initial_step_size is not None:
            return jnp.asarray(self.kernel.initial_step_size, state.position.dtype)
        scaled = state.grad * jnp.sqrt(imm)
        eps = 0.5 / jnp.sqrt(max_eigenvalue(scaled))
        return jnp.where(jnp.isfinite(eps) & (eps > 0), jnp.minimum(eps, 1.0), 0.1)

    # -------------------------------------------------------------- program
    def init_adapt(self, state, ld, inverse_mass_diag) -> ChEESState:
        if inverse_mass_diag is None:
            imm = self._precond_estimate(state)
        else:
            imm = initial_inverse_mass(state, inverse_mass_diag)
        eps = self._initial_step_size(state, imm)
        f = state.position.dtype
        zero = jnp.zeros((), f)
        adapt = ChEESState(
            dual_averaging=self.da.init(eps),
            log_trajectory_length=jnp.log(eps).astype(f),
            log_trajectory_length_avg=jnp.log(eps).astype(f),
            adam_m=zero,
            adam_v=zero,
            count=jnp.zeros((), jnp.int32),
            inverse_mass_diag=imm,
            log_precond_avg=jnp.log(imm),
        )
        return replicate(adapt, self.num_chains)

    def _parameters(self, a: ChEESState, in_warmup: Array) -> tuple[Array, Array]:
        eps = jnp.where(
            in_warmup, jnp.exp(a.dual_averaging.log_step_size), self.da.final(a.dual_averaging)
        ).astype(a.inverse_mass_diag.dtype)
        return eps, jnp.exp(a.log_trajectory_length_avg)

    def iterate(self, keys, carry: EnsembleCarry, ld, i) -> IterationResult:
        state = carry.state
        a = shared(carry.adapt)
        in_warmup = i < self.num_warmup
        eps, length = self._parameters(a, in_warmup)
        imm = a.inverse_mass_diag
        jitter = self.kernel.jitter
        u = 1.0 - jitter + jitter * halton(i + 1, self.max_bits).astype(eps.dtype)
        num_steps = jnp.clip(jnp.ceil(u * length / eps), 1, self.kernel.max_num_steps)
        num_steps = num_steps.astype(jnp.int32)

        split = jax.vmap(lambda k: jax.random.split(k, 2))(keys)
        z = jax.vmap(lambda k, x: jax.random.normal(k, x.shape, x.dtype))(
            split[:, 0], state.position
        )
        momentum = z * jax.lax.rsqrt(imm)
        end = leapfrog_steps(ld, state, momentum, eps, imm, num_steps)
        h0, h1, delta = metropolis_energies(state, momentum, end, imm)
        acceptance = jnp.exp(jnp.minimum(0.0, -delta))
        uniform = jax.vmap(lambda k: jax.random.uniform(k, (), acceptance.dtype))(split[:, 1])
        accepted = uniform < acceptance
        proposal = hmc.HMCState(end.position, end.log_density, end.grad)
        new_state = where_chains(accepted, proposal, state)
        diverging = delta > MAX_DELTA_ENERGY

        def adapt(a: ChEESState) -> ChEESState:
            return self._adapt(a, i, state, end, new_state, acceptance, diverging, u * length)

        new_adapt = jax.lax.cond(in_warmup, adapt, lambda a: a, a)
        return IterationResult(
            state=new_state,
            adapt=replicate(new_adapt, self.num_chains),
            acceptance_rate=acceptance,
            diverging=diverging,
            energy=jnp.where(accepted, h1, h0),
            num_steps=jnp.full(self.num_chains, num_steps, jnp.int32),
        )

    def _adapt(self, a: ChEESState, i, start, end, new_state, acceptance, diverging, length):
        kernel = self.kernel
        f = acceptance.dtype
        ok = ~diverging
        count = a.count + 1
        t = count.astype(f)

        # step size: dual averaging on the harmonic mean acceptance of non-divergent chains
        inv = jnp.where(ok, 1.0 / jnp.maximum(acceptance, 1e-20), 0.0)
        num_ok = jnp.sum(ok)
        harmonic = jnp.where(num_ok > 0, num_ok / jnp.maximum(jnp.sum(inv), 1e-20), 0.0)
        da = self.da.update(a.dual_averaging, harmonic)
        da = jax.tree.map(
            lambda new, old: jnp.where(jnp.isfinite(da.log_step_size), new, old),
            da,
            a.dual_averaging,
        )
        eps = jnp.exp(da.log_step_size)

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
        w = jnp.where(good, weights, 0.0)
        grad = jnp.sum(w * jnp.where(good, per_chain, 0.0)) / jnp.maximum(jnp.sum(w), 1e-20)
        beta1, beta2 = 0.0, 0.95
        adam_m = beta1 * a.adam_m + (1.0 - beta1) * grad
        adam_v = beta2 * a.adam_v + (1.0 - beta2) * grad**2
        m_hat = adam_m / (1.0 - beta1**t)
        v_hat = adam_v / (1.0 - beta2**t)
        update = kernel.learning_rate * m_hat / (jnp.sqrt(v_hat) + 1e-8)
        update = jnp.clip(
            jnp.where(jnp.isfinite(update), update, 0.0), -_LOG_UPDATE_CLIP, _LOG_UPDATE_CLIP
        )
        log_eps = jnp.log(eps)
        log_max = log_eps + math.log(kernel.max_num_steps)
        log_length = jnp.clip(a.log_trajectory_length + update, log_eps, log_max)
        weight = t**-0.5
        log_length_avg = (1.0 - weight) * a.log_trajectory_length_avg + weight * log_length
        log_length_avg = jnp.clip(log_length_avg, log_eps, log_max)

        # preconditioner: smoothed cross-chain estimate, held fixed at the end of warmup
        estimate = jnp.log(self._precond_estimate(new_state))
        rate = jnp.maximum(0.1, 1.0 / t)
        log_precond = (1.0 - rate) * a.log_precond_avg + rate * estimate
        update_metric = i < self.hold_from
        log_precond = jnp.where(update_metric, log_precond, a.log_precond_avg)
        imm = jnp.where(update_metric, jnp.exp(log_precond), a.inverse_mass_diag)

        return ChEESState(
            dual_averaging=da,
            log_trajectory_length=log_length.astype(f),
            log_trajectory_length_avg=log_length_avg.astype(f),
            adam_m=adam_m.astype(f),
            adam_v=adam_v.astype(f),
            count=count,
            inverse_mass_diag=imm.astype(f),
            log_precond_avg=log_precond.astype(f),
        )

    def sampling_parameters(self, adapt: ChEESState):
        a = shared(adapt)
        step_size = jnp.where(
            a.count > 0, self.da.final(a.dual_averaging), jnp.exp(a.dual_averaging.log_step_size)
        )
        c = self.num_chains
        return (
            jnp.broadcast_to(step_size.astype(a.inverse_mass_diag.dtype), (c,)),
            jnp.broadcast_to(a.inverse_mass_diag, (c, a.inverse_mass_diag.shape[-1])),
        )
