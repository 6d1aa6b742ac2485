"""The scaling benchmark (benchmarks/scaling.py): bare log densities, bookkeeping, and an
end-to-end ``--quick`` run through the real command.

The end-to-end run uses ppl only (the peers' runners are the peer benchmark's, tested in
tests/test_benchmarks.py), with XLA optimisations off to save compile time (the numbers
are not looked at, only their presence and sanity), and a per-run limit so small that the
second size of each axis is skipped on its predicted time: this exercises the skip path
in the same run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import ppl
from benchmarks import scaling
from benchmarks.models import parse_model

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("axis,size", [("data", 50), ("dim", 7)])
def test_bare_logdensity_is_the_suite_model(axis, size):
    """The bare loop's log density is ppl's log density of the suite model, constants
    included, at random points (float32: relative 1e-5)."""
    choice = parse_model(scaling.AXES[axis].model_key(size))
    data = choice.data()
    logp, dim = scaling.bare_logdensity(axis, data)
    ld = ppl.logdensity(choice.build(ppl), **data)
    assert (
        dim == ld.dim == (scaling.AXES[axis].fixed.get("cols", 0) + 1 if axis == "data" else size)
    )
    rng = np.random.default_rng(0)
    for _ in range(3):
        theta = jax.numpy.asarray(rng.uniform(-2, 2, size=dim), dtype=jax.numpy.float32)
        ours, theirs = float(logp(theta)), float(ld(theta))
        assert math.isfinite(ours)
        assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-3)
        g_ours, g_theirs = jax.grad(logp)(theta), jax.grad(ld)(theta)
        np.testing.assert_allclose(g_ours, g_theirs, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="unknown axis"):
        scaling.bare_logdensity("width", data)


def test_default_schedule_and_model_keys():
    assert scaling.default_schedule("data", 1_000) == (500, 500)
    assert scaling.default_schedule("data", 100_000) == (300, 300)
    assert scaling.default_schedule("data", 1_000_000) == (150, 150)
    assert scaling.default_schedule("dim", 1_000) == (500, 500)
    assert scaling.default_schedule("dim", 10_000) == (300, 300)
    assert scaling.default_schedule("dim", 10**6, quick=True) == scaling.QUICK_SCHEDULE
    assert scaling.AXES["data"].model_key(1000) == "logistic:cols=20:rows=1000"
    assert scaling.AXES["dim"].model_key(10) == "gaussian:dim=10"


def test_predict_run_seconds():
    previous = {"size": 100, "warmup": 100, "draws": 100, "sample_s": 2.0, "us_per_grad_loop": 10.0}
    # 10x the gradient cost, half the iterations, no growth of the trajectories
    predicted = scaling.predict_run_seconds(
        previous, 100.0, size=1000, warmup=50, draws=50, iteration_exponent=0.0
    )
    assert predicted == pytest.approx(2.0 * 10 * 0.5)
    # dimension axis: (10x)^(1/4) longer trajectories
    predicted = scaling.predict_run_seconds(
        previous, 10.0, size=1000, warmup=100, draws=100, iteration_exponent=0.25
    )
    assert predicted == pytest.approx(2.0 * 10**0.25)
    # with the sampler's own work per step (90 of the 100 us in the run), growing linearly
    in_run = {**previous, "us_per_grad_in_run": 100.0}
    predicted = scaling.predict_run_seconds(
        in_run,
        20.0,
        size=1000,
        warmup=100,
        draws=100,
        iteration_exponent=0.0,
        overhead_exponent=1.0,
    )
    assert predicted == pytest.approx(2.0 * (20.0 + 900.0) / 100.0)
    predicted = scaling.predict_run_seconds(
        in_run, 20.0, size=1000, warmup=100, draws=100, iteration_exponent=0.0
    )
    assert predicted == pytest.approx(2.0 * (20.0 + 90.0) / 100.0)
    assert (
        scaling.predict_run_seconds(None, 1.0, size=1, warmup=1, draws=1, iteration_exponent=0)
        is None
    )
    assert (
        scaling.predict_run_seconds(
            {**previous, "sample_s": None}, 1.0, size=1, warmup=1, draws=1, iteration_exponent=0
        )
        is None
    )


def test_gradient_timing_settings(monkeypatch):
    """Fast gradients get the peer benchmark's timing, slow ones the cheap settings; both give
    positive times, the loop's no larger than a jitted call's by much."""
    logp, dim = scaling.bare_logdensity("dim", {"scales": jax.numpy.ones(4)})
    point = jax.numpy.zeros(dim)
    fast = scaling.jax_gradient_times(jax.value_and_grad(logp), point)
    assert fast["timing"] == "default"
    monkeypatch.setattr(scaling, "SLOW_GRADIENT_S", 0.0)
    cheap = scaling.jax_gradient_times(jax.value_and_grad(logp), point)
    assert cheap["timing"] == "cheap"
    for times in (fast, cheap):
        assert times["us_per_grad"] > 0 and times["us_per_grad_loop"] > 0


def test_bad_arguments_are_rejected(capsys):
    with pytest.raises(SystemExit):
        scaling.main(["--sizes", "ten"])
    assert "comma-separated integers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        scaling.main(["--sizes", "0,10"])
    with pytest.raises(SystemExit):
        scaling.main(["--samplers", "stan"])
    assert "unknown sampler" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        scaling.main(["--chains", "0", "--quick"])
    with pytest.raises(SystemExit):
        scaling.main(["--axis", "width"])


def test_worker_past_its_deadline_is_killed(tmp_path):
    """A size that does not report in time is a ``timeout`` and the larger sizes are skipped,
    with the reason."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    messages = []
    results = scaling.run_axis_sampler(
        "ppl",
        scaling.AXES["dim"],
        [(3, 10, 10), (5, 10, 10)],
        chains=1,
        seed=0,
        limit_s=1.0,
        env=env,
        log=lambda text, end="\n": messages.append(text),
        deadline_s=0.5,
    )
    assert results[3]["status"] == "timeout"
    assert "killed" in results[3]["reason"]
    assert results[5]["status"] == "skipped" and "size 3 failed" in results[5]["reason"]


def test_quick_run_end_to_end(tmp_path):
    """``python -m benchmarks.scaling --quick`` writes the JSON, one PNG per axis and the
    tables; the second size of each axis is skipped by the tiny per-run limit, with the
    reason and its measured gradient cost."""
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.scaling",
            "--quick",
            "--samplers",
            "ppl",
            "--limit",
            "0.001",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "scaling.json").read_text())
    machine = report["machine"]
    assert machine["jax"] == jax.__version__
    assert machine["device_kind"] and machine["backend"] == jax.default_backend()
    assert len(machine["load_average"]) == 3 and machine["cpu_model"]
    assert report["settings"]["chains"] == scaling.QUICK_CHAINS
    assert set(report["axes"]) == {"data", "dim"}
    for name, entry in report["axes"].items():
        small, large = (str(s) for s in scaling.AXES[name].quick_sizes)
        assert entry["sizes"] == list(scaling.AXES[name].quick_sizes)
        assert set(entry["results"]) == {scaling.BARE, "ppl"}
        bare, ours = entry["results"][scaling.BARE], entry["results"]["ppl"]
        for size in (small, large):
            assert bare[size]["status"] == "ok"
            assert bare[size]["us_per_grad_loop"] > 0 and bare[size]["x_bare"] == 1.0
            assert ours[size]["us_per_grad_loop"] > 0 and ours[size]["x_bare"] > 0
            assert ours[size]["dim"] == bare[size]["dim"]
            assert ours[size]["device"].startswith(jax.default_backend())
        run = ours[small]
        assert run["status"] == "ok", run
        assert (run["warmup"], run["draws"]) == scaling.QUICK_SCHEDULE
        for field in ("sample_s", "min_ess_bulk", "ess_per_s", "n_grad", "grads_per_draw"):
            assert run[field] > 0, (name, field, run[field])
        assert run["wall_s"] >= run["sample_s"]
        # ppl reports its warmup's gradients: the in-run cost per gradient is exact
        assert run["us_per_grad_in_run_exact"] is True
        total = run["n_grad"] + run["n_grad_warmup"]
        assert run["us_per_grad_in_run"] == pytest.approx(1e6 * run["sample_s"] / total)
        assert run["ess_per_s"] == pytest.approx(run["min_ess_bulk"] / run["sample_s"])
        assert run["n_grad"] == pytest.approx(
            run["grads_per_draw"] * scaling.QUICK_CHAINS * run["draws"]
        )
        skipped = ours[large]
        assert skipped["status"] == "skipped"
        assert "exceeds the per-run limit" in skipped["reason"]
        assert skipped["predicted_s"] > 0.001
        png = Path(entry["plot"])
        assert png == out / f"scaling_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert f"== axis {name}:" in proc.stdout
        assert "exceeds the per-run limit" in proc.stdout
    # --replot redraws from the JSON without measuring
    (out / "scaling_data.png").unlink()
    assert scaling.main(["--replot", "--out", str(out)]) == 0
    assert (out / "scaling_data.png").is_file()
