"""Figures of the report: arviz-plots on matplotlib's Agg backend, embedded as base64 PNG.

Each function returns an HTML ``<figure>`` element (a string); nothing is written to
disk and nothing needs the network to display.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "FigureError",
    "divergence_focus",
    "energy_figure",
    "focus_tree",
    "khat_figure",
    "loss_figure",
    "pair_figure",
    "ppc_figure",
    "rank_figure",
    "trace_figure",
]

DPI = 72  # keeps a figure at 30-150 kB; the report stays well under 10 MB


class FigureError(RuntimeError):
    """A figure could not be drawn (the report shows the message instead)."""


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    plt = _matplotlib()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(draw: Callable[[], Any], alt: str, caption: str) -> str:
    """Run an arviz-plots function (or one returning a Figure) and embed the result."""
    _matplotlib()
    try:
        result = draw()
    except Exception as err:
        raise FigureError(f"{alt}: {type(err).__name__}: {err}") from err
    fig = result
    viz = getattr(result, "viz", None)
    if viz is not None:
        fig = viz["figure"].item() if hasattr(viz["figure"], "item") else viz["figure"]
    data = _png(fig)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def focus_tree(tree, labels: Sequence[str]):
    """A DataTree whose posterior holds only the scalar parameters ``labels`` (as in
    ``arviz_stats.summary``'s index, e.g. ``theta[A]``), with the run's sample_stats.

    Lets the plots show the worst-diagnosed elements of large variables, one panel each.
    """
    import arviz_base
    import xarray as xr
    from arviz_base.labels import BaseLabeller

    wanted = list(labels)
    labeller = BaseLabeller()
    found: dict[str, Any] = {}
    posterior = tree["posterior"].dataset
    for var, sel, isel in arviz_base.xarray_sel_iter(posterior, skip_dims={"chain", "draw"}):
        label = labeller.make_label_flat(var, sel, isel)
        if label in wanted:
            found[label] = (
                posterior[var]
                .isel(isel)
                .drop_vars([c for c in posterior[var].coords if c not in ("chain", "draw")])
            )
    data = xr.Dataset({label: found[label] for label in wanted if label in found})
    children = {"posterior": xr.DataTree(data)}
    if "sample_stats" in tree.children:
        children["sample_stats"] = xr.DataTree(tree["sample_stats"].dataset)
    return xr.DataTree(children=children)


def divergence_focus(tree, labels: Sequence[str], count: int = 4) -> list[str]:
    """The ``count`` scalar parameters whose divergent draws stand out most.

    The score of a parameter is the absolute difference between its mean over divergent
    and over non-divergent draws, in units of its standard deviation: the parameters
    where divergences concentrate in one region (e.g. small ``tau`` in a funnel).
    """
    stats = tree["sample_stats"]
    div = np.asarray(stats["diverging"].values, bool).reshape(-1)
    if not div.any() or div.all():
        return list(labels[:count])
    sub = focus_tree(tree, labels)["posterior"].dataset
    scores = {}
    for name, var in sub.data_vars.items():
        x = np.asarray(var.values, float).reshape(-1)
        sd = np.std(x)
        if not np.isfinite(sd) or sd == 0:
            continue
        scores[name] = abs(np.mean(x[div]) - np.mean(x[~div])) / sd
    ranked = sorted(scores, key=scores.get, reverse=True)
    return ranked[:count]


def trace_figure(focus) -> str:
    import arviz_plots

    names = list(focus["posterior"].data_vars)
    return _figure(
        lambda: arviz_plots.plot_trace_dist(focus, compact=False, backend="matplotlib"),
        "trace plots",
        "Trace plots (right) and per-chain densities (left) of "
        + ", ".join(html.escape(n) for n in names)
        + ". Chains should overlap and look like stationary noise; divergent draws are "
        "marked below the traces.",
    )


def rank_figure(focus) -> str:
    import arviz_plots

    return _figure(
        lambda: arviz_plots.plot_rank(focus, backend="matplotlib"),
        "rank plots",
        "Rank plots: the fractional ranks of each chain's draws among all chains, as ECDF "
        "differences. Lines outside the band mean a chain sits higher or lower than the "
        "others.",
    )


def pair_figure(focus) -> str:
    import arviz_plots

    return _figure(
        lambda: arviz_plots.plot_pair(
            focus, visuals={"divergence": True}, backend="matplotlib", marginal=False
        ),
        "pair plot with divergences",
        "Pair plot of the parameters where divergent transitions concentrate; divergent "
        "draws are highlighted. Divergences clustered in one corner (e.g. a narrow neck "
        "of a funnel) point at the geometry the sampler cannot follow.",
    )


def energy_figure(tree) -> str:
    import arviz_plots

    return _figure(
        lambda: arviz_plots.plot_energy(tree, backend="matplotlib"),
        "energy plot",
        "Energy: the marginal energy distribution and the distribution of energy "
        "transitions between draws, with E-BFMI per chain. Transitions much narrower than "
        "the marginal (low E-BFMI) mean slow exploration of the energy levels.",
    )


def ppc_figure(tree, var_names: Sequence[str]) -> str:
    import arviz_plots

    return _figure(
        lambda: arviz_plots.plot_ppc_dist(
            tree, var_names=list(var_names), num_samples=50, backend="matplotlib"
        ),
        "posterior predictive check",
        "Posterior predictive check: densities of 50 replicated data sets (drawn from the "
        "posterior predictive) against the observed data. The observed curve should look "
        "like one of the replicates.",
    )


def khat_figure(loo) -> str:
    import arviz_plots

    return _figure(
        lambda: arviz_plots.plot_khat(loo, backend="matplotlib"),
        "PSIS-LOO Pareto k",
        "Pareto k per observation from PSIS-LOO. Values above the threshold mark "
        "observations whose leave-one-out estimate is unreliable (and that are highly "
        "influential).",
    )


def loss_figure(loss: np.ndarray) -> str:
    """The loss per optimization step: ``loss`` of shape (steps,) or (paths, steps)."""
    plt = _matplotlib()
    curves = np.atleast_2d(np.asarray(loss, float))

    def draw():
        fig, ax = plt.subplots(figsize=(7, 3))
        steps = np.arange(curves.shape[1])
        for i, curve in enumerate(curves):
            ax.plot(steps, curve, lw=1, label=f"path {i}" if len(curves) > 1 else None)
        ax.set_xlabel("optimization step")
        ax.set_ylabel("loss (negative ELBO)")
        finite_steps = np.flatnonzero(np.isfinite(curves).any(axis=0))
        if finite_steps.size:
            ax.set_xlim(0, max(int(finite_steps[-1]), 1))
        # zoom past early outliers: the last 90% of the steps, up to their 90% quantile
        tail = curves[
            :, curves.shape[1] // 10 : int(finite_steps[-1]) + 1 if finite_steps.size else 0
        ]
        values = tail[np.isfinite(tail)]
        if values.size > 10:
            low, high = np.min(values), np.quantile(values, 0.9)
            pad = 0.15 * (high - low) + 1e-12
            ax.set_ylim(low - pad, high + pad)
        if len(curves) > 1:
            ax.legend(fontsize="small")
        return fig

    return _figure(
        draw,
        "loss curve",
        "The variational loss (negative ELBO estimate) per optimization step, zoomed past "
        "the first tenth of the steps. It should level off; a curve still falling means "
        "the fit has not converged.",
    )
