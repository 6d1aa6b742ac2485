"""The diagnostics report: a run's DataTree in, one self-contained HTML file out.

:func:`write_report` (and :func:`render_report`, which returns the HTML text) show a
verdict banner in plain language (trust / look closer / do not trust, with the reasons),
the run's settings and timing, the summary table (mean, sd, HDI, bulk and tail ESS,
R-hat, MCSE) with flagged rows highlighted, divergences with a pair plot of where they
occur, tree-depth saturation, the energy plot with E-BFMI per chain, trace and rank
plots, a posterior predictive check, PSIS-LOO with Pareto k, and for variational runs
the loss curve and Pareto k. :func:`assess` gives the verdict and the numbers alone.

Numbers come from arviz-stats, figures from arviz-plots on matplotlib (Agg), embedded as
base64 PNG. Large models show the worst-diagnosed parameters first and summarise the
rest, so the file stays small (a few MB at most).

Example:
    >>> import numpy as np, arviz_base
    >>> from ppl.report import assess
    >>> rng = np.random.default_rng(0)
    >>> tree = arviz_base.from_dict({"posterior": {"x": rng.normal(size=(4, 500))}})
    >>> assess(tree).verdict
    'trust'
"""

from ppl.report.checks import VERDICTS, Assessment, Finding, Thresholds, assess
from ppl.report.html import render_report, write_report

__all__ = [
    "VERDICTS",
    "Assessment",
    "Finding",
    "Thresholds",
    "assess",
    "render_report",
    "write_report",
]
