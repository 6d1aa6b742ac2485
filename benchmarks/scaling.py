"""Scaling benchmark: time per gradient and ESS per second as the data and the dimension grow.

``python -m benchmarks.scaling`` measures, side by side in one run, ppl's NUTS, NumPyro,
BlackJAX and nutpie (where installed) on two families of models of growing size, against
the *bare loop*: a hand-written pure-JAX log density whose ``jax.value_and_grad`` is
compiled into one ``lax.fori_loop`` and timed exactly as each sampler's own log density
is timed (:func:`benchmarks.samplers.time_gradient`): the floor any sampler pays per
gradient.

Axes (``--axis data|dim|both``):

- ``data``: the suite's logistic regression (:func:`benchmarks.models.logistic_regression`)
  with 20 predictors and 10^3 .. 10^6 rows: the cost of one gradient grows with the rows,
  the posterior's dimension (21) does not.
- ``dim``: the suite's diagonal Gaussian (:func:`benchmarks.models.gaussian`), scales
  log-spaced from 0.01 to 100, with 10 .. 10^4 dimensions: a cheap gradient, but longer
  trajectories as the dimension grows and a mass matrix of that many entries to adapt.

Each (sampler, axis) runs in its own fresh Python process (``python -m benchmarks.scaling
--worker PLAN``), which goes through the sizes in increasing order and prints one JSON line
per size; per size it

1. builds the data (untimed) and the sampler (:data:`benchmarks.samplers.RUNNERS`, the same
   runners, settings and initialisation as the peer benchmark);
2. times the gradient of the sampler's log density (``us_per_grad``, ``us_per_grad_loop``);
3. predicts the run's time from the previous size (its sampling time, scaled by the ratio of
   the costs of a leapfrog step, gradient plus the sampler's own work, and of the iteration
   counts: :func:`predict_run_seconds`) and skips the size, with the reason, when the
   prediction exceeds the per-run limit (``--limit``);
4. runs warmup + sampling once; ``sample_s`` is that run's wall time minus the time JAX (or
   nutpie's PyTensor/numba) spent compiling inside it, and ``ess_per_s`` is the smallest bulk
   ESS over all parameter elements divided by ``sample_s``.

The driver kills a worker whose size runs past the limit (the size is then reported as
``timeout`` and the larger sizes of that sampler are skipped). Results go to
``--out``/scaling.json (every number, the settings, the machine and the load average), one
PNG per axis (time per gradient and ESS/s against size, log-log) and a printed table. See
``benchmarks/README.md``, section "Scaling benchmark".
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "AXES",
    "Axis",
    "bare_logdensity",
    "build_parser",
    "default_schedule",
    "format_table",
    "main",
    "plot_axis",
    "predict_run_seconds",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "scaling"
MARKER = "SCALING_RESULT "
BARE = "bare"
DEFAULT_SAMPLERS = ("ppl", "numpyro", "blackjax", "nutpie")
DEFAULT_LIMIT_S = 240.0


@dataclass(frozen=True)
class Axis:
    """One scaling axis: a suite model whose size parameter ``param`` grows.

    Attributes:
        name: ``data`` or ``dim``.
        model: the model's name in :data:`benchmarks.models.MODELS`.
        param: the size parameter of that model (``rows``, ``dim``).
        fixed: the model's other parameters, held fixed (``{"cols": 20}``).
        sizes: default sizes of the full run.
        quick_sizes: sizes of ``--quick``.
        label: axis label of the plot.
        iteration_exponent: how the cost of one NUTS iteration is assumed to grow with
            the size beyond the cost of a gradient, for the run-time prediction: 0 when
            the trajectory length does not depend on the size (more rows), 1/4 for the
            dimension (leapfrog steps per trajectory ~ d^(1/4) at a fixed acceptance rate).
        overhead_exponent: how the sampler's own work per leapfrog step (beyond the
            gradient) grows with the size, for the prediction: 0 when the number of
            parameters is fixed (more rows), 1 for the dimension (O(d) vector arithmetic).
    """

    name: str
    model: str
    param: str
    fixed: dict[str, int]
    sizes: tuple[int, ...]
    quick_sizes: tuple[int, ...]
    label: str
    iteration_exponent: float
    overhead_exponent: float = 0.0

    def model_key(self, size: int) -> str:
        """The suite's model spec at ``size``, e.g. ``logistic:cols=20:rows=1000``."""
        from benchmarks.models import format_model

        return format_model(self.model, {**self.fixed, self.param: int(size)})


AXES: dict[str, Axis] = {
    "data": Axis(
        "data",
        "logistic",
        "rows",
        {"cols": 20},
        (1_000, 10_000, 100_000, 1_000_000),
        (100, 400),
        "rows of data (logistic regression, 20 predictors)",
        0.0,
    ),
    "dim": Axis(
        "dim",
        "gaussian",
        "dim",
        {},
        (10, 100, 1_000, 10_000),
        (3, 12),
        "dimension (diagonal Gaussian, scales 0.01..100)",
        0.25,
        1.0,
    ),
}

# Iterations (warmup, draws) by size: fewer at large sizes, where one gradient is expensive
# (data) or the draws are large (dim). ``--warmup`` and ``--samples`` override them.
_SCHEDULE = {
    "data": ((10_000, 500, 500), (100_000, 300, 300), (math.inf, 150, 150)),
    "dim": ((1_000, 500, 500), (math.inf, 300, 300)),
}
QUICK_SCHEDULE = (20, 20)
DEFAULT_CHAINS = 4
QUICK_CHAINS = 2


def default_schedule(axis: str, size: int, *, quick: bool = False) -> tuple[int, int]:
    """``(warmup, draws)`` per chain at ``size`` on ``axis`` (the default of ``--warmup`` and
    ``--samples``): data axis 500 + 500 up to 10^4 rows, 300 + 300 up to 10^5, 150 + 150
    above; dimension axis 500 + 500 up to 1000, 300 + 300 above; quick 20 + 20."""
    if quick:
        return QUICK_SCHEDULE
    for upper, warmup, draws in _SCHEDULE[axis]:
        if size <= upper:
            return warmup, draws
    raise AssertionError("unreachable")  # the last bound is infinite


# ---------------------------------------------------------------------- the bare loop


def bare_logdensity(axis: str, data: dict[str, Any]) -> tuple[Callable[[Any], Any], int]:
    """The model's log density written directly in ``jax.numpy``: no PPL, no tracing of
    sample sites, no transforms (both models are unconstrained).

    Args:
        axis: ``data`` (logistic regression: ``theta = [alpha, beta_1..beta_k]``) or ``dim``
            (diagonal Gaussian: ``theta = x``).
        data: the model's data, from the suite's data function (``X (rows, k)``, ``y
            (rows,)``; or ``scales (dim,)``).

    Returns:
        ``(logp, dim)``: ``logp(theta (dim,)) -> scalar``, the same function (normalising
        constants included) as ppl's ``ppl.logdensity`` of the suite model, and its
        dimension.
    """
    import jax.numpy as jnp

    half_log_2pi = 0.5 * math.log(2.0 * math.pi)
    if axis == "data":
        X = data["X"]
        y = data["y"].astype(X.dtype)
        k = X.shape[1]

        def logp(theta):
            alpha, beta = theta[0], theta[1:]
            logits = alpha + X @ beta
            prior = (
                -0.5 * (alpha / 2.5) ** 2
                - math.log(2.5)
                - half_log_2pi
                + jnp.sum(-0.5 * beta**2 - half_log_2pi)
            )
            # y log sigmoid(l) + (1 - y) log sigmoid(-l) = y l - softplus(l), with the stable
            # softplus(l) = max(l, 0) + log1p(exp(-|l|)) that NumPyro's Bernoulli(logits) uses
            softplus = jnp.maximum(logits, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(logits)))
            return prior + jnp.sum(y * logits - softplus)

        return logp, k + 1
    if axis == "dim":
        scales = data["scales"]
        log_scales = jnp.log(scales)

        def logp(theta):
            return jnp.sum(-0.5 * (theta / scales) ** 2 - log_scales - half_log_2pi)

        return logp, int(scales.shape[0])
    raise ValueError(f"unknown axis {axis!r}; choose from {sorted(AXES)}")


# ---------------------------------------------------------------------- predictions


def predict_run_seconds(
    previous: dict[str, Any] | None,
    us_per_grad_loop: float | None,
    *,
    size: int,
    warmup: int,
    draws: int,
    iteration_exponent: float,
    overhead_exponent: float = 0.0,
) -> float | None:
    """Predicted sampling time (s) of a run at ``size``, from the last completed size.

    ``previous``'s sampling time, times the ratio of the costs of one leapfrog step at the
    two sizes, of the iterations (warmup + draws) and ``(size / previous size) **
    iteration_exponent`` (longer trajectories at higher dimension). A step costs a
    gradient (``us_per_grad_loop``, measured at both sizes) plus the sampler's own work,
    ``previous["us_per_grad_in_run"] - previous["us_per_grad_loop"]``, scaled by ``(size /
    previous size) ** overhead_exponent``; without ``us_per_grad_in_run`` the step is
    taken to be the gradient alone. None when there is no previous size or a number is
    missing: the size then runs, under the driver's limit.
    """
    if previous is None or us_per_grad_loop is None:
        return None
    prev_us, prev_s = previous.get("us_per_grad_loop"), previous.get("sample_s")
    if not prev_us or not prev_s:
        return None
    ratio = size / previous["size"]
    in_run = previous.get("us_per_grad_in_run")
    if in_run:
        overhead = max(in_run - prev_us, 0.0) * ratio**overhead_exponent
        step_ratio = (us_per_grad_loop + overhead) / max(in_run, prev_us)
    else:
        step_ratio = us_per_grad_loop / prev_us
    iterations = (warmup + draws) / max(previous["warmup"] + previous["draws"], 1)
    return prev_s * step_ratio * iterations * ratio**iteration_exponent


# ---------------------------------------------------------------------- worker (one process)


def _machine_load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _emit(result: dict[str, Any]) -> None:
    from benchmarks.harness import _json_clean

    sys.stdout.write(MARKER + json.dumps(_json_clean(result)) + "\n")
    sys.stdout.flush()


# Above this many seconds per evaluation, gradients are timed with fewer calls (see
# :func:`jax_gradient_times`): the default timing makes about 900 evaluations.
SLOW_GRADIENT_S = 2e-3
CHEAP_TIMING = {"blocks": 2, "block_calls": 3, "block_seconds": 0.0, "loop_seconds": 0.0}


def _seconds_per_call(call: Callable[[], Any]) -> float:
    call()  # compiles
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def jax_gradient_times(value_and_grad: Callable[[Any], Any], point: Any) -> dict[str, Any]:
    """:func:`benchmarks.samplers.time_gradient` of a JAX ``value_and_grad`` at ``point``,
    with its default settings, or, when one evaluation takes more than
    :data:`SLOW_GRADIENT_S`, with :data:`CHEAP_TIMING` (2 blocks: about 16 single calls and
    4 compiled loops of 100 evaluations instead of about 900 evaluations); ``timing`` says
    which."""
    import jax

    from benchmarks.samplers import time_gradient

    single = jax.jit(value_and_grad)
    first_s = _seconds_per_call(lambda: jax.block_until_ready(single(point)))
    if first_s < SLOW_GRADIENT_S:
        return {**time_gradient(value_and_grad, point), "timing": "default"}
    return {**time_gradient(value_and_grad, point, **CHEAP_TIMING), "timing": "cheap"}


def sampler_gradient_times(runner: Any, seed: int) -> dict[str, Any]:
    """``us_per_grad``, ``us_per_grad_loop``, ``dim`` and ``timing`` of a runner's log density:
    the peer benchmark's ``runner.measure_gradient`` for fast gradients, fewer calls for slow
    ones (:func:`jax_gradient_times`). For nutpie with a slow gradient, only single calls of
    its compiled log density are timed and ``us_per_grad_loop`` is set to that (the call
    overhead from Python, microseconds, is negligible at that cost); this reads the nutpie
    runner's compiled model (``runner.compiled``)."""
    from jax.flatten_util import ravel_pytree

    from benchmarks.samplers import time_calls

    if runner.name == "nutpie":
        if runner.compiled is None:
            runner._compile()
        point = runner._initial_point(seed)
        function = runner.compiled.logp_func
        if _seconds_per_call(lambda: function(point)) < SLOW_GRADIENT_S:
            return {**runner.measure_gradient(seed), "timing": "default"}
        us = time_calls(lambda: function(point), blocks=2, block_calls=3, block_seconds=0.0)
        return {
            "us_per_grad": us,
            "us_per_grad_loop": us,
            "dim": int(runner.compiled.n_dim),
            "timing": "cheap: single calls only, us_per_grad_loop = us_per_grad",
        }
    value_and_grad, point = runner.gradient(seed)
    return {**jax_gradient_times(value_and_grad, point), "dim": int(ravel_pytree(point)[0].size)}


def _measure_bare(axis: Axis, size: int, data: dict[str, Any]) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    logp, dim = bare_logdensity(axis.name, data)
    point = jax.random.uniform(jax.random.PRNGKey(0), (dim,), jnp.float32, -2.0, 2.0)
    return {"status": "ok", "dim": dim, **jax_gradient_times(jax.value_and_grad(logp), point)}


def _measure_sampler(
    spec: Any,
    choice: Any,
    data: dict[str, Any],
    *,
    size: int,
    chains: int,
    warmup: int,
    draws: int,
    seed: int,
    limit_s: float,
    previous: dict[str, Any] | None,
    iteration_exponent: float,
    overhead_exponent: float,
) -> dict[str, Any]:
    from benchmarks.samplers import RUNNERS, Settings
    from benchmarks.worker import summarize_draws

    settings = Settings(chains=chains, warmup=warmup, draws=draws)
    t0 = time.perf_counter()
    runner = RUNNERS[spec.name](choice, data, settings, spec.options)
    setup_s = time.perf_counter() - t0
    grad = sampler_gradient_times(runner, seed)
    dim = grad.pop("dim")
    result: dict[str, Any] = {"dim": dim, "setup_s": setup_s, **grad}
    predicted = predict_run_seconds(
        previous,
        grad.get("us_per_grad_loop"),
        size=size,
        warmup=warmup,
        draws=draws,
        iteration_exponent=iteration_exponent,
        overhead_exponent=overhead_exponent,
    )
    result["predicted_s"] = predicted
    if predicted is not None and predicted > limit_s:
        result["status"] = "skipped"
        result["reason"] = (
            f"predicted {predicted:.0f} s of sampling (from {previous['sample_s']:.1f} s at "
            f"size {previous['size']}, scaled by the cost per leapfrog step (gradient "
            f"{previous['us_per_grad_loop']:.3g} -> {grad['us_per_grad_loop']:.3g} us, plus the "
            "sampler's own work) and the iterations) exceeds the per-run limit of "
            f"{limit_s:.0f} s"
        )
        return result
    run = runner.run(seed)
    summary = summarize_draws(run.samples, runner.latent_sites())
    sample_s = max(run.wall_s - run.compile_s, 1e-9)
    min_ess = summary["min_ess_bulk"]
    n_draws = chains * draws
    result.update(
        {
            "status": "ok",
            "wall_s": run.wall_s,
            "compile_s": run.compile_s,
            "sample_s": sample_s,
            "n_grad": run.n_grad,
            "n_grad_warmup": run.n_grad_warmup,
            "grads_per_draw": run.n_grad / n_draws,
            "divergences": run.divergences,
            "step_size": run.step_size,
            "min_ess_bulk": min_ess,
            "min_ess_site": summary["min_ess_site"],
            "max_rhat": summary["max_rhat"],
            "ess_per_s": min_ess / sample_s,
            "ess_per_s_wall": min_ess / run.wall_s,
            "ess_per_kgrad": 1000.0 * min_ess / run.n_grad if run.n_grad else None,
            **_in_run_gradient_cost(run, sample_s, warmup, draws),
            "options": runner.options,
            "versions": runner.versions(),
        }
    )
    return result


def _in_run_gradient_cost(run: Any, sample_s: float, warmup: int, draws: int) -> dict[str, Any]:
    """Sampling time per gradient evaluation (per chain), warmup included: what a gradient
    costs inside the sampler, its log density plus the sampler's own work per leapfrog step
    (tree building, momentum and mass-matrix arithmetic, control flow of vectorized chains).
    Exact where the runner reports the warmup's gradients (ppl), else estimated assuming a
    warmup iteration takes as many steps as a sampling one (ppl's runs: within 10%)."""
    if not run.n_grad:
        return {"us_per_grad_in_run": None, "us_per_grad_in_run_exact": None}
    if run.n_grad_warmup is not None:
        total, exact = run.n_grad + run.n_grad_warmup, True
    else:
        total, exact = run.n_grad * (warmup + draws) / draws, False
    return {"us_per_grad_in_run": 1e6 * sample_s / total, "us_per_grad_in_run_exact": exact}


def run_worker_plan(plan: dict[str, Any]) -> None:
    """Measure one sampler (or the bare loop) at every size of one axis, in this process,
    printing one ``SCALING_RESULT {json}`` line per size (see the module docstring).

    ``plan``: ``{"sampler": spec or "bare", "axis": name, "chains", "seed", "limit_s",
    "sizes": [[size, warmup, draws], ...]}`` (sizes increasing).
    """
    import jax

    from benchmarks.models import parse_model
    from benchmarks.samplers import CompileClock, parse_sampler

    CompileClock.install()
    axis = AXES[plan["axis"]]
    sampler = plan["sampler"]
    spec = None if sampler == BARE else parse_sampler(sampler)
    device = jax.devices()[0]
    previous = None
    for size, warmup, draws in plan["sizes"]:
        choice = parse_model(axis.model_key(size))
        base = {
            "sampler": sampler,
            "axis": axis.name,
            "size": size,
            "model": choice.key,
            "chains": plan["chains"],
            "warmup": warmup,
            "draws": draws,
            "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
            "pid": os.getpid(),
            "load_before": _machine_load(),
        }
        t_data = time.perf_counter()
        data = choice.data()
        base["data_s"] = time.perf_counter() - t_data
        t0 = time.perf_counter()
        try:
            if spec is None:
                result = _measure_bare(axis, size, data)
            else:
                result = _measure_sampler(
                    spec,
                    choice,
                    data,
                    size=size,
                    chains=plan["chains"],
                    warmup=warmup,
                    draws=draws,
                    seed=plan["seed"],
                    limit_s=plan["limit_s"],
                    previous=previous,
                    iteration_exponent=axis.iteration_exponent,
                    overhead_exponent=axis.overhead_exponent,
                )
        except ImportError as exc:
            result = {"status": "skipped", "reason": f"cannot import: {exc}"}
        except Exception as exc:  # a crash is a result; the larger sizes still get a line
            result = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
        result = {**base, **result, "measure_s": time.perf_counter() - t0}
        result["load_after"] = _machine_load()
        _emit(result)
        if result["status"] == "ok":
            previous = result
        elif result.get("predicted_s") is not None:
            # skipped on its prediction: the larger sizes are predicted from this one's
            previous = {
                **result,
                "sample_s": result["predicted_s"],
                "us_per_grad_loop": result["us_per_grad_loop"],
                "us_per_grad_in_run": None,
            }
        del data


# ---------------------------------------------------------------------- driver


def _reader(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def run_axis_sampler(
    sampler: str,
    axis: Axis,
    sizes: list[tuple[int, int, int]],
    *,
    chains: int,
    seed: int,
    limit_s: float,
    env: dict[str, str] | None = None,
    log: Callable[..., None] = print,
    deadline_s: float | None = None,
) -> dict[int, dict[str, Any]]:
    """Run one worker process for ``sampler`` over ``sizes`` (``(size, warmup, draws)``) of
    ``axis``; return ``{size: result}``.

    Each size must report within ``deadline_s`` seconds (default ``1.5 * limit_s + 120``:
    the sampling limit, plus gradient timing, compilation and the start of the process);
    otherwise the worker is killed, the size is reported as ``timeout`` and the larger
    sizes as ``skipped``.
    """
    plan = {
        "sampler": sampler,
        "axis": axis.name,
        "chains": chains,
        "seed": seed,
        "limit_s": limit_s,
        "sizes": [list(s) for s in sizes],
    }
    command = [sys.executable, "-m", "benchmarks.scaling", "--worker", json.dumps(plan)]
    from benchmarks.harness import _worker_env

    proc = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env if env is not None else _worker_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True).start()
    results: dict[int, dict[str, Any]] = {}
    if deadline_s is None:
        deadline_s = 1.5 * limit_s + 120.0
    pending = [s[0] for s in sizes]
    log(f"  {sampler}:", end="")
    while pending:
        size = pending[0]
        t0 = time.perf_counter()
        result = None
        while result is None:
            remaining = deadline_s - (time.perf_counter() - t0)
            try:
                line = lines.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                break
            if line is None:  # the worker exited
                break
            if line.startswith(MARKER):
                result = json.loads(line[len(MARKER) :])
        if result is None:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                reason = f"no result within {deadline_s:.0f} s (worker killed)"
                status = "timeout"
            else:
                proc.wait()
                tail = "\n".join("".join(stderr).strip().splitlines()[-15:])
                reason = f"worker exited with {proc.returncode}:\n{tail}"
                status = "error"
            results[size] = {"status": status, "reason": reason, "size": size}
            log(f" {size}:{status}", end="")
            for later in pending[1:]:
                results[later] = {
                    "status": "skipped",
                    "reason": f"size {size} failed ({status})",
                    "size": later,
                }
            break
        results[size] = result
        log(f" {size}:{result['status']}({time.perf_counter() - t0:.0f}s)", end="")
        pending.pop(0)
    log("")
    if proc.poll() is None:
        proc.wait(timeout=60)
    return results


def machine_info() -> dict[str, Any]:
    """The peer benchmark's machine record plus the CPU model and the load average."""
    from benchmarks.harness import machine_info as base_info

    info = base_info()
    info["load_average"] = _machine_load()
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["cpu_model"] = cpu
    import jax

    info["device_kind"] = [getattr(d, "device_kind", d.platform) for d in jax.devices()]
    info["backend"] = jax.default_backend()
    return info


# ---------------------------------------------------------------------- reporting


def _fmt(value: Any) -> str:
    from benchmarks.harness import _fmt as fmt

    return fmt(value)


TABLE_COLUMNS = (
    ("size", "size"),
    ("sampler", "sampler"),
    ("warmup+draws", None),
    ("us/grad loop", "us_per_grad_loop"),
    ("x bare", "x_bare"),
    ("us/grad call", "us_per_grad"),
    ("us/grad in run", "us_per_grad_in_run"),
    ("sample s", "sample_s"),
    ("compile s", "compile_s"),
    ("grads/draw", "grads_per_draw"),
    ("min ESS", "min_ess_bulk"),
    ("ESS/s", "ess_per_s"),
    ("ESS/1k grads", "ess_per_kgrad"),
    ("div", "divergences"),
    ("max R-hat", "max_rhat"),
)


def format_table(entry: dict[str, Any]) -> str:
    """Plain-text table of one axis: a row per (size, sampler), the bare loop first."""
    rows = [[title for title, _ in TABLE_COLUMNS]]
    notes = []
    for size in entry["sizes"]:
        for sampler, by_size in entry["results"].items():
            res = by_size.get(str(size))
            if res is None:
                continue
            if res.get("status") != "ok":
                reason = (res.get("reason") or "").splitlines()
                notes.append(
                    f"  {sampler} at {size}: {res.get('status')}: {reason[-1] if reason else ''}"
                )
                if res.get("us_per_grad_loop") is None:
                    continue
            row = []
            for _, field in TABLE_COLUMNS:
                if field is None:
                    row.append("-" if sampler == BARE else f"{res['warmup']}+{res['draws']}")
                elif field in ("size", "sampler"):
                    row.append(str(res.get(field, size if field == "size" else sampler)))
                else:
                    row.append(_fmt(res.get(field)))
            if res.get("status") != "ok":
                row[-1] += f" ({res['status']})"
            rows.append(row)
    s = entry["settings"]
    head = (
        f"== axis {entry['axis']}: {entry['label']}; {s['chains']} chains, seed {s['seed']}, "
        f"per-run limit {s['limit_s']:.0f} s"
    )
    from benchmarks.harness import _align

    lines = [head, *(_align(rows) if len(rows) > 1 else []), *notes]
    lines.append(
        "  (us/grad loop: one value_and_grad inside a compiled fori_loop; x bare: that over the "
        "bare loop's; us/grad in run: sampling time per gradient, warmup included (exact for "
        "ppl, else assuming warmup iterations as long as sampling ones); ESS/s: min bulk ESS / "
        "(run wall time - compile time))"
    )
    return "\n".join(lines)


def _series(entry: dict[str, Any], sampler: str, field: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for size in entry["sizes"]:
        res = entry["results"].get(sampler, {}).get(str(size), {})
        value = res.get(field)
        if isinstance(value, int | float) and math.isfinite(value) and value > 0:
            if field == "us_per_grad_loop" or res.get("status") == "ok":
                xs.append(size)
                ys.append(value)
    return xs, ys


def plot_axis(entry: dict[str, Any], path: Path) -> Path:
    """One PNG for an axis, log-log against size: left, time per gradient (each sampler's log
    density in a compiled loop, solid; the bare loop, dashed; sampling time per gradient in
    the run, dotted), right, ESS per second, one line per sampler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_grad, ax_ess) = plt.subplots(1, 2, figsize=(11, 4.3), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, sampler in enumerate(entry["results"]):
        color = "black" if sampler == BARE else colors[(i - 1) % len(colors)]
        xs, ys = _series(entry, sampler, "us_per_grad_loop")
        if xs:
            style = {"linestyle": "--"} if sampler == BARE else {}
            label = "bare jitted gradient loop" if sampler == BARE else f"{sampler}: log density"
            ax_grad.plot(xs, ys, marker="o", color=color, label=label, **style)
        if sampler != BARE:
            xs, ys = _series(entry, sampler, "us_per_grad_in_run")
            if xs:
                ax_grad.plot(
                    xs, ys, marker="s", linestyle=":", color=color, label=f"{sampler}: in run"
                )
            xs, ys = _series(entry, sampler, "ess_per_s")
            if xs:
                ax_ess.plot(xs, ys, marker="o", color=color, label=sampler)
    for ax in (ax_grad, ax_ess):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(entry["label"])
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    ax_grad.set_ylabel("µs per gradient")
    ax_grad.set_title(
        "time per gradient: log density in a compiled loop (solid),\n"
        "sampling time per gradient incl. warmup (dotted)",
        fontsize=9,
    )
    ax_ess.set_ylabel("min bulk ESS / sampling second")
    ax_ess.set_title("ESS per second (compile excluded)")
    s = entry["settings"]
    fig.suptitle(
        f"scaling, axis {entry['axis']}: {s['chains']} chains; {entry['device']}"
        + (f" ({entry['cpu_model']})" if entry.get("cpu_model") else "")
        + f"; load average {entry.get('load_average_start')}",
        fontsize=9,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def replot(json_path: Path) -> int:
    """Redraw the plots next to ``json_path`` and print its tables (``--replot``)."""
    if not json_path.is_file():
        print(f"error: no results at {json_path} (run the benchmark first)", file=sys.stderr)
        return 2
    report = json.loads(json_path.read_text())
    for name, entry in report["axes"].items():
        path = plot_axis(entry, json_path.parent / f"scaling_{name}.png")
        print(format_table(entry))
        print(f"plot: {path}\n")
    return 0


# ---------------------------------------------------------------------- main


def _int_list(text: str) -> list[int]:
    try:
        values = [int(float(v)) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive integers, got {text!r}")
    return sorted(set(values))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scaling",
        description=(
            "Time per gradient and ESS per second of ppl, NumPyro, BlackJAX and nutpie as the "
            "data (logistic regression rows) and the dimension (diagonal Gaussian) grow, "
            "against a bare jitted-gradient loop. Each (sampler, axis) runs in a fresh process."
        ),
    )
    parser.add_argument("--axis", choices=("data", "dim", "both"), default="both")
    parser.add_argument(
        "--sizes",
        type=_int_list,
        default=None,
        help=(
            "comma-separated sizes for the chosen axis (rows or dimensions; 1e5 is accepted); "
            "default data 1000,10000,100000,1000000 and dim 10,100,1000,10000 "
            "(quick: 100,400 and 3,12); with --axis both they apply to both axes"
        ),
    )
    parser.add_argument(
        "--samplers",
        default=",".join(DEFAULT_SAMPLERS),
        help=(
            "comma-separated samplers, each name[:option=value...] as in python -m benchmarks "
            f"(default {','.join(DEFAULT_SAMPLERS)}; a missing one is skipped); the bare loop "
            "always runs"
        ),
    )
    parser.add_argument(
        "--chains", type=int, default=None, help=f"chains (default {DEFAULT_CHAINS}; quick 2)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="warmup iterations per chain at every size (default: by size, see README)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        help="draws per chain at every size (default: by size, see README)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--limit",
        type=float,
        default=DEFAULT_LIMIT_S,
        help=(
            "per-run limit in seconds of sampling for one (sampler, size): a size predicted to "
            f"exceed it is skipped, one that overruns is killed (default {DEFAULT_LIMIT_S:.0f})"
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and 2 chains x (20 warmup + 20 draws), for the tests",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output folder for scaling.json and the plots (default {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--replot",
        action="store_true",
        help="redraw the plots and reprint the tables from OUT/scaling.json, measuring nothing",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker is not None:
        run_worker_plan(json.loads(args.worker))
        return 0
    if args.replot:
        return replot(args.out / "scaling.json")

    from benchmarks.harness import INSTALL_HINT, missing_modules, write_json
    from benchmarks.samplers import parse_sampler

    if args.chains is not None:
        chains = args.chains
    else:
        chains = QUICK_CHAINS if args.quick else DEFAULT_CHAINS
    if chains < 1:
        parser.error("need --chains >= 1")
    if args.samples is not None and args.samples < 4:
        parser.error("need --samples >= 4")
    if args.warmup is not None and args.warmup < 0:
        parser.error("need --warmup >= 0")
    if args.limit <= 0:
        parser.error("need --limit > 0")
    try:
        specs = [parse_sampler(t) for t in args.samplers.split(",") if t.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        parser.error(f"a sampler is given twice in {args.samplers!r}")
    axes = list(AXES) if args.axis == "both" else [args.axis]

    skipped: dict[str, str] = {}
    for spec in specs:
        missing = missing_modules(spec.name)
        if missing:
            hint = INSTALL_HINT.get(spec.name, 'pip install -e ".[bench]"')
            skipped[spec.key] = f"module(s) {missing} not importable ({hint})"
            print(f"notice: skipping {spec.key}: {skipped[spec.key]}", flush=True)

    machine = machine_info()
    device = f"{machine['backend']}:{', '.join(machine['device_kind'])}"
    report: dict[str, Any] = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            ["python -m benchmarks.scaling", *(argv if argv is not None else sys.argv[1:])]
        ),
        "settings": {
            "axes": axes,
            "samplers": keys,
            "chains": chains,
            "warmup": args.warmup,
            "samples": args.samples,
            "seed": args.seed,
            "limit_s": args.limit,
            "quick": args.quick,
            "ess_per_s": "min bulk ESS over all parameter elements / (wall - compile) of one run",
            "us_per_grad_loop": "benchmarks.samplers.time_gradient, inside a compiled fori_loop",
        },
        "isolation": "fresh process per (sampler, axis), sizes in increasing order",
        "machine": machine,
        "axes": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "scaling.json"
    failed = False
    t_start = time.perf_counter()
    for name in axes:
        axis = AXES[name]
        sizes = args.sizes or list(axis.quick_sizes if args.quick else axis.sizes)
        plan = []
        for size in sizes:
            warmup, draws = default_schedule(name, size, quick=args.quick)
            plan.append(
                (
                    size,
                    args.warmup if args.warmup is not None else warmup,
                    args.samples if args.samples is not None else draws,
                )
            )
        entry: dict[str, Any] = {
            "axis": name,
            "label": axis.label,
            "model": axis.model,
            "param": axis.param,
            "fixed": axis.fixed,
            "sizes": sizes,
            "schedule": {str(s): {"warmup": w, "draws": d} for s, w, d in plan},
            "settings": {"chains": chains, "seed": args.seed, "limit_s": args.limit},
            "device": device,
            "cpu_model": machine.get("cpu_model"),
            "load_average_start": _machine_load(),
            "results": {},
        }
        print(f"axis {name}: {axis.model} at {axis.param} = {sizes}", flush=True)
        for sampler in [BARE, *keys]:
            if sampler in skipped:
                entry["results"][sampler] = {
                    str(s): {"status": "skipped", "reason": skipped[sampler], "size": s}
                    for s in sizes
                }
                continue
            by_size = run_axis_sampler(
                sampler,
                axis,
                plan,
                chains=chains,
                seed=args.seed,
                limit_s=args.limit,
                log=lambda text, end="\n": print(text, end=end, flush=True),
            )
            for res in by_size.values():
                if res.get("status") in ("error", "timeout"):
                    failed = True
            entry["results"][sampler] = {str(s): r for s, r in by_size.items()}
        bare = entry["results"][BARE]
        for by_size in entry["results"].values():
            for size, res in by_size.items():
                ours, floor = (
                    res.get("us_per_grad_loop"),
                    bare.get(size, {}).get("us_per_grad_loop"),
                )
                res["x_bare"] = ours / floor if ours and floor else None
        entry["load_average_end"] = _machine_load()
        entry["plot"] = str(plot_axis(entry, args.out / f"scaling_{name}.png"))
        report["axes"][name] = entry
        report["total_s"] = time.perf_counter() - t_start
        write_json(report, json_path)
        print()
        print(format_table(entry), flush=True)
        print(f"plot: {entry['plot']}\n", flush=True)
    report["machine"]["load_average_end"] = _machine_load()
    report["total_s"] = time.perf_counter() - t_start
    write_json(report, json_path)
    print(f"results written to {json_path} ({report['total_s']:.0f} s in all)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
