"""The structured-models benchmark (``benchmarks/structured.py``): its models, the
hand-written forward algorithm, and a tiny end-to-end run.

The end-to-end run goes through the real command, ``python -m benchmarks.structured``,
at tiny sizes (HMM T = 20, mixture N = 50, one chain of 10 + 10) with XLA optimisations
off to save compile time: the numbers are not looked at, only their presence and the
structure of the JSON and the printed report.
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
from numpyro.contrib.funsor import config_enumerate, enum
from numpyro.infer.util import potential_energy

import ppl
from benchmarks import structured
from benchmarks.harness import RATIO_FIELDS

REPO_ROOT = Path(__file__).resolve().parents[1]


def _points(ld, n=3):
    return jax.random.uniform(jax.random.PRNGKey(1), (n, ld.dim), minval=-2.0, maxval=2.0)


@pytest.mark.parametrize("spec", ["hmm:T=30", "mixture:N=40"])
def test_ppl_and_numpyro_versions_are_the_same_model(spec):
    """ppl's log density (enumerated sites summed out by ppl) equals minus NumPyro's
    potential energy with funsor enumeration, at random unconstrained points. The model is
    wrapped as ``initialize_model`` wraps it for NumPyro's NUTS (both models have one plate,
    so enumeration starts at dim -2), without its slower search for a starting point."""
    choice = structured.parse_structured_model(spec)
    data = choice.data()
    ld = ppl.logdensity(choice.build(ppl), **data)
    assert ld.sites["z"].kind == "enumerated"
    latent = [n for n, s in ld.sites.items() if s.kind == "latent"]
    model = choice.build(numpyro)
    assert structured._numpyro_latent_sites(model, data) == latent
    enumerated = enum(config_enumerate(model), -2)

    def theirs_at(theta):
        return -potential_energy(enumerated, (), data, ld.unflatten(theta), enum=True)

    thetas = _points(ld)
    ours = jax.jit(jax.vmap(ld))(thetas)
    theirs = jax.jit(jax.vmap(theirs_at))(thetas)
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=1e-3)


def test_bare_forward_algorithm_is_the_same_log_density():
    """The hand-written forward algorithm has ppl's log density and gradient."""
    data = structured.hmm_data(T=40)
    ld = ppl.logdensity(structured.hmm(ppl), **data)
    bare = structured.bare_hmm_logdensity(data["y"], data["K"], structured.ppl_layout(ld))
    thetas = _points(ld)
    ours = jax.jit(jax.vmap(jax.value_and_grad(ld)))(thetas)
    theirs = jax.jit(jax.vmap(jax.value_and_grad(bare)))(thetas)
    np.testing.assert_allclose(theirs[0], ours[0], rtol=1e-5)
    np.testing.assert_allclose(theirs[1], ours[1], rtol=1e-3, atol=1e-3)


def test_data_are_fixed_and_shaped():
    hmm = structured.hmm_data()
    assert hmm["y"].shape == (1000,) and hmm["K"] == 3 and hmm["y"].dtype == jnp.float32
    np.testing.assert_array_equal(hmm["y"], structured.hmm_data()["y"])
    # sticky states: neighbouring emissions are correlated
    y = np.asarray(hmm["y"]) - np.mean(hmm["y"])
    assert np.sum(y[1:] * y[:-1]) / np.sum(y**2) > 0.5
    mix = structured.mixture_data()
    assert mix["y"].shape == (10_000,) and mix["K"] == 3
    np.testing.assert_array_equal(mix["y"], structured.mixture_data()["y"])
    assert structured.mixture_data(N=30, K=4)["y"].shape == (30,)
    with pytest.raises(ValueError, match="T >= 2"):
        structured.hmm_data(T=1)


def test_model_parsing():
    assert structured.parse_structured_model("hmm").params == {"T": 1000, "K": 3}
    assert structured.parse_structured_model("hmm", quick=True).params == {"T": 100, "K": 3}
    choice = structured.parse_structured_model("mixture:N=200")
    assert choice.key == "mixture:K=3:N=200"
    with pytest.raises(ValueError, match="unknown structured model"):
        structured.parse_structured_model("gaussian")
    with pytest.raises(ValueError, match="bad model parameter"):
        structured.parse_structured_model("hmm:N=3")


def test_target_summary():
    report = {
        "sampling": {
            "hmm": {"ratios": {"numpyro": {"ess_per_s_sampling": 6.0}}},
            "mixture": {"ratios": {"numpyro": {"ess_per_s_sampling": 2.0}}},
        },
        "compile": {"ratio": 1.1},
        "gradient": {"ratio": 1.6, "ratio_loop": 1.2},
    }
    summary = structured.target_summary(report)
    assert set(summary) == set(structured.TARGETS)
    met = {name: res["met"] for name, res in summary.items()}
    assert met == {
        "ess_per_s_hmm": True,
        "ess_per_s_mixture": False,
        "compile_growth": True,
        "gradient_vs_bare": False,
        "gradient_vs_bare_loop": True,
    }
    assert structured.target_summary({})["compile_growth"]["met"] is None


def test_tiny_run_end_to_end(tmp_path):
    """``python -m benchmarks.structured --quick`` at tiny sizes: every part, the JSON's
    structure, finite positive ratios, the targets and the printed report."""
    out = tmp_path / "structured.json"
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    command = (
        "--quick --models hmm:T=20 mixture:N=50 --chains 1 --warmup 10 --draws 10 "
        "--compile-T 10,20 --gradient-T 20"
    ).split()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.structured", *command, "--out", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["settings"]["chains"] == 1 and report["settings"]["draws"] == 10
    assert report["settings"]["samplers"] == ["ppl", "numpyro"]
    assert report["machine"]["jax"] == jax.__version__

    assert set(report["sampling"]) == {"hmm", "mixture"}
    keys = {"hmm": "hmm:K=3:T=20", "mixture": "mixture:K=3:N=50"}
    for name, entry in report["sampling"].items():
        assert entry["model"] == keys[name]
        ours, theirs = entry["samplers"]["ppl"], entry["samplers"]["numpyro"]
        for res in (ours, theirs):
            assert res["status"] == "ok"
            for field in ("cold_s", "warm_s", "sample_s", "min_ess_bulk", "n_grad"):
                assert res[field] > 0, (name, field)
            assert res["us_per_grad"] > 0 and res["us_per_grad_loop"] > 0
            assert "z" not in res["latent_sites"] and "z" not in res["posterior"]
        assert ours["latent_sites"] == theirs["latent_sites"]
        assert entry["dim"] == (10 if name == "hmm" else 6)
        ratios = entry["ratios"]["numpyro"]
        # every ratio but ppl's second-process cold time (the suite does not measure it)
        assert set(ratios) == set(RATIO_FIELDS) - {"second_process_cold"}
        for value in ratios.values():
            assert value is not None and math.isfinite(value) and value > 0
        assert f"== {entry['model']}" in proc.stdout

    compile_ = report["compile"]
    assert compile_["status"] == "ok" and compile_["sizes"] == [10, 20]
    assert set(compile_["by_T"]) == {"10", "20"}
    assert compile_["by_T"]["20"]["first_call_s"] > compile_["by_T"]["20"]["second_call_s"]
    assert compile_["ratio"] > 0

    gradient = report["gradient"]
    assert gradient["status"] == "ok" and gradient["T"] == 20
    assert gradient["log_density_ppl"] == pytest.approx(gradient["log_density_bare"], rel=1e-4)
    for who in ("ppl", "bare"):
        assert gradient[who]["us_per_grad"] > 0 and gradient[who]["us_per_grad_loop"] > 0
    assert gradient["ratio"] > 0 and gradient["ratio_loop"] > 0

    assert set(report["targets"]) == set(structured.TARGETS)
    assert all(res["value"] is not None for res in report["targets"].values())
    assert "== targets" in proc.stdout and "ratio ppl/bare" in proc.stdout
