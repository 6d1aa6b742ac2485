"""Running estimators of draws and their gradients, and the diagonal metrics made from them.

nutpie's warmup (:mod:`ppl.infer.warmup.nutpie`) keeps two of these estimators (foreground and
background) and sets the diagonal inverse mass matrix from them after every draw:
:func:`grad_diagonal` is nutpie's ``sqrt(Var(x) / Var(∇log π))``, :func:`bounded_diagonal`
raises it where the draws' own variance says it is far too small, :func:`initial_diagonal` is
the start before any draw. Shapes: positions and gradients ``(dim,)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jax import Array

from ppl.infer.warmup.low_rank import DIAG_MAX, DIAG_MIN

__all__ = [
    "DrawGradStats",
    "bounded_diagonal",
    "grad_diagonal",
    "initial_diagonal",
    "stats_init",
    "stats_update",
]


# --------------------------------------------------------------------------------------------
# Running estimators of draws and gradients
# --------------------------------------------------------------------------------------------


class DrawGradStats(NamedTuple):
    """Weighted Welford estimators of the draws' and the gradients' per-coordinate variance.

    Attributes:
        count: scalar, the sum of the weights (the number of draws taken).
        mean_x, m2_x: ``(dim,)`` mean and sum of squared deviations of the draws.
        mean_g, m2_g: ``(dim,)`` the same for the gradients.
    """

    count: Array
    mean_x: Array
    m2_x: Array
    mean_g: Array
    m2_g: Array


def stats_init(dim: int, dtype: Any) -> DrawGradStats:
    """Empty estimators for ``dim`` coordinates."""
    zero = jnp.zeros(dim, dtype)
    return DrawGradStats(jnp.zeros((), dtype), zero, zero, zero, zero)


def stats_update(stats: DrawGradStats, x: Array, g: Array, weight: Array) -> DrawGradStats:
    """Add a draw ``x (dim,)`` and its gradient ``g (dim,)`` with ``weight`` 0 or 1.

    A zero weight (e.g. a divergent transition, or a non-finite gradient) leaves the estimators
    unchanged.
    """
    weight = jnp.asarray(weight, stats.count.dtype) * (
        jnp.all(jnp.isfinite(x)) & jnp.all(jnp.isfinite(g))
    )
    x = jnp.where(weight > 0, x, stats.mean_x)
    g = jnp.where(weight > 0, g, stats.mean_g)
    count = stats.count + weight
    frac = jnp.where(count > 0, weight / jnp.maximum(count, 1.0), 0.0)
    dx = x - stats.mean_x
    dg = g - stats.mean_g
    mean_x = stats.mean_x + frac * dx
    mean_g = stats.mean_g + frac * dg
    return DrawGradStats(
        count,
        mean_x,
        stats.m2_x + weight * dx * (x - mean_x),
        mean_g,
        stats.m2_g + weight * dg * (g - mean_g),
    )


def grad_diagonal(stats: DrawGradStats) -> Array:
    """nutpie's diagonal inverse mass matrix ``sqrt(Var(x) / Var(g))``, shape ``(dim,)``.

    Coordinates where the ratio is not a positive finite number (e.g. a coordinate that never
    moved and whose gradient never changed) get 1; the rest are clipped to ``[1e-20, 1e20]``.
    """
    ratio = jnp.sqrt(stats.m2_x / stats.m2_g)
    ratio = jnp.where(jnp.isfinite(ratio) & (ratio > 0), ratio, 1.0)
    return jnp.clip(ratio, DIAG_MIN, DIAG_MAX)


def bounded_diagonal(stats: DrawGradStats, max_scaled_variance: float = 2.0) -> Array:
    """:func:`grad_diagonal` raised where needed so that no coordinate's preconditioned
    variance exceeds ``max_scaled_variance``: ``max(sqrt(Var(x) / Var(g)), Var(x) / k)``,
    shape ``(dim,)``, with ``Var(x) = m2_x / (n - 1)`` and ``k = max_scaled_variance``.

    For any smooth density, ``E[(x_i - μ_i) ∂_i log π] = -1`` gives ``Var(x_i) Var(g_i) ≥ 1``
    (Cauchy-Schwarz), so ``1/Var(g_i) ≤ sqrt(Var(x_i)/Var(g_i)) ≤ Var(x_i)``, with equality
    only for a coordinate that is Gaussian and independent of the rest: there the two
    estimates agree and the gradient-based one, exact from two draws, is kept. Where a
    coordinate is strongly tied to others (a hierarchical scale such as a horseshoe's global
    and local scales, whose products the data pin down) the gradient-based estimate falls far
    below the marginal variance, and the preconditioned posterior is *wider* than its bulk
    along that coordinate by ``sqrt(Var(x) Var(g))`` (about 50 for the horseshoe's global
    scale). NUTS's trajectories stop on the U-turn of the bulk, so they would cross such a
    direction only in a random walk; bounding the preconditioned marginal variance by ``k``
    (Stan's draw variance is ``k = 1`` everywhere) leaves narrow directions, which cost a
    smaller step but no random walk.
    """
    var_x = stats.m2_x / jnp.maximum(stats.count - 1.0, 1.0)
    bound = jnp.where(jnp.isfinite(var_x), var_x / max_scaled_variance, 0.0)
    return jnp.clip(jnp.maximum(grad_diagonal(stats), bound), DIAG_MIN, DIAG_MAX)


def initial_diagonal(grad: Array) -> Array:
    """The inverse mass diagonal before any draw: ``1/|∇log π(x₀)|`` (1 where that is not finite
    and positive), clipped to ``[1e-20, 1e20]``. Shape ``(dim,)``."""
    inv = 1.0 / jnp.abs(grad)
    inv = jnp.where(jnp.isfinite(inv) & (inv > 0), inv, 1.0)
    return jnp.clip(inv, DIAG_MIN, DIAG_MAX)
