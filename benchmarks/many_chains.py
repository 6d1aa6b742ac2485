"""Many-chain samplers (ChEES-HMC, MEADS) against NUTS at equal gradient budgets.

``python -m benchmarks.many_chains`` runs, per model of the benchmark suite
(``benchmarks/models.py``; default the 100-d ill-conditioned Gaussian and eight schools):

1. ChEES and MEADS with many chains (``--chains``, default 256), ``--warmup`` and ``--draws``
   iterations each (MEADS, one gradient per iteration, gets ``--meads-factor`` times more);
2. NUTS with a few chains (``--nuts-chains``, default 4) and ``--nuts-warmup`` warmup, its
   number of draws chosen (from a short pilot run) so that its total gradient count,
   warmup included, matches the ChEES run's: the equal gradient budget;

and reports, for each sampler, the total gradient evaluations (all chains, warmup
included), the minimum bulk ESS over every element of every latent site (constrained
scale, ``arviz_stats.ess``), ESS per 1000 gradients (all of them, and those of sampling
only), ESS per second of the warm run (a
second run on the compiled program, new seed) and of the cold run (compilation included),
the maximum R-hat and the divergences. Each sampler runs in this process, one after the
other; numbers from one invocation compare, absolute times across machines do not. On a
CPU the many-chain samplers pay for every chain's gradient in sequence; their ESS per
second only shows its worth on an accelerator, ESS per gradient does everywhere.

Example::

    python -m benchmarks.many_chains                       # gaussian:dim=100, eight_schools
    python -m benchmarks.many_chains --quick               # small settings, a minute or two
    python -m benchmarks.many_chains --models eight_schools --chains 1024 --out run.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "many_chains.json"
SAMPLERS = ("chees", "meads", "nuts")


def _run(kernel, model_fn, data: dict, *, chains: int, warmup: int, draws: int, seed: int):
    """A cold and a warm run of one kernel; returns the measurements of the warm run."""
    import jax

    from ppl.infer import MCMC

    mcmc = MCMC(
        kernel(model_fn),
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        progress_bar=False,
    )
    began = time.perf_counter()
    mcmc.run(jax.random.key(seed), **data)
    jax.block_until_ready(mcmc.get_samples())
    cold = time.perf_counter() - began
    began = time.perf_counter()
    mcmc.run(jax.random.key(seed + 1), **data)
    samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
    warm = time.perf_counter() - began
    stats = mcmc.get_sample_stats()
    grad_warmup = int(np.sum(np.asarray(mcmc.last_state.num_steps_warmup)))
    grad_sampling = int(np.sum(stats["n_steps"]))
    return mcmc, samples, stats, cold, warm, grad_warmup, grad_sampling


def measure(name: str, kernel, model_fn, data: dict, **settings: Any) -> dict[str, Any]:
    """Run one sampler and summarize it (ESS, gradients, times) as a JSON-ready dict."""
    from benchmarks.worker import summarize_draws

    mcmc, samples, stats, cold, warm, g_warm, g_samp = _run(kernel, model_fn, data, **settings)
    latent = [k for k, v in mcmc.logdensity_.sites.items() if v.kind == "latent"]
    summary = summarize_draws(samples, latent)
    ess = summary["min_ess_bulk"]
    grads = g_warm + g_samp
    return {
        "sampler": name,
        **settings,
        "n_grad": grads,
        "n_grad_warmup": g_warm,
        "min_ess_bulk": ess,
        "min_ess_site": summary["min_ess_site"],
        "ess_per_kgrad": 1000.0 * ess / grads,
        "ess_per_kgrad_sampling": 1000.0 * ess / max(g_samp, 1),
        "ess_per_s": ess / warm,
        "ess_per_s_cold": ess / cold,
        "warm_s": warm,
        "cold_s": cold,
        "us_per_grad": 1e6 * warm / grads,
        "max_rhat": summary["max_rhat"],
        "divergences": int(np.sum(stats["diverging"])),
        "mean_n_steps": float(np.mean(stats["n_steps"])),
        "step_size": float(np.median(np.asarray(mcmc.step_size))),
    }


def nuts_draws_for_budget(model_fn, data, budget: int, args) -> int:
    """Draws per chain that bring a NUTS run (nuts_chains, nuts_warmup) to ``budget`` gradients
    in total, from a pilot run's warmup gradients and gradients per draw."""
    pilot = measure(
        "nuts-pilot",
        _nuts(),
        model_fn,
        data,
        chains=args.nuts_chains,
        warmup=args.nuts_warmup,
        draws=args.pilot_draws,
        seed=args.seed + 100,
    )
    per_draw = (pilot["n_grad"] - pilot["n_grad_warmup"]) / (args.nuts_chains * args.pilot_draws)
    left = budget - pilot["n_grad_warmup"]
    return max(args.pilot_draws, math.ceil(left / (args.nuts_chains * max(per_draw, 1.0))))


def _nuts():
    from ppl.infer import NUTS

    return NUTS


def run_model(spec: str, args) -> dict[str, Any]:
    import ppl
    from benchmarks.models import format_model, parse_model
    from ppl.infer import MEADS, ChEES

    choice = parse_model(spec, quick=args.quick)
    model_fn = choice.model.build(ppl)
    data = choice.model.data(**choice.params)
    rows = []
    common = {"chains": args.chains, "seed": args.seed}
    if "chees" in args.samplers:
        rows.append(
            measure("chees", ChEES, model_fn, data, warmup=args.warmup, draws=args.draws, **common)
        )
        print(_row(rows[-1]), flush=True)
    if "meads" in args.samplers:
        f = args.meads_factor
        rows.append(
            measure(
                "meads",
                MEADS,
                model_fn,
                data,
                warmup=args.warmup * f,
                draws=args.draws * f,
                **common,
            )
        )
        print(_row(rows[-1]), flush=True)
    if "nuts" in args.samplers:
        budget = rows[0]["n_grad"] if rows else None
        draws = (
            args.draws if budget is None else nuts_draws_for_budget(model_fn, data, budget, args)
        )
        rows.append(
            measure(
                "nuts",
                _nuts(),
                model_fn,
                data,
                chains=args.nuts_chains,
                warmup=args.nuts_warmup,
                draws=draws,
                seed=args.seed,
            )
        )
        print(_row(rows[-1]), flush=True)
    return {"model": format_model(choice.model.name, choice.params), "results": rows}


COLUMNS = (
    ("sampler", "sampler", "{}"),
    ("chains", "chains", "{}"),
    ("warmup", "warmup", "{}"),
    ("draws", "draws", "{}"),
    ("n_grad", "gradients", "{:,}"),
    ("min_ess_bulk", "min ESS", "{:.0f}"),
    ("ess_per_kgrad", "ESS/1k grad", "{:.3f}"),
    ("ess_per_kgrad_sampling", "(sampling)", "{:.3f}"),
    ("ess_per_s", "ESS/s", "{:.1f}"),
    ("ess_per_s_cold", "ESS/s cold", "{:.1f}"),
    ("us_per_grad", "us/grad", "{:.2f}"),
    ("max_rhat", "max R-hat", "{:.3f}"),
    ("divergences", "div", "{}"),
    ("mean_n_steps", "steps/it", "{:.1f}"),
)


def _row(r: dict) -> str:
    return "  ".join(
        fmt.format(r[key]) if r.get(key) is not None else "-" for key, _, fmt in COLUMNS
    )


def format_table(entry: dict[str, Any]) -> str:
    header = [title for _, title, _ in COLUMNS]
    body = [
        [fmt.format(r[k]) if r.get(k) is not None else "-" for k, _, fmt in COLUMNS]
        for r in entry["results"]
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [f"== {entry['model']}"]
    for row in [header, *body]:
        lines.append("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
    by_name = {r["sampler"]: r for r in entry["results"]}
    if "nuts" in by_name:
        for name in ("chees", "meads"):
            if name in by_name:
                ratio = by_name[name]["ess_per_kgrad"] / by_name["nuts"]["ess_per_kgrad"]
                lines.append(f"   {name}/nuts ESS per gradient: {ratio:.2f}x")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.many_chains",
        description="ChEES-HMC and MEADS (many chains) vs NUTS (few chains) at equal "
        "gradient budgets: ESS per gradient and per second, a table and a JSON file.",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=["gaussian:dim=100", "eight_schools"],
        help="benchmark-suite models, name[:param=value...] (default: gaussian:dim=100 "
        "eight_schools)",
    )
    parser.add_argument(
        "--samplers",
        default="chees,meads,nuts",
        help="comma-separated subset of chees,meads,nuts (default: all; NUTS's budget is "
        "the first many-chain sampler's gradient count)",
    )
    parser.add_argument("--chains", type=int, default=256, help="chains for ChEES and MEADS")
    parser.add_argument("--warmup", type=int, default=500, help="ChEES warmup iterations")
    parser.add_argument("--draws", type=int, default=500, help="ChEES draws per chain")
    parser.add_argument(
        "--meads-factor",
        type=int,
        default=4,
        help="MEADS runs this many times ChEES's warmup and draws (one gradient each)",
    )
    parser.add_argument("--nuts-chains", type=int, default=4)
    parser.add_argument("--nuts-warmup", type=int, default=500)
    parser.add_argument("--pilot-draws", type=int, default=200, help="NUTS pilot run's draws")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small settings (a smoke test)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    unknown = sorted(set(args.samplers) - set(SAMPLERS))
    if unknown:
        print(f"unknown samplers {unknown}; choose from {SAMPLERS}", file=sys.stderr)
        return 2
    if args.quick:
        args.chains, args.warmup, args.draws = min(args.chains, 64), 150, 100
        args.nuts_warmup, args.pilot_draws = 150, 50
        if args.models == build_parser().get_default("models"):
            args.models = ["gaussian", "eight_schools"]  # the suite's quick sizes
    import jax

    report = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "device": str(jax.devices()[0]),
            "device_kind": jax.devices()[0].device_kind,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "jax": jax.__version__,
        },
        "models": [],
    }
    print("columns: " + "  ".join(title for _, title, _ in COLUMNS), flush=True)
    for spec in args.models:
        entry = run_model(spec, args)
        report["models"].append(entry)
        print(format_table(entry), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
