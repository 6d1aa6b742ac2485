"""Chain rescue during warmup, and the end-of-run check that the chains agree.

Every warmup in ppl (as in Stan, NumPyro, BlackJAX and nutpie) adapts each chain alone. A
chain that starts in a far region, or falls into a minor mode, can shrink its step size until
it never leaves; the run is then wasted, and the user finds out from R-hat afterwards. Here
the chains are compared at a few *checkpoints* during warmup (by default at 20%, 40%, 60%
and 80% of it; the chains of a run are advanced to each checkpoint together). A chain has fallen
away from the others when, over the iterations since the previous checkpoint (the
*window*):

- its log density is not finite, or its step size is not a positive finite number;
- its step size (geometric mean over the window) is below ``1 / step_size_ratio`` (1/20)
  of the median chain's;
- its mean log density is far below the median chain's: by more than
  ``max(log_density_gap, log_density_sds * s)`` nats (20 and 5 by default), where ``s`` is
  the median of the chains' within-window standard deviations of the log density (so a
  posterior whose log density swings widely, e.g. a funnel, needs a wider gap);
- its trees are much longer than the others': more than ``steps_ratio`` (8) times the
  median chain's mean leapfrog steps per iteration, and at least 64 of them; except for a
  chain the warmup itself reset during the window (nutpie's saturation reset, whose hold on
  the identity metric makes big trees by design: its own recovery, judged at the next
  checkpoint).

A chain so flagged is restarted from the state and the adaptation (step size, metric,
estimators) of a healthy chain, the one whose window mean log density is closest to the
healthy chains' median; its own random stream goes on, so the two chains part after a few
iterations. This happens only during warmup, so the draws are those of valid Markov chains;
a run where no chain is flagged gives exactly the draws of a run without checkpoints (each
iteration's key depends only on the chain and the iteration). At most half the chains (and at
least one chain short of all) are restarted at a checkpoint.

:func:`chain_disagreement` is the check after sampling: per coordinate of the unconstrained
draws, the ratio of the between-chain to the within-chain spread (the R-hat of the chain
means) and the gap between a chain's mean and the others' in Monte Carlo standard errors;
the sites whose coordinates differ most are named in a warning.

Shapes: per-chain statistics are ``(num_chains,)`` numpy arrays; draws are
``(num_chains, num_draws, dim)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ChainWarning",
    "Rescue",
    "RescueSettings",
    "WindowStats",
    "chain_disagreement",
    "check_iterations",
    "find_lost_chains",
    "window_init",
    "window_update",
]


class ChainWarning(UserWarning):
    """A chain was restarted during warmup, or the chains disagree after sampling."""


class RescueSettings(NamedTuple):
    """When a chain counts as fallen away from the others (see the module docstring).

    Attributes:
        checkpoints: fractions of warmup at which the chains are compared.
        step_size_ratio: a step size below the median chain's divided by this is collapsed.
        log_density_gap: the smallest gap (nats) below the median chain's mean log density
            that counts as far below.
        log_density_sds: the gap in units of the chains' median within-window sd of the log
            density, if that is larger.
        steps_ratio: mean leapfrog steps per iteration above this many times the median
            chain's count as saturated trees (with at least ``min_steps`` of them).
        min_steps: see ``steps_ratio``.
        min_warmup: runs with fewer warmup iterations have no checkpoints.
    """

    checkpoints: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    step_size_ratio: float = 20.0
    log_density_gap: float = 20.0
    log_density_sds: float = 5.0
    steps_ratio: float = 8.0
    min_steps: float = 64.0
    min_warmup: int = 100


@dataclass(frozen=True)
class Rescue:
    """One restart: ``chain`` (0-based) took ``donor``'s state at warmup ``iteration``."""

    chain: int
    iteration: int
    donor: int
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"chain {self.chain} was restarted from chain {self.donor}'s state at warmup "
            f"iteration {self.iteration}: {self.reason}"
        )


# ---------------------------------------------------------------------- in the program


class WindowStats(NamedTuple):
    """Per-chain sums over the warmup iterations since the last checkpoint.

    Attributes:
        count: iterations summed.
        log_density, log_density_sq: sums of the log density and of its square.
        steps: sum of leapfrog steps.
        log_step_size: sum of the log step sizes used (dual averaging's current step size
            swings widely from one iteration to the next; its window mean does not).
    """

    count: jax.Array
    log_density: jax.Array
    log_density_sq: jax.Array
    steps: jax.Array
    log_step_size: jax.Array


def window_init(lead_shape: tuple, dtype: Any) -> WindowStats:
    """Empty sums, shape ``lead_shape`` (``()`` for one chain)."""
    zero = jnp.zeros(lead_shape, dtype)
    return WindowStats(zero, zero, zero, zero, zero)


def window_update(
    window: WindowStats,
    log_density: jax.Array,
    num_steps: jax.Array,
    step_size: jax.Array,
    in_warmup: jax.Array,
) -> WindowStats:
    """Add one iteration (during warmup only; a non-finite log density adds a large negative
    value, so the chain's mean is far below)."""
    dtype = window.count.dtype
    lp = jnp.asarray(log_density, dtype)
    lp = jnp.where(jnp.isfinite(lp), lp, jnp.asarray(-1e30, dtype))
    w = jnp.asarray(in_warmup, dtype)
    log_step = jnp.log(jnp.asarray(step_size, dtype))
    log_step = jnp.where(jnp.isfinite(log_step), log_step, jnp.asarray(jnp.nan, dtype))
    return WindowStats(
        window.count + w,
        window.log_density + w * lp,
        window.log_density_sq + w * lp * lp,
        window.steps + w * jnp.asarray(num_steps, dtype),
        window.log_step_size + jnp.where(w > 0, log_step, 0.0),
    )


# ---------------------------------------------------------------------- on the host


def check_iterations(num_warmup: int, settings: RescueSettings) -> tuple[int, ...]:
    """The warmup iterations before which the chains are compared (sorted, within warmup)."""
    if num_warmup < settings.min_warmup:
        return ()
    points = {round(f * num_warmup) for f in settings.checkpoints}
    return tuple(sorted(p for p in points if 0 < p < num_warmup))


def find_lost_chains(
    window: WindowStats,
    settings: RescueSettings | None = None,
    recovering: np.ndarray | None = None,
) -> list[tuple[int, int, str]]:
    """The chains that fell away from the others, and a healthy donor for each.

    Args:
        window: the chains' :class:`WindowStats` as numpy arrays ``(num_chains,)``; the
            step size compared is each chain's geometric mean over the window.
        settings: the thresholds (default :class:`RescueSettings`).
        recovering: ``(num_chains,)`` bools, chains the warmup reset during the window
            (nutpie's saturation reset: trees on the identity metric for a while, by
            design); they are not judged by their trees' size, only by the other rules.

    Returns:
        ``[(chain, donor, reason)]``, empty when every chain is healthy (or fewer than two
        chains run).
    """
    settings = RescueSettings() if settings is None else settings
    count = np.maximum(np.asarray(window.count, np.float64), 1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        step_size = np.exp(np.asarray(window.log_step_size, np.float64) / count)
    num_chains = step_size.shape[0]
    if num_chains < 2:
        return []
    mean = np.asarray(window.log_density, np.float64) / count
    var = np.asarray(window.log_density_sq, np.float64) / count - mean**2
    sd = np.sqrt(np.maximum(var, 0.0))
    steps = np.asarray(window.steps, np.float64) / count
    finite_lp = np.isfinite(mean) & (mean > -1e29)
    finite_step = np.isfinite(step_size) & (step_size > 0)

    reasons: dict[int, str] = {}
    for c in range(num_chains):
        if not finite_lp[c]:
            reasons[c] = "its log density is not finite"
        elif not finite_step[c]:
            reasons[c] = f"its step size is {step_size[c]!r}"
    ok = finite_lp & finite_step
    if ok.sum() >= 1:
        median_step = float(np.median(step_size[ok]))
        median_lp = float(np.median(mean[ok]))
        spread = float(np.median(sd[ok]))
        gap = max(settings.log_density_gap, settings.log_density_sds * spread)
        median_steps = float(np.median(steps[ok]))
        for c in np.flatnonzero(ok):
            c = int(c)
            if step_size[c] * settings.step_size_ratio < median_step:
                reasons[c] = (
                    f"its step size {step_size[c]:.3g} collapsed to 1/"
                    f"{median_step / step_size[c]:.3g} of the median chain's {median_step:.3g}"
                )
            elif mean[c] < median_lp - gap:
                reasons[c] = (
                    f"its log density ({mean[c]:.4g} on average since the last check) is "
                    f"{median_lp - mean[c]:.3g} below the median chain's ({median_lp:.4g}; "
                    f"the chains' spread is {spread:.3g})"
                )
            elif (
                not (recovering is not None and recovering[c])
                and steps[c] >= settings.min_steps
                and steps[c] > settings.steps_ratio * max(median_steps, 1.0)
            ):
                reasons[c] = (
                    f"its trees took {steps[c]:.0f} leapfrog steps per iteration against the "
                    f"median chain's {median_steps:.0f}"
                )
    if not reasons:
        return []
    # never restart the majority: keep at most half (and at least one healthy chain)
    limit = min(num_chains // 2, num_chains - 1)
    if len(reasons) > limit:
        order = sorted(reasons, key=lambda c: (finite_lp[c], mean[c] if finite_lp[c] else 0.0))
        reasons = {c: reasons[c] for c in order[:limit]}
    healthy = [c for c in range(num_chains) if c not in reasons and ok[c]]
    if not healthy:
        return []
    centre = float(np.median(mean[healthy]))
    donor = min(healthy, key=lambda c: (abs(mean[c] - centre), c))
    return [(c, donor, reasons[c]) for c in sorted(reasons)]


def chain_disagreement(
    positions: np.ndarray,
    log_density: np.ndarray,
    coordinate_sites: list[str],
    threshold: float = 1.2,
    z_min: float = 5.0,
    top: int = 3,
    min_draws: int = 50,
) -> str | None:
    """A message naming the sites where the chains disagree, or ``None`` when they agree.

    A coordinate of the unconstrained draws (or the log density) counts when both

    - the R-hat of the chain means, ``sqrt((n-1)/n + B/(n W))`` with ``B/n`` the variance of
      the chain means and ``W`` the mean within-chain variance (Gelman & Rubin's, not split:
      it measures where the chains sit, not their trends), exceeds ``threshold``: a gross
      disagreement (1.2: fewer than ~3 effective draws per chain), the summary's
      rank-normalized split R-hat (1.01) judges the finer cases; and
    - some chain's mean is more than ``z_min`` Monte Carlo standard errors from the mean of
      the others' (standard errors from 10 batch means per chain), so that short runs of
      well-mixing chains are not flagged by chance.

    Args:
        positions: ``(num_chains, num_draws, dim)`` unconstrained draws.
        log_density: ``(num_chains, num_draws)``.
        coordinate_sites: the site of each of the ``dim`` coordinates.
        threshold: the R-hat above which the chains disagree.
        z_min: the separation, in standard errors, a chain's mean must also show.
        top: the most sites named.
        min_draws: runs with fewer draws per chain are not checked.
    """
    positions = np.asarray(positions, np.float64)
    num_chains, n = positions.shape[:2]
    if num_chains < 2 or n < min_draws:
        return None
    values = np.concatenate([positions, np.asarray(log_density, np.float64)[..., None]], -1)
    means = values.mean(axis=1)  # (chains, k)
    within = values.var(axis=1, ddof=1).mean(axis=0)
    between = means.var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rhat = np.sqrt((n - 1) / n + between / within)
        batches = 10
        size = n // batches
        batch_means = values[:, : size * batches].reshape(num_chains, batches, size, -1)
        batch_means = batch_means.mean(axis=2)
        se2 = batch_means.var(axis=1, ddof=1) / batches  # (chains, k)
        others = (means.sum(axis=0) - means) / (num_chains - 1)
        others_se2 = (se2.sum(axis=0) - se2) / (num_chains - 1) ** 2
        gap = np.abs(means - others)
        z = np.where(gap > 0, gap / np.sqrt(se2 + others_se2), 0.0).max(axis=0)
    # a coordinate constant within every chain but not across them is the strongest case
    rhat = np.where((within <= 0) & (between > 0), np.inf, rhat)
    rhat = np.where(np.isnan(rhat), 1.0, rhat)
    z = np.where(np.isnan(z), np.inf, z)
    flagged = (rhat > threshold) & (z > z_min)
    worst: dict[str, float] = {}
    for site, value, bad in zip([*coordinate_sites, "log density"], rhat, flagged, strict=True):
        if bad:
            worst[site] = max(worst.get(site, 0.0), float(value))
    if not worst:
        return None
    ranked = sorted(((v, s) for s, v in worst.items()), key=lambda t: (-t[0], t[1]))
    # which chains stand apart: mean log density more than 3 within-chain sds from the median
    lp_means = means[:, -1]
    lp_sd = math.sqrt(max(float(within[-1]), 1e-300))
    centre = np.median(lp_means)
    apart = [c for c in range(num_chains) if abs(lp_means[c] - centre) > 3 * lp_sd]
    named = ", ".join(
        f"'{s}' (R-hat {'inf' if math.isinf(v) else f'{v:.2f}'})" for v, s in ranked[:top]
    )
    more = f" and {len(ranked) - top} more" if len(ranked) > top else ""
    lp_text = ", ".join(f"chain {c}: {lp_means[c]:.4g}" for c in range(num_chains))
    apart_text = f" (chain {', '.join(map(str, apart))} far from the others)" if apart else ""
    return (
        f"the chains disagree: they sit in different regions for {named}{more}. Mean log "
        f"density per chain: {lp_text}{apart_text}. The posterior may have several modes, or "
        "the chains have not converged: run longer, start the chains elsewhere, or "
        "reparameterize; do not trust the summary as it stands."
    )
