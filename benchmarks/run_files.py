"""Run files on large data: file size, peak memory of ``ppl sample``, ``ppl summary`` time.

    python -m benchmarks.run_files                          # 10^4, 10^5, 10^6 rows, CLI defaults
    python -m benchmarks.run_files --chains 2 --warmup 100 --draws 100
    python -m benchmarks.run_files --sizes 1e6 --loo        # also time ppl loo

For each size a linear regression (y ~ N(a + b x, sigma), simulated from a fixed seed) is
written as a model file into a temporary folder and sampled by ``ppl sample`` in a
subprocess with the given chains, warmup and draws (default: the command line's, 4 x
(1000 + 1000)) and ``--pointwise`` (default auto: the pointwise groups are left out above
``POINTWISE_MAX_VALUES`` values). Measured per size: the run file's size, the sample
process's wall time and peak resident memory (``ru_maxrss`` from ``os.wait4``: the
process alone, JAX's threads included), the wall time and peak memory of ``ppl summary``
and, with ``--loo``, of ``ppl loo``. A markdown table is printed and the JSON written to
``--out`` (default ``benchmarks/results/run_files.json``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import machine_info, report_header, write_json

__all__ = ["MODEL", "build_parser", "format_table", "main", "model_source", "one_size"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "run_files.json"

MODEL = '''\
"""Linear regression, {rows} simulated rows."""
import jax.numpy as jnp
import numpy as np

import ppl
import ppl.distributions as dist

ROWS = {rows}


def model(x, y=None):
    a = ppl.sample("a", dist.Normal(0.0, 5.0))
    b = ppl.sample("b", dist.Normal(0.0, 5.0))
    sigma = ppl.sample("sigma", dist.HalfNormal(2.0))
    with ppl.plate("obs", x.shape[0]):
        ppl.sample("y", dist.Normal(a + b * x, sigma), obs=y)


def load_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=ROWS).astype(np.float32)
    y = (1.0 + 2.0 * x + rng.normal(size=ROWS)).astype(np.float32)
    return {{"x": jnp.asarray(x), "y": jnp.asarray(y)}}
'''


def model_source(rows: int) -> str:
    """The model file for ``rows`` rows."""
    return MODEL.format(rows=int(rows))


class _Popen(subprocess.Popen):
    """A Popen that reaps its child with ``os.wait4``, keeping its peak RSS (``peak_mb``)."""

    peak_mb: float | None = None

    def _try_wait(self, wait_flags):
        try:
            pid, status, usage = os.wait4(self.pid, wait_flags)
        except ChildProcessError:
            return (self.pid, 0)
        if pid:
            self.peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
        return (pid, status)


def _run(argv: list[str], timeout: float | None) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    began = time.perf_counter()
    proc = _Popen(
        [sys.executable, "-m", "ppl", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return {
        "seconds": round(time.perf_counter() - began, 2),
        "returncode": proc.returncode,
        "peak_mb": None if proc.peak_mb is None else round(proc.peak_mb, 1),
        "stdout": out[-3000:],
        "stderr": err[-2000:],
    }


def one_size(rows: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Sample, summarize (and with ``--loo`` cross-validate) one size; the measurements."""
    model = folder / f"regression_{rows}.py"
    model.write_text(model_source(rows))
    run = folder / f"regression_{rows}.nc"
    command = [
        "sample", str(model), "--out", str(run), "--force", "--no-progress",
        "--chains", str(args.chains), "--warmup", str(args.warmup),
        "--draws", str(args.draws), "--seed", str(args.seed),
        "--pointwise", args.pointwise,
    ]  # fmt: skip
    sample = _run(command, args.timeout)
    entry: dict[str, Any] = {"rows": rows, "sample": sample}
    if sample["returncode"] != 0 or not run.exists():
        return entry
    entry["file_mb"] = round(run.stat().st_size / 1e6, 2)
    entry["summary"] = _run(["summary", str(run)], args.timeout)
    if args.loo:
        entry["loo"] = _run(["loo", str(run)], args.timeout)
    if not args.keep:
        run.unlink()
    return entry


def _cell(entry: dict, part: str, field: str, fmt: str) -> str:
    value = entry.get(part, {}).get(field)
    if value is None:
        return "-"
    if entry[part].get("returncode") not in (0, 1):
        return f"failed ({entry[part]['returncode']})"
    return format(value, fmt)


def format_table(report: dict[str, Any]) -> str:
    """The results as a markdown table."""
    s = report["settings"]
    lines = [
        f"{s['chains']} chains x ({s['warmup']} warmup + {s['draws']} draws), "
        f"--pointwise {s['pointwise']}",
        "",
        "| rows | file MB | pointwise groups | sample s | sample peak MB | summary s "
        "| summary peak MB | loo s | loo peak MB |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in report["results"]:
        stored = "stored" if "not stored" not in e["sample"].get("stdout", "") else "skipped"
        lines.append(
            f"| {e['rows']:.0e} | {e.get('file_mb', '-')} | {stored} "
            f"| {_cell(e, 'sample', 'seconds', '.1f')} | {_cell(e, 'sample', 'peak_mb', '.0f')} "
            f"| {_cell(e, 'summary', 'seconds', '.1f')} "
            f"| {_cell(e, 'summary', 'peak_mb', '.0f')} "
            f"| {_cell(e, 'loo', 'seconds', '.1f')} | {_cell(e, 'loo', 'peak_mb', '.0f')} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_files", description=__doc__)
    parser.add_argument("--sizes", default="1e4,1e5,1e6", help="rows, comma-separated")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pointwise", choices=("auto", "always", "never"), default="auto")
    parser.add_argument("--loo", action="store_true", help="also time ppl loo RUN")
    parser.add_argument("--keep", metavar="DIR", help="keep the model and run files in DIR")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per command")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    report: dict[str, Any] = {
        **report_header("python -m benchmarks.run_files", argv),
        "settings": {
            "chains": args.chains,
            "warmup": args.warmup,
            "draws": args.draws,
            "seed": args.seed,
            "pointwise": args.pointwise,
            "sizes": sizes,
        },
        "machine": machine_info(),
        "results": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for rows in sizes:
            print(f"{rows} rows ...", file=sys.stderr, flush=True)
            report["results"].append(one_size(rows, args, folder))
            write_json(report, args.out)
    print(format_table(report))
    write_json(report, args.out)
    return report


if __name__ == "__main__":
    main()
