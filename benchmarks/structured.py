"""Structured-models benchmark: enumerated discrete sites, in a plate and in ``ppl.scan``.

``python -m benchmarks.structured`` measures, side by side in one run:

1. **sampling** (``--parts sampling``): ppl's NUTS against NumPyro's NUTS (funsor
   enumeration) on two models with an enumerated ``Categorical`` site, each written once as
   a function of a PPL module ``P`` (:func:`hmm`, :func:`mixture`), like the suite's models:

   - ``hmm``: a hidden Markov model, K = 3 states, Gaussian emissions, T = 1,000 steps
     simulated with a fixed seed; the state is a ``ppl.scan`` (NumPyro:
     ``numpyro.contrib.control_flow.scan``) over time with an enumerated ``Categorical``;
   - ``mixture``: a K = 3 Gaussian mixture with N = 10,000 points, the label an enumerated
     ``Categorical`` inside a plate.

   Each (sampler, model) runs in its own fresh Python process with the suite's runners
   (:data:`benchmarks.samplers.RUNNERS`: same settings, initial points uniform in (-2, 2),
   target acceptance 0.8, diagonal mass matrix): a cold run (compilation included), then a
   warm run with a new seed; the warm run's ESS per second, with the time JAX spends
   compiling inside it subtracted (``ess_per_s_sampling``), is the figure compared.

2. **compile** (``--parts compile``): the compile time of ppl's log density and gradient of
   the HMM, ``jax.jit(jax.value_and_grad(logdensity))``, first call minus second call, at
   T = 100 and T = 10,000 (one fresh process, after a discarded compilation at a third
   size; the sizes alternate over ``--compile-repeats`` rounds, medians reported): with the
   state in a ``lax.scan`` the program should not grow with T.

3. **gradient** (``--parts gradient``): the time of one gradient of ppl's enumerated HMM
   log density against a hand-written forward algorithm in JAX (:func:`bare_hmm_logdensity`:
   the same model and parameterisation, a ``lax.scan`` of ``logsumexp``) at T = 1,000, as
   :func:`benchmarks.samplers.time_gradient` times it: ``us_per_grad`` (one jitted call,
   ``block_until_ready``, medians of many calls after warm-up) and ``us_per_grad_loop`` (per
   evaluation inside one compiled loop, the cost inside a sampler).

The JSON (``--out``) holds every number, the ratios with their targets (ESS/s ppl/NumPyro
at least 5; compile time T = 10,000 over T = 100 and gradient time ppl over the
hand-written one at most 1.5), the settings and the machine. See ``benchmarks/README.md``,
section "Structured models".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from benchmarks.models import BenchModel, ModelChoice, parse_choice

__all__ = [
    "MODELS",
    "TARGETS",
    "bare_hmm_logdensity",
    "build_parser",
    "hmm",
    "hmm_data",
    "main",
    "mixture",
    "mixture_data",
    "parse_structured_model",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "structured.json"
MARKER = "STRUCTURED_RESULT "
PARTS = ("sampling", "compile", "gradient")
SAMPLERS = ("ppl", "numpyro", "blackjax")  # blackjax targets NumPyro's (funsor) potential

FULL = {
    "chains": 2,
    "warmup": 500,
    "draws": 500,
    "compile_T": (100, 10_000),
    "compile_repeats": 5,
    "gradient_T": 1000,
    "gradient_rounds": 3,
}
QUICK = {
    "chains": 2,
    "warmup": 100,
    "draws": 100,
    "compile_T": (20, 200),
    "compile_repeats": 1,
    "gradient_T": 100,
    "gradient_rounds": 1,
}

# name -> (the ratio in the JSON, "min" (at least) or "max" (at most), the target)
TARGETS = {
    "ess_per_s_hmm": ("sampling ESS/s ppl / numpyro, hmm", "min", 5.0),
    "ess_per_s_mixture": ("sampling ESS/s ppl / numpyro, mixture", "min", 5.0),
    "compile_growth": ("compile time, large T / small T", "max", 1.5),
    "gradient_vs_bare": ("gradient time, ppl / hand-written forward algorithm", "max", 1.5),
    "gradient_vs_bare_loop": ("same, per evaluation in a compiled loop", "max", 1.5),
}

HMM_TRUTH = {
    "transition_stay": 0.9,  # diagonal of the transition matrix, the rest spread evenly
    "locs": (-2.0, 0.0, 2.0),
    "scale": 0.8,
}
MIXTURE_TRUTH = {"weights": (0.3, 0.5, 0.2), "locs": (-2.0, 0.0, 2.5), "scale": 0.8}


# ---------------------------------------------------------------------- the models


def _scan(P: ModuleType) -> Callable[..., Any]:
    """``ppl.scan`` for ppl, ``numpyro.contrib.control_flow.scan`` for numpyro."""
    if P.__name__ == "numpyro":
        from numpyro.contrib.control_flow import scan

        return scan
    return P.scan


def sample_locs(P: ModuleType, K: int) -> jax.Array:
    """K increasing locations: ``loc_first`` ~ N(0, 5) and ``loc_gaps`` (K - 1) ~ Gamma(4, 2)
    (mean 2, sd 1) between neighbours, ``locs`` a deterministic site.

    The order identifies the states' and components' labels; the gaps' prior keeps two
    locations from sitting on top of each other. With merely ordered locations (an ordered
    transform of N(0, 5) draws), chains started uniformly in (-2, 2) fall, for ppl and
    NumPyro alike, into a local mode of the mixture where one cluster is split between two
    components at nearly the same location and the other two share the third (log density
    about 215 below the main mode, never left again): in 2 x (500 + 500) runs with seeds 1-6,
    4 of 12 chains of ppl's NUTS (1 of 12 with ``adaptation="stan"``) and 2 of 12 of
    NumPyro's, which makes ESS/s a measure of luck. With the gaps' prior: 0 of 20 chains of
    ppl (seeds 1-10) and 0 of 10 of NumPyro (seeds 1-5), mixture and HMM alike.
    """
    first = P.sample("loc_first", dist.Normal(0.0, 5.0))
    with P.plate("gap", K - 1):
        gaps = P.sample("loc_gaps", dist.Gamma(4.0, 2.0))
    return P.deterministic("locs", first + jnp.concatenate([jnp.zeros(1), jnp.cumsum(gaps)]))


def hmm(P: ModuleType) -> Callable[..., None]:
    """Hidden Markov model with K states and Gaussian emissions.

    Latent sites: ``trans`` (K, K), each row ~ Dirichlet(1) (the rows in a plate);
    ``loc_first``, ``loc_gaps`` (K - 1): increasing ``locs`` (:func:`sample_locs`);
    ``scale`` ~ HalfNormal(2). The state starts at 0 (the carry)
    and z_t ~ Categorical(trans[z_{t-1}]), y_t ~ N(locs[z_t], scale), the z_t enumerated
    (``infer={"enumerate": "parallel"}``) inside a scan over time.
    """
    scan = _scan(P)

    def hmm_model(y, K):
        with P.plate("state", K):
            trans = P.sample("trans", dist.Dirichlet(jnp.ones(K)))
        locs = sample_locs(P, K)
        scale = P.sample("scale", dist.HalfNormal(2.0))

        def step(z_prev, y_t):
            z = P.sample("z", dist.Categorical(trans[z_prev]), infer={"enumerate": "parallel"})
            P.sample("y", dist.Normal(locs[z], scale), obs=y_t)
            return z, None

        scan(step, jnp.array(0, dtype=jnp.int32), y)

    return hmm_model


def hmm_data(T: int = 1000, K: int = 3, seed: int = 4) -> dict[str, Any]:
    """States from the chain with 0.9 on the diagonal of the transition matrix, started at
    state 0; emissions N(locs[z], 0.8) with locs evenly spaced from -2 to 2; float32."""
    if T < 2 or K < 2:
        raise ValueError(f"hmm needs T >= 2 and K >= 2, got T={T}, K={K}")
    rng = np.random.default_rng(seed)
    stay = HMM_TRUTH["transition_stay"]
    trans = np.full((K, K), (1.0 - stay) / (K - 1))
    np.fill_diagonal(trans, stay)
    locs = np.linspace(HMM_TRUTH["locs"][0], HMM_TRUTH["locs"][-1], K)
    z = np.empty(T, dtype=np.int64)
    state = 0
    for t in range(T):
        state = rng.choice(K, p=trans[state])
        z[t] = state
    y = locs[z] + HMM_TRUTH["scale"] * rng.normal(size=T)
    return {"y": jnp.asarray(y, dtype=jnp.float32), "K": int(K)}


def mixture(P: ModuleType) -> Callable[..., None]:
    """Gaussian mixture with K components and an enumerated label per point.

    Latent sites: ``weights`` ~ Dirichlet(1) (K,), ``loc_first``, ``loc_gaps`` (K - 1):
    increasing ``locs`` (:func:`sample_locs`), ``scale`` ~ HalfNormal(2); in a plate over
    the N points, z ~ Categorical(weights) (enumerated) and y ~ N(locs[z], scale).
    """

    def mixture_model(y, K):
        weights = P.sample("weights", dist.Dirichlet(jnp.ones(K)))
        locs = sample_locs(P, K)
        scale = P.sample("scale", dist.HalfNormal(2.0))
        with P.plate("data", y.shape[0]):
            z = P.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
            P.sample("y", dist.Normal(locs[z], scale), obs=y)

    return mixture_model


def mixture_data(N: int = 10_000, K: int = 3, seed: int = 5) -> dict[str, Any]:
    """N points from a 3-component mixture, weights (0.3, 0.5, 0.2), locs (-2, 0, 2.5),
    scale 0.8 (for other K: equal weights, locs evenly spaced from -2 to 2.5); float32."""
    if N < 1 or K < 2:
        raise ValueError(f"mixture needs N >= 1 and K >= 2, got N={N}, K={K}")
    rng = np.random.default_rng(seed)
    if K == len(MIXTURE_TRUTH["weights"]):
        weights, locs = np.asarray(MIXTURE_TRUTH["weights"]), np.asarray(MIXTURE_TRUTH["locs"])
    else:
        weights = np.full(K, 1.0 / K)
        locs = np.linspace(MIXTURE_TRUTH["locs"][0], MIXTURE_TRUTH["locs"][-1], K)
    z = rng.choice(K, p=weights, size=N)
    y = locs[z] + MIXTURE_TRUTH["scale"] * rng.normal(size=N)
    return {"y": jnp.asarray(y, dtype=jnp.float32), "K": int(K)}


MODELS: dict[str, BenchModel] = {
    m.name: m
    for m in (
        BenchModel(
            "hmm",
            "HMM, Gaussian emissions, state enumerated in a scan",
            hmm,
            hmm_data,
            defaults={"T": 1000, "K": 3},
            quick={"T": 100},
        ),
        BenchModel(
            "mixture",
            "Gaussian mixture, label enumerated in a plate",
            mixture,
            mixture_data,
            defaults={"N": 10_000, "K": 3},
            quick={"N": 1000},
        ),
    )
}


def parse_structured_model(text: str, *, quick: bool = False) -> ModelChoice:
    """``"hmm:T=500"`` -> ModelChoice, as :func:`benchmarks.models.parse_model` for the suite."""
    return parse_choice(text, MODELS, quick=quick, kind="structured model")


# ---------------------------------------------------------------------- the bare forward pass


def bare_hmm_logdensity(
    y: jax.Array, K: int, layout: dict[str, tuple[int, tuple[int, ...]]]
) -> Callable[[jax.Array], jax.Array]:
    """The HMM's log density (:func:`hmm`) written by hand in JAX: the forward algorithm.

    Same model and parameterisation as ppl's ``logdensity(hmm(ppl), y, K)``: the same flat
    unconstrained vector (``layout``: site -> (offset, unconstrained shape), from ppl's
    ``LogDensity.sites``), the same transforms (stick-breaking for the Dirichlet rows, exp
    for the gaps and the scale) with their Jacobians and the same priors; the states summed out by a
    ``lax.scan`` over time of ``logsumexp(alpha[:, None] + log trans, axis=0) + emission``.
    """
    from numpyro.distributions.transforms import biject_to

    row_prior = dist.Dirichlet(jnp.ones(K))
    first_prior = dist.Normal(0.0, 5.0)
    gap_prior = dist.Gamma(4.0, 2.0)
    scale_prior = dist.HalfNormal(2.0)

    def part(theta, name):
        offset, shape = layout[name]
        return theta[offset : offset + math.prod(shape)].reshape(shape)

    def constrained(theta, name, prior):
        u = part(theta, name)
        transform = biject_to(prior.support)
        x = transform(u)
        return x, jnp.sum(transform.log_abs_det_jacobian(u, x)) + jnp.sum(prior.log_prob(x))

    def logdensity(theta):
        trans, lp_trans = constrained(theta, "trans", row_prior)
        first, lp_first = constrained(theta, "loc_first", first_prior)
        gaps, lp_gaps = constrained(theta, "loc_gaps", gap_prior)
        scale, lp_scale = constrained(theta, "scale", scale_prior)
        locs = first + jnp.concatenate([jnp.zeros(1), jnp.cumsum(gaps)])
        log_trans = jnp.log(trans)
        emission = dist.Normal(locs, scale).log_prob(y[:, None])  # (T, K)

        def forward(alpha, emission_t):
            return jax.nn.logsumexp(alpha[:, None] + log_trans, axis=0) + emission_t, None

        alpha, _ = jax.lax.scan(forward, log_trans[0] + emission[0], emission[1:])
        prior = lp_trans + lp_first + lp_gaps + lp_scale
        return prior + jax.nn.logsumexp(alpha)

    return logdensity


def ppl_layout(ld: Any) -> dict[str, tuple[int, tuple[int, ...]]]:
    """site -> (offset, unconstrained shape) of the latent sites of a ppl LogDensity."""
    return {
        name: (info.offset, tuple(info.unconstrained_shape))
        for name, info in ld.sites.items()
        if info.kind == "latent"
    }


# ---------------------------------------------------------------------- measurements (workers)


def _numpyro_latent_sites(model: Callable[..., Any], data: dict[str, Any]) -> list[str]:
    """The latent sample sites of a NumPyro model that are not enumerated."""
    from numpyro import handlers

    tr = handlers.trace(handlers.seed(model, rng_seed=0)).get_trace(**data)
    return [
        name
        for name, site in tr.items()
        if site["type"] == "sample"
        and not site.get("is_observed", False)
        and site.get("infer", {}).get("enumerate") != "parallel"
    ]


def measure_sampling(
    sampler: str, model: str, *, chains: int, warmup: int, draws: int, seed: int
) -> dict[str, Any]:
    """One (sampler, model): cold run, warm run, ESS, gradient times (as
    :func:`benchmarks.worker.measure` does for the suite's models)."""
    from benchmarks.samplers import RUNNERS, CompileClock, Settings, parse_sampler
    from benchmarks.worker import summarize_draws

    CompileClock.install()
    choice = parse_structured_model(model)
    spec = parse_sampler(sampler)
    if spec.name not in SAMPLERS:
        raise ValueError(f"sampler {spec.name!r} is not in this benchmark ({SAMPLERS})")
    t0 = time.perf_counter()
    data = choice.data()
    data_s = time.perf_counter() - t0
    settings = Settings(chains=chains, warmup=warmup, draws=draws)
    runner = RUNNERS[spec.name](choice, data, settings, spec.options)

    cold = runner.run(seed)
    warm = runner.run(seed + 1)
    if spec.name == "ppl":
        latent = runner.latent_sites()  # enumerated sites are not "latent" in ppl
    else:
        latent = _numpyro_latent_sites(runner.model, data)
    summary = summarize_draws(warm.samples, latent)
    sample_s = max(warm.wall_s - warm.compile_s, 1e-9)
    min_ess = summary["min_ess_bulk"]
    grad_times = runner.measure_gradient(seed)
    device = jax.devices()[0]
    return {
        "status": "ok",
        "sampler": spec.key,
        "model": choice.key,
        "options": runner.options,
        "versions": {"jax": jax.__version__, **runner.versions()},
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "latent_sites": latent,
        "data_s": data_s,
        "cold_s": cold.wall_s,
        "cold_compile_s": cold.compile_s,
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
        "ess_per_s": min_ess / warm.wall_s if warm.wall_s > 0 else None,
        "ess_per_s_sampling": min_ess / sample_s,
        "ess_per_kgrad": 1000.0 * min_ess / warm.n_grad if warm.n_grad else None,
        "grads_per_draw": warm.n_grad / (chains * draws),
        **grad_times,
        "posterior": summary["posterior"],
    }


def _hmm_logdensity(T: int):
    import ppl

    data = hmm_data(T=T)
    return ppl.logdensity(hmm(ppl), **data), data


def _compile_once(T: int) -> dict[str, float]:
    """First call minus second call of a fresh ``jit(value_and_grad)`` of ppl's HMM."""
    from benchmarks.samplers import CompileClock

    ld, _ = _hmm_logdensity(T)
    theta = ld.init(jax.random.PRNGKey(0))
    fn = jax.jit(jax.value_and_grad(ld))
    mark = CompileClock.mark()
    t0 = time.perf_counter()
    jax.block_until_ready(fn(theta))
    first = time.perf_counter() - t0
    jax_compile = CompileClock.seconds_since(mark)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(theta))
    second = time.perf_counter() - t0
    return {
        "first_call_s": first,
        "second_call_s": second,
        "compile_s": first - second,
        "jax_compile_events_s": jax_compile,
    }


def measure_compile(sizes: list[int], repeats: int) -> dict[str, Any]:
    """Compile time of ppl's HMM gradient at each T (medians over ``repeats`` rounds, the
    order of the sizes alternating), after one discarded compilation at T = 10."""
    from benchmarks.samplers import CompileClock

    CompileClock.install()
    _compile_once(10)  # backend start-up, first-use caches: not part of any size's time
    runs: dict[int, list[dict[str, float]]] = {T: [] for T in sizes}
    for r in range(repeats):
        for T in sizes if r % 2 == 0 else list(reversed(sizes)):
            runs[T].append(_compile_once(T))
    by_size = {}
    for T, results in runs.items():
        by_size[str(T)] = {
            field: statistics.median(res[field] for res in results)
            for field in ("first_call_s", "second_call_s", "compile_s", "jax_compile_events_s")
        }
        by_size[str(T)]["runs"] = results
    small, large = str(min(sizes)), str(max(sizes))
    return {
        "status": "ok",
        "sizes": sizes,
        "repeats": repeats,
        "by_T": by_size,
        "ratio": by_size[large]["compile_s"] / by_size[small]["compile_s"],
    }


def measure_gradient(T: int, rounds: int = 3) -> dict[str, Any]:
    """ppl's enumerated HMM gradient against the hand-written forward algorithm at T, timed
    in ``rounds`` interleaved rounds (the best of each kept)."""
    from benchmarks.samplers import time_gradient

    ld, data = _hmm_logdensity(T)
    bare = bare_hmm_logdensity(data["y"], data["K"], ppl_layout(ld))
    theta = ld.init(jax.random.PRNGKey(0))
    ours_value, bare_value = float(jax.jit(ld)(theta)), float(jax.jit(bare)(theta))
    if not math.isclose(ours_value, bare_value, rel_tol=1e-4, abs_tol=1e-2):
        raise AssertionError(
            f"the hand-written HMM log density {bare_value} differs from ppl's {ours_value}"
        )
    # interleaved rounds; the best of each is kept (as time_gradient keeps its best block)
    ours_runs, bare_runs = [], []
    for _ in range(rounds):
        ours_runs.append(time_gradient(jax.value_and_grad(ld), theta))
        bare_runs.append(time_gradient(jax.value_and_grad(bare), theta))
    ours = {k: min(r[k] for r in ours_runs) for k in ours_runs[0]}
    theirs = {k: min(r[k] for r in bare_runs) for k in bare_runs[0]}
    return {
        "status": "ok",
        "T": T,
        "rounds": rounds,
        "dim": int(ld.dim),
        "log_density_ppl": ours_value,
        "log_density_bare": bare_value,
        "ppl": ours,
        "bare": theirs,
        "ratio": ours["us_per_grad"] / theirs["us_per_grad"],
        "ratio_loop": ours["us_per_grad_loop"] / theirs["us_per_grad_loop"],
    }


def run_worker_plan(plan: dict[str, Any]) -> dict[str, Any]:
    part = plan["part"]
    if part == "sampling":
        return measure_sampling(
            plan["sampler"],
            plan["model"],
            chains=plan["chains"],
            warmup=plan["warmup"],
            draws=plan["draws"],
            seed=plan["seed"],
        )
    if part == "compile":
        return measure_compile(plan["sizes"], plan["repeats"])
    if part == "gradient":
        return measure_gradient(plan["T"], plan.get("rounds", 3))
    raise ValueError(f"unknown part {part!r}")


def run_worker(plan: dict[str, Any], *, timeout: float, in_process: bool = False) -> dict:
    """Run one plan in a fresh Python process (or here); failures become results."""
    if in_process:
        try:
            return run_worker_plan(plan)
        except Exception as exc:
            return {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    command = [sys.executable, "-m", "benchmarks.structured", "--worker", json.dumps(plan)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            result = json.loads(line[len(MARKER) :])
            result["process_s"] = time.perf_counter() - t0
            return result
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    return {"status": "error", "reason": f"worker exited with {proc.returncode}:\n{tail}"}


# ---------------------------------------------------------------------- report


def _fmt(value: Any) -> str:
    from benchmarks.harness import _fmt as fmt

    return fmt(value)


def target_summary(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target's measured ratio and whether it is met (None where not measured)."""
    values: dict[str, float | None] = {}
    for name in MODELS:
        entry = report.get("sampling", {}).get(name)
        ratio = None
        if entry:
            ratio = entry.get("ratios", {}).get("numpyro", {}).get("ess_per_s_sampling")
        values[f"ess_per_s_{name}"] = ratio
    values["compile_growth"] = report.get("compile", {}).get("ratio")
    values["gradient_vs_bare"] = report.get("gradient", {}).get("ratio")
    values["gradient_vs_bare_loop"] = report.get("gradient", {}).get("ratio_loop")
    summary = {}
    for name, (label, kind, target) in TARGETS.items():
        value = values.get(name)
        met = None if value is None else (value >= target if kind == "min" else value <= target)
        summary[name] = {"label": label, "value": value, kind: target, "met": met}
    return summary


def format_report(report: dict[str, Any]) -> str:
    from benchmarks.harness import format_table

    lines = []
    for entry in report.get("sampling", {}).values():
        lines += [format_table(entry), ""]
    compile_ = report.get("compile")
    if compile_:
        if compile_.get("status") == "ok":
            lines.append(
                "== compile time of jit(value_and_grad(ppl HMM log density)), first call "
                f"minus second call, median of {compile_['repeats']}"
            )
            for T, res in compile_["by_T"].items():
                lines.append(
                    f"  T = {T:>6}: {_fmt(res['compile_s'])} s "
                    f"(JAX compile events {_fmt(res['jax_compile_events_s'])} s, "
                    f"a call {_fmt(res['second_call_s'] * 1e3)} ms)"
                )
            lines.append(
                f"  ratio T = {max(compile_['sizes'])} / T = {min(compile_['sizes'])}:"
                f" {_fmt(compile_['ratio'])}"
            )
        else:
            lines.append(f"== compile: {compile_.get('status')}: {compile_.get('reason')}")
        lines.append("")
    gradient = report.get("gradient")
    if gradient:
        if gradient.get("status") == "ok":
            lines.append(
                f"== gradient of the HMM log density, T = {gradient['T']}: ppl (enumerated, "
                "ppl.scan) vs hand-written forward algorithm (lax.scan of logsumexp)"
            )
            for who in ("ppl", "bare"):
                res = gradient[who]
                lines.append(
                    f"  {who:5s} {_fmt(res['us_per_grad'])} us per call, "
                    f"{_fmt(res['us_per_grad_loop'])} us per evaluation in a compiled loop"
                )
            lines.append(
                f"  ratio ppl/bare: {_fmt(gradient['ratio'])} (call), "
                f"{_fmt(gradient['ratio_loop'])} (loop)"
            )
        else:
            lines.append(f"== gradient: {gradient.get('status')}: {gradient.get('reason')}")
        lines.append("")
    lines.append("== targets")
    for res in report.get("targets", {}).values():
        bound = f">= {res['min']}" if "min" in res else f"<= {res['max']}"
        met = {True: "met", False: "MISSED", None: "not measured"}[res["met"]]
        lines.append(f"  {res['label']}: {_fmt(res['value'])} (target {bound}): {met}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- main


def _int_pair(text: str) -> tuple[int, int]:
    parts = [int(float(p)) for p in text.split(",") if p.strip()]
    if len(parts) != 2 or min(parts) < 2 or parts[0] == parts[1]:
        raise argparse.ArgumentTypeError(f"need two different sizes >= 2, got {text!r}")
    return tuple(sorted(parts))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.structured",
        description=(
            "Enumerated discrete sites: ppl's NUTS vs NumPyro's (funsor) on an HMM and a "
            "mixture, the compile time of the HMM's gradient against T, and its cost against "
            "a hand-written forward algorithm. Each measurement runs in a fresh process."
        ),
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated parts to run (default: {','.join(PARTS)})",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="models for the sampling part, name[:param=value...], e.g. hmm:T=500 "
        "mixture:N=2000 (default: hmm, mixture at full or quick sizes)",
    )
    parser.add_argument(
        "--samplers",
        default="ppl,numpyro",
        help="comma-separated samplers of the sampling part: ppl (options as in "
        "python -m benchmarks, e.g. ppl:chain_method=vectorized), numpyro, blackjax; ratios "
        "are the first ppl entry over each other (default ppl,numpyro)",
    )
    parser.add_argument("--chains", type=int, default=None, help="chains (default 2)")
    parser.add_argument("--warmup", type=int, default=None, help="warmup (default 500; quick 100)")
    parser.add_argument("--draws", type=int, default=None, help="draws (default 500; quick 100)")
    parser.add_argument("--seed", type=int, default=0, help="cold run seed; warm run seed + 1")
    parser.add_argument(
        "--compile-T",
        type=_int_pair,
        default=None,
        help="the two HMM lengths of the compile part (default 100,10000; quick 20,200)",
    )
    parser.add_argument(
        "--compile-repeats", type=int, default=None, help="compile rounds (default 5; quick 1)"
    )
    parser.add_argument(
        "--gradient-T", type=int, default=None, help="HMM length of the gradient part (1000)"
    )
    parser.add_argument(
        "--gradient-rounds",
        type=int,
        default=None,
        help="interleaved timing rounds of the gradient part, best kept (default 3; quick 1)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny settings: 2 chains x (100 + 100), T = 100, N = 1000, compile T = 20, 200",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per worker")
    parser.add_argument(
        "--in-process", action="store_true", help="debugging: measure in this process"
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker is not None:
        result = run_worker_plan(json.loads(args.worker))
        sys.stdout.write(MARKER + json.dumps(result) + "\n")
        sys.stdout.flush()
        return 0

    from benchmarks.harness import (
        compute_ratios,
        machine_info,
        max_abs_z,
        report_header,
        write_json,
    )
    from benchmarks.samplers import parse_sampler

    base = QUICK if args.quick else FULL
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        parser.error(f"unknown part(s) {unknown}; choose from {list(PARTS)}")
    settings = {
        "chains": args.chains if args.chains is not None else base["chains"],
        "warmup": args.warmup if args.warmup is not None else base["warmup"],
        "draws": args.draws if args.draws is not None else base["draws"],
        "seed": args.seed,
    }
    if settings["chains"] < 1 or settings["draws"] < 4 or settings["warmup"] < 0:
        parser.error("need --chains >= 1, --draws >= 4 and --warmup >= 0")
    compile_T = list(args.compile_T or base["compile_T"])
    compile_repeats = args.compile_repeats or base["compile_repeats"]
    gradient_T = args.gradient_T or base["gradient_T"]
    gradient_rounds = args.gradient_rounds or base["gradient_rounds"]
    if compile_repeats < 1 or gradient_T < 2 or gradient_rounds < 1:
        parser.error("need --compile-repeats >= 1, --gradient-T >= 2, --gradient-rounds >= 1")
    try:
        models = [
            parse_structured_model(m, quick=args.quick)
            for value in (args.models or list(MODELS))
            for m in value.split(",")
            if m.strip()
        ]
        specs = [parse_sampler(s) for s in args.samplers.split(",") if s.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    bad = [s.key for s in specs if s.name not in SAMPLERS]
    if bad:
        parser.error(f"sampler(s) {bad} not in this benchmark; choose from {list(SAMPLERS)}")

    report: dict[str, Any] = {
        **report_header("python -m benchmarks.structured", argv),
        "settings": {
            **settings,
            "quick": args.quick,
            "parts": parts,
            "samplers": [s.key for s in specs],
            "models": [m.key for m in models],
            "compile_T": compile_T,
            "compile_repeats": compile_repeats,
            "gradient_T": gradient_T,
            "gradient_rounds": gradient_rounds,
            "x64": bool(jax.config.jax_enable_x64),
        },
        "isolation": "in-process" if args.in_process else "fresh process per measurement",
        "machine": {**machine_info(), "load_average_start": _load()},
    }
    failed = False

    def run(plan: dict[str, Any], label: str) -> dict[str, Any]:
        nonlocal failed
        print(f"running {label} ...", end=" ", flush=True)
        t0 = time.perf_counter()
        res = run_worker(plan, timeout=args.timeout, in_process=args.in_process)
        print(f"{res['status']} ({time.perf_counter() - t0:.1f} s)", flush=True)
        if res["status"] != "ok":
            failed = True
            print(f"error: {label} failed: {res.get('reason')}", flush=True)
        return res

    if "sampling" in parts:
        report["sampling"] = {}
        for choice in models:
            results = {}
            for spec in specs:
                plan = {"part": "sampling", "sampler": spec.key, "model": choice.key, **settings}
                results[spec.key] = run(plan, f"{spec.key} on {choice.key}")
            reference = results.get("numpyro", {})
            for key, res in results.items():
                if res.get("status") == "ok" and key != "numpyro":
                    res["max_abs_z_vs_numpyro"] = (
                        max_abs_z(res, reference) if reference.get("status") == "ok" else None
                    )
            dims = {r["dim"] for r in results.values() if r.get("status") == "ok"}
            report["sampling"][choice.model.name] = {
                "model": choice.key,
                "description": choice.model.description,
                "params": choice.params,
                "dim": dims.pop() if len(dims) == 1 else sorted(dims),
                "settings": settings,
                "samplers": results,
                "ratios": compute_ratios(results),
            }
            write_json(report, args.out)
    if "compile" in parts:
        report["compile"] = run(
            {"part": "compile", "sizes": compile_T, "repeats": compile_repeats},
            f"compile time at T = {compile_T}",
        )
    if "gradient" in parts:
        report["gradient"] = run(
            {"part": "gradient", "T": gradient_T, "rounds": gradient_rounds},
            f"gradient vs forward algorithm, T = {gradient_T}",
        )
    report["machine"]["load_average_end"] = _load()
    report["targets"] = target_summary(report)
    write_json(report, args.out)
    print()
    print(format_report(report), flush=True)
    print(f"\nresults written to {args.out}")
    return 1 if failed else 0


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
