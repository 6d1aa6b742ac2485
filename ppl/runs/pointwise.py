"""A run's pointwise groups (log_likelihood, posterior_predictive) under ``--pointwise``.

:func:`add_log_likelihood` and :func:`add_posterior_predictive` add them to a run's DataTree
a block of draws at a time (:mod:`ppl.infer.results.pointwise`), or note in the root
attribute ``ppl_pointwise_skipped`` why they were left out: under ``--pointwise auto`` (the
default) a group of more than :data:`~ppl.infer.results.pointwise.POINTWISE_MAX_VALUES`
values (draws x observed values), under ``--pointwise never`` every one.
:func:`skipped_note` words that for the command line.
"""

from __future__ import annotations

import sys

from ppl.infer.results.pointwise import (
    POINTWISE_MAX_VALUES,
    POINTWISE_MODES,
    SKIPPED_ATTR,
    pointwise_log_likelihood,
    pointwise_policy,
    pointwise_posterior_predictive,
    record_skip,
    skip_reason,
    skipped_groups,
)

__all__ = [
    "POINTWISE_MAX_VALUES",
    "POINTWISE_MODES",
    "SKIPPED_ATTR",
    "add_log_likelihood",
    "add_posterior_predictive",
    "pointwise_policy",
    "skipped_groups",
    "skipped_note",
]


def _num_draws(latent: dict) -> int:
    shape = next(iter(latent.values())).shape if latent else (1, 1)
    return int(shape[0]) * int(shape[1])


def add_log_likelihood(tree, ld, latent: dict, dims=None, coords=None) -> None:
    """Add ``log_likelihood`` (``latent``: ``site -> (chain, draw, ...)``), or note why not."""
    from ppl.infer.results.datatree import add_group

    reason = skip_reason(ld, "log_likelihood", _num_draws(latent))
    if reason is not None:
        record_skip(tree, "log_likelihood", reason)
        return
    add_group(tree, "log_likelihood", pointwise_log_likelihood(ld, latent), ld, dims, coords)


def add_posterior_predictive(
    tree, ld, latent: dict, observed: list[str], key, dims=None, coords=None, progress=False
) -> None:
    """Add ``posterior_predictive`` (replicated ``observed`` sites), or note why not."""
    from ppl.infer.results.datatree import add_group

    reason = skip_reason(ld, "posterior_predictive", _num_draws(latent))
    if reason is not None:
        record_skip(tree, "posterior_predictive", reason)
        return
    if progress:
        print("posterior predictive draws ...", file=sys.stderr, flush=True)
    draws = pointwise_posterior_predictive(ld, latent, observed, key)
    add_group(tree, "posterior_predictive", draws, ld, dims, coords)


def skipped_note(tree, run: str = "RUN") -> str | None:
    """One line saying which pointwise groups the run left out and how to get them, or
    None when none was."""
    skipped = skipped_groups(tree)
    if not skipped:
        return None
    first = next(iter(skipped.values()))
    why = (
        "--pointwise never"
        if first.get("limit") == 0
        else f"{first.get('draws', 0)} draws x {first.get('observed_values', 0)} observed "
        f"values exceed the limit of {float(first.get('limit', 0)):.3g} values"
    )
    return (
        f"ppl: not stored: {' and '.join(sorted(skipped))} ({why}); PSIS-LOO: ppl loo {run}; "
        "to store them anyway: ppl sample ... --pointwise always"
    )
