"""``metric="auto"``: when the draws' correlations are worth the low-rank metric.

The driver (:class:`ppl.infer.driver.chains.ChainRun`) runs the diagonal view of nutpie's
warmup (:func:`ppl.infer.warmup.nutpie.nutpie_warmup` with ``metric="auto"``) and, at its
checkpoints after the early window, asks :func:`auto_wants_low_rank` of each chain's recent
draws (its low-rank buffer, read on the host); once a chain says yes the run goes on with the
low-rank view. Shapes: draws ``(rows, dim)``, weights and stamps ``(rows,)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "AUTO_GAIN",
    "AUTO_MAX_DIM",
    "AUTO_MIN_DRAWS",
    "auto_wants_low_rank",
    "correlation_excess",
]

#: the switch happens when the largest eigenvalue of the draws' correlation matrix exceeds
#: this many times the Marchenko-Pastur edge of pure noise
AUTO_GAIN = 4.0
#: ... judged from at least this many draws
AUTO_MIN_DRAWS = 40
#: ... and only for targets of at most this many dimensions (the buffer goes to the host)
AUTO_MAX_DIM = 4096


def correlation_excess(draws: Any, weights: Any, iterations: int = 20) -> float:
    """How far the draws' linear correlations stand above sampling noise: the largest
    eigenvalue of their correlation matrix divided by ``(1 + sqrt(dim / n))²``, the largest
    eigenvalue that ``n`` independent draws of uncorrelated coordinates show
    (Marchenko-Pastur). A float, computed on the host (numpy, float64).

    A diagonal metric leaves correlations in place; a large excess (a correlated Gaussian,
    a regression with collinear predictors) is what the low-rank metric removes. Couplings
    that are not linear (a horseshoe's scales, a funnel) show a small excess: there the
    low-rank estimate does not help and can hurt, and ``metric="auto"`` keeps the diagonal.
    The eigenvalue is exact for ``dim <= 256``; above, it comes from ``iterations`` power
    iterations (a Rayleigh quotient, a lower bound), ``O(iterations * rows * dim)``.

    Args:
        draws: ``(rows, dim)``.
        weights: ``(rows,)``, 0 or 1 (rows not in the estimate are 0).
    """
    draws = np.asarray(draws, np.float64)
    weights = np.asarray(weights, np.float64)
    keep = (weights > 0) & np.all(np.isfinite(draws), axis=1)
    x = draws[keep]
    n, dim = x.shape
    if n < 3:
        return 0.0
    z = x - x.mean(axis=0)
    sd = np.sqrt(np.mean(z**2, axis=0))
    z = np.where(sd > 0, z / np.where(sd > 0, sd, 1.0), 0.0)
    edge = (1.0 + math.sqrt(dim / n)) ** 2
    if dim <= 256:  # small: the exact eigenvalue costs less than the iterations
        largest = float(np.linalg.eigvalsh(z.T @ z / n)[-1])
        return largest / edge if math.isfinite(largest) else 0.0
    v = np.full(dim, 1.0 / math.sqrt(dim))
    for _ in range(iterations):
        v = z.T @ (z @ v) / n
        norm = np.linalg.norm(v)
        if not norm > 0:
            return 0.0
        v /= norm
    largest = float(np.sum((z @ v) ** 2) / n)
    return largest / edge if math.isfinite(largest) else 0.0


def auto_wants_low_rank(draws: Any, stamp: Any, weight: Any, since: int) -> bool:
    """Whether one chain's recent draws show correlations worth the low-rank metric: at least
    ``AUTO_MIN_DRAWS`` usable rows written at warmup iteration ``since`` or later, and
    :func:`correlation_excess` above ``AUTO_GAIN``.

    Args:
        draws: ``(rows, dim)``, the chain's low-rank buffer (host arrays).
        stamp: ``(rows,)``, the warmup iteration that wrote each row.
        weight: ``(rows,)``, 1 for a usable row, 0 otherwise.
        since: the first warmup iteration counted.
    """
    weights = np.asarray(weight) * (np.asarray(stamp) >= since)
    if weights.sum() < AUTO_MIN_DRAWS:
        return False
    return correlation_excess(draws, weights) > AUTO_GAIN
