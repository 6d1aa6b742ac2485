"""The PSIS-LOO check of a run (see :mod:`ppl.report.checks`).

PSIS-LOO of the first observed site's pointwise log-likelihood: ``arviz_stats.loo`` for up
to :data:`LOO_VECTORIZED_FROM` observations, beyond that the same arithmetic vectorized over
observations (:func:`ppl.runs.loo.loo_elpd_data`). Pareto k above the threshold, or a k
that could not be fitted, warns; a run that left its log-likelihood out on purpose
(``ppl sample --pointwise``) gets an "info" finding naming ``ppl loo RUN``.
"""

from __future__ import annotations

import json

import numpy as np

from ppl.report.checks import Assessment, Finding, Thresholds

__all__ = ["LOO_VECTORIZED_FROM", "check_loo"]

#: above this many observations the LOO check uses ppl's vectorized PSIS-LOO (the same
#: numbers as arviz_stats.loo, which fits one observation at a time: ~1 ms each)
LOO_VECTORIZED_FROM = 2000


def check_loo(out: Assessment, tree, thresholds: Thresholds, findings) -> None:
    """Add the PSIS-LOO finding to ``findings`` and the result to ``out.loo``."""
    if "log_likelihood" not in tree.children or not tree["log_likelihood"].data_vars:
        _note_skipped_loo(out, tree, findings)
        return
    import warnings

    import arviz_stats

    group = tree["log_likelihood"].to_dataset()
    # loo needs one variable: the first observed site
    var_name = next(iter(group.data_vars)) if len(group.data_vars) > 1 else None
    num_obs = group[var_name or next(iter(group.data_vars))].size // max(
        out.num_chains * out.num_draws, 1
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if num_obs > LOO_VECTORIZED_FROM:
                from ppl.runs.loo import loo_elpd_data, relative_efficiency

                name = var_name or next(iter(group.data_vars))
                loo = loo_elpd_data(group[name], relative_efficiency(tree["posterior"]))
            else:
                loo = arviz_stats.loo(tree, pointwise=True, var_name=var_name)
    except Exception as err:  # report the failure, do not hide the rest of the report
        out.loo_error = f"{type(err).__name__}: {err}"
        findings.append(Finding("warn", "PSIS-LOO", f"PSIS-LOO failed: {out.loo_error}"))
        return
    out.loo = loo
    k = np.asarray(loo.pareto_k).reshape(-1)
    unfit = int((~np.isfinite(k)).sum())
    bad = int((k > thresholds.pareto_k_max).sum())
    if bad or unfit:
        largest = f"largest {np.nanmax(k):.2f}" if unfit < k.size else "no k could be fitted"
        parts = []
        if bad:
            parts.append(f"Pareto k above {thresholds.pareto_k_max} for {bad}")
        if unfit:
            parts.append(f"no Pareto k could be fitted for {unfit}")
        findings.append(
            Finding(
                "warn",
                "PSIS-LOO",
                f"{' and '.join(parts)} of {k.size} observations ({largest}): the PSIS-LOO "
                "estimate is unreliable and those observations are highly influential (or "
                "their log-likelihood is too coarse: too few draws, float32 ties); check "
                "them or the model",
            )
        )
    else:
        findings.append(
            Finding(
                "ok",
                "PSIS-LOO",
                f"Pareto k ≤ {thresholds.pareto_k_max} for all {k.size} observations "
                f"(elpd_loo {float(loo.elpd):.1f} ± {float(loo.se):.1f})",
            )
        )


def _note_skipped_loo(out: Assessment, tree, findings) -> None:
    """An "info" finding when the run left its pointwise log-likelihood out on purpose."""
    text = tree.attrs.get("ppl_pointwise_skipped")
    try:
        skipped = json.loads(str(text)) if text else {}
    except ValueError:
        skipped = {}
    reason = skipped.get("log_likelihood") if isinstance(skipped, dict) else None
    if not reason:
        return
    sizes = f"{reason.get('draws', '?')} draws x {reason.get('observed_values', '?')} observations"
    why = "--pointwise never" if reason.get("limit") == 0 else "over the size limit"
    out.loo_skipped = (
        f"not computed: the run did not store the pointwise log-likelihood ({sizes}, {why}); "
        "`ppl loo RUN` computes PSIS-LOO in bounded memory"
    )
    findings.append(Finding("info", "PSIS-LOO", out.loo_skipped))
