"""Euclidean metrics: momentum sampling, kinetic energy and velocity for a Gaussian momentum.

The metric is given by the inverse mass matrix ``M⁻¹``: a 1-D array of shape ``(dim,)`` for a
diagonal metric or a 2-D array of shape ``(dim, dim)`` for a dense one. The choice is made
statically from ``inverse_mass_matrix.ndim``, so these functions jit and vmap unchanged.

Momentum is ``p ~ N(0, M)``, the kinetic energy is ``½ pᵀ M⁻¹ p`` and the velocity
(Betancourt's "sharp momentum") is ``p♯ = M⁻¹ p``.
"""

import jax
import jax.numpy as jnp
from jax import Array

__all__ = [
    "is_dense",
    "kinetic_energy",
    "momentum_factor",
    "sample_momentum",
    "velocity",
]


def is_dense(inverse_mass_matrix: Array) -> bool:
    """Whether an inverse mass matrix is dense (2-D) rather than diagonal (1-D).

    Args:
        inverse_mass_matrix: shape ``(dim,)`` or ``(dim, dim)``.

    Returns:
        A Python bool (static).
    """
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
        inverse_mass_matrix: shape ``(dim,)`` or ``(dim, dim)``.

    Returns:
        Shape ``(dim,)`` (diagonal: the momentum standard deviations ``sqrt(M)``) or
        ``(dim, dim)`` (dense: the lower Cholesky factor ``L`` of ``M⁻¹ = L Lᵀ``).
    """
    if is_dense(inverse_mass_matrix):
        return jnp.linalg.cholesky(inverse_mass_matrix)
    return jax.lax.rsqrt(inverse_mass_matrix)


def sample_momentum(
    key: Array, position: Array, inverse_mass_matrix: Array, factor: Array | None = None
) -> Array:
    """Draw a momentum ``p ~ N(0, M)`` with ``M = inv(M⁻¹)``.

    Dense case: with ``M⁻¹ = L Lᵀ`` we return ``p = L⁻ᵀ z``, ``z ~ N(0, I)``, whose covariance is
    ``L⁻ᵀ L⁻¹ = M``; no explicit inverse is formed.

    Args:
        key: a JAX PRNG key.
        position: shape ``(dim,)``; gives the shape and dtype of the momentum.
        inverse_mass_matrix: shape ``(dim,)`` or ``(dim, dim)``.
        factor: optional precomputed ``momentum_factor(inverse_mass_matrix)``.

    Returns:
        The momentum, shape ``(dim,)``.
    """
    if factor is None:
        factor = momentum_factor(inverse_mass_matrix)
    z = jax.random.normal(key, jnp.shape(position), dtype=jnp.result_type(position))
    if is_dense(inverse_mass_matrix):
        return jax.scipy.linalg.solve_triangular(factor, z, lower=True, trans="T")
    return factor * z


def velocity(momentum: Array, inverse_mass_matrix: Array) -> Array:
    """The velocity ``p♯ = M⁻¹ p``.

    Args:
        momentum: shape ``(dim,)``.
        inverse_mass_matrix: shape ``(dim,)`` or ``(dim, dim)``.

    Returns:
        Shape ``(dim,)``.
    """
    if is_dense(inverse_mass_matrix):
        return inverse_mass_matrix @ momentum
    return inverse_mass_matrix * momentum


def kinetic_energy(momentum: Array, inverse_mass_matrix: Array) -> Array:
    """The kinetic energy ``½ pᵀ M⁻¹ p``.

    Args:
        momentum: shape ``(dim,)``.
        inverse_mass_matrix: shape ``(dim,)`` or ``(dim, dim)``.

    Returns:
        A scalar.
    """
    return 0.5 * jnp.dot(momentum, velocity(momentum, inverse_mass_matrix))
