"""Pareto-smoothed importance sampling (PSIS) of draws from an approximation.

:func:`psis` smooths the importance ratios ``log p - log q`` of draws from an approximation
``q`` (Pathfinder's normal approximations, an ADVI guide) and returns the Pareto k that says
whether the draws can stand in for posterior draws. The Pareto fit is arviz-stats';
:mod:`ppl.infer.vi.pathfinder` and the command line's ADVI pipeline (:mod:`ppl.runs`) use it.
"""

import math
import warnings
from typing import Any

import numpy as np

__all__ = ["PARETO_K_THRESHOLD", "PSIS_MIN_DRAWS", "psis"]

PARETO_K_THRESHOLD = 0.7
"""Above this Pareto k the importance weights have too heavy a tail to trust."""
PSIS_MIN_DRAWS = 25  # arviz-stats fits the tail to min(n / 5, 3 sqrt(n)) >= 5 draws


def psis(log_ratios: Any) -> tuple[np.ndarray, float]:
    """Pareto-smoothed importance sampling (Vehtari et al., 2024) of a set of draws.

    The largest ``min(n / 5, 3 sqrt(n))`` importance ratios are replaced by the expected
    order statistics of a generalized Pareto distribution fitted to them (arviz-stats'
    ``psislw``). Draws whose log ratio is -inf or nan get weight zero and take no part in
    the fit. If all finite ratios are equal (an exact approximation) the weights are
    uniform and k is -inf.

    Args:
        log_ratios: ``log p(x) - log q(x)`` for draws ``x ~ q``, shape (n,), with at least
            :data:`PSIS_MIN_DRAWS` (25) finite values (the tail fit needs 5 draws).

    Returns:
        ``(log_weights, k)``: smoothed log weights normalised to sum (in exp) to 1, shape
        (n,), and the Pareto k diagnostic (k < 0.5: reliable; 0.5 to 0.7: usable;
        above 0.7: the importance weights have too heavy a tail to trust).

    Raises:
        ValueError: fewer than 25 finite log ratios, or a tail too flat to fit.
    """
    from arviz_stats.base import array_stats

    lr = np.asarray(log_ratios, dtype=np.float64).reshape(-1)
    usable = np.isfinite(lr)
    n_usable = int(usable.sum())
    if n_usable < PSIS_MIN_DRAWS:
        raise ValueError(
            f"PSIS needs at least {PSIS_MIN_DRAWS} draws with a finite log importance ratio, "
            f"got {n_usable} of {lr.size}"
        )
    out = np.full(lr.shape, -np.inf)
    kept = lr[usable]
    spread = np.ptp(kept)
    if spread <= 1e-8 * max(1.0, float(np.abs(kept).max())):
        out[usable] = -math.log(n_usable)
        return out, -math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # arviz-stats takes the negated ratios (its LOO convention: log-likelihoods)
        log_weights, k = array_stats.psislw(-kept)
    out[usable] = log_weights
    return out, float(k)
