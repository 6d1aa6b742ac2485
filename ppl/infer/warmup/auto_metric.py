"""``metric="auto"``: when the draws' correlations are worth the low-rank metric.

The diagonal view of nutpie's warmup (:func:`ppl.infer.warmup.nutpie.nutpie_warmup` with
``metric="auto"``) judges each chain's recent draws (its low-rank buffer) with
:func:`auto_wants_low_rank` at the warmup iterations :func:`judge_iterations` gives, inside
the compiled loop, and keeps the answer in its state. The driver
(:class:`ppl.infer.driver.chains.ChainRun`) stops the chains right after those iterations,
reads one bool per chain, and once a chain says yes goes on with the low-rank view.
Shapes: draws ``(rows, dim)``, weights and stamps ``(rows,)``.

Everything here is JAX, computed where the chain runs. A first version computed on the
host with numpy between chunks: its matrix products and eigenvalues went to the
multi-threaded BLAS, whose idle threads spin on the cores the chains' threads sample on (on
a 2-core machine, eight schools and a 100-d Gaussian ran 1.5x slower).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

__all__ = [
    "AUTO_GAIN",
    "AUTO_MAX_DIM",
    "AUTO_MIN_DRAWS",
    "JUDGE_FRACTIONS",
    "auto_wants_low_rank",
    "correlation_excess",
    "judge_iterations",
]

#: the switch happens when the largest eigenvalue of the draws' correlation matrix exceeds
#: this many times the Marchenko-Pastur edge of pure noise
AUTO_GAIN = 4.0
#: ... judged from at least this many draws
AUTO_MIN_DRAWS = 40
#: ... and only for targets of at most this many dimensions
AUTO_MAX_DIM = 4096
#: the fractions of warmup after which the draws are judged (as chain rescue's default
#: checkpoints, so that the chains stop together once for both)
JUDGE_FRACTIONS = (0.4, 0.6, 0.8)
#: power iterations for the largest eigenvalue
POWER_ITERATIONS = 48
#: the correlation matrix is formed (``dim²`` memory) up to this dimension; above, each
#: power iteration multiplies by the standardized draws twice
DENSE_MAX_DIM = 256


def _start_vector(dim: int, dtype: Any) -> Array:
    """A fixed unit vector with no special symmetry (so that it is not orthogonal to the
    leading eigenvector of a structured correlation, as the all-ones vector is to that of
    two anti-correlated coordinates)."""
    v = np.cos(1.0 + 2.399963 * np.arange(dim)) + 0.5 * np.sin(0.7 * np.arange(dim) ** 1.5)
    return jnp.asarray(v / np.linalg.norm(v), dtype)


def correlation_excess(draws: Any, weights: Any) -> Array:
    """How far the draws' linear correlations stand above sampling noise: the largest
    eigenvalue of their correlation matrix divided by ``(1 + sqrt(dim / n))²``, the largest
    eigenvalue that ``n`` independent draws of uncorrelated coordinates show
    (Marchenko-Pastur). A ``()`` array; jittable and vmappable.

    A diagonal metric leaves correlations in place; a large excess (a correlated Gaussian,
    a regression with collinear predictors) is what the low-rank metric removes. Couplings
    that are not linear (a horseshoe's scales, a funnel) show a small excess: there the
    low-rank estimate does not help and can hurt, and ``metric="auto"`` keeps the diagonal.
    The eigenvalue comes from ``POWER_ITERATIONS`` power iterations and its Rayleigh
    quotient (a lower bound, whose error shrinks as ``(λ₂/λ₁)^(2k)``), ``O(k dim²)`` up to
    ``DENSE_MAX_DIM`` dimensions and ``O(k rows dim)`` above.

    Args:
        draws: ``(rows, dim)``.
        weights: ``(rows,)``, 0 or 1 (rows not in the estimate are 0). Rows with a
            non-finite value do not count either. Fewer than 3 rows give 0.
    """
    x = jnp.asarray(draws)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    dim = x.shape[1]
    keep = (jnp.asarray(weights) > 0) & jnp.all(jnp.isfinite(x), axis=1)
    w = keep.astype(x.dtype)
    x = jnp.where(keep[:, None], x, 0.0)
    n = jnp.sum(w)
    safe_n = jnp.maximum(n, 1.0)
    mean = jnp.sum(x * w[:, None], axis=0) / safe_n
    z = (x - mean) * w[:, None]
    sd = jnp.sqrt(jnp.sum(z**2, axis=0) / safe_n)
    z = jnp.where(sd > 0, z / jnp.where(sd > 0, sd, 1.0), 0.0)
    if dim <= DENSE_MAX_DIM:
        corr = z.T @ z / safe_n

        def multiply(v: Array) -> Array:
            return corr @ v
    else:

        def multiply(v: Array) -> Array:
            return z.T @ (z @ v) / safe_n

    def power(_, v: Array) -> Array:
        u = multiply(v)
        norm = jnp.linalg.norm(u)
        return jnp.where(norm > 0, u / jnp.where(norm > 0, norm, 1.0), v)

    v = jax.lax.fori_loop(0, POWER_ITERATIONS, power, _start_vector(dim, x.dtype))
    largest = v @ multiply(v)
    edge = (1.0 + jnp.sqrt(dim / safe_n)) ** 2
    excess = largest / edge
    return jnp.where((n >= 3) & jnp.isfinite(excess), excess, 0.0)


def auto_wants_low_rank(draws: Any, stamp: Any, weight: Any, since: Any) -> Array:
    """Whether one chain's recent draws show correlations worth the low-rank metric: at least
    ``AUTO_MIN_DRAWS`` usable rows written at warmup iteration ``since`` or later, and
    :func:`correlation_excess` above ``AUTO_GAIN``. A ``()`` bool array; jittable.

    Args:
        draws: ``(rows, dim)``, the chain's low-rank buffer.
        stamp: ``(rows,)``, the warmup iteration that wrote each row.
        weight: ``(rows,)``, 1 for a usable row, 0 otherwise.
        since: the first warmup iteration counted.
    """
    weights = jnp.asarray(weight) * (jnp.asarray(stamp) >= since)
    enough = jnp.sum(weights > 0) >= AUTO_MIN_DRAWS
    return enough & (correlation_excess(draws, weights) > AUTO_GAIN)


def judge_iterations(num_warmup: int, since: int) -> tuple[int, ...]:
    """The warmup iterations after which ``metric="auto"`` judges the draws: at the
    :data:`JUDGE_FRACTIONS` of ``num_warmup`` (rounded, as chain rescue's checkpoints are),
    once at least ``AUTO_MIN_DRAWS`` iterations after ``since`` (the early window's end) and
    before the end of warmup. The driver stops the chains after each (iteration + 1)."""
    points = {round(f * num_warmup) - 1 for f in JUDGE_FRACTIONS}
    return tuple(
        sorted(p for p in points if p + 1 - since >= AUTO_MIN_DRAWS and p + 1 < num_warmup)
    )
