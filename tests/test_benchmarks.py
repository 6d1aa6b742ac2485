"""The benchmark harness (benchmarks/): model definitions, bookkeeping and a smoke run.

The smoke run goes through the real command, ``python -m benchmarks``, with each
(sampler, model) in its own process, on eight schools with tiny settings; XLA
optimisations are turned off there to save compile time, since the numbers are
not looked at, only their presence and sanity.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpyro.infer.util import initialize_model

import ppl
from benchmarks import harness
from benchmarks.models import MODELS, parse_model
from benchmarks.samplers import CompileClock, time_gradient

REPO_ROOT = Path(__file__).resolve().parents[1]

PER_SAMPLER_FIELDS = (
    "cold_s",
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
    "dim",
    "latent_sites",
    "posterior",
    "warm_runs",
)


# ---------------------------------------------------------------------- models


def test_model_parsing_and_sizes():
    assert parse_model("gaussian").params == {"dim": 100}
    assert parse_model("gaussian", quick=True).params == {"dim": 10}
    choice = parse_model("radon:houses=300:counties=30")
    assert choice.params == {"counties": 30, "houses": 300}
    assert choice.key == "radon:counties=30:houses=300"
    assert parse_model(choice.key).params == choice.params
    assert parse_model("logistic").params == {"rows": 5000, "cols": 25}
    with pytest.raises(ValueError, match="unknown model"):
        parse_model("nope")
    with pytest.raises(ValueError, match="bad model parameter"):
        parse_model("gaussian:width=3")
    with pytest.raises(ValueError, match="bad model parameter"):
        parse_model("eight_schools:dim=3")


def test_generated_data_are_fixed_and_shaped():
    logistic = parse_model("logistic").data()
    assert logistic["X"].shape == (5000, 25)
    np.testing.assert_allclose(np.asarray(logistic["X"]).mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(logistic["X"]).std(0), 1.0, atol=1e-4)
    assert set(np.unique(np.asarray(logistic["y"]))) == {0, 1}
    np.testing.assert_array_equal(logistic["y"], parse_model("logistic").data()["y"])

    radon = parse_model("radon").data()
    sizes = np.bincount(np.asarray(radon["county"]), minlength=85)
    assert radon["n_counties"] == 85 and sizes.sum() == 919
    assert sizes.min() >= 1 and sizes.max() >= 5 * np.median(sizes)  # unequal county sizes

    scales = np.asarray(parse_model("gaussian").data()["scales"])
    assert scales.shape == (100,)
    np.testing.assert_allclose([scales[0], scales[-1]], [0.01, 100.0], rtol=1e-5)

    eight = parse_model("eight_schools").data()
    assert eight["y"].shape == eight["sigma"].shape == (8,)


@pytest.mark.parametrize("spec", ["eight_schools", "logistic:rows=200:cols=4", "gaussian", "radon"])
def test_ppl_and_numpyro_versions_are_the_same_model(spec):
    """ppl's log density of the ppl version equals minus numpyro's potential of the numpyro
    version (the BlackJAX target) at random unconstrained points: same sites, supports and
    Jacobians, so every sampler targets the same posterior."""
    choice = parse_model(spec)
    data = choice.data()
    ld = ppl.logdensity(choice.build(ppl), **data)
    info = initialize_model(
        jax.random.PRNGKey(0), choice.build(numpyro), model_kwargs=data, dynamic_args=False
    )
    assert sorted(info.param_info.z) == sorted(n for n, s in ld.sites.items() if s.kind == "latent")
    thetas = jax.random.uniform(jax.random.PRNGKey(1), (3, ld.dim), minval=-2.0, maxval=2.0)
    ours = jax.jit(jax.vmap(ld))(thetas)
    theirs = jax.jit(jax.vmap(lambda t: -info.potential_fn(ld.unflatten(t))))(thetas)
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=1e-3)


def test_every_model_is_registered_with_a_description():
    assert set(MODELS) == {"eight_schools", "logistic", "gaussian", "radon"}
    assert all(m.description for m in MODELS.values())


# ---------------------------------------------------------------------- bookkeeping


def _fake_result(**overrides):
    base = {
        "status": "ok",
        "cold_s": 10.0,
        "warm_s": 2.0,
        "warm_compile_s": 1.0,
        "ess_per_s": 100.0,
        "ess_per_s_sampling": 200.0,
        "ess_per_kgrad": 50.0,
        "us_per_grad": 10.0,
        "us_per_grad_loop": 1.0,
        "min_ess_bulk": 200.0,
        "n_grad": 4000,
        "divergences": 0,
        "max_rhat": 1.01,
        "posterior": {"x": {"mean": [0.0, 1.0], "sd": [1.0, 1.0], "ess_bulk": [400.0, 400.0]}},
    }
    base.update(overrides)
    return base


def test_ratios_z_scores_and_table():
    results = {
        "ppl": _fake_result(warm_s=1.0, ess_per_s=200.0),
        "numpyro": _fake_result(),
        "blackjax": {"status": "skipped", "reason": "module 'blackjax' is not importable"},
    }
    ratios = harness.compute_ratios(results)
    assert set(ratios) == {"numpyro"}
    assert ratios["numpyro"]["warm_time"] == pytest.approx(0.5)
    assert ratios["numpyro"]["ess_per_s"] == pytest.approx(2.0)
    assert ratios["numpyro"]["ess_per_kgrad"] == pytest.approx(1.0)

    shifted = _fake_result()
    shifted["posterior"] = {"x": {"mean": [0.1, 1.0], "sd": [1.0, 1.0], "ess_bulk": [400.0, 400.0]}}
    # |0.1| / sqrt(2 / 400) = 1.414...
    assert harness.max_abs_z(shifted, results["numpyro"]) == pytest.approx(0.1 / math.sqrt(0.005))
    assert harness.compute_ratios({"ppl": {"status": "error"}, "numpyro": _fake_result()}) == {}

    entry = {
        "model": "gaussian:dim=2",
        "description": "test",
        "dim": 2,
        "settings": {"chains": 2, "warmup": 10, "draws": 10, "seed": 0},
        "samplers": results,
        "ratios": ratios,
    }
    table = harness.format_table(entry)
    lines = table.splitlines()
    assert lines[0].startswith("== gaussian:dim=2")
    assert any(line.startswith("ppl ") for line in lines)
    assert any("blackjax: skipped" in line for line in lines)
    assert any(line.startswith("ppl/numpyro") for line in lines)
    header = next(line for line in lines if line.startswith("sampler"))
    row = next(line for line in lines if line.startswith("numpyro"))
    assert len(header) == len(row)  # aligned columns


def test_json_output_has_no_nan(tmp_path):
    path = tmp_path / "r.json"
    harness.write_json({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": 2}}, path)
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None], "c": {"d": 2}}


def test_gradient_timer_and_compile_clock():
    mark = CompileClock.mark()
    times = time_gradient(jax.value_and_grad(lambda x: -0.5 * jnp.sum(x**2)), jnp.ones(3), blocks=2)
    assert CompileClock.seconds_since(mark) > 0  # the timer compiled two programs
    assert times["us_per_grad"] > 0 and times["us_per_grad_loop"] > 0
    assert times["us_per_grad_loop"] < times["us_per_grad"]


def test_bad_arguments_are_rejected(capsys):
    with pytest.raises(SystemExit):
        harness.main(["--samplers", "stan", "--models", "gaussian"])
    assert "unknown sampler" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        harness.main(["--models", "gaussian:dim=x"])


# ---------------------------------------------------------------------- smoke run


def _run_harness(args, tmp_path, timeout):
    out = tmp_path / "results.json"
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", *args, "--out", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def _check_report(stdout, report, models, samplers):
    machine = report["machine"]
    assert machine["cpu_count"] >= 1 and machine["jax"] == jax.__version__
    assert machine["devices"]
    assert set(report["models"]) == set(models)
    for key in models:
        entry = report["models"][key]
        assert f"== {key}:" in stdout
        for sampler in samplers:
            res = entry["samplers"][sampler]
            if sampler != "ppl" and res["status"] == "skipped":
                assert "notice: skipping" in stdout
                continue
            assert res["status"] == "ok", res
            assert res["fresh_process"] is True
            missing = [f for f in PER_SAMPLER_FIELDS if f not in res]
            assert not missing, (sampler, missing)
            for field in ("cold_s", "warm_s", "min_ess_bulk", "n_grad", "us_per_grad"):
                assert res[field] > 0, (sampler, field, res[field])
            assert res["latent_sites"] == entry["samplers"]["ppl"]["latent_sites"]
            assert res["dim"] == entry["dim"]
            if sampler != "ppl":
                ratios = entry["ratios"][sampler]
                assert set(ratios) == set(harness.RATIO_FIELDS)
                for name, value in ratios.items():
                    assert value is not None and math.isfinite(value) and value > 0, (name, value)
                assert f"ppl/{sampler}" in stdout


def test_quick_run_side_by_side(tmp_path):
    """``python -m benchmarks`` end to end: one fresh process per sampler, JSON and table."""
    samplers = ["ppl", "numpyro", "blackjax"]
    stdout, report = _run_harness(
        "--quick --models eight_schools --chains 2 --warmup 20 --draws 20".split(),
        tmp_path,
        timeout=300,
    )
    assert report["settings"]["chains"] == 2 and report["settings"]["draws"] == 20
    _check_report(stdout, report, ["eight_schools"], samplers)


@pytest.mark.slow
def test_full_suite_quick_sizes(tmp_path):
    """All four models with --quick settings, and samplers agree on the posterior means."""
    keys = [parse_model(m, quick=True).key for m in MODELS]
    stdout, report = _run_harness(["--quick"], tmp_path, timeout=1800)
    _check_report(stdout, report, keys, ["ppl", "numpyro", "blackjax"])


@pytest.mark.slow
def test_realistic_run_agrees_with_numpyro(tmp_path):
    """4 chains x (1000 + 1000) on eight schools and the 100-d Gaussian: ppl's posterior
    means agree with NumPyro's within Monte Carlo error and no chain is stuck."""
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--models", "eight_schools,gaussian", "--out", out],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for entry in report["models"].values():
        res = entry["samplers"]["ppl"]
        assert res["max_rhat"] < 1.02
        assert res["min_ess_bulk"] > 400
        if res.get("max_abs_z_vs_numpyro") is not None:
            assert res["max_abs_z_vs_numpyro"] < 5.0


def test_progress_overhead_script_runs(capsys):
    from benchmarks import progress_overhead

    result = progress_overhead.main(
        ["--repeats", "1", "--chains", "2", "--warmup", "20", "--draws", "20"]
    )
    assert result["ratio"] > 0
    assert "ratio on/off" in capsys.readouterr().out


def test_nuts_step_script_runs(capsys):
    from benchmarks import nuts_step

    result = nuts_step.main(["--dim", "5", "--chains", "2", "--draws", "20", "--repeats", "1"])
    assert result["ppl"] > 0
    assert "us per leapfrog step" in capsys.readouterr().out
