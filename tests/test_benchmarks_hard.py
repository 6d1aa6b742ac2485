"""The hard-posteriors suite (``benchmarks/hard.py``): its models, the lost-chain rule, the
funnel's truth check, and the command end to end.

The end-to-end runs go through the real command, ``python -m benchmarks.hard``, in a
subprocess (the suite turns float64 on for its whole process). The fast one is tiny (ppl
only, one seed, 2 chains of 20 + 20, XLA optimisations off): only the presence of the
fields and the structure of the JSON and the report are checked. The slow one runs ppl's
default NUTS on all five models at 4 chains x (500 + 500), 5 seeds, and checks that no
chain is lost and that the funnel's answer is right or flagged by divergences.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import numpyro
import pytest
from numpyro.infer.util import potential_energy

import ppl
from benchmarks import hard

REPO_ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], out: Path, timeout: float, **env_extra: str):
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.hard", *args, "--out", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    "spec", ["funnel:dim=3", "mixture:N=30", "horseshoe:N=20:D=5", "arma:T=15", "hierarchical"]
)
def test_ppl_and_numpyro_versions_are_the_same_model(spec):
    """ppl's log density equals minus NumPyro's potential energy of the same model code at
    random unconstrained points (Jacobians included)."""
    choice = hard.parse_hard_model(spec)
    data = choice.data()
    ld = ppl.logdensity(choice.build(ppl), **data)
    sites, dim = hard.model_sites(choice, data)
    assert dim == ld.dim and sites
    model = choice.build(numpyro)
    thetas = jax.random.uniform(jax.random.PRNGKey(3), (2, ld.dim), minval=-1.5, maxval=1.5)
    for theta in thetas:
        theirs = -potential_energy(model, (), data, ld.unflatten(theta))
        np.testing.assert_allclose(ld(theta), theirs, rtol=1e-4, atol=1e-3)


def test_arma_errors_follow_the_recursion():
    y = np.array([0.3, -1.2, 2.0, 0.7, 0.1])
    mu, phi, theta = 0.4, 0.6, -0.5
    expected = [y[0] - (mu + phi * mu)]
    for t in range(1, len(y)):
        expected.append(y[t] - (mu + phi * y[t - 1] + theta * expected[-1]))
    np.testing.assert_allclose(hard.arma_errors(y, mu, phi, theta), expected, rtol=1e-5)


def test_data_are_fixed_and_shaped():
    mix = hard.mixture_data()["y"]
    assert mix.shape == (300,)
    np.testing.assert_array_equal(mix, hard.mixture_data()["y"])
    assert 0.2 < np.mean(np.asarray(mix) < 0) < 0.4  # the lower component holds about 0.3
    hs = hard.horseshoe_data()
    assert hs["X"].shape == (100, 32) and hs["Y"].shape == (100,)
    assert hard.arma_data()["y"].shape == (200,)
    assert hard.hierarchical_data()["y"].shape == (4,)
    assert hard.funnel_data() == {"n": 9}
    with pytest.raises(ValueError, match="T >= 2"):
        hard.arma_data(T=1)


def test_model_parsing():
    assert hard.parse_hard_model("horseshoe").params == {"N": 100, "D": 32}
    assert hard.parse_hard_model("arma:T=50").key == "arma:T=50"
    with pytest.raises(ValueError, match="unknown hard model"):
        hard.parse_hard_model("gaussian")
    with pytest.raises(ValueError, match="bad model parameter"):
        hard.parse_hard_model("funnel:N=3")


def test_lost_chain_rule():
    rng = np.random.default_rng(0)
    lp = rng.normal(size=(4, 200)) * 2.0 - 50.0
    assert hard.lost_chains(lp) == {}
    # 5 within-chain sds is 10: a chain 12 below the others is lost, one 8 below is not
    far, near = lp.copy(), lp.copy()
    far[2] -= 12.0
    near[2] -= 8.0
    assert list(hard.lost_chains(far)) == [2]
    assert hard.lost_chains(near) == {}
    # a wide log density (sd 10) needs a gap of 50
    wide = lp * 5.0
    wide[1] -= 30.0
    assert hard.lost_chains(wide) == {}
    # a chain far *above* the others is not lost by this rule
    above = lp.copy()
    above[0] += 100.0
    assert hard.lost_chains(above) == {}
    steps = np.array([0.3, 0.01, 0.25, 0.35])
    assert list(hard.lost_chains(lp, steps)) == [1]
    lost = hard.lost_chains(far, steps, moved=np.array([1.0, 1.0, 0.9, 0.01]))
    assert sorted(lost) == [1, 2, 3]
    assert "moved" in lost[3][0] and "step size" in lost[1][0] and "log density" in lost[2][0]
    # one chain: only the stuck rule applies
    one = hard.lost_chains(lp[:1], steps[:1], moved=np.array([0.0]))
    assert one == {0: ["moved in 0.0% of its draws"]}


def test_moved_fraction():
    x = np.zeros((2, 5, 3))
    x[0, 1:, 0] = np.arange(1, 5)  # chain 0 moves at every draw, chain 1 never
    moved = hard.moved_fraction({"a": x, "b": np.zeros((2, 5))}, ["a", "b"])
    np.testing.assert_allclose(moved, [1.0, 0.0])


def test_truth_check():
    rng = np.random.default_rng(1)
    good = rng.normal(0.0, 3.0, size=(4, 1000))
    check = hard.truth_check(good, 0.0, 3.0, divergences=0)
    assert check["right"] and not check["flagged"] and check["ok"]
    assert abs(check["z_mean"]) < hard.TRUTH_Z and check["ess_bulk"] > 1000
    narrow = rng.normal(1.0, 1.5, size=(4, 1000))  # a funnel that never reaches its neck
    check = hard.truth_check(narrow, 0.0, 3.0, divergences=0)
    assert not check["right"] and not check["ok"]
    assert hard.truth_check(narrow, 0.0, 3.0, divergences=3)["ok"]


def test_count_rescues():
    assert hard.count_rescues(object()) is None
    assert hard.count_rescues(SimpleNamespace(rescues=[0, 2, 1])) == 3
    assert hard.count_rescues(SimpleNamespace(rescues=[object(), object()])) == 2
    assert hard.rescue_records(SimpleNamespace(rescues=["chain 1 restarted"])) == [
        "chain 1 restarted"
    ]


def test_tiny_run_end_to_end(tmp_path):
    """``python -m benchmarks.hard`` at tiny sizes, ppl only: the JSON's fields and the table."""
    out = tmp_path / "hard.json"
    args = "--models funnel hierarchical --samplers ppl --seeds 0 --chains 2 --warmup 20 --draws 20"
    proc = _run(args.split(), out, timeout=300, JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    settings = report["settings"]
    assert settings["seeds"] == [0] and settings["chains"] == 2 and settings["x64"] is True
    assert settings["samplers"] == ["ppl"]
    assert set(report["rules"]) >= {"lost_lp_floor", "lost_step_ratio", "truth_z"}
    assert set(report["models"]) == {"funnel", "hierarchical"}
    for name, entry in report["models"].items():
        (run,) = entry["runs"]["ppl"]
        assert run["status"] == "ok", run
        for field in ("wall_s", "compile_s", "min_ess_bulk", "max_rhat", "n_grad"):
            assert run[field] > 0, (name, field)
        assert run["divergences"] >= 0 and run["lost_chains"] == len(run["lost"])
        assert len(run["step_size"]) == 2 and len(run["lp_mean"]) == 2
        assert "rescues" in run and isinstance(run["warnings"], list)
        assert entry["summary"]["ppl"]["runs"] == 1
        assert f"== {entry['model']}" in proc.stdout
    funnel = report["models"]["funnel"]
    assert funnel["dim"] == 10 and funnel["latent_sites"] == ["v", "x"]
    check = funnel["runs"]["ppl"][0]["truth"]["v"]
    assert set(check) >= {"mean", "sd", "z_mean", "z_sd", "right", "flagged", "ok", "flagged_rhat"}
    assert report["models"]["hierarchical"]["runs"]["ppl"][0]["truth"] == {}
    assert report["summary"]["ppl"]["runs"] == 2
    assert "== summary over all models" in proc.stdout


@pytest.mark.slow
def test_ppl_default_loses_no_chain(tmp_path):
    """ppl's default NUTS, all five models, 4 chains x (500 + 500), seeds 0-4: no chain is
    lost, nothing crashes, and the funnel is right about v or flagged by divergences."""
    out = tmp_path / "hard.json"
    args = "--samplers ppl --seeds 0,1,2,3,4 --chains 4 --warmup 500 --draws 500"
    proc = _run(args.split(), out, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["models"]) == set(hard.MODELS)
    lost = [
        (name, run["seed"], run["lost"])
        for name, entry in report["models"].items()
        for run in entry["runs"]["ppl"]
        if run["lost_chains"]
    ]
    assert not lost, lost
    funnel = [run["truth"]["v"] for run in report["models"]["funnel"]["runs"]["ppl"]]
    assert len(funnel) == 5
    assert all(check["ok"] for check in funnel), funnel
