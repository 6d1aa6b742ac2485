# ruff: noqa: RUF002  (the docstrings use the paper's Greek notation)
"""MEADS's warmup: generalized-HMC step size, damping and metric from other chains.

Hoffman & Sountsov (AISTATS 2022), "Tuning-Free Generalized Hamiltonian Monte Carlo". Each
iteration of a chain is one step of generalized HMC
(:func:`ppl.infer.kernels.ensemble.ghmc_kernel`); this module gives it its parameters.

The chains are split into ``num_folds`` folds (reassigned at random every ``num_folds``
iterations). During warmup, at iteration ``t`` fold ``t mod K`` is held still, and every other
fold ``k`` takes its parameters from fold ``k - 1``'s current positions ``θ`` and gradients
``g`` (MEADS, Algorithm 3):

* ``σ`` = the per-coordinate standard deviation of fold ``k - 1``'s positions (the paper;
  ``preconditioner="variance"``) or, by default, ``σ² = sqrt(Var θ / Var g)`` over that fold
  (nutpie's estimate, exact for a Gaussian even while the chains are far from it);
* ``ε = min(1, 0.5 / sqrt(λ_max(E[(σ g)(σ g)ᵀ])))``;
* ``γ = max(1 / sqrt(λ_max(Cov(θ / σ))), 1 / (t ε))``, ``α = 1 - exp(-2 ε γ)``, ``δ = α / 2``,

with ``λ_max`` the low-variance estimate :func:`~ppl.infer.core.chain_stats.max_eigenvalue`. As a
fold's parameters never depend on its own state, every iteration leaves the joint
distribution of all chains invariant (it is a Gibbs sweep over the folds), so the warmup
draws are valid too. When warmup ends the folds' parameters are averaged (the metric as a
root mean square) and frozen: sampling is generalized HMC with fixed parameters for every chain.
Each iteration costs one gradient per chain; there is no trajectory length to tune.

The user-facing settings are :class:`ppl.infer.MEADS` (:mod:`ppl.infer.driver.config`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ppl.infer.base import Warmup
from ppl.infer.core.chain_stats import max_eigenvalue
from ppl.infer.kernels.ensemble import GHMCParameters

__all__ = ["MEADSParameters", "MEADSState", "meads_parameters", "meads_warmup"]


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


class MEADSState(NamedTuple):
    """MEADS's warmup state (every leaf has the chain axis first).

    Attributes:
        order: (num_chains,) int32, the chain ids grouped by fold: fold ``k`` is
            ``order[k * n : (k + 1) * n]`` with ``n = num_chains / num_folds``.
        parameters: the :class:`MEADSParameters` each chain uses this iteration (per chain;
            frozen, averaged over the folds, once warmup is over).
    """

    order: Array
    parameters: MEADSParameters


def meads_warmup(
    num_warmup: int,
    num_chains: int,
    *,
    num_folds: int = 4,
    step_size_multiplier: float = 0.5,
    damping_slowdown: float = 1.0,
    preconditioner: str = "gradient",
) -> Warmup:
    """MEADS's fold-by-fold adaptation as a :class:`~ppl.infer.base.Warmup`.

    ``before`` (every iteration) reshuffles the folds every ``num_folds`` warmup iterations
    (from the third part of chain 0's key) and sets each chain's parameters from the previous
    fold's statistics; at the first sampling iteration the folds' parameters are averaged and
    frozen. ``parameters`` adds which chains move (all but the held fold during warmup) and
    the full momentum refresh of the first iteration. ``after`` has nothing to do.

    Args:
        num_warmup: warmup iterations.
        num_chains: the number of chains, a multiple of ``num_folds``.
        num_folds, step_size_multiplier, damping_slowdown, preconditioner: see
            :func:`meads_parameters` and :class:`ppl.infer.MEADS`.
    """
    per_fold = num_chains // num_folds

    def rules(positions, grads, t):
        return meads_parameters(
            positions, grads, t, step_size_multiplier, damping_slowdown, preconditioner
        )

    def fold_of(order: Array) -> Array:
        """(num_chains,) the fold of each chain, from the chain ids grouped by fold."""
        folds = jnp.arange(num_chains, dtype=jnp.int32) // per_fold
        return jnp.zeros(num_chains, jnp.int32).at[order].set(folds)

    def each_fold(state, order: Array, i) -> MEADSParameters:
        """Each fold's own parameters (leading axis num_folds), from its chains' statistics."""
        shape = (num_folds, per_fold, state.position.shape[-1])
        positions = state.position[order].reshape(shape)
        grads = state.grad[order].reshape(shape)
        t = jnp.minimum(i + 1, max(num_warmup, 1)).astype(state.position.dtype)
        return jax.vmap(lambda x, g: rules(x, g, t))(positions, grads)

    def init(state, logdensity_fn, inverse_mass_diag=None) -> MEADSState:
        params = rules(state.position, state.grad, 1)
        if inverse_mass_diag is not None:
            params = params._replace(scale=jnp.sqrt(jnp.asarray(inverse_mass_diag)))
        per_chain = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_chains, *jnp.shape(x))), params)
        f = state.position.dtype
        return MEADSState(
            order=jnp.arange(num_chains, dtype=jnp.int32),
            parameters=jax.tree.map(lambda x: x.astype(f), per_chain),
        )

    def before(keys, w: MEADSState, state, i, flags, logdensity_fn) -> MEADSState:
        in_warmup = i < num_warmup

        # fold membership: reshuffled every num_folds iterations (from chain 0's key)
        def reshuffle(order):
            u = jax.random.uniform(jax.random.split(keys[0], 3)[2], (num_chains,))
            return jnp.argsort(u).astype(jnp.int32)

        order = jax.lax.cond(in_warmup & (i % num_folds == 0), reshuffle, lambda o: o, w.order)
        fold = fold_of(order)
        # one evaluation of the rules per iteration: per fold in warmup, averaged over the
        # folds once when sampling starts, then frozen
        per_fold = jax.lax.cond(
            in_warmup | (i == num_warmup),
            lambda: each_fold(state, order, i),
            lambda: jax.tree.map(  # unused while sampling
                lambda x: jnp.zeros((num_folds, *x.shape[1:]), x.dtype), w.parameters
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
                jnp.where(i == num_warmup, jnp.broadcast_to(switch, frozen.shape), frozen),
            ),
            jax.tree.map(lambda x: x[fold], source),
            w.parameters,
            averaged,
        )
        return MEADSState(order, params)

    def parameters(w: MEADSState, i, in_warmup) -> GHMCParameters:
        p = w.parameters
        first = i == 0  # a full refresh and a uniform slice to start from
        return GHMCParameters(
            step_size=p.step_size,
            scale=p.scale,
            alpha=jnp.where(first, 1.0, p.alpha),
            delta=p.delta,
            moving=jnp.where(in_warmup, fold_of(w.order) != i % num_folds, True),
            fresh=first,
        )

    def after(w, previous, state, info, iteration, flags) -> MEADSState:
        return w

    def final(w: MEADSState) -> tuple[Array, Array]:
        return w.parameters.step_size, w.parameters.scale**2

    return Warmup((), init, before, parameters, after, final)


def _expand(mask: Array, like: Array) -> Array:
    return jnp.reshape(mask, jnp.shape(mask) + (1,) * (jnp.ndim(like) - jnp.ndim(mask)))
