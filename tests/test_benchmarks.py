"""The benchmark harness (benchmarks/): model definitions, bookkeeping and a smoke run.

The smoke run goes through the real command, ``python -m benchmarks``, with each
(sampler, model) in its own process, on eight schools with tiny settings, for ppl
and nutpie (the peer whose runner is not JAX; the JAX peers run in the slow tests);
XLA optimisations are turned off there to save compile time, since the numbers are
not looked at, only their presence and sanity.
"""

from __future__ import annotations

import functools
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
from numpyro.infer.util import potential_energy

import ppl
from benchmarks import harness, samplers
from benchmarks.models import MODELS, ar1_correlation, parse_model
from benchmarks.samplers import (
    CompileClock,
    PplRunner,
    SamplerSpec,
    Settings,
    format_sampler,
    parse_sampler,
    time_gradient,
)

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
    assert parse_model("correlated_gaussian").params == {"dim": 50}
    assert parse_model("correlated_gaussian", quick=True).params == {"dim": 10}
    assert parse_model("stochastic_volatility").params == {"T": 500}
    assert parse_model("stochastic_volatility", quick=True).params == {"T": 100}
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

    tril = np.asarray(parse_model("correlated_gaussian").data()["scale_tril"], dtype=np.float64)
    assert tril.shape == (50, 50)
    np.testing.assert_allclose(tril @ tril.T, ar1_correlation(50), atol=1e-5)
    assert ar1_correlation(3)[0, 2] == pytest.approx(0.81)
    assert np.linalg.eigvalsh(ar1_correlation(50)).min() > (1 - 0.9) / (1 + 0.9) - 1e-12

    returns = np.asarray(parse_model("stochastic_volatility").data()["y"])
    assert returns.shape == (500,) and np.all(np.isfinite(returns))
    np.testing.assert_array_equal(returns, parse_model("stochastic_volatility").data()["y"])
    # volatility clustering: squared returns are autocorrelated (persistence phi = 0.95)
    sq = returns**2 - (returns**2).mean()
    assert np.sum(sq[1:] * sq[:-1]) / np.sum(sq**2) > 0.1
    with pytest.raises(ValueError, match="T >= 2"):
        parse_model("stochastic_volatility:T=1").data()


MODEL_SPECS = [
    "eight_schools",
    "logistic:rows=200:cols=4",
    "gaussian",
    "radon",
    "correlated_gaussian",
    "stochastic_volatility",
]


@functools.cache
def _ppl_log_density(spec):
    """ppl's version of a model at 3 random unconstrained points in (-2, 2):
    ``(choice, data, ld, thetas (3, dim), log densities (3,))``, shared by the tests below."""
    choice = parse_model(spec)
    data = choice.data()
    ld = ppl.logdensity(choice.build(ppl), **data)
    thetas = jax.random.uniform(jax.random.PRNGKey(1), (3, ld.dim), minval=-2.0, maxval=2.0)
    return choice, data, ld, thetas, np.asarray(jax.jit(jax.vmap(ld))(thetas))


@pytest.mark.parametrize("spec", MODEL_SPECS)
def test_ppl_and_numpyro_versions_are_the_same_model(spec):
    """ppl's log density of the ppl version equals minus numpyro's potential energy of the
    numpyro version (what ``initialize_model``'s ``potential_fn``, the BlackJAX target,
    computes) at random unconstrained points: same sites, supports and Jacobians, so every
    sampler targets the same posterior."""
    choice, data, ld, thetas, ours = _ppl_log_density(spec)
    model = choice.build(numpyro)
    tr = numpyro.handlers.trace(numpyro.handlers.seed(model, rng_seed=0)).get_trace(**data)
    latent = [n for n, site in tr.items() if site["type"] == "sample" and not site["is_observed"]]
    assert sorted(latent) == sorted(n for n, s in ld.sites.items() if s.kind == "latent")

    def theirs_at(theta):
        return -potential_energy(model, (), data, ld.unflatten(theta))

    theirs = jax.jit(jax.vmap(theirs_at))(thetas)
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=1e-3)


@pytest.mark.parametrize("spec", MODEL_SPECS)
def test_pymc_versions_are_the_same_model(spec):
    """The PyMC version (nutpie's target) has the same latent sites, in the same order, and
    the same log density on the unconstrained scale, Jacobians and normalising constants
    included (not merely up to a constant), as the ppl version at random points. PyMC
    computes in float64 and ppl in float32: rtol 1e-5 is about 100 float32 epsilons, and a
    missing constant or Jacobian term (log 2, log sigma, ...) would exceed it on every model."""
    pytest.importorskip("pymc", reason="PyMC is not installed (the nutpie extra)")
    from pytensor.compile.mode import Mode

    from benchmarks.pymc_models import build_pymc_model, unconstrained_names

    choice, data, ld, thetas, ours = _ppl_log_density(spec)
    model = build_pymc_model(choice.model.name, data)
    names = unconstrained_names(model)
    assert list(names) == [n for n, s in ld.sites.items() if s.kind == "latent"]
    # no graph rewrites and the Python linker: the fastest to compile, exact enough
    logp = model.compile_logp(jacobian=True, mode=Mode(linker="py", optimizer=None))
    theirs = []
    for theta in thetas:
        point = ld.unflatten(theta)
        theirs.append(float(logp({names[k]: np.asarray(v, np.float64) for k, v in point.items()})))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)


def test_every_model_is_registered_with_a_description():
    from benchmarks.pymc_models import PYMC_MODELS

    assert set(MODELS) == {
        "eight_schools",
        "logistic",
        "gaussian",
        "radon",
        "correlated_gaussian",
        "stochastic_volatility",
    }
    assert all(m.description for m in MODELS.values())
    assert set(PYMC_MODELS) == set(MODELS)  # nutpie runs every suite model


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


def test_sampler_specs_parse_and_round_trip():
    spec = parse_sampler("ppl:adaptation=stan:max_tree_depth=8:dense_mass=false:gamma=1e-5")
    assert spec == SamplerSpec(
        "ppl", {"adaptation": "stan", "max_tree_depth": 8, "dense_mass": False, "gamma": 1e-5}
    )
    assert parse_sampler(spec.key) == spec
    assert parse_sampler("nutpie").key == "nutpie" and parse_sampler("nutpie").options == {}
    assert format_sampler("nutpie", {"adaptation": "low_rank"}) == "nutpie:adaptation=low_rank"
    with pytest.raises(ValueError, match="unknown sampler 'stan'"):
        parse_sampler("stan")
    with pytest.raises(ValueError, match="takes no options"):
        parse_sampler("numpyro:dense_mass=true")
    with pytest.raises(ValueError, match="use key=value"):
        parse_sampler("ppl:adaptation")
    with pytest.raises(ValueError, match="given twice"):
        parse_sampler("ppl:adaptation=stan:adaptation=nutpie")


def test_ratios_are_the_first_ppl_entry_over_every_other():
    results = {
        "numpyro": _fake_result(),
        "ppl:adaptation=nutpie": _fake_result(ess_per_kgrad=100.0),
        "ppl:adaptation=stan": _fake_result(ess_per_kgrad=25.0),
        "nutpie": _fake_result(ess_per_kgrad=200.0),
    }
    assert harness.base_sampler(results) == "ppl:adaptation=nutpie"
    ratios = harness.compute_ratios(results)
    assert set(ratios) == {"numpyro", "ppl:adaptation=stan", "nutpie"}
    assert ratios["ppl:adaptation=stan"]["ess_per_kgrad"] == pytest.approx(4.0)
    assert ratios["nutpie"]["ess_per_kgrad"] == pytest.approx(0.5)
    assert harness.base_sampler({"numpyro": _fake_result()}) is None
    assert harness.compute_ratios({"numpyro": _fake_result()}) == {}


def test_ppl_options_reach_nuts_or_are_refused():
    """Spec options must be NUTS keywords (else a clear error); --ppl-adaptation is passed
    only when NUTS takes ``adaptation`` and is otherwise recorded as ignored."""
    choice = parse_model("gaussian:dim=3")
    settings = Settings(chains=1, warmup=10, draws=10)
    takes_adaptation = "adaptation" in samplers._init_parameters(ppl.infer.NUTS)

    runner = PplRunner(choice, choice.data(), settings, {"max_tree_depth": 7}, "stan")
    runner._make_mcmc()
    assert runner.options["NUTS"]["max_tree_depth"] == 7
    if takes_adaptation:
        assert runner.options["NUTS"]["adaptation"] == "stan"
    else:
        assert "adaptation" not in runner.options["NUTS"]
        assert "adaptation=stan" in runner.options["ignored"][0]

    runner = PplRunner(choice, choice.data(), settings, {"no_such_option": 1})
    with pytest.raises(ValueError, match="no_such_option"):
        runner._make_mcmc()
    if not takes_adaptation:
        runner = PplRunner(choice, choice.data(), settings, {"adaptation": "stan"})
        with pytest.raises(ValueError, match="takes no option"):
            runner._make_mcmc()


def test_missing_peer_is_skipped_with_a_notice(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(samplers.SAMPLER_MODULES, "nutpie", ("no_such_module_for_nutpie",))
    out = tmp_path / "r.json"
    assert harness.main(["--samplers", "nutpie", "--models", "gaussian", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "notice: skipping nutpie" in stdout and ".[bench,nutpie]" in stdout
    result = json.loads(out.read_text())["models"]["gaussian:dim=100"]["samplers"]["nutpie"]
    assert result["status"] == "skipped"


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
    with pytest.raises(SystemExit):
        harness.main(["--samplers", "ppl,ppl", "--models", "gaussian"])
    assert "given twice" in capsys.readouterr().err


# ---------------------------------------------------------------------- smoke run


def _run_harness(args, tmp_path, timeout, optimize=False):
    out = tmp_path / "results.json"
    env = dict(os.environ)
    if not optimize:
        env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
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
                assert not harness.sampler_available(parse_sampler(sampler).name)
                continue
            assert res["status"] == "ok", res
            assert res["fresh_process"] is True
            missing = [f for f in PER_SAMPLER_FIELDS if f not in res]
            assert not missing, (sampler, missing)
            for field in ("cold_s", "warm_s", "min_ess_bulk", "n_grad", "us_per_grad"):
                assert res[field] > 0, (sampler, field, res[field])
            if sampler == "ppl":  # a second process, with the first one's compilation cache
                assert res["second_process_cold_s"] > 0
            assert res["latent_sites"] == entry["samplers"]["ppl"]["latent_sites"]
            assert res["dim"] == entry["dim"]
            if sampler != "ppl":
                ratios = entry["ratios"][sampler]
                assert set(ratios) == set(harness.RATIO_FIELDS)
                for name, value in ratios.items():
                    assert value is not None and math.isfinite(value) and value > 0, (name, value)
                assert f"ppl/{sampler}" in stdout


def test_quick_run_side_by_side(tmp_path):
    """``python -m benchmarks`` end to end: one fresh process per sampler, JSON and table;
    ppl and nutpie (skipped with a notice when PyMC or nutpie is missing)."""
    samplers = ["ppl", "nutpie"]
    stdout, report = _run_harness(
        "--quick --models eight_schools --chains 2 --warmup 20 --draws 20 "
        "--samplers ppl,nutpie".split(),
        tmp_path,
        timeout=300,
    )
    assert report["settings"]["chains"] == 2 and report["settings"]["draws"] == 20
    _check_report(stdout, report, ["eight_schools"], samplers)
    nutpie = report["models"]["eight_schools"]["samplers"]["nutpie"]
    if nutpie["status"] == "ok":
        assert nutpie["options"]["sample"]["tune"] == 20  # --warmup reaches nutpie
        assert nutpie["options"]["sample"]["maxdepth"] == 10
        assert nutpie["cold_compile_s"] > 0 and nutpie["us_per_grad_loop"] > 0


@pytest.mark.slow
def test_full_suite_quick_sizes(tmp_path):
    """Every model with --quick settings, every sampler, and a ppl variant."""
    keys = [parse_model(m, quick=True).key for m in MODELS]
    peers = ["ppl", "numpyro", "blackjax", "nutpie", "ppl:max_tree_depth=8"]
    stdout, report = _run_harness(
        ["--quick", "--samplers", ",".join(peers)], tmp_path, timeout=3000
    )
    _check_report(stdout, report, keys, peers)
    assert "ppl/ppl:max_tree_depth=8" in stdout


@pytest.mark.slow
def test_new_models_sample_cleanly(tmp_path):
    """The correlated Gaussian and stochastic volatility at full size, 4 chains x (1000 +
    1000): R-hat <= 1.01, bulk ESS > 400, ppl and nutpie agree with NumPyro, and at most
    0.1% divergent draws (stochastic volatility gives 0 to 3 of 4000 with NumPyro at
    target acceptance 0.8, in the tail of small sigma and phi near 1; more would mean a
    badly posed model)."""
    _, report = _run_harness(
        [
            "--models",
            "correlated_gaussian,stochastic_volatility",
            "--samplers",
            "ppl,numpyro,nutpie",
        ],
        tmp_path,
        timeout=3600,
        optimize=True,
    )
    for entry in report["models"].values():
        for name, res in entry["samplers"].items():
            if res["status"] == "skipped":
                continue
            assert res["divergences"] <= 4, (entry["model"], name)
            assert res["max_rhat"] <= 1.01, (entry["model"], name)
            assert res["min_ess_bulk"] > 400, (entry["model"], name)
            if name != "numpyro":
                assert res["max_abs_z_vs_numpyro"] < 5.0, (entry["model"], name)


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


@pytest.mark.slow
def test_progress_overhead_script_runs(capsys):
    from benchmarks import progress_overhead

    result = progress_overhead.main(
        ["--repeats", "1", "--chains", "2", "--warmup", "20", "--draws", "20"]
    )
    assert result["ratio"] > 0
    assert "ratio on/off" in capsys.readouterr().out


@pytest.mark.slow
def test_nuts_step_script_runs(capsys):
    from benchmarks import nuts_step

    result = nuts_step.main(["--dim", "5", "--chains", "2", "--draws", "20", "--repeats", "1"])
    assert result["ppl"] > 0
    assert "us per leapfrog step" in capsys.readouterr().out
