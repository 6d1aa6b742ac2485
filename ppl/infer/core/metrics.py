"""Euclidean metrics: momentum sampling, kinetic energy and velocity for a Gaussian momentum.

The metric is given by the inverse mass matrix ``M⁻¹`` in one of three forms:

- a 1-D array of shape ``(dim,)``: diagonal;
- a 2-D array of shape ``(dim, dim)``: dense;
- a :class:`LowRankInverseMass`: diagonal plus a low-rank correction,
  ``M⁻¹ = S (I + U (Λ - I) Uᵀ) S`` with ``S = diag(scale)`` (nutpie's low-rank modified metric).

The form is chosen statically (array ``ndim`` or pytree type), so these functions jit and vmap
unchanged. The integrator (:mod:`ppl.infer.core.integrators`), the kernels
(:mod:`ppl.infer.kernels`) and the step-size heuristic use them; the warmups
(:mod:`ppl.infer.warmup`) estimate the matrices.

Momentum is ``p ~ N(0, M)``, the kinetic energy is ``½ pᵀ M⁻¹ p`` and the velocity
(Betancourt's "sharp momentum") is ``p♯ = M⁻¹ p``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

__all__ = [
    "LowRankInverseMass",
    "is_dense",
    "is_diagonal",
    "low_rank_to_dense",
    "kinetic_energy",
    "momentum_factor",
    "sample_momentum",
    "velocity",
]


class LowRankInverseMass(NamedTuple):
    """A diagonal-plus-low-rank inverse mass matrix ``M⁻¹ = S (I + U (Λ - I) Uᵀ) S``.

    ``S = diag(scale)`` rescales each coordinate; in the rescaled space the metric is the identity
    except along the orthonormal directions ``U``, where it is ``Λ``. A direction with ``λ = 1``
    is inert, so unused slots of a fixed-rank representation hold ``λ = 1``.

    Attributes:
        scale: shape ``(dim,)``, positive: ``sqrt`` of the diagonal part of ``M⁻¹``.
        vectors: shape ``(dim, rank)``, orthonormal columns ``U``.
        values: shape ``(rank,)``, positive eigenvalues ``Λ`` (in the rescaled space).
    """

    scale: Array
    vectors: Array
    values: Array


def low_rank_to_dense(metric: LowRankInverseMass) -> Array:
    """The ``(dim, dim)`` matrix ``S (I + U (Λ - I) Uᵀ) S`` (for tests and reporting)."""
    u = metric.vectors
    inner = jnp.eye(u.shape[0], dtype=u.dtype) + (u * (metric.values - 1.0)) @ u.T
    return metric.scale[:, None] * inner * metric.scale[None, :]


def is_diagonal(inverse_mass_matrix) -> bool:
    """Whether an inverse mass matrix is diagonal (a 1-D array); static."""
    return not isinstance(inverse_mass_matrix, LowRankInverseMass) and not is_dense(
        inverse_mass_matrix
    )


def is_dense(inverse_mass_matrix: Array) -> bool:
    """Whether an inverse mass matrix is dense (2-D) rather than diagonal (1-D) or low-rank.

    Args:
        inverse_mass_matrix: shape ``(dim,)`` or ``(dim, dim)``, or a ``LowRankInverseMass``.

    Returns:
        A Python bool (static).
    """
    if isinstance(inverse_mass_matrix, LowRankInverseMass):
        return False
    ndim = jnp.ndim(inverse_mass_matrix)
    if ndim not in (1, 2):
        raise ValueError(
            "inverse_mass_matrix must be 1-D (diagonal, shape (dim,)) or 2-D (dense, "
            f"shape (dim, dim)); got an array of shape {jnp.shape(inverse_mass_matrix)}."
        )
    return ndim == 2


def momentum_factor(inverse_mass_matrix: Array) -> Array:
    """The factor used to draw momenta: ``1/sqrt(M⁻¹)`` (diagonal) or ``chol(M⁻¹)`` (dense).

    Computing it once and passing it to ``sample_momentum`` avoids a Cholesky per draw.

    Args:
        inverse_mass_matrix: shape ``(dim,)`` or ``(dim, dim)``, or a ``LowRankInverseMass``.

    Returns:
        Shape ``(dim,)`` (diagonal: the momentum standard deviations ``sqrt(M)``) or
        ``(dim, dim)`` (dense: the lower Cholesky factor ``L`` of ``M⁻¹ = L Lᵀ``); for a
        ``LowRankInverseMass``, the tuple ``(1/scale, Λ^(-1/2) - 1)``.
    """
    if isinstance(inverse_mass_matrix, LowRankInverseMass):
        return (1.0 / inverse_mass_matrix.scale, jax.lax.rsqrt(inverse_mass_matrix.values) - 1.0)
    if is_dense(inverse_mass_matrix):
        return jnp.linalg.cholesky(inverse_mass_matrix)
    return jax.lax.rsqrt(inverse_mass_matrix)


def sample_momentum(
    key: Array, position: Array, inverse_mass_matrix: Array, factor: Array | None = None
) -> Array:
    """Draw a momentum ``p ~ N(0, M)`` with ``M = inv(M⁻¹)``.

    Dense case: with ``M⁻¹ = L Lᵀ`` we return ``p = L⁻ᵀ z``, ``z ~ N(0, I)``, whose covariance is
    ``L⁻ᵀ L⁻¹ = M``; no explicit inverse is formed. Low-rank case: ``p = S⁻¹ (z + U (Λ^(-1/2) - 1)
    Uᵀ z)``, whose covariance is ``S⁻¹ (I + U (Λ⁻¹ - I) Uᵀ) S⁻¹ = M``.

    Args:
        key: a JAX PRNG key.
        position: shape ``(dim,)``; gives the shape and dtype of the momentum.
        inverse_mass_matrix: shape ``(dim,)`` or ``(dim, dim)``, or a ``LowRankInverseMass``.
        factor: optional precomputed ``momentum_factor(inverse_mass_matrix)``.

    Returns:
        The momentum, shape ``(dim,)``.
    """
    if factor is None:
        factor = momentum_factor(inverse_mass_matrix)
    z = jax.random.normal(key, jnp.shape(position), dtype=jnp.result_type(position))
    if isinstance(inverse_mass_matrix, LowRankInverseMass):
        inv_scale, shrink = factor
        u = inverse_mass_matrix.vectors
        return inv_scale * (z + u @ (shrink * (u.T @ z)))
    if is_dense(inverse_mass_matrix):
        return jax.scipy.linalg.solve_triangular(factor, z, lower=True, trans="T")
    return factor * z


def velocity(momentum: Array, inverse_mass_matrix: Array) -> Array:
    """The velocity ``p♯ = M⁻¹ p``.

    Args:
        momentum: shape ``(dim,)``.
        inverse_mass_matrix: shape ``(dim,)`` or ``(dim, dim)``, or a ``LowRankInverseMass``.

    Returns:
        Shape ``(dim,)``.
    """
    if isinstance(inverse_mass_matrix, LowRankInverseMass):
        scale, u = inverse_mass_matrix.scale, inverse_mass_matrix.vectors
        w = scale * momentum
        return scale * (w + u @ ((inverse_mass_matrix.values - 1.0) * (u.T @ w)))
    if is_dense(inverse_mass_matrix):
        return inverse_mass_matrix @ momentum
    return inverse_mass_matrix * momentum


def kinetic_energy(momentum: Array, inverse_mass_matrix: Array) -> Array:
    """The kinetic energy ``½ pᵀ M⁻¹ p``.

    Args:
        momentum: shape ``(dim,)``.
        inverse_mass_matrix: shape ``(dim,)`` or ``(dim, dim)``, or a ``LowRankInverseMass``.

    Returns:
        A scalar.
    """
    return 0.5 * jnp.dot(momentum, velocity(momentum, inverse_mass_matrix))
