"""Assemble the self-contained HTML report from an :class:`~ppl.report.checks.Assessment`."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ppl.report import figures
from ppl.report.checks import Assessment, Thresholds, assess

__all__ = ["render_report", "write_report"]

TABLE_ROWS = 30  # summary rows shown at once (worst first)
MORE_ROWS = 470  # further rows behind a "show more"; the rest are summarised
FOCUS_PARAMS = 6  # parameters in the trace and rank plots
PAIR_PARAMS = 4  # parameters in the divergence pair plot

BANNER = {
    "trust": ("Trust", "No diagnostic found a problem: these draws can be used."),
    "look closer": (
        "Look closer",
        "The draws are probably usable, but something deserves a look before relying on them:",
    ),
    "do not trust": (
        "Do not trust",
        "These draws may misrepresent the posterior; do not use them for conclusions:",
    ),
}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;
max-width:1100px;padding:1rem 2rem;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd}
.sub{color:#666;margin-top:0}
.banner{border-radius:8px;padding:1rem 1.4rem;margin:1rem 0;border:2px solid}
.banner h2{border:none;margin:0 0 .4rem 0;font-size:1.5rem}
.trust{background:#e8f6ec;border-color:#2e8540}.trust h2{color:#1f6b31}
.look-closer{background:#fff6e0;border-color:#c98a00}.look-closer h2{color:#8a5d00}
.do-not-trust{background:#fde8e8;border-color:#c0392b}.do-not-trust h2{color:#a12619}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .55rem;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
tr.flag td{background:#fde8e8;font-weight:600}
.lvl-fail{color:#a12619;font-weight:700}.lvl-warn{color:#8a5d00;font-weight:700}
.lvl-ok{color:#1f6b31}.lvl-info{color:#555}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9rem}
pre{background:#f6f6f6;padding:.8rem;overflow-x:auto;font-size:.8rem}
.note{color:#555}.error{color:#a12619}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 4) -> str:
    """``value`` to ``digits`` significant digits ("NaN", "∞" for non-finite values)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return _e(value)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:.{digits}g}"


def _cell(column: str, value: Any) -> str:
    """A summary-table cell: ESS as whole draws, R-hat to 3 decimals, the rest to 3 digits."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return _e(value)
    if not math.isfinite(x):
        return _num(x)
    if column.startswith("ess"):
        return f"{x:,.0f}"
    if column == "r_hat":
        return f"{x:.3f}"
    return _num(x)


def _table(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(
        f'<th class="l">{h}</th>' if i == 0 else f"<th>{h}</th>" for i, h in enumerate(header)
    )
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{classes[r]}"' if classes and classes[r] else ""
        cells = "".join(
            f'<td class="l">{c}</td>' if i == 0 else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class _Sections:
    """Collects sections; a figure that fails shows its error instead of stopping the report."""

    def __init__(self, progress: Callable[[str], None] | None = None):
        self.parts: list[str] = []
        self.figure_errors: list[str] = []
        self.progress = progress
        self.count = 0

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, draw: Callable[[], str]) -> None:
        self.count += 1
        if self.progress is not None:
            self.progress(f"drawing figure {self.count} ...")
        try:
            self.parts.append(draw())
        except figures.FigureError as err:
            self.figure_errors.append(str(err))
            self.parts.append(f'<p class="error">Figure failed: {_e(err)}</p>')


def _attrs(tree) -> dict:
    from ppl.runs import run_attrs

    return run_attrs(tree)


def _banner(a: Assessment) -> str:
    title, lead = BANNER[a.verdict]
    cls = a.verdict.replace(" ", "-")
    reasons = "".join(f"<li>{_e(r)}</li>" for r in a.reasons)
    listing = f"<ul>{reasons}</ul>" if reasons else ""
    return (
        f'<div class="banner {cls}" id="verdict" data-verdict="{_e(a.verdict)}">'
        f"<h2>Verdict: {title}</h2><p>{_e(lead)}</p>{listing}</div>"
    )


def _settings(tree, attrs: dict) -> str:
    settings = attrs.get("ppl_settings") if isinstance(attrs.get("ppl_settings"), dict) else {}
    posterior = tree["posterior"]
    rows = [
        ["model", _e(attrs.get("ppl_model", "?"))],
        ["model file", _e(attrs.get("ppl_model_file", "") or "—")],
        ["data", _e(attrs.get("ppl_data_source", "") or "—")],
        ["method", _e(attrs.get("ppl_method", settings.get("method", "?")))],
        ["chains", _e(posterior.sizes.get("chain", 1))],
        ["draws per chain", _e(posterior.sizes.get("draw", "?"))],
    ]
    method = str(attrs.get("ppl_method", settings.get("method", "nuts")))
    shown = {
        "nuts": ("num_warmup", "max_tree_depth", "target_accept_prob", "dense_mass"),
        "hmc": ("num_warmup", "num_steps", "target_accept_prob", "dense_mass"),
        "advi": ("vi_steps", "learning_rate"),
        "pathfinder": ("num_chains",),
    }.get(method, ())
    labels = {
        "num_warmup": "warmup iterations per chain",
        "max_tree_depth": "max tree depth",
        "target_accept_prob": "target acceptance",
        "dense_mass": "dense mass matrix",
        "num_steps": "leapfrog steps per draw",
        "vi_steps": "optimization steps",
        "learning_rate": "learning rate (Adam)",
        "num_chains": "paths",
    }
    for key in ("seed", *shown):
        if key in settings:
            rows.append([labels.get(key, key), _e(settings[key])])
    complete = attrs.get("ppl_complete", 1)
    rows.append(["complete", "yes" if int(complete) else "<b>no (interrupted)</b>"])
    rows.append(["created", _e(attrs.get("ppl_created", attrs.get("created_at", "?")))])
    if attrs.get("ppl_command"):
        rows.append(["command", f"<code>{_e(attrs['ppl_command'])}</code>"])
    timing = attrs.get("ppl_timing") if isinstance(attrs.get("ppl_timing"), dict) else {}
    labels = {
        "sampling_s": "warmup + sampling (incl. compilation)",
        "conversion_s": "conversion to ArviZ",
        "predictive_s": "posterior predictive draws",
        "optimization_s": "optimization (incl. compilation)",
        "draws_s": "draws from the approximation",
        "total_s": "total",
    }
    for key, value in timing.items():
        rows.append([f"time: {_e(labels.get(key, key))}", f"{float(value):.2f} s"])
    table = _table(["setting", "value"], [[r[0], r[1]] for r in rows])
    table = table.replace("<td>", '<td class="l">').replace("<th>", '<th class="l">')
    out = ["<h2>Run</h2>", table]
    versions = attrs.get("ppl_versions")
    if isinstance(versions, dict):
        out.append(
            "<details><summary>Package versions</summary>"
            + _table(["package", "version"], [[_e(k), _e(v)] for k, v in versions.items()])
            + "</details>"
        )
    if attrs.get("ppl_model_source"):
        out.append(
            "<details><summary>Model source</summary><pre>"
            + _e(attrs["ppl_model_source"])
            + "</pre></details>"
        )
    return "\n".join(out)


def _findings(a: Assessment) -> str:
    rows = [
        [_e(f.check), f'<span class="lvl-{f.level}">{f.level.upper()}</span>', _e(f.message)]
        for f in a.findings
    ]
    table = _table(["check", "result", "detail"], rows)
    table = table.replace("<td>", '<td class="l">').replace("<th>", '<th class="l">')
    return "<h2>Checks</h2>" + table


SUMMARY_COLUMNS = [
    ("mean", "mean"),
    ("sd", "sd"),
    (None, "HDI low"),
    (None, "HDI high"),
    ("ess_bulk", "ESS bulk"),
    ("ess_tail", "ESS tail"),
    ("r_hat", "R-hat"),
    ("mcse_mean", "MCSE mean"),
    ("mcse_sd", "MCSE sd"),
]


def _summary(a: Assessment) -> str:
    table = a.summary
    lb = next((c for c in table.columns if c.endswith("_lb")), None)
    ub = next((c for c in table.columns if c.endswith("_ub")), None)
    prob = lb.split("_")[0].removeprefix("hdi") if lb else ""
    cols = []
    for key, label in SUMMARY_COLUMNS:
        if a.kind == "vi" and key == "r_hat":
            continue  # iid draws of one approximation: no chains to compare
        if label == "HDI low":
            key, label = lb, f"HDI {prob}% low"
        elif label == "HDI high":
            key, label = ub, f"HDI {prob}% high"
        if key in table.columns:
            cols.append((key, label))
    header = ["parameter"] + [label for _, label in cols]

    def rows(frame):
        return [
            [_e(name)] + [_cell(key, frame.at[name, key]) for key, _ in cols]
            for name in frame.index
        ], ["flag" if bool(frame.at[name, "flagged"]) else "" for name in frame.index]

    n = len(table)
    flagged = int(table["flagged"].sum())
    constant = int(table["constant"].sum())
    constant_note = (
        f" {constant} constant parameter(s) (e.g. fixed entries of a Cholesky factor) have "
        "no diagnostics and are listed last."
        if constant
        else ""
    )
    out = [
        "<h2>Summary</h2>",
        f"<p>{n} scalar parameter(s), {flagged} flagged (highlighted), worst-diagnosed first. "
        "Mean, sd and the highest-density interval (HDI) describe the posterior; bulk and "
        "tail ESS are effective sample sizes, R-hat compares chains, MCSE is the Monte Carlo "
        f"standard error of the mean and sd.{constant_note}</p>",
    ]
    first = table.iloc[:TABLE_ROWS]
    out.append(_table(header, *rows(first)))
    more = table.iloc[TABLE_ROWS : TABLE_ROWS + MORE_ROWS]
    if len(more):
        out.append(
            f"<details><summary>Show {len(more)} more parameter(s)</summary>"
            + _table(header, *rows(more))
            + "</details>"
        )
    rest = table.iloc[TABLE_ROWS + MORE_ROWS :]
    if len(rest):
        out.append(
            f"<p>The remaining {len(rest)} parameter(s) ({int(rest['flagged'].sum())} flagged) "
            f"are summarised: R-hat at most {_num(rest['r_hat'].max())}, bulk ESS at least "
            f"{_num(rest['ess_bulk'].min())}, tail ESS at least {_num(rest['ess_tail'].min())}."
            " <code>ppl summary RUN</code> or <code>arviz_stats.summary</code> list them all.</p>"
        )
    return "\n".join(out)


def _mcmc_sections(s: _Sections, tree, a: Assessment) -> None:
    labels = list(a.summary.index)
    # divergences
    s.add("<h2>Divergences</h2>")
    if a.divergences is None:
        s.add('<p class="note">No divergence information (no sample_stats.diverging).</p>')
    else:
        total = int(a.divergences.sum())
        s.add(
            f"<p>{total} divergent transition(s) after warmup, out of "
            f"{a.num_chains * a.num_draws} draws.</p>"
        )
        s.add(
            _table(
                ["chain", "divergences"],
                [[str(c), str(int(v))] for c, v in enumerate(a.divergences)],
            )
        )
        if total and labels:
            names = figures.divergence_focus(tree, labels, PAIR_PARAMS)
            if len(names) >= 2:
                s.figure(lambda: figures.pair_figure(figures.focus_tree(tree, names)))
    # tree depth
    if a.tree_depth is not None:
        s.add("<h2>Tree depth</h2>")
        s.add(
            f"<p>NUTS doubles each trajectory at most {a.max_tree_depth} times; a draw that "
            "reaches this maximum was cut short before it made a U-turn.</p>"
        )
        s.add(
            _table(
                ["chain", "mean depth", "largest depth", "draws at the maximum"],
                [
                    [str(c), f"{d['mean']:.2f}", str(d["max"]), str(d["at_max"])]
                    for c, d in enumerate(a.tree_depth)
                ],
            )
        )
    # energy
    if a.ebfmi is not None:
        s.add("<h2>Energy and E-BFMI</h2>")
        s.add(
            _table(
                ["chain", "E-BFMI"],
                [[str(c), f"{v:.3f}"] for c, v in enumerate(a.ebfmi)],
                ["flag" if v < a.thresholds.ebfmi_min else "" for v in a.ebfmi],
            )
        )
        s.figure(lambda: figures.energy_figure(tree))
    # trace and rank
    if labels:
        focus = figures.focus_tree(tree, labels[:FOCUS_PARAMS])
        s.add("<h2>Trace and rank plots</h2>")
        if len(labels) > FOCUS_PARAMS:
            s.add(f"<p>The {FOCUS_PARAMS} worst-diagnosed of {len(labels)} parameters.</p>")
        s.figure(lambda: figures.trace_figure(focus))
        s.figure(lambda: figures.rank_figure(focus))


def _vi_sections(s: _Sections, tree, a: Assessment) -> None:
    s.add("<h2>Variational fit</h2>")
    if a.pareto_k_vi is not None:
        s.add(
            f"<p>Pareto k of the importance weights of the draws: <b>{a.pareto_k_vi:.2f}</b> "
            f"(threshold {a.thresholds.pareto_k_max}).</p>"
        )
    if "optimization" in tree.children and "loss" in tree["optimization"].data_vars:
        loss = np.asarray(tree["optimization"]["loss"].values, float)
        s.figure(lambda: figures.loss_figure(loss))


def _ppc_sections(s: _Sections, tree) -> None:
    if "posterior_predictive" not in tree.children or "observed_data" not in tree.children:
        return
    names = [
        n for n in tree["posterior_predictive"].data_vars if n in tree["observed_data"].data_vars
    ]
    if not names:
        return
    s.add("<h2>Posterior predictive check</h2>")
    s.figure(lambda: figures.ppc_figure(tree, names))


def _loo_sections(s: _Sections, a: Assessment) -> None:
    if a.loo is None and a.loo_error is None:
        if a.loo_skipped:
            s.add("<h2>PSIS-LOO</h2>")
            s.add(f"<p>PSIS-LOO was {_e(a.loo_skipped)}.</p>")
        return
    s.add("<h2>PSIS-LOO</h2>")
    if a.loo is None:
        s.add(f'<p class="error">PSIS-LOO could not be computed: {_e(a.loo_error)}</p>')
        return
    loo = a.loo
    k = np.asarray(loo.pareto_k).reshape(-1)
    t = a.thresholds.pareto_k_max
    s.add(
        _table(
            ["quantity", "value"],
            [
                ["elpd_loo", f"{float(loo.elpd):.2f} ± {float(loo.se):.2f}"],
                ["p_loo (effective number of parameters)", f"{float(loo.p):.2f}"],
                ["observations", str(k.size)],
                [f"Pareto k ≤ {t} (good)", str(int((k <= t).sum()))],
                [f"Pareto k in ({t}, 1] (bad)", str(int(((k > t) & (k <= 1)).sum()))],
                ["Pareto k > 1 (very bad)", str(int((k > 1).sum()))],
                ["Pareto k not fitted", str(int((~np.isfinite(k)).sum()))],
            ],
        )
    )
    if k.size <= 100_000:  # a point per observation
        s.figure(lambda: figures.khat_figure(loo))


def _thresholds(t: Thresholds) -> str:
    return f"""<h2>How to read this report</h2>
<p>The verdict is <b>do not trust</b> when a check fails, <b>look closer</b> when a check
only warns, and <b>trust</b> otherwise. Thresholds (current practice):</p>
<ul>
<li><b>R-hat ≤ {t.rhat_max}</b> for every parameter (rank-normalized split R-hat;
Vehtari et al. 2021). Larger values mean the chains disagree. Fails.</li>
<li><b>Bulk and tail ESS ≥ {t.ess_per_chain_min:.0f} per chain</b> for every parameter
(so ≥ {t.ess_per_chain_min:.0f} &times; chains in total). Fewer effective draws make means,
intervals and R-hat unreliable. Fails.</li>
<li><b>No divergent transitions</b> after warmup. A divergence means the sampler met
curvature it could not integrate through; the draws may be biased. Fails.</li>
<li><b>E-BFMI ≥ {t.ebfmi_min}</b> in every chain (Betancourt 2016). Lower values mean
the momentum resampling explores energy levels slowly. Warns.</li>
<li><b>No draw at the maximum tree depth.</b> Such trajectories were cut short:
an efficiency problem that can hurt exploration. Warns.</li>
<li><b>Pareto k ≤ {t.pareto_k_max}</b>: for PSIS-LOO, per observation (warns: the
LOO estimate is unreliable); for variational runs, of the importance weights of the
draws (fails: the approximation is far from the posterior).</li>
<li>An interrupted (incomplete) run fails; a single chain warns.</li>
</ul>
<p class="note">Numbers from arviz-stats, figures from arviz-plots (matplotlib).</p>"""


def render_report(
    tree,
    thresholds: Thresholds | None = None,
    assessment: Assessment | None = None,
    progress: Callable[[str], None] | None = None,
) -> str:
    """The report of a run as one self-contained HTML document (figures as base64 PNG).

    Args:
        tree: a run's DataTree (from ``ppl sample`` / :func:`ppl.runs.load_run`, or any
            DataTree with a posterior group; sample_stats, log_likelihood,
            posterior_predictive and observed_data are used when present).
        thresholds: defaults to :class:`ppl.report.Thresholds`.
        assessment: the result of :func:`ppl.report.assess` for ``tree`` if already at
            hand (it takes ArviZ several milliseconds per parameter); else computed.
        progress: called with a short message before each figure is drawn.

    Returns:
        The HTML text. It needs no network to display and has no scripts.
    """
    a = assessment if assessment is not None else assess(tree, thresholds)
    attrs = _attrs(tree)
    s = _Sections(progress)
    model = attrs.get("ppl_model", "run")
    s.add(f"<h1>Diagnostics report: {_e(model)}</h1>")
    s.add(
        f'<p class="sub">{_e(attrs.get("ppl_method", "nuts")).upper()}, {a.num_chains} '
        f"chain(s) &times; {a.num_draws} draws</p>"
    )
    s.add(_banner(a))
    s.add(_findings(a))
    s.add(_settings(tree, attrs))
    s.add(_summary(a))
    if a.kind == "mcmc":
        _mcmc_sections(s, tree, a)
    else:
        _vi_sections(s, tree, a)
    _ppc_sections(s, tree)
    _loo_sections(s, a)
    s.add(_thresholds(a.thresholds))
    if s.figure_errors:
        s.add(
            '<p class="error">Some figures could not be drawn: '
            + _e("; ".join(s.figure_errors))
            + "</p>"
        )
    meta = {"verdict": a.verdict, "reasons": a.reasons, "figure_errors": s.figure_errors}
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>ppl report: {_e(model)} ({_e(a.verdict)})</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="ppl-verdict" content="{_e(json.dumps(meta))}">'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(s.parts) + "\n</body></html>\n"
    )


def write_report(
    tree,
    path: str | Path,
    thresholds: Thresholds | None = None,
    assessment: Assessment | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write :func:`render_report` of ``tree`` to ``path`` (UTF-8); returns the path."""
    path = Path(path)
    path.write_text(render_report(tree, thresholds, assessment, progress), encoding="utf-8")
    return path
