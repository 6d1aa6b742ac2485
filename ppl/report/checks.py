"""Diagnostic checks of a run and the verdict: trust / look closer / do not trust.

Every number comes from arviz-stats (``summary``, ``bfmi``, ``loo``; PSIS-LOO of many
observations from its arithmetic vectorized, :mod:`ppl.report.loo`); this module only
compares them with the thresholds and words the findings.

Levels: a *fail* means the draws may misrepresent the posterior (divergences, R-hat,
too few effective draws, an interrupted run, a poor variational fit) and gives the
verdict "do not trust"; a *warn* means something deserves a look but the estimates may
be fine (low E-BFMI, tree-depth saturation, PSIS-LOO Pareto k, a single chain) and
gives "look closer"; otherwise the verdict is "trust".
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from typing import Any

import numpy as np

__all__ = ["Assessment", "Finding", "Thresholds", "assess", "VERDICTS"]

VERDICTS = ("trust", "look closer", "do not trust")


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Current practice (Vehtari et al. 2021; Betancourt 2016; Vehtari et al. 2024).

    Attributes:
        rhat_max: largest acceptable rank-normalized split R-hat.
        ess_per_chain_min: smallest acceptable bulk and tail ESS, per chain (so the
            threshold for a run is this times the number of chains).
        ebfmi_min: smallest acceptable E-BFMI of a chain.
        pareto_k_max: largest acceptable Pareto k (PSIS-LOO per observation; for
            variational runs, of the importance weights of the draws).
    """

    rhat_max: float = 1.01
    ess_per_chain_min: float = 100.0
    ebfmi_min: float = 0.3
    pareto_k_max: float = 0.7


@dataclasses.dataclass
class Finding:
    """One diagnostic result: ``level`` is "fail", "warn", "ok" or "info" (a note that
    does not bear on the verdict, e.g. a check the run's data left out on purpose)."""

    level: str
    check: str
    message: str


@dataclasses.dataclass
class Assessment:
    """Everything the report and ``ppl summary`` show.

    Attributes:
        verdict: one of :data:`VERDICTS`.
        findings: every check's result, failures first.
        kind: "mcmc" or "vi".
        num_chains, num_draws: posterior sample dims.
        summary: ``arviz_stats.summary`` (mean, sd, HDI, ESS, R-hat, MCSE), one row per
            scalar parameter, worst-diagnosed first, with the boolean columns ``flagged``
            and ``constant`` (sd 0, e.g. fixed entries of a Cholesky factor: no
            diagnostics apply) and the float column ``badness`` (> 1 means a threshold is
            crossed).
        divergences: per chain, post-warmup divergent transitions (or None).
        tree_depth: per chain, dict with mean depth, and draws at the maximum (or None).
        max_tree_depth: the NUTS setting of the run (or None).
        ebfmi: per chain E-BFMI (or None).
        loo: ``arviz_stats.loo`` result (or None), with ``loo_error`` when it failed and
            ``loo_skipped`` (why) when the run left its pointwise log-likelihood out.
        pareto_k_vi: variational runs: Pareto k of the draws' importance weights.
        thresholds: the thresholds used.
    """

    verdict: str
    findings: list[Finding]
    kind: str
    num_chains: int
    num_draws: int
    summary: Any
    divergences: np.ndarray | None = None
    tree_depth: list[dict] | None = None
    max_tree_depth: int | None = None
    ebfmi: np.ndarray | None = None
    loo: Any = None
    loo_error: str | None = None
    loo_skipped: str | None = None
    pareto_k_vi: float | None = None
    thresholds: Thresholds = dataclasses.field(default_factory=Thresholds)

    @property
    def reasons(self) -> list[str]:
        """The messages that decided the verdict (failures, else warnings)."""
        level = {"do not trust": "fail", "look closer": "warn"}.get(self.verdict)
        return [f.message for f in self.findings if f.level == level]

    def text(self) -> str:
        """The verdict and every finding as plain text (for the terminal)."""
        marks = {"fail": "FAIL", "warn": "WARN", "ok": " ok ", "info": "info"}
        lines = [f"Verdict: {self.verdict.upper()}"]
        lines += [f"  [{marks[f.level]}] {f.check}: {f.message}" for f in self.findings]
        return "\n".join(lines)


def _attr(tree, name: str, default=None):
    value = tree.attrs.get(name, default)
    if isinstance(value, np.generic):
        value = value.item()
    return value


def _fmt_names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _summary(tree, thresholds: Thresholds, num_chains: int, mcmc: bool):
    import warnings

    import arviz_stats

    with warnings.catch_warnings():
        # constant parameters (e.g. the fixed entries of a Cholesky factor) make ArviZ divide
        # by a zero variance; they are marked below instead
        warnings.simplefilter("ignore", RuntimeWarning)
        table = arviz_stats.summary(tree, ci_kind="hdi", round_to="none")
    table["constant"] = table["sd"].to_numpy(float) == 0.0
    if mcmc:
        ess_min = thresholds.ess_per_chain_min * num_chains
        with np.errstate(divide="ignore", invalid="ignore"):
            rhat_score = (table["r_hat"] - 1.0) / (thresholds.rhat_max - 1.0)
            bulk_score = ess_min / table["ess_bulk"]
            tail_score = ess_min / table["ess_tail"]
        scores = np.column_stack([rhat_score, bulk_score, tail_score]).astype(float)
        missing = ~np.isfinite(scores).all(axis=1)
        badness = np.where(missing, np.inf, np.nanmax(np.where(np.isfinite(scores), scores, 0), 1))
        badness = np.where(table["constant"], 0.0, badness)
        table["badness"] = badness
        table["flagged"] = badness > 1.0
        table = table.sort_values("badness", ascending=False, kind="stable")
    else:
        table["badness"] = 0.0
        table["flagged"] = False
    return table


def assess(tree, thresholds: Thresholds | None = None) -> Assessment:
    """Check a run against ``thresholds`` and give the verdict with its reasons.

    Args:
        tree: a run's DataTree (posterior; sample_stats, log_likelihood optional).
        thresholds: defaults to :class:`Thresholds`.
    """

    thresholds = thresholds or Thresholds()
    posterior = tree["posterior"]
    num_chains = int(posterior.sizes.get("chain", 1))
    num_draws = int(posterior.sizes.get("draw", 0))
    method = str(_attr(tree, "ppl_method", "nuts"))
    kind = "vi" if method in ("advi", "pathfinder") else "mcmc"
    findings: list[Finding] = []
    out = Assessment(
        verdict="trust",
        findings=findings,
        kind=kind,
        num_chains=num_chains,
        num_draws=num_draws,
        summary=None,
        thresholds=thresholds,
    )

    complete = _attr(tree, "ppl_complete", 1)
    if not int(complete):
        findings.append(
            Finding(
                "fail",
                "completeness",
                "the run is incomplete (sampling was interrupted); its draws are a prefix of "
                "the requested run and the warmup may not have finished: resume it",
            )
        )

    nonfinite = [
        name
        for name, var in posterior.data_vars.items()
        if np.issubdtype(var.dtype, np.floating) and not np.isfinite(var.values).all()
    ]
    if nonfinite:
        findings.append(
            Finding(
                "fail",
                "finite draws",
                f"NaN or infinite draws in {_fmt_names(nonfinite)}: the sampler or the model "
                "produced non-finite values",
            )
        )

    out.summary = _summary(tree, thresholds, num_chains, kind == "mcmc")
    stats = tree["sample_stats"] if "sample_stats" in tree.children else None
    if kind == "mcmc":
        _check_frozen(posterior, num_draws, findings)
        _check_mcmc(out, tree, stats, thresholds, findings)
    else:
        _check_vi(out, tree, thresholds, findings)
    from ppl.report.loo import check_loo

    check_loo(out, tree, thresholds, findings)

    order = {"fail": 0, "warn": 1, "ok": 2, "info": 3}
    findings.sort(key=lambda f: order[f.level])
    if any(f.level == "fail" for f in findings):
        out.verdict = "do not trust"
    elif any(f.level == "warn" for f in findings):
        out.verdict = "look closer"
    return out


def _latent_names(posterior) -> tuple[list[str], bool]:
    """``(names, marked)``: the variables the chains sampled, those marked ``ppl_latent``
    (ppl's own runs, ``marked`` True), or in a DataTree without the marks every
    floating-point variable not drawn after sampling (which may include deterministic
    constants)."""
    marked = [str(n) for n, v in posterior.data_vars.items() if v.attrs.get("ppl_latent")]
    if marked:
        return marked, True
    names = [
        str(n)
        for n, v in posterior.data_vars.items()
        if np.issubdtype(v.dtype, np.floating) and not v.attrs.get("ppl_enumerated")
    ]
    return names, False


def _check_frozen(posterior, num_draws: int, findings) -> None:
    """A latent variable none of whose elements ever changed, in all chains or in one.

    A continuous latent site of a log density has a prior with a density (never a point
    mass), so its draws must move; element-wise constants inside a moving variable (the
    fixed zeros of a Cholesky factor) are left alone.
    """
    if num_draws < 2:
        return
    names, marked = _latent_names(posterior)
    frozen, stuck = [], []
    chains_stuck = []
    for name in names:
        values = np.asarray(posterior[name].values)
        if values.ndim < 2 or values.size == 0:
            continue
        flat = values.reshape(values.shape[0], values.shape[1], -1)
        same = np.all(flat == flat[:, :1], axis=(1, 2))  # per chain: no element ever moved
        chains_stuck.append(same)
        if same.all() and np.all(flat == flat[:1, :1]):
            frozen.append(str(name))
        elif same.any():
            stuck.append(f"{name} (chain {', '.join(str(int(c)) for c in np.flatnonzero(same))})")
    if not marked:  # unmarked variables may be constants: only a posterior frozen throughout
        frozen = frozen if names and len(frozen) == len(names) else []
        all_stuck = np.all(chains_stuck, axis=0) if chains_stuck else np.zeros(0, bool)
        stuck = (
            [f"every variable (chain {', '.join(str(int(c)) for c in np.flatnonzero(all_stuck))})"]
            if all_stuck.any() and not frozen
            else []
        )
    if frozen:
        findings.append(
            Finding(
                "fail",
                "moving draws",
                f"{_fmt_names(frozen)} never moved: every draw of every chain is the same value, "
                "though the prior is not a point mass; the sampler did not move (a step size "
                "of zero, a model that cannot be evaluated) or the run file is damaged",
            )
        )
    if stuck:
        findings.append(
            Finding(
                "fail",
                "moving draws",
                f"a chain never moved for {_fmt_names(stuck)}: all its draws are one value; "
                "that chain is stuck",
            )
        )
    if not frozen and not stuck:
        findings.append(Finding("ok", "moving draws", "every latent variable moves in every chain"))


def _check_mcmc(out: Assessment, tree, stats, thresholds: Thresholds, findings) -> None:
    import arviz_stats

    table = out.summary[~out.summary["constant"]]  # constant parameters have no diagnostics
    num_chains, num_draws = out.num_chains, out.num_draws
    total = num_chains * num_draws

    if num_chains < 2:
        findings.append(
            Finding(
                "warn",
                "chains",
                "only one chain: R-hat can only compare its halves, and a chain stuck in one "
                "mode goes unnoticed; run 4 chains",
            )
        )

    # chains restarted during warmup (ppl.infer.driver.rescue)
    if stats is not None and isinstance(stats.attrs.get("ppl_rescues"), str):
        try:
            rescues = json.loads(stats.attrs["ppl_rescues"])
        except ValueError:
            rescues = []
        if rescues:
            described = "; ".join(
                f"chain {r['chain']} from chain {r['donor']} at warmup iteration "
                f"{r['iteration']} ({r['reason']})"
                for r in rescues
            )
            findings.append(
                Finding(
                    "warn",
                    "chain rescue",
                    f"{len(rescues)} chain restart(s) during warmup: {described}. Restarts "
                    "happen only during warmup, so the draws are valid, but a chain was "
                    "trapped somewhere (a minor mode, a far region): check that the model "
                    "is identified and the priors are what you meant",
                )
            )
        else:
            findings.append(Finding("ok", "chain rescue", "no chain fell away during warmup"))

    # divergences
    if stats is not None and "diverging" in stats.data_vars:
        div = np.asarray(stats["diverging"].values, bool).reshape(num_chains, -1).sum(axis=1)
        out.divergences = div
        n = int(div.sum())
        if n:
            findings.append(
                Finding(
                    "fail",
                    "divergences",
                    f"{n} of {total} draws ({100 * n / total:.1f}%) ended in a divergent "
                    "transition: the sampler could not follow the posterior's curvature "
                    "(often a funnel), so the draws may miss part of it; reparameterize "
                    "(e.g. non-centered) or raise target_accept_prob",
                )
            )
        else:
            findings.append(Finding("ok", "divergences", "no divergent transitions"))

    # R-hat
    rhat = table["r_hat"].to_numpy(float)
    bad = table.index[rhat > thresholds.rhat_max].tolist()
    if bad:
        worst = float(np.nanmax(rhat))
        findings.append(
            Finding(
                "fail",
                "R-hat",
                f"R-hat above {thresholds.rhat_max} for {len(bad)} parameter(s) "
                f"({_fmt_names(bad)}; worst {worst:.3f}): the chains disagree, so they have "
                "not all converged to the same distribution; run longer or fix the model",
            )
        )
    elif np.isfinite(rhat).any():
        findings.append(
            Finding("ok", "R-hat", f"R-hat at most {np.nanmax(rhat):.3f} (≤ {thresholds.rhat_max})")
        )
    else:
        findings.append(
            Finding(
                "fail",
                "R-hat",
                "R-hat could not be computed for any parameter (draws constant or not finite): "
                "nothing shows that the chains converged",
            )
        )
    unknown = table.index[~np.isfinite(rhat)].tolist()
    if unknown and np.isfinite(rhat).any():
        latent, marked = _latent_names(tree["posterior"])
        serious = [n for n in unknown if marked and str(n).split("[")[0] in latent]
        findings.append(
            Finding(
                "fail" if serious else "warn",
                "R-hat",
                f"R-hat or ESS could not be computed for {_fmt_names(unknown)} (draws constant "
                "within a chain, or not finite)",
            )
        )

    # ESS
    ess_min = thresholds.ess_per_chain_min * num_chains
    low = []
    for column, label in (("ess_bulk", "bulk"), ("ess_tail", "tail")):
        values = table[column].to_numpy(float)
        names = table.index[values < ess_min].tolist()
        if names:
            low.append(
                f"{label} ESS for {len(names)} parameter(s) ({_fmt_names(names)}; lowest "
                f"{np.nanmin(values):.0f})"
            )
    if low:
        findings.append(
            Finding(
                "fail",
                "ESS",
                f"too few effective draws (< {thresholds.ess_per_chain_min:.0f} per chain = "
                f"{ess_min:.0f}): {'; '.join(low)}: means, intervals and R-hat itself are "
                "unreliable; run more draws or reparameterize",
            )
        )
    elif np.isfinite(table["ess_bulk"].to_numpy(float)).any():
        findings.append(
            Finding(
                "ok",
                "ESS",
                f"bulk ESS ≥ {np.nanmin(table['ess_bulk']):.0f}, tail ESS ≥ "
                f"{np.nanmin(table['ess_tail']):.0f} (threshold {ess_min:.0f})",
            )
        )
    else:
        findings.append(
            Finding(
                "fail",
                "ESS",
                "ESS could not be computed for any parameter (draws constant or not finite): "
                "nothing says how many effective draws there are",
            )
        )

    # E-BFMI
    if stats is not None and "energy" in stats.data_vars:
        with warnings.catch_warnings():  # a constant energy divides by zero: reported below
            warnings.simplefilter("ignore", RuntimeWarning)
            ebfmi = np.asarray(arviz_stats.bfmi(tree)["energy"].values, float).reshape(-1)
        out.ebfmi = ebfmi
        low_chains = [str(c) for c, v in enumerate(ebfmi) if v < thresholds.ebfmi_min]
        unknown_chains = [str(c) for c, v in enumerate(ebfmi) if not np.isfinite(v)]
        if unknown_chains:
            findings.append(
                Finding(
                    "fail",
                    "E-BFMI",
                    f"E-BFMI could not be computed for chain(s) {', '.join(unknown_chains)} "
                    "(their energy is constant or not finite): the sampler did not move",
                )
            )
        elif low_chains:
            findings.append(
                Finding(
                    "warn",
                    "E-BFMI",
                    f"E-BFMI below {thresholds.ebfmi_min} in chain(s) {', '.join(low_chains)} "
                    f"(lowest {np.min(ebfmi):.2f}): momentum resampling explores the energy "
                    "levels slowly, so heavy tails may be under-explored; reparameterize",
                )
            )
        else:
            findings.append(Finding("ok", "E-BFMI", f"E-BFMI ≥ {np.min(ebfmi):.2f} in every chain"))

    # tree depth
    max_depth = _attr(tree, "ppl_max_tree_depth")
    if max_depth is None and stats is not None:
        max_depth = stats.attrs.get("max_tree_depth")
    if stats is not None and "tree_depth" in stats.data_vars and max_depth is not None:
        max_depth = int(max_depth)
        out.max_tree_depth = max_depth
        depth = np.asarray(stats["tree_depth"].values).reshape(num_chains, -1)
        out.tree_depth = [
            {
                "mean": float(d.mean()),
                "max": int(d.max()),
                "at_max": int((d >= max_depth).sum()),
            }
            for d in depth
        ]
        n = int((depth >= max_depth).sum())
        if n:
            findings.append(
                Finding(
                    "warn",
                    "tree depth",
                    f"{n} of {total} draws ({100 * n / total:.1f}%) hit the maximum tree depth "
                    f"{max_depth}: those trajectories were cut short, so sampling is slow and "
                    "may explore poorly; raise max_tree_depth or reparameterize",
                )
            )
        else:
            findings.append(
                Finding("ok", "tree depth", f"no draw reached the maximum tree depth {max_depth}")
            )


def _check_vi(out: Assessment, tree, thresholds: Thresholds, findings) -> None:
    k = _attr(tree, "ppl_pareto_k")
    if k is None:
        findings.append(
            Finding(
                "warn",
                "Pareto k",
                "no Pareto k recorded for this variational run: the fit cannot be checked",
            )
        )
        return
    k = float(k)
    out.pareto_k_vi = k
    if not math.isfinite(k) or k > thresholds.pareto_k_max:
        findings.append(
            Finding(
                "fail",
                "Pareto k",
                f"Pareto k of the importance weights is {k:.2f} > {thresholds.pareto_k_max}: "
                "the variational approximation is far from the posterior; use NUTS",
            )
        )
    else:
        findings.append(
            Finding(
                "ok",
                "Pareto k",
                f"Pareto k of the importance weights is {k:.2f} ≤ {thresholds.pareto_k_max}",
            )
        )


def thresholds_json(thresholds: Thresholds) -> str:
    """The thresholds as JSON (stored in the report)."""
    return json.dumps(dataclasses.asdict(thresholds))
