# ruff: noqa: RUF002  (the docstrings use the paper's Greek notation)
"""MEADS: generalized HMC whose step size, damping and metric come from other chains.

Hoffman & Sountsov (AISTATS 2022), "Tuning-Free Generalized Hamiltonian Monte Carlo".
Each iteration of a chain is one step of generalized HMC (Horowitz 1991):

1. partial momentum refresh ``m ← sqrt(1 - α) m + sqrt(α) ξ``, ``ξ ~ N(0, I)`` (the momentum
   ``m`` is kept in preconditioned units: ``p = m / σ`` with inverse mass matrix ``σ²``);
2. the slice variable ``u ∈ [-1, 1)`` drifts by ``δ`` (Neal 2020, non-reversible
   Metropolis: ``|u|`` stays uniform but successive thresholds are correlated, so rejections
   cluster instead of scattering);
3. one leapfrog step of size ``ε``; accept when ``log|u| ≤ H₀ - H₁`` (then
   ``u ← u·exp(H₁ - H₀)``), else stay and negate the momentum.

The chains are split into ``num_folds`` folds (reassigned at random every ``num_folds``
iterations). During warmup, at iteration ``t`` fold ``t mod K`` is held still, and every other
fold ``k`` takes its parameters from fold ``k - 1``'s current positions ``θ`` and gradients
``g`` (MEADS, Algorithm 3):

* ``σ`` = the per-coordinate standard deviation of fold ``k - 1``'s positions (the paper;
  ``preconditioner="variance"``) or, by default, ``σ² = sqrt(Var θ / Var g)`` over that fold
  (nutpie's estimate, exact for a Gaussian even while the chains are far from it);
* ``ε = min(1, 0.5 / sqrt(λ_max(E[(σ g)(σ g)ᵀ])))``;
* ``γ = max(1 / sqrt(λ_max(Cov(θ / σ))), 1 / (t ε))``, ``α = 1 - exp(-2 ε γ)``, ``δ = α / 2``,

with ``λ_max`` the low-variance estimate :func:`~ppl.infer.ensemble.max_eigenvalue`. As a
fold's parameters never depend on its own state, every iteration leaves the joint
distribution of all chains invariant (it is a Gibbs sweep over the folds), so the warmup
draws are valid too. When warmup ends the folds' parameters are averaged (the metric as a
root mean square) and frozen: sampling is generalized HMC with fixed parameters for every chain.
Each iteration costs one gradient per chain; there is no trajectory length to tune.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ppl.infer import MCMC
    >>> from ppl.infer.meads import MEADS
    >>> kernel = MEADS(logdensity_fn=lambda x: -0.5 * jnp.sum(x**2))
    >>> mcmc = MCMC(kernel, num_warmup=500, num_samples=500, num_chains=256, progress_bar=False)
    >>> kernel.chains_batched  # MCMC runs its program over all chains at once
    True
    >>> mcmc.run(jax.random.key(0), init_params=jnp.zeros(3))  # doctest: +SKIP

(The user guide's page "Many chains" runs complete examples.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ppl.density import LogDensity
from ppl.infer import hmc
from ppl.infer.ensemble import (
    MAX_DELTA_ENERGY,
    EnsembleCarry,
    EnsembleKernel,
    EnsembleProgram,
    IterationResult,
    leapfrog_steps,
    max_eigenvalue,
    metropolis_energies,
    where_chains,
)

__all__ = ["MEADS", "MEADSParameters", "MEADSState", "meads_parameters"]


class MEADSParameters(NamedTuple):
    """Generalized-HMC parameters of a group of chains (any leading batch shape).

    Attributes:
        step_size: ``ε``, in the preconditioned coordinates.
        scale: ``σ`` (..., dim): the metric is ``M⁻¹ = diag(σ²)``.
        alpha: ``α`` in (0, 1]: the fraction of the momentum's variance refreshed per step.
        delta: ``δ``: the drift of the slice variable per step.
    """

    step_size: Array
    scale: Array
    alpha: Array
    delta: Array


class MEADSState(NamedTuple):
    """Per-chain MEADS state (every leaf has the chain axis first).

    Attributes:
        momentum: (num_chains, dim) persistent momentum in preconditioned units.
        slice: (num_chains,) the non-reversible slice variable ``u`` in [-1, 1).
        order: (num_chains,) int32, the chain ids grouped by fold: fold ``k`` is
            ``order[k * n : (k + 1) * n]`` with ``n = num_chains / num_folds``.
        parameters: the :class:`MEADSParameters` each chain used last (per chain).
    """

    momentum: Array
    slice: Array
    order: Array
    parameters: MEADSParameters


def meads_parameters(
    positions: Array,
    grads: Array,
    iteration: Array,
    step_size_multiplier: float = 0.5,
    damping_slowdown: float = 1.0,
    preconditioner: str = "gradient",
) -> MEADSParameters:
    """MEADS's rules for ``(ε, σ, α, δ)`` from a group of chains' positions and gradients.

    Args:
        positions: (n, dim), n >= 2.
        grads: (n, dim), the log density's gradients at ``positions``.
        iteration: the (1-based) iteration ``t`` of the damping floor ``1 / (t ε)``.
        step_size_multiplier: ``ε = multiplier / sqrt(λ_max)`` (0.5 in the paper), capped at 1.
        damping_slowdown: scales the damping floor (1 in the paper).
        preconditioner: "variance" (the paper: ``σ`` = the positions' standard deviation) or
            "gradient" (``σ² = sqrt(Var θ / Var g)``, nutpie's estimate: exact for a Gaussian
            even while the chains are still far from it).

    Returns:
        ``MEADSParameters`` with scalar ``step_size``, ``alpha``, ``delta`` and ``scale (dim,)``.
    """
    mean = jnp.mean(positions, axis=0)
    scale = jnp.std(positions, axis=0, ddof=1)
    if preconditioner == "gradient":
        grad_sd = jnp.std(grads, axis=0, ddof=1)
        scale = jnp.where(grad_sd > 1e-30, jnp.sqrt(scale / jnp.maximum(grad_sd, 1e-30)), scale)
    scale = jnp.where(jnp.isfinite(scale) & (scale > 1e-10), scale, 1.0)
    eps = step_size_multiplier / jnp.sqrt(max_eigenvalue(grads * scale))
    eps = jnp.where(jnp.isfinite(eps), jnp.minimum(eps, 1.0), 1e-3)
    standardized = (positions - mean) / scale
    t = jnp.maximum(jnp.asarray(iteration, eps.dtype), 1.0)
    gamma = jnp.maximum(1.0 / jnp.sqrt(max_eigenvalue(standardized)), damping_slowdown / (t * eps))
    alpha = 1.0 - jnp.exp(-2.0 * eps * gamma)
    return MEADSParameters(eps, scale, alpha, 0.5 * alpha)


def _expand(mask: Array, like: Array) -> Array:
    return jnp.reshape(mask, jnp.shape(mask) + (1,) * (jnp.ndim(like) - jnp.ndim(mask)))


class MEADS(EnsembleKernel):
    """MEADS generalized HMC for many chains (one gradient per chain per iteration).

    Use through :class:`~ppl.infer.MCMC` with many chains (64 to 4096), a multiple of
    ``num_folds``: ``MCMC(MEADS(model), num_chains=256, num_warmup=1000, num_samples=2000)``.
    Draws are strongly autocorrelated (one leapfrog each) but cheap; give more iterations (or
    ``thinning``) than NUTS would need.

    Args:
        model: a model function or a :class:`ppl.LogDensity`.
        logdensity_fn: instead of a model, ``theta (dim,) -> log density``.
        num_folds: ``K``, the number of folds (4 in the paper); each fold needs >= 2 chains.
        step_size_multiplier: ``ε = multiplier / sqrt(λ_max)`` (0.5 in the paper).
        damping_slowdown: scales the early damping floor ``1 / (t ε)`` (1 in the paper).
        preconditioner: "gradient" (default: ``σ² = sqrt(Var θ / Var ∇log p)`` across the
            source fold, as nutpie's metric; exact for a Gaussian even far from it) or
            "variance" (the paper's ``σ²`` = the source fold's variance of the positions).
        init_strategy: "uniform", "median", "prior" or a dict of initial values.
    """

    def __init__(
        self,
        model: Callable | LogDensity | None = None,
        *,
        logdensity_fn: Callable | None = None,
        num_folds: int = 4,
        step_size_multiplier: float = 0.5,
        damping_slowdown: float = 1.0,
        preconditioner: str = "gradient",
        init_strategy: str | dict = "uniform",
    ):
        super().__init__(model, logdensity_fn=logdensity_fn, init_strategy=init_strategy)
        if not isinstance(num_folds, int) or isinstance(num_folds, bool) or num_folds < 2:
            raise ValueError(
                f"num_folds must be an int >= 2 (a fold is tuned from another), got {num_folds!r}"
            )
        if not step_size_multiplier > 0:
            raise ValueError(f"step_size_multiplier must be positive, got {step_size_multiplier}")
        if not damping_slowdown > 0:
            raise ValueError(f"damping_slowdown must be positive, got {damping_slowdown}")
        if preconditioner not in ("gradient", "variance"):
            raise ValueError(
                f"preconditioner must be 'gradient' or 'variance', got {preconditioner!r}"
            )
        self.preconditioner = preconditioner
        self.num_folds = num_folds
        self.step_size_multiplier = float(step_size_multiplier)
        self.damping_slowdown = float(damping_slowdown)
        self.min_chains = 2 * num_folds

    def settings(self) -> tuple:
        return (
            *super().settings(),
            self.num_folds,
            self.step_size_multiplier,
            self.damping_slowdown,
            self.preconditioner,
        )

    def check_chains(self, num_chains: int) -> None:
        super().check_chains(num_chains)
        if num_chains % self.num_folds:
            raise ValueError(
                f"MEADS splits the chains into num_folds={self.num_folds} equal folds: "
                f"num_chains={num_chains} is not a multiple of it"
            )

    def program(self, template: LogDensity, mcmc) -> _MEADSProgram:
        return _MEADSProgram(template, self, mcmc)


class _MEADSProgram(EnsembleProgram):
    def __init__(self, template, kernel: MEADS, mcmc):
        super().__init__(template, kernel, mcmc)
        self.num_folds = kernel.num_folds
        self.per_fold = self.num_chains // self.num_folds

    def _rules(self, positions, grads, t):
        k = self.kernel
        return meads_parameters(
            positions, grads, t, k.step_size_multiplier, k.damping_slowdown, k.preconditioner
        )

    def init_adapt(self, state, ld, inverse_mass_diag) -> MEADSState:
        c = self.num_chains
        params = self._rules(state.position, state.grad, 1)
        if inverse_mass_diag is not None:
            params = params._replace(scale=jnp.sqrt(jnp.asarray(inverse_mass_diag)))
        per_chain = jax.tree.map(lambda x: jnp.broadcast_to(x, (c, *jnp.shape(x))), params)
        f = state.position.dtype
        return MEADSState(
            momentum=jnp.zeros_like(state.position),
            slice=jnp.zeros(c, f),
            order=jnp.arange(c, dtype=jnp.int32),
            parameters=jax.tree.map(lambda x: x.astype(f), per_chain),
        )

    def _fold_of(self, order: Array) -> Array:
        """(num_chains,) the fold of each chain, from the chain ids grouped by fold."""
        folds = jnp.arange(self.num_chains, dtype=jnp.int32) // self.per_fold
        return jnp.zeros(self.num_chains, jnp.int32).at[order].set(folds)

    def _per_fold(self, state: hmc.HMCState, order: Array, i) -> MEADSParameters:
        """Each fold's own parameters (leading axis num_folds), from its chains' statistics."""
        shape = (self.num_folds, self.per_fold, state.position.shape[-1])
        positions = state.position[order].reshape(shape)
        grads = state.grad[order].reshape(shape)
        t = jnp.minimum(i + 1, max(self.num_warmup, 1)).astype(state.position.dtype)
        return jax.vmap(lambda x, g: self._rules(x, g, t))(positions, grads)

    def _fold_parameters(self, state: hmc.HMCState, order: Array, i) -> MEADSParameters:
        """Per chain: the parameters of its fold, computed from the previous fold's chains."""
        per_fold = self._per_fold(state, order, i)
        source = jax.tree.map(lambda x: jnp.roll(x, 1, axis=0), per_fold)  # fold k <- k - 1
        return jax.tree.map(lambda x: x[self._fold_of(order)], source)

    def iterate(self, keys, carry: EnsembleCarry, ld, i) -> IterationResult:
        state, a = carry.state, carry.adapt
        in_warmup = i < self.num_warmup
        split = jax.vmap(lambda k: jax.random.split(k, 3))(keys)

        # fold membership: reshuffled every num_folds iterations (from chain 0's key)
        def reshuffle(order):
            u = jax.random.uniform(split[0, 2], (self.num_chains,))
            return jnp.argsort(u).astype(jnp.int32)

        order = jax.lax.cond(in_warmup & (i % self.num_folds == 0), reshuffle, lambda o: o, a.order)
        fold = self._fold_of(order)
        # one evaluation of the rules per iteration: per fold in warmup, averaged over the
        # folds once when sampling starts, then frozen
        per_fold = jax.lax.cond(
            in_warmup | (i == self.num_warmup),
            lambda: self._per_fold(state, order, i),
            lambda: jax.tree.map(  # unused while sampling
                lambda x: jnp.zeros((self.num_folds, *x.shape[1:]), x.dtype), a.parameters
            ),
        )
        source = jax.tree.map(lambda x: jnp.roll(x, 1, axis=0), per_fold)  # fold k <- k - 1
        averaged = MEADSParameters(
            jnp.mean(per_fold.step_size),
            jnp.sqrt(jnp.mean(per_fold.scale**2, axis=0)),
            jnp.mean(per_fold.alpha),
            0.5 * jnp.mean(per_fold.alpha),
        )
        params = jax.tree.map(
            lambda fold_value, frozen, switch: jnp.where(
                _expand(in_warmup, fold_value),
                fold_value,
                jnp.where(i == self.num_warmup, jnp.broadcast_to(switch, frozen.shape), frozen),
            ),
            jax.tree.map(lambda x: x[fold], source),
            a.parameters,
            averaged,
        )
        moving = jnp.where(in_warmup, fold != i % self.num_folds, True)

        # generalized HMC: partial refresh, slice drift, one leapfrog, non-reversible accept
        f = state.position.dtype
        first = i == 0  # a full refresh and a uniform slice to start from
        alpha = jnp.where(first, 1.0, params.alpha)
        noise = jax.vmap(lambda k, x: jax.random.normal(k, x.shape, x.dtype))(
            split[:, 0], state.position
        )
        momentum = jnp.sqrt(1.0 - alpha)[:, None] * a.momentum + jnp.sqrt(alpha)[:, None] * noise
        start_slice = jax.vmap(lambda k: jax.random.uniform(k, (), f, -1.0, 1.0))(split[:, 1])
        slice_ = jnp.where(first, start_slice, a.slice)
        slice_ = jnp.mod(slice_ + 1.0 + params.delta, 2.0) - 1.0

        imm = params.scale**2
        p = momentum / params.scale
        end = leapfrog_steps(ld, state, p, params.step_size, imm, 1)
        h0, h1, delta = metropolis_energies(state, p, end, imm)
        accepted = jnp.log(jnp.abs(slice_)) <= -delta
        new_slice = jnp.where(accepted, slice_ * jnp.exp(jnp.where(accepted, delta, 0.0)), slice_)
        new_momentum = jnp.where(accepted[:, None], end.momentum * params.scale, -momentum)
        proposal = hmc.HMCState(end.position, end.log_density, end.grad)
        new_state = where_chains(accepted, proposal, state)

        # the held fold keeps its whole state (position, momentum, slice)
        new_state = where_chains(moving, new_state, state)
        new_momentum = where_chains(moving, new_momentum, a.momentum)
        new_slice = jnp.where(moving, new_slice, a.slice)
        acceptance = jnp.exp(jnp.minimum(0.0, -delta))
        energy = jnp.where(accepted, h1, h0)
        adapt = MEADSState(new_momentum, new_slice, order, params)
        return IterationResult(
            state=new_state,
            adapt=adapt,
            acceptance_rate=acceptance,
            diverging=moving & (delta > MAX_DELTA_ENERGY),
            energy=jnp.where(moving, energy, h0),
            num_steps=jnp.ones(self.num_chains, jnp.int32),
        )

    def sampling_parameters(self, adapt: MEADSState):
        return adapt.parameters.step_size, adapt.parameters.scale**2
