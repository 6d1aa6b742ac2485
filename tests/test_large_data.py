"""Runs on large data (issue 17, "Large data"): the pointwise groups in blocks of draws,
their size limit (``ppl sample --pointwise``), ``ppl loo`` in blocks of observations, and
``ppl summary`` reading only what it needs.

Equalities with arviz-stats are to float rounding (1e-8 relative or tighter): the same
arithmetic on the same numbers, vectorized. The large run's memory bound (4 GB) is the
issue's; its 10^6 rows at 2 chains x 120 draws (1.2e8 values per pointwise group) are past
the default limit of 1e8, so the groups are left out.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
import ppl.distributions as dist
from benchmarks.run_files import model_source  # the regression y ~ N(a + b x, sigma)
from ppl import cli
from ppl.infer.core.psis_loo import psis_loo_pointwise
from ppl.infer.results import pointwise as pw
from ppl.infer.results.datatree import draws_to_datatree
from ppl.infer.results.predictive import log_likelihood, posterior_predictive
from ppl.runs import load_run

ROOT = Path(__file__).resolve().parents[1]


def model(x, y=None):
    a = ppl.sample("a", dist.Normal(0.0, 5.0))
    sigma = ppl.sample("sigma", dist.HalfNormal(2.0))
    with ppl.plate("obs", x.shape[0]):
        ppl.sample("y", dist.Normal(a + x, sigma), obs=y)


def _draws(chains=2, draws=15):
    rng = np.random.default_rng(1)
    return {
        "a": rng.normal(size=(chains, draws)).astype(np.float32),
        "sigma": rng.uniform(0.5, 2.0, size=(chains, draws)).astype(np.float32),
    }


DATA = {"x": jnp.linspace(-1.0, 1.0, 7), "y": jnp.linspace(0.0, 3.0, 7)}


# ---------------------------------------------------------------------- blocks of draws


def test_blocks_of_draws_equal_one_piece():
    ld = ppl.logdensity(model, **DATA)
    latent = _draws()
    whole = log_likelihood(model, latent, batch_ndims=2, **DATA)
    key = jax.random.PRNGKey(3)
    replicated = posterior_predictive(model, latent, ["y"], DATA, key)
    # 20 values a block: 2 draws (of 7 observations) each, the last block padded
    with pw.pointwise_policy("always", dtype=None, block_values=20):
        ll = pw.pointwise_log_likelihood(ld, latent)
        pp = pw.pointwise_posterior_predictive(ld, latent, ["y"], key)
    assert ll["y"].shape == (2, 15, 7) and pp["y"].shape == (2, 15, 7)
    # float32, compiled vs op by op: a few units in the last place
    np.testing.assert_allclose(ll["y"], np.asarray(whole["y"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pp["y"], replicated["y"], rtol=1e-5, atol=1e-6)
    with pw.pointwise_policy("always"):  # the run's: float32
        assert pw.pointwise_log_likelihood(ld, latent)["y"].dtype == np.float32


def test_the_limit_leaves_log_likelihood_out_and_says_why():
    ld = ppl.logdensity(model, **DATA)
    posterior = _draws()
    with pw.pointwise_policy("auto", max_values=100):  # 30 draws x 7 = 210 values
        tree = draws_to_datatree(ld, posterior)
    assert "log_likelihood" not in tree.children and "observed_data" in tree.children
    reason = pw.skipped_groups(tree)["log_likelihood"]
    assert (reason["draws"], reason["observed_values"], reason["values"]) == (30, 7, 210)
    assert reason["limit"] == 100 and "exceed the limit" in reason["reason"]
    with pw.pointwise_policy("auto", max_values=210):
        assert "log_likelihood" in draws_to_datatree(ld, posterior).children
    with pw.pointwise_policy("never"):
        tree = draws_to_datatree(ld, posterior)
    assert pw.skipped_groups(tree)["log_likelihood"]["reason"] == "--pointwise never"
    # outside a policy: every group, as the library always did
    assert "log_likelihood" in draws_to_datatree(ld, posterior).children


# ---------------------------------------------------------------------- PSIS-LOO


def test_vectorized_psis_loo_equals_arviz_stats():
    from arviz_stats.base import array_stats

    rng = np.random.default_rng(0)
    for draws, r_eff in [(1000, 0.8), (100, 1.0), (40, 0.6)]:
        ll = rng.standard_t(3, size=(60, draws)) * rng.uniform(0.1, 3, size=(60, 1)) - 1
        ll[0] = 0.25  # every ratio equal: no Pareto fit
        ll[1, : draws // 2] = np.round(ll[1, : draws // 2])  # ties
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = [
                array_stats.loo(row.reshape(2, -1), chain_axis=0, draw_axis=1, r_eff=r_eff)
                if i
                else (np.nan, np.nan, np.nan)
                for i, row in enumerate(ll)
            ]
        elpd, k, p = psis_loo_pointwise(ll, r_eff)
        want = np.array(expected, dtype=float)
        np.testing.assert_allclose(elpd[1:], want[1:, 0], rtol=1e-10)
        np.testing.assert_allclose(k[1:], want[1:, 1], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(p[1:], want[1:, 2], rtol=1e-8, atol=1e-10)
        assert np.isnan(k[0])


# ---------------------------------------------------------------------- the command line


def run_main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same regression (200 rows) sampled twice: with the pointwise groups (always) and
    under a limit of 1,000 values (200 draws x 200 rows exceed it)."""
    folder = tmp_path_factory.mktemp("large")
    model_file = folder / "regression.py"
    model_file.write_text(model_source(200))
    common = [model_file, "--chains", 2, "--warmup", 150, "--draws", 100, "--no-progress"]
    kept, skipped = folder / "kept.nc", folder / "skipped.nc"
    code = cli.main([str(a) for a in ["sample", *common, "--pointwise", "always", "-o", kept]])
    assert code in (0, 1)
    buffer = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buffer):
        mp.setattr(pw, "POINTWISE_MAX_VALUES", 1000)
        code = cli.main([str(a) for a in ["sample", *common, "-o", skipped]])
    return {
        "folder": folder,
        "model": model_file,
        "kept": kept,
        "skipped": skipped,
        "code": code,
        "stdout": buffer.getvalue(),
    }


def test_a_skipped_run_records_why_and_says_so(runs):
    assert runs["code"] == 0, runs["stdout"]
    lines = [line for line in runs["stdout"].splitlines() if "not stored" in line]
    assert len(lines) == 1
    assert "log_likelihood and posterior_predictive" in lines[0]
    assert f"ppl loo {runs['skipped']}" in lines[0] and "--pointwise always" in lines[0]
    tree = load_run(runs["skipped"])
    assert "log_likelihood" not in tree.children
    assert "posterior_predictive" not in tree.children
    assert "observed_data" in tree.children
    skipped = json.loads(tree.attrs["ppl_pointwise_skipped"])
    assert set(skipped) == {"log_likelihood", "posterior_predictive"}
    assert skipped["log_likelihood"]["values"] == 200 * 200
    assert skipped["log_likelihood"]["limit"] == 1000
    kept = load_run(runs["kept"])
    assert json.loads(kept.attrs["ppl_pointwise_skipped"]) == {}
    assert kept["log_likelihood"]["y"].dtype == np.float32
    assert kept["posterior_predictive"]["y"].shape == (2, 100, 200)


def test_summary_of_a_skipped_run_says_so_without_failing(runs, capsys):
    code, out = run_main(capsys, "summary", runs["skipped"])
    assert code == 0
    line = next(x for x in out.out.splitlines() if "PSIS-LOO" in x)
    assert line.strip().startswith("[info] PSIS-LOO: not computed")
    assert "ppl loo RUN" in line and "nan" not in line.lower()
    code_strict, _ = run_main(capsys, "summary", runs["skipped"], "--strict")
    code_kept, _ = run_main(capsys, "summary", runs["kept"], "--strict")
    assert code_strict == code_kept  # the missing LOO does not bear on the verdict


def test_ppl_loo_equals_arviz_stats(runs, capsys):
    import arviz_stats

    kept = load_run(runs["kept"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = arviz_stats.loo(kept, pointwise=True)
    want_k = np.asarray(expected.pareto_k).reshape(-1)
    for run, extra in [(runs["kept"], []), (runs["kept"], ["--recompute"]),
                       (runs["skipped"], [])]:  # fmt: skip
        code, out = run_main(capsys, "loo", run, "--json", *extra)
        assert code == 0, out.err
        got = json.loads(out.out)
        assert got["source"] == ("stored" if run == runs["kept"] and not extra else "recomputed")
        assert got["num_observations"] == 200 and got["num_draws"] == 200
        # stored: float32 values, the same numbers; recomputed: float32 from the model
        # (rounding of the last digit of each value: 1e-5 relative on the sums)
        np.testing.assert_allclose(got["elpd_loo"], expected.elpd, rtol=1e-5)
        np.testing.assert_allclose(got["se"], expected.se, rtol=1e-4)
        np.testing.assert_allclose(got["p_loo"], expected.p, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(got["pareto_k_max"], want_k.max(), atol=1e-3)
        assert got["pareto_k_counts"]["good"] == int((want_k <= expected.good_k).sum())
    code, out = run_main(capsys, "loo", runs["skipped"])
    assert "elpd_loo" in out.out and "Pareto k:" in out.out and "nan" not in out.out


def test_ppl_loo_refuses_other_data(runs, capsys, tmp_path):
    other = tmp_path / "other.json"
    y = np.linspace(-1, 1, 200).tolist()
    other.write_text(json.dumps({"x": np.linspace(0, 1, 200).tolist(), "y": y}))
    code, out = run_main(capsys, "loo", runs["skipped"], "--data", other)
    assert code == 2
    assert "sampled with other data (key(s) x, y differ)" in out.err
    runs["model"].write_text(runs["model"].read_text() + "\n# edited\n")
    try:
        code, out = run_main(capsys, "loo", runs["skipped"])
        assert code == 2 and "model source" in out.err
    finally:
        runs["model"].write_text(runs["model"].read_text().replace("\n# edited\n", ""))


def test_load_run_reads_only_the_groups_asked_for(runs):
    tree = load_run(runs["kept"], groups=("posterior", "log_likelihood"))
    assert set(tree.children) == {"posterior", "log_likelihood"}
    assert tree["log_likelihood"]["y"].shape == (2, 100, 200)


# ---------------------------------------------------------------------- 10^6 rows


MEMORY_PROBE = textwrap.dedent(
    """
    import resource, subprocess, sys
    run = subprocess.run([sys.executable, "-m", "ppl", *sys.argv[1:]], capture_output=True,
                         text=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"PEAK_MB {peak:.0f} EXIT {run.returncode}")
    print(run.stdout[-3000:])
    print(run.stderr[-3000:], file=sys.stderr)
    """
)


def test_a_million_rows_stay_under_4_gb(tmp_path):
    model_file = tmp_path / "million.py"
    model_file.write_text(model_source(1_000_000))
    run = tmp_path / "million.nc"
    argv = ["sample", model_file, "--chains", 2, "--warmup", 20, "--draws", 60,
            "--no-progress", "-o", run]  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, *map(str, argv)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=600,
    )
    head = out.stdout.splitlines()[0].split()
    peak_mb, code = float(head[1]), int(head[3])
    assert code in (0, 1), out.stdout + out.stderr
    assert peak_mb < 4096, f"peak {peak_mb:.0f} MB"
    assert "not stored: log_likelihood and posterior_predictive" in out.stdout
    assert run.stat().st_size < 100e6  # the posterior of 3 parameters and the data
