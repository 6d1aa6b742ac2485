"""Statistics across chains, for the warmups that adapt from the whole ensemble (ChEES, MEADS).

Arrays here have the chain axis first: ``(num_chains, ...)``. An ensemble warmup keeps its
shared state replicated once per chain (:func:`replicate`, :func:`shared`) so that the carry
can be sharded along the chains like the positions; the means then become all-reduces under
``jit``. :mod:`ppl.infer.warmup.chees` and :mod:`ppl.infer.warmup.meads` use these.
"""

from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

__all__ = [
    "chain_mean",
    "chain_variance",
    "initial_inverse_mass",
    "max_eigenvalue",
    "replicate",
    "shared",
]

_TINY = 1e-30


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


def initial_inverse_mass(positions: Array, inverse_mass_diag: Array | None) -> Array:
    """A starting diagonal inverse mass matrix (dim,): the given one, else from the ensemble.

    Without one, the cross-chain variance of the initial positions when the chains are spread
    out, and ``1`` where they all start at the same value.
    """
    if inverse_mass_diag is not None:
        return jnp.asarray(inverse_mass_diag, positions.dtype)
    var = chain_variance(positions)
    return jnp.where(jnp.isfinite(var) & (var > 1e-10), var, 1.0)
