"""Shared machinery of the many-chain samplers (ChEES-HMC, MEADS): one program over all chains.

An ensemble kernel adapts its parameters from statistics *across* chains, so its program runs
all chains at once (leading chain axis everywhere) and :class:`ppl.infer.MCMC` compiles it
as it is instead of vmapping it (``chains_batched = True``). This module holds what both
kernels share:

* :class:`EnsembleKernel`: the kernel base class (settings, the hook into ``MCMC``, checks of
  the number of chains);
* :class:`EnsembleProgram`: ``init`` / ``empty_draws`` / ``advance`` / ``finish`` over all
  chains, with the per-iteration work left to :meth:`EnsembleProgram.iterate`;
* cross-chain statistics (:func:`chain_mean`, :func:`chain_variance`,
  :func:`max_eigenvalue`) and the base-2 Halton sequence used to jitter trajectory lengths.

Every leaf of the carry has the chain axis first (shared scalars are stored once per chain),
so the carry can be sharded along the chains like the positions; cross-chain means then
become all-reduces under ``jit``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ppl.density import LogDensity
from ppl.infer import hmc
from ppl.infer.mcmc import Draws, SamplingState, _Kernel

if TYPE_CHECKING:  # pragma: no cover
    from ppl.infer.mcmc import MCMC

__all__ = [
    "EnsembleCarry",
    "EnsembleKernel",
    "EnsembleProgram",
    "IterationResult",
    "chain_mean",
    "chain_variance",
    "halton",
    "max_eigenvalue",
    "replicate",
    "shared",
]

MAX_DELTA_ENERGY = 1000.0  # energy error above which a transition is divergent
_TINY = 1e-30


# ---------------------------------------------------------------------- statistics


def replicate(tree: Any, num_chains: int) -> Any:
    """Give every leaf of ``tree`` a leading chain axis (the same value for every chain)."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_chains, *jnp.shape(x))), tree)


def shared(tree: Any) -> Any:
    """The value of a replicated pytree (chain 0's copy)."""
    return jax.tree.map(lambda x: x[0], tree)


def chain_mean(x: Array, weights: Array | None = None) -> Array:
    """Weighted mean over the chain axis of ``x (num_chains, ...)``; non-finite rows get weight 0.

    Args:
        x: shape ``(num_chains, ...)``.
        weights: shape ``(num_chains,)``, non-negative (default: equal).

    Returns:
        Shape ``x.shape[1:]``; zeros where every weight is zero.
    """
    finite = jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)
    w = jnp.ones(x.shape[0], x.dtype) if weights is None else weights.astype(x.dtype)
    w = jnp.where(finite, w, 0.0)
    w = w.reshape((-1,) + (1,) * (x.ndim - 1))
    total = jnp.sum(w, axis=0)
    return jnp.sum(w * jnp.where(jnp.isfinite(x), x, 0.0), axis=0) / jnp.maximum(total, _TINY)


def chain_variance(x: Array) -> Array:
    """Unbiased per-coordinate variance over the chain axis of ``x (num_chains, dim)``."""
    n = x.shape[0]
    mean = jnp.mean(x, axis=0)
    return jnp.sum((x - mean) ** 2, axis=0) / max(n - 1, 1)


def max_eigenvalue(x: Array) -> Array:
    """Estimate the largest eigenvalue of ``E[x xᵀ]`` from rows ``x (n, dim)`` (n >= 2).

    Returns ``tr(Σ²) / tr(Σ)`` with both traces estimated without bias from the rows (the
    off-diagonal squared inner products for ``tr(Σ²)``), as in MEADS (Hoffman & Sountsov 2022,
    §3.2): close to the top eigenvalue when it dominates the spectrum, never above it in
    expectation, and far less noisy than the top eigenvalue of the sample matrix when
    ``dim >> n``. Work is ``O(n² dim)``.
    """
    n = x.shape[0]
    gram = x @ x.T
    diag = jnp.diag(gram)
    trace = jnp.sum(diag) / n
    trace_sq = (jnp.sum(gram**2) - jnp.sum(diag**2)) / (n * (n - 1))
    return jnp.maximum(trace_sq, _TINY) / jnp.maximum(trace, _TINY)


def halton(index: Array, max_bits: int = 32) -> Array:
    """The base-2 Halton (van der Corput) number of a non-negative integer ``index``, in [0, 1).

    Bit ``k`` of ``index`` contributes ``2^-(k+1)``: 1 -> 0.5, 2 -> 0.25, 3 -> 0.75, ... so
    consecutive indices spread evenly over the unit interval.
    """
    index = jnp.asarray(index, jnp.uint32)
    bits = (index[..., None] >> jnp.arange(max_bits, dtype=jnp.uint32)) & 1
    weights = 0.5 ** jnp.arange(1, max_bits + 1, dtype=jnp.float32)
    return jnp.sum(bits.astype(jnp.float32) * weights, axis=-1)


# ---------------------------------------------------------------------- kernel and program


class EnsembleKernel(_Kernel):
    """Base class of the kernels that adapt across chains (``MCMC`` runs them all at once).

    Args:
        model: a model function or a :class:`ppl.LogDensity`.
        logdensity_fn: instead of a model, a plain function ``theta (dim,) -> log density``.
        init_strategy: "uniform", "median", "prior" or a dict of initial values.
        step_size: initial step size (in the units of the preconditioned space).
        min_chains: the fewest chains the kernel's cross-chain statistics accept.
    """

    chains_batched = True
    min_chains = 2

    def __init__(
        self,
        model: Callable | LogDensity | None = None,
        *,
        logdensity_fn: Callable | None = None,
        step_size: float = 1.0,
        target_accept_prob: float = 0.8,
        init_strategy: str | dict = "uniform",
    ):
        super().__init__(
            model,
            logdensity_fn=logdensity_fn,
            step_size=step_size,
            target_accept_prob=target_accept_prob,
            init_strategy=init_strategy,
        )

    def settings(self) -> tuple:
        return (type(self).__name__, self.step_size, self.target_accept_prob)

    def step_fn(self, logdensity_fn):  # pragma: no cover - ensemble kernels have no per-chain step
        raise TypeError(f"{type(self).__name__} runs all chains at once: use it through MCMC")

    def check_chains(self, num_chains: int) -> None:
        """Raise a ValueError when ``num_chains`` is too few for this kernel."""
        if num_chains < self.min_chains:
            raise ValueError(
                f"{type(self).__name__} adapts from statistics across chains and needs "
                f"num_chains >= {self.min_chains}, got {num_chains} (it is meant for 64 to "
                "4096 chains; use NUTS for a few)"
            )


class EnsembleCarry(NamedTuple):
    """Everything carried between chunks of iterations; every leaf has the chain axis first.

    Attributes:
        state: the chains' ``HMCState`` (positions (num_chains, dim), ...).
        adapt: the kernel's own state (parameters, adaptation, persistent momenta).
        num_divergent_warmup: (num_chains,) int, divergent transitions during warmup.
        num_divergent: (num_chains,) int, divergent transitions while sampling.
        num_steps_warmup: (num_chains,) int, gradient evaluations during warmup.
    """

    state: hmc.HMCState
    adapt: Any
    num_divergent_warmup: Array
    num_divergent: Array
    num_steps_warmup: Array


class IterationResult(NamedTuple):
    """What :meth:`EnsembleProgram.iterate` returns for one iteration of all chains.

    Attributes:
        state: the new ``HMCState`` (batched).
        adapt: the new kernel state.
        acceptance_rate: (num_chains,) Metropolis acceptance probability.
        diverging: (num_chains,) bool.
        energy: (num_chains,) Hamiltonian of the new state.
        num_steps: (num_chains,) int32 gradient evaluations in the iteration.
    """

    state: hmc.HMCState
    adapt: Any
    acceptance_rate: Array
    diverging: Array
    energy: Array
    num_steps: Array


class EnsembleProgram:
    """``init`` / ``empty_draws`` / ``advance`` / ``finish`` over all chains at once.

    Subclasses implement :meth:`init_adapt`, :meth:`iterate` (one iteration of every chain,
    adapting when ``in_warmup``) and :meth:`sampling_parameters` (step size and inverse mass
    matrix reported per chain). Iteration ``i`` of chain ``c`` uses the key
    ``fold_in(chain_key[c], i)``, so the draws do not depend on chunking.
    """

    def __init__(self, template: LogDensity, kernel: EnsembleKernel, mcmc: MCMC):
        kernel.check_chains(mcmc.num_chains)
        self.template = template
        self.kernel = kernel
        self.num_chains = mcmc.num_chains
        self.num_warmup = mcmc.num_warmup
        self.num_samples = mcmc.num_samples
        self.thinning = mcmc.thinning
        self.total = self.num_warmup + self.num_samples * self.thinning

    def logdensity(self, data) -> LogDensity:
        return self.template.with_data_tree(data)

    # -- to implement
    def init_adapt(self, state: hmc.HMCState, ld, inverse_mass_diag) -> Any:
        """The kernel's state before the first iteration (no randomness: iteration 0 draws)."""
        raise NotImplementedError

    def iterate(self, keys: Array, carry: EnsembleCarry, ld, i: Array) -> IterationResult:
        raise NotImplementedError

    def sampling_parameters(self, adapt: Any) -> tuple[Array, Array]:
        """``(step_size (num_chains,), inverse_mass_matrix (num_chains, dim))``."""
        raise NotImplementedError

    # -- the program
    def init(self, positions: Array, data, inverse_mass_diag=None) -> EnsembleCarry:
        ld = self.logdensity(data)
        positions = jnp.asarray(positions)
        log_density, grad = jax.vmap(jax.value_and_grad(ld))(positions)
        state = hmc.HMCState(positions, log_density, grad)
        adapt = self.init_adapt(state, ld, inverse_mass_diag)
        zero = jnp.zeros(positions.shape[0], jnp.int32)
        return EnsembleCarry(state, adapt, zero, zero, zero)

    def empty_draws(self, positions: Array) -> Draws:
        c, n, d = positions.shape[0], self.num_samples, positions.shape[-1]
        f = positions.dtype
        return Draws(
            position=jnp.zeros((c, n, d), f),
            log_density=jnp.zeros((c, n), f),
            acceptance_rate=jnp.zeros((c, n), f),
            diverging=jnp.zeros((c, n), bool),
            energy=jnp.zeros((c, n), f),
            tree_depth=jnp.zeros((c, n), jnp.int32),
            num_steps=jnp.zeros((c, n), jnp.int32),
        )

    def advance(self, keys: Array, carry: EnsembleCarry, draws: Draws, data, start, n):
        """Run iterations ``start .. start + n - 1`` of every chain."""
        ld = self.logdensity(data)

        def body(i, c):
            carry, draws = c
            keys_i = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)
            in_warmup = i < self.num_warmup
            result = self.iterate(keys_i, carry, ld, i)
            diverging = result.diverging.astype(jnp.int32)
            j = jnp.maximum(i - self.num_warmup, 0) // self.thinning
            row = (
                result.state.position,
                result.state.log_density,
                result.acceptance_rate,
                result.diverging,
                result.energy,
                jnp.zeros_like(result.num_steps),
                result.num_steps,
            )
            draws = Draws(
                *(buf.at[:, j].set(x.astype(buf.dtype)) for buf, x in zip(draws, row, strict=True))
            )
            carry = EnsembleCarry(
                result.state,
                result.adapt,
                carry.num_divergent_warmup + jnp.where(in_warmup, diverging, 0),
                carry.num_divergent + jnp.where(in_warmup, 0, diverging),
                carry.num_steps_warmup + jnp.where(in_warmup, result.num_steps, 0),
            )
            return carry, draws

        return jax.lax.fori_loop(start, start + n, body, (carry, draws))

    def finish(self, carry: EnsembleCarry) -> SamplingState:
        step_size, inverse_mass = self.sampling_parameters(carry.adapt)
        return SamplingState(
            carry.state, step_size, inverse_mass, carry.num_divergent, carry.num_steps_warmup
        )


def leapfrog_steps(
    ld: Callable[[Array], Array],
    state: hmc.HMCState,
    momentum: Array,
    step_size: Array,
    inverse_mass_diag: Array,
    num_steps: Array,
) -> hmc.IntegratorState:
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
        return hmc.velocity_verlet(ld, m)(z, eps)

    step = jax.vmap(one)
    start = hmc.IntegratorState(state.position, momentum, state.log_density, state.grad)
    return jax.lax.fori_loop(0, num_steps, lambda _, z: step(z, step_size, imm), start)


def metropolis_energies(
    state: hmc.HMCState,
    momentum: Array,
    end: hmc.IntegratorState,
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
    delta = jnp.where(finite, hmc.energy_error(h0, h1), jnp.inf)
    return h0, h1, delta


def where_chains(mask: Array, a: Any, b: Any) -> Any:
    """Per chain ``a`` where ``mask (num_chains,)`` else ``b`` (pytrees with chain axis first)."""

    def pick(x, y):
        m = mask.reshape((-1,) + (1,) * (jnp.ndim(x) - 1))
        return jnp.where(m, x, y)

    return jax.tree.map(pick, a, b)


def initial_inverse_mass(state: hmc.HMCState, inverse_mass_diag: Array | None) -> Array:
    """A starting diagonal inverse mass matrix (dim,): the given one, else from the ensemble.

    Without one, the cross-chain variance of the initial positions when the chains are spread
    out, and ``1`` where they all start at the same value.
    """
    if inverse_mass_diag is not None:
        return jnp.asarray(inverse_mass_diag, state.position.dtype)
    var = chain_variance(state.position)
    return jnp.where(jnp.isfinite(var) & (var > 1e-10), var, 1.0)
