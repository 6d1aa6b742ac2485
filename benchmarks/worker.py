"""One (sampler, model) measurement, meant to run in a fresh Python process.

``python -m benchmarks.worker --sampler ppl --model eight_schools --chains 4
--warmup 1000 --draws 1000 --seed 0`` prints one line ``BENCHMARK_RESULT {json}``
on stdout (other output may precede it). ``--sampler`` takes a spec with options,
e.g. ``ppl:adaptation=stan`` (see :func:`benchmarks.samplers.parse_sampler`). In
order, it

1. builds the model's data (untimed);
2. *cold run*: the first run in this process, compilation included (seed ``seed``);
3. *warm run*: a second run with the same shapes and a new seed (``seed + 1``), or
   ``--repeats`` such runs (seeds ``seed + 1, seed + 2, ...``; medians are reported);
4. from the warm run's draws: bulk ESS (``arviz_stats.ess``) and R-hat of every
   element of every latent site on the constrained scale, and per-element means and
   standard deviations (used by the harness to compare samplers);
5. times the gradient of the log density (see :func:`benchmarks.samplers.time_gradient`;
   nutpie: :meth:`benchmarks.samplers.NutpieRunner.measure_gradient`).

Import time is reported apart (``import_s``) and is not part of the cold time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

MARKER = "BENCHMARK_RESULT "


def _finite_or_none(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def summarize_draws(samples: dict[str, Any], latent: list[str]) -> dict[str, Any]:
    """Per-element bulk ESS, R-hat, mean and sd of the latent sites; minimum ESS overall.

    Args:
        samples: site -> array (chains, draws, ...), constrained scale.
        latent: the sites to include.
    """
    import arviz_stats
    import numpy as np

    posterior: dict[str, dict[str, list[float | None]]] = {}
    min_ess, min_site, max_rhat = math.inf, "", -math.inf
    for name in latent:
        x = np.asarray(samples[name], dtype=np.float64)
        chains, draws = x.shape[:2]
        x = x.reshape(chains, draws, -1)
        ess = np.atleast_1d(np.asarray(arviz_stats.ess(x, method="bulk"), dtype=float))
        if chains > 1:
            rhat = np.atleast_1d(np.asarray(arviz_stats.rhat(x), dtype=float))
        else:
            rhat = np.full(x.shape[-1], np.nan)
        ess_clean = np.where(np.isfinite(ess), ess, 0.0)
        i = int(np.argmin(ess_clean))
        if ess_clean[i] < min_ess:
            min_ess = float(ess_clean[i])
            min_site = name if np.ndim(samples[name]) == 2 else f"{name}[{i}]"
        if np.isfinite(rhat).any():
            max_rhat = max(max_rhat, float(np.nanmax(rhat)))
        posterior[name] = {
            "mean": [_finite_or_none(v) for v in x.mean(axis=(0, 1))],
            "sd": [_finite_or_none(v) for v in x.std(axis=(0, 1), ddof=1)],
            "ess_bulk": [_finite_or_none(v) for v in ess],
            "rhat": [_finite_or_none(v) for v in rhat],
        }
    return {
        "min_ess_bulk": min_ess,
        "min_ess_site": min_site,
        "max_rhat": _finite_or_none(max_rhat),
        "posterior": posterior,
    }


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return _finite_or_none(num / den)


def measure(
    sampler: str,
    model: str,
    *,
    chains: int,
    warmup: int,
    draws: int,
    seed: int,
    repeats: int = 1,
    quick: bool = False,
    ppl_adaptation: str | None = None,
    cold_only: bool = False,
) -> dict[str, Any]:
    """Run the cold and warm runs and every measurement of one (sampler, model) pair.

    With ``cold_only`` only the import and the cold run are measured (``import_s``,
    ``cold_s``, ``cold_compile_s``): the harness runs ppl a second time that way, in a new
    process that finds the first process's persistent compilation cache.

    ``sampler`` is a spec, ``name[:key=value...]``; ``ppl_adaptation`` is passed to ppl's
    NUTS as ``adaptation`` when it takes one (see :class:`benchmarks.samplers.Runner`).

    With ``repeats > 1`` there are that many warm runs (seeds ``seed + 1``, ``seed + 2``,
    ...); the top-level warm-run fields are then medians over them (each run is kept
    under ``warm_runs``) and the posterior summary is the first warm run's.
    """
    t_import = time.perf_counter()
    import jax
    import numpy as np

    from benchmarks.models import parse_model
    from benchmarks.samplers import RUNNERS, CompileClock, Settings, parse_sampler

    CompileClock.install()
    choice = parse_model(model, quick=quick)
    spec = parse_sampler(sampler)
    runner_cls = RUNNERS[spec.name]
    settings = Settings(chains=chains, warmup=warmup, draws=draws)
    import_s = time.perf_counter() - t_import

    t_data = time.perf_counter()
    data = choice.data()
    data_s = time.perf_counter() - t_data

    t_setup = time.perf_counter()
    # imports the sampler's library
    runner = runner_cls(choice, data, settings, spec.options, ppl_adaptation=ppl_adaptation)
    import_s += time.perf_counter() - t_setup

    cold = runner.run(seed)
    if cold_only:
        return {
            "status": "ok",
            "sampler": spec.key,
            "model": choice.key,
            "import_s": import_s,
            "cold_s": cold.wall_s,
            "cold_compile_s": cold.compile_s,
        }
    warm_results = [runner.run(seed + 1 + r) for r in range(repeats)]

    latent = runner.latent_sites()
    warm_runs = []
    summaries = []
    for r, warm in enumerate(warm_results):
        summary = summarize_draws(warm.samples, latent)
        summaries.append(summary)
        sample_s = max(warm.wall_s - warm.compile_s, 1e-9)
        min_ess = summary["min_ess_bulk"]
        warm_runs.append(
            {
                "seed": seed + 1 + r,
                "warm_s": warm.wall_s,
                "warm_compile_s": warm.compile_s,
                "sample_s": sample_s,
                "n_grad": warm.n_grad,
                "n_grad_warmup": warm.n_grad_warmup,
                "divergences": warm.divergences,
                "step_size": warm.step_size,
                "min_ess_bulk": min_ess,
                "min_ess_site": summary["min_ess_site"],
                "max_rhat": summary["max_rhat"],
                "ess_per_s": _ratio(min_ess, warm.wall_s),
                "ess_per_s_sampling": _ratio(min_ess, sample_s),
                "ess_per_kgrad": _ratio(1000.0 * min_ess, warm.n_grad),
            }
        )
    grad_times = runner.measure_gradient(seed)
    dim = grad_times.pop("dim")

    def median(field: str) -> Any:
        values = [run[field] for run in warm_runs if run[field] is not None]
        if not values:
            return None
        m = float(np.median(values))
        return round(m) if isinstance(values[0], int) else m

    first = warm_runs[0]
    device = jax.devices()[0]
    return {
        "status": "ok",
        "sampler": spec.key,
        "sampler_name": spec.name,
        "sampler_options": spec.options,
        "model": choice.key,
        "settings": {
            "chains": chains,
            "warmup": warmup,
            "draws": draws,
            "seed": seed,
            "repeats": repeats,
        },
        "options": runner.options,
        "versions": {"jax": jax.__version__, **runner.versions()},
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "pid": os.getpid(),
        "dim": dim,
        "latent_sites": latent,
        "import_s": import_s,
        "data_s": data_s,
        "cold_s": cold.wall_s,
        "cold_compile_s": cold.compile_s,
        **{
            field: median(field)
            for field in (
                "warm_s",
                "warm_compile_s",
                "sample_s",
                "n_grad",
                "n_grad_warmup",
                "divergences",
                "min_ess_bulk",
                "max_rhat",
                "ess_per_s",
                "ess_per_s_sampling",
                "ess_per_kgrad",
            )
        },
        "grads_per_draw": median("n_grad") / (chains * draws),
        "step_size": first["step_size"],
        "min_ess_site": first["min_ess_site"],
        "warm_runs": warm_runs,
        **grad_times,
        "posterior": summaries[0]["posterior"],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.worker",
        description="Measure one sampler on one model (cold and warm runs) and print JSON.",
    )
    parser.add_argument(
        "--sampler",
        required=True,
        help="name[:option=value...], name one of ppl, numpyro, blackjax, nutpie",
    )
    parser.add_argument("--model", required=True, help="model[:param=value...]")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="warm runs (medians reported)")
    parser.add_argument("--quick", action="store_true", help="quick model sizes")
    parser.add_argument(
        "--ppl-adaptation", default=None, help="adaptation= for ppl's NUTS, if it takes one"
    )
    parser.add_argument(
        "--cold-only", action="store_true", help="measure the import and the cold run only"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = measure(
        args.sampler,
        args.model,
        chains=args.chains,
        warmup=args.warmup,
        draws=args.draws,
        seed=args.seed,
        repeats=args.repeats,
        quick=args.quick,
        ppl_adaptation=args.ppl_adaptation,
        cold_only=args.cold_only,
    )
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
