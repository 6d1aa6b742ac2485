"""Run the suite: every sampler on every model, side by side, then ratios, tables and JSON.

For each model in turn, each sampler runs in its own fresh Python process
(``python -m benchmarks.worker``), one after another, so that every sampler of a
model is measured on the same machine within a few seconds of the others; the
ratios ppl/peer are then taken within that one invocation. See
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.models import MODELS, ModelChoice, parse_model
from benchmarks.samplers import (
    SAMPLER_MODULES,
    SAMPLERS,
    SamplerSpec,
    parse_sampler,
    source_digest,
)
from benchmarks.worker import MARKER

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"

FULL = {"chains": 4, "warmup": 1000, "draws": 1000}
QUICK = {"chains": 2, "warmup": 100, "draws": 100}

# Ratios ppl / peer: the result field, and whether a ratio above 1 favours ppl.
RATIO_FIELDS = {
    "cold_time": ("cold_s", False),
    "warm_time": ("warm_s", False),
    "ess_per_s": ("ess_per_s", True),
    "ess_per_s_sampling": ("ess_per_s_sampling", True),
    "ess_per_kgrad": ("ess_per_kgrad", True),
    "us_per_grad": ("us_per_grad", False),
    "us_per_grad_loop": ("us_per_grad_loop", False),
    # ppl's first run in a second fresh process (its persistent compilation cache filled by
    # the first) against the peer's cold run in a fresh process
    "second_process_cold": (("second_process_cold_s", "cold_s"), False),
}
RESULT_FIELDS = (
    "cold_s",
    "second_process_cold_s",
    "cold_compile_s",
    "warm_s",
    "warm_compile_s",
    "sample_s",
    "min_ess_bulk",
    "ess_per_s",
    "ess_per_s_sampling",
    "n_grad",
    "ess_per_kgrad",
    "us_per_grad",
    "us_per_grad_loop",
    "divergences",
    "max_rhat",
)


# ---------------------------------------------------------------------- running


INSTALL_HINT = {
    "nutpie": 'install it with pip install -e ".[bench,nutpie]"',
}


def missing_modules(sampler: str) -> list[str]:
    """The modules sampler ``sampler`` (a name, not a spec) needs that are not importable."""
    return [m for m in SAMPLER_MODULES[sampler] if importlib.util.find_spec(m) is None]


def sampler_available(sampler: str) -> bool:
    return not missing_modules(sampler)


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    return env


def run_worker(
    sampler: str | SamplerSpec,
    choice: ModelChoice,
    settings: dict[str, int],
    *,
    timeout: float,
    in_process: bool = False,
    ppl_adaptation: str | None = None,
) -> dict[str, Any]:
    """Measure one (sampler spec, model); a failure becomes ``{"status": "error" | "skipped"}``."""
    spec = sampler if isinstance(sampler, SamplerSpec) else parse_sampler(sampler)
    if in_process:
        from benchmarks.worker import measure

        try:
            result = measure(spec.key, choice.key, ppl_adaptation=ppl_adaptation, **settings)
        except ImportError as exc:
            return {"status": "skipped", "reason": f"cannot import: {exc}"}
        except Exception as exc:  # a crash in a sampler is a result, not the end of the run
            return {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
        result["fresh_process"] = False
        return result

    if spec.name == "ppl":  # a cold run compiles: ppl's persistent cache starts empty
        with tempfile.TemporaryDirectory(prefix="ppl-bench-cache-") as cache:
            env = {**_worker_env(), "PPL_COMPILATION_CACHE": cache}
            result = _worker_process(spec, choice, settings, timeout, ppl_adaptation, env)
            if result.get("status") == "ok":
                second = _worker_process(
                    spec, choice, settings, timeout, ppl_adaptation, env, cold_only=True
                )
                if second.get("status") == "ok":
                    result["second_process_import_s"] = second["import_s"]
                    result["second_process_cold_s"] = second["cold_s"]
            return result
    return _worker_process(spec, choice, settings, timeout, ppl_adaptation, _worker_env())


def _worker_process(
    spec: SamplerSpec,
    choice: ModelChoice,
    settings: dict[str, int],
    timeout: float,
    ppl_adaptation: str | None,
    env: dict[str, str],
    cold_only: bool = False,
) -> dict[str, Any]:
    """Run ``python -m benchmarks.worker`` for one (sampler, model) and read its JSON."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.worker",
        f"--sampler={spec.key}",
        "--model",
        choice.key,
        *(f"--{k}={v}" for k, v in settings.items()),
        *([f"--ppl-adaptation={ppl_adaptation}"] if ppl_adaptation is not None else []),
        *(["--cold-only"] if cold_only else []),
    ]
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
    process_s = time.perf_counter() - t0
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            result = json.loads(line[len(MARKER) :])
            result["fresh_process"] = True
            result["process_s"] = process_s
            return result
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    missing = [f"No module named '{m}'" for m in SAMPLER_MODULES[spec.name]]
    status = "skipped" if any(m in tail for m in missing) else "error"
    return {"status": status, "reason": f"worker exited with {proc.returncode}:\n{tail}"}


def _safe_ratio(a: Any, b: Any) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b == 0:
        return None
    r = a / b
    return r if math.isfinite(r) else None


def base_sampler(results: dict[str, dict[str, Any]]) -> str | None:
    """The key of the first ppl entry (``ppl`` or a variant such as ``ppl:adaptation=stan``)."""
    for key in results:
        if key == "ppl" or key.startswith("ppl:"):
            return key
    return None


def compute_ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """``{peer: {ratio name: ppl value / peer value}}`` for every other entry that ran, where
    ppl is the first ppl entry (:func:`base_sampler`); later ppl variants are peers."""
    base = base_sampler(results)
    ppl = results.get(base, {}) if base is not None else {}
    if ppl.get("status") != "ok":
        return {}
    ratios = {}
    for peer, res in results.items():
        if peer == base or res.get("status") != "ok":
            continue
        ratios[peer] = {}
        for name, (field, _) in RATIO_FIELDS.items():
            mine, theirs = field if isinstance(field, tuple) else (field, field)
            if mine not in ppl:  # not measured by this run (e.g. a suite without it)
                continue
            ratios[peer][name] = _safe_ratio(ppl.get(mine), res.get(theirs))
    return ratios


def max_abs_z(result: dict[str, Any], reference: dict[str, Any]) -> float | None:
    """Largest |difference of posterior means| / its Monte Carlo standard error, over every
    element of every latent site, between two runs (about 3-4 for agreeing samplers on
    100 elements; much larger means different posteriors or a failed run)."""
    worst = None
    for site, ours in result.get("posterior", {}).items():
        theirs = reference.get("posterior", {}).get(site)
        if theirs is None:
            continue
        for m1, s1, e1, m2, s2, e2 in zip(
            ours["mean"],
            ours["sd"],
            ours["ess_bulk"],
            theirs["mean"],
            theirs["sd"],
            theirs["ess_bulk"],
            strict=True,
        ):
            if None in (m1, s1, e1, m2, s2, e2) or e1 <= 0 or e2 <= 0:
                continue
            se = math.sqrt(s1**2 / e1 + s2**2 / e2)
            if se > 0:
                z = abs(m1 - m2) / se
                worst = z if worst is None else max(worst, z)
    return worst


def machine_info() -> dict[str, Any]:
    import jax

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "devices": [f"{d.platform}:{getattr(d, 'device_kind', '')}" for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    for module in ("jaxlib", "numpyro", "blackjax", "arviz_stats", "ppl", "nutpie", "pymc"):
        if importlib.util.find_spec(module) is None:
            info[module] = None
            continue
        try:
            info[module] = importlib.metadata.version(module)
        except Exception:
            info[module] = None
    try:
        import ppl

        info["ppl_source_sha256"] = source_digest(ppl)
    except Exception:
        info["ppl_source_sha256"] = None
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except Exception:
        info["git_commit"] = None
    return info


# ---------------------------------------------------------------------- reporting


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:.{decimals}f}"


COLUMNS = (
    ("sampler", None),
    ("cold s", "cold_s"),
    ("2nd process s", "second_process_cold_s"),
    ("warm s", "warm_s"),
    ("(compile s)", "warm_compile_s"),
    ("min ESS", "min_ess_bulk"),
    ("ESS/s", "ess_per_s"),
    ("ESS/s excl.compile", "ess_per_s_sampling"),
    ("grads", "n_grad"),
    ("ESS/1k grads", "ess_per_kgrad"),
    ("us/grad", "us_per_grad"),
    ("us/grad loop", "us_per_grad_loop"),
    ("div", "divergences"),
    ("max R-hat", "max_rhat"),
    ("|z| vs numpyro", "max_abs_z_vs_numpyro"),
)


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_table(entry: dict[str, Any]) -> str:
    """The plain-text table of one model: a row per sampler, then the ppl/peer ratios."""
    s = entry["settings"]
    head = (
        f"== {entry['model']}: {entry['description']} (dim {entry.get('dim', '?')}); "
        f"{s['chains']} chains x ({s['warmup']} warmup + {s['draws']} draws), seed {s['seed']}"
    )
    if s.get("repeats", 1) > 1:
        head += f"; medians of {s['repeats']} warm runs"
    rows = [[title for title, _ in COLUMNS]]
    notes = []
    for sampler, res in entry["samplers"].items():
        if res.get("status") != "ok":
            reason = res.get("reason", "").splitlines()
            notes.append(f"  {sampler}: {res.get('status')}: {reason[-1] if reason else ''}")
            continue
        rows.append([sampler] + [_fmt(res.get(field)) for _, field in COLUMNS[1:]])
    lines = [head]
    if len(rows) > 1:
        lines += _align(rows)
    lines += notes
    if entry.get("ratios"):
        base = base_sampler(entry["samplers"]) or "ppl"
        measured = [k for k in RATIO_FIELDS if any(k in r for r in entry["ratios"].values())]
        ratio_rows = [[f"ratio {base}/peer", *measured]]
        for peer, ratios in entry["ratios"].items():
            ratio_rows.append([f"{base}/{peer}", *(_fmt(ratios.get(k)) for k in measured)])
        lines += _align(ratio_rows)
        lines.append(
            "  (time and us/grad ratios < 1 and ESS ratios > 1 favour ppl; 'excl.compile' "
            "subtracts JAX compile time spent inside the warm run)"
        )
    return "\n".join(lines)


def _json_clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_clean(v) for v in value]
    return value


def report_header(program: str, argv: list[str] | None) -> dict[str, str]:
    """A JSON report's ``created`` (UTC, ISO 8601) and ``command`` (``program`` and its
    arguments, ``sys.argv`` when ``argv`` is None) fields."""
    arguments = argv if argv is not None else sys.argv[1:]
    return {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([program, *arguments]),
    }


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_clean(report), indent=1, allow_nan=False) + "\n")


# ---------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Benchmark ppl against NumPyro, BlackJAX and nutpie on the same models, side by "
            "side. Each (sampler, model) is measured in a fresh Python process."
        ),
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help=(
            f"models to run, comma- or space-separated, each name[:param=value...] "
            f"(default: all of {', '.join(MODELS)}); e.g. gaussian:dim=10"
        ),
    )
    parser.add_argument(
        "--samplers",
        default=",".join(SAMPLERS),
        help=(
            f"comma-separated samplers, each name[:option=value...] (default: "
            f"{','.join(SAMPLERS)}); options go to ppl's NUTS or to nutpie.sample, e.g. "
            "ppl,ppl:adaptation=stan,nutpie:adaptation=low_rank; ratios are the first ppl "
            "entry over each other entry"
        ),
    )
    parser.add_argument(
        "--ppl-adaptation",
        default=None,
        metavar="NAME",
        help=(
            "adaptation= for ppl's NUTS (e.g. nutpie, stan) in every ppl entry that does not "
            "set its own; passed only if the installed NUTS takes it"
        ),
    )
    parser.add_argument("--chains", type=int, default=None, help="chains (default 4; quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="warmup (default 1000; quick 100)")
    parser.add_argument("--draws", type=int, default=None, help="draws (default 1000; quick 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cold run; warm: seed+1")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="warm runs per (sampler, model), seeds seed+1...; medians are reported (default 1)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny settings: 2 chains x (100 + 100) and small model sizes",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds allowed per (sampler, model)"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the measurements in this process (debugging; cold times are then not cold)",
    )
    return parser


def _split(values: list[str]) -> list[str]:
    return [part for value in values for part in value.split(",") if part.strip()]


def run_sizes(args: argparse.Namespace, base: dict, parser: argparse.ArgumentParser) -> dict:
    """``{"chains", "warmup", "draws"}``: the options given, else ``base``'s; a bad value is
    a usage error (``parser.error``). Shared by the benchmark suites' command lines."""
    sizes = {
        name: getattr(args, name) if getattr(args, name) is not None else base[name]
        for name in ("chains", "warmup", "draws")
    }
    if sizes["chains"] < 1 or sizes["draws"] < 4 or sizes["warmup"] < 0:
        parser.error("need --chains >= 1, --draws >= 4 and --warmup >= 0")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    settings = {**run_sizes(args, base, parser), "seed": args.seed}
    if args.repeats < 1:
        parser.error("need --repeats >= 1")
    settings["repeats"] = args.repeats
    try:
        choices = [parse_model(m, quick=args.quick) for m in _split(args.models or list(MODELS))]
    except ValueError as exc:
        parser.error(str(exc))
    try:
        specs = [parse_sampler(text) for text in _split([args.samplers])]
    except ValueError as exc:
        parser.error(str(exc))
    samplers = [spec.key for spec in specs]
    repeated = sorted({key for key in samplers if samplers.count(key) > 1})
    if repeated:
        parser.error(f"sampler(s) given twice: {repeated}")
    by_key = dict(zip(samplers, specs, strict=True))

    skipped: dict[str, str] = {}
    for spec in specs:
        missing = missing_modules(spec.name)
        if missing:
            hint = INSTALL_HINT.get(spec.name, 'install the peers with pip install -e ".[bench]"')
            skipped[spec.key] = f"module(s) {missing} not importable ({hint})"
            print(f"notice: skipping {spec.key}: {skipped[spec.key]}", flush=True)

    report: dict[str, Any] = {
        **report_header("python -m benchmarks", argv),
        "settings": {
            **settings,
            "quick": args.quick,
            "samplers": samplers,
            "ppl_adaptation": args.ppl_adaptation,
        },
        "isolation": "in-process" if args.in_process else "fresh process per (sampler, model)",
        "machine": machine_info(),
        "models": {},
    }
    worker_settings = {k: settings[k] for k in ("chains", "warmup", "draws", "seed", "repeats")}
    failed = False
    for choice in choices:
        results: dict[str, dict[str, Any]] = {}
        for sampler in samplers:
            if sampler in skipped:
                results[sampler] = {"status": "skipped", "reason": skipped[sampler]}
                continue
            print(f"running {sampler} on {choice.key} ...", end=" ", flush=True)
            t0 = time.perf_counter()
            res = run_worker(
                by_key[sampler],
                choice,
                worker_settings,
                timeout=args.timeout,
                in_process=args.in_process,
                ppl_adaptation=args.ppl_adaptation,
            )
            print(f"{res['status']} ({time.perf_counter() - t0:.1f} s)", flush=True)
            if res["status"] == "skipped":
                print(f"notice: skipping {sampler}: {res['reason']}", flush=True)
            elif res["status"] != "ok":
                failed = True
                print(f"error: {sampler} on {choice.key} failed: {res['reason']}", flush=True)
            results[sampler] = res
        reference = results.get("numpyro", {})
        for sampler, res in results.items():
            if res.get("status") == "ok" and sampler != "numpyro":
                res["max_abs_z_vs_numpyro"] = (
                    max_abs_z(res, reference) if reference.get("status") == "ok" else None
                )
        dims = {r.get("dim") for r in results.values() if r.get("status") == "ok"}
        entry = {
            "model": choice.key,
            "description": choice.model.description,
            "params": choice.params,
            "dim": dims.pop() if len(dims) == 1 else sorted(dims),
            "settings": settings,
            "samplers": results,
            "ratios": compute_ratios(results),
        }
        report["models"][choice.key] = entry
        print()
        print(format_table(entry), flush=True)
        print(flush=True)
        write_json(report, args.out)
    print(f"results written to {args.out}")
    return 1 if failed else 0
