"""The diagnostics report and run files, on synthetic DataTrees (no sampling).

Synthetic draws make each failure mode certain: iid draws pass every check, a shifted
chain fails R-hat, planted divergences fail, tree depths at the maximum warn, a random
walk of energies gives a low E-BFMI.
"""

import base64
import json
import re

import arviz_base
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import ppl
import ppl.distributions as dist
from ppl.report import Thresholds, assess, render_report, write_report
from ppl.report import html as report_html
from ppl.runs import (
    RunError,
    Settings,
    UsageError,
    check_data,
    load_data_file,
    load_run,
    posterior_predictive,
    save_run,
)

CHAINS, DRAWS = 4, 500


def _stats(rng, chains=CHAINS, draws=DRAWS, **overrides):
    stats = {
        "diverging": np.zeros((chains, draws), bool),
        "tree_depth": np.full((chains, draws), 3, np.int32),
        # iid energies: E-BFMI about 2
        "energy": rng.normal(size=(chains, draws)),
        "lp": rng.normal(size=(chains, draws)),
        "acceptance_rate": rng.uniform(0.7, 1.0, size=(chains, draws)),
        "step_size": np.full((chains, draws), 0.5),
        "n_steps": np.full((chains, draws), 7, np.int32),
    }
    stats.update(overrides)
    return stats


def _tree(posterior, stats=None, attrs=None, dims=None, **groups):
    data = {"posterior": posterior, **groups}
    if stats is not None:
        data["sample_stats"] = stats
    tree = arviz_base.from_dict(data, dims=dims)
    tree.attrs.update({"ppl_model": "synthetic", "ppl_method": "nuts", "ppl_max_tree_depth": 10})
    tree.attrs.update(attrs or {})
    return tree


def _iid(rng, *shape):
    return rng.normal(size=(CHAINS, DRAWS, *shape))


def test_iid_draws_are_trusted():
    rng = np.random.default_rng(0)
    # "c" is constant, like the fixed entries of a Cholesky factor: no diagnostics apply
    c = np.ones((CHAINS, DRAWS))
    tree = _tree({"x": _iid(rng), "y": _iid(rng, 3), "c": c}, _stats(rng))
    a = assess(tree)
    assert bool(a.summary.loc["c", "constant"]) and not a.summary.loc["c", "flagged"]
    # split R-hat of iid draws: R-hat - 1 ~ (chi2_7 / 7 - 1) / (2 * 250), far below 0.01
    assert a.verdict == "trust", a.text()
    assert all(f.level == "ok" for f in a.findings)
    assert a.reasons == []
    assert list(a.summary.columns[:4]) == ["mean", "sd", "hdi89_lb", "hdi89_ub"]
    assert {"ess_bulk", "ess_tail", "r_hat", "mcse_mean", "mcse_sd"} <= set(a.summary.columns)
    assert not a.summary["flagged"].any()


def _mark_latent(tree, *names):
    for name in names:
        tree["posterior"][name].attrs["ppl_latent"] = 1
    return tree


def test_a_latent_variable_that_never_moved_fails():
    rng = np.random.default_rng(1)
    tree = _mark_latent(
        _tree({"x": _iid(rng), "frozen": np.full((CHAINS, DRAWS, 2), 0.3)}, _stats(rng)),
        "x",
        "frozen",
    )
    a = assess(tree)
    assert a.verdict == "do not trust"
    assert any(
        f.check == "moving draws" and "frozen" in f.message for f in a.findings if f.level == "fail"
    )


def test_a_stuck_chain_fails():
    rng = np.random.default_rng(2)
    x = _iid(rng, 3)
    x[2] = x[2, 0]  # chain 2 repeats its first draw
    a = assess(_mark_latent(_tree({"x": x}, _stats(rng)), "x"))
    assert a.verdict == "do not trust"
    stuck = [f.message for f in a.findings if f.check == "moving draws"]
    assert stuck and "chain 2" in stuck[0], a.text()


def test_an_all_zero_posterior_is_not_trusted_even_without_marks():
    # what a damaged file holds: every draw and every statistic zero
    zeros = np.zeros((CHAINS, DRAWS))
    stats = {
        k: np.zeros((CHAINS, DRAWS), v.dtype) for k, v in _stats(np.random.default_rng(3)).items()
    }
    a = assess(_tree({"a": zeros, "b": np.zeros((CHAINS, DRAWS, 3))}, stats))
    assert a.verdict == "do not trust", a.text()
    failed = {f.check for f in a.findings if f.level == "fail"}
    assert {"moving draws", "R-hat", "ESS", "E-BFMI"} <= failed, a.text()
    assert not any("nan" in f.message.lower() for f in a.findings if f.level == "ok")


def test_shifted_chain_fails_rhat_and_is_listed_first():
    rng = np.random.default_rng(1)
    y = _iid(rng, 3)
    y[0, :, 1] += 2.0  # chain 0 of y[1] sits 2 sd higher
    tree = _tree({"x": _iid(rng), "y": y}, _stats(rng))
    a = assess(tree)
    assert a.verdict == "do not trust"
    assert any("R-hat above 1.01" in r and "y[1]" in r for r in a.reasons), a.text()
    assert a.summary.index[0] == "y[1]" and bool(a.summary["flagged"].iloc[0])
    assert int(a.summary["flagged"].sum()) == 1


def test_divergences_fail_with_count():
    rng = np.random.default_rng(2)
    div = np.zeros((CHAINS, DRAWS), bool)
    div[1, [10, 20, 30]] = True
    tree = _tree({"x": _iid(rng)}, _stats(rng, diverging=div))
    a = assess(tree)
    assert a.verdict == "do not trust"
    assert a.divergences.tolist() == [0, 3, 0, 0]
    (reason,) = a.reasons
    assert "3 of 2000 draws" in reason and "divergent" in reason


def test_tree_depth_saturation_and_low_ebfmi_ask_for_a_closer_look():
    rng = np.random.default_rng(3)
    depth = np.full((CHAINS, DRAWS), 4, np.int32)
    depth[2, :50] = 10
    tree = _tree({"x": _iid(rng)}, _stats(rng, tree_depth=depth))
    a = assess(tree)
    assert a.verdict == "look closer"
    assert any("50 of 2000 draws" in r and "maximum tree depth 10" in r for r in a.reasons)
    assert a.tree_depth[2]["at_max"] == 50

    # a random walk of energies: E-BFMI = sum(dE^2) / sum((E - mean)^2) is about 1e-2
    energy = np.cumsum(rng.normal(size=(CHAINS, DRAWS)), axis=1)
    a = assess(_tree({"x": _iid(rng)}, _stats(rng, energy=energy)))
    assert a.verdict == "look closer"
    assert any("E-BFMI below 0.3" in r for r in a.reasons), a.text()
    assert np.all(a.ebfmi < 0.3)


def test_thresholds_can_be_changed():
    rng = np.random.default_rng(4)
    tree = _tree({"x": _iid(rng)}, _stats(rng))
    # 2000 iid draws cannot reach 10,000 per chain
    a = assess(tree, Thresholds(ess_per_chain_min=10_000))
    assert a.verdict == "do not trust"
    assert any("too few effective draws" in r for r in a.reasons)


def test_incomplete_run_and_nan_draws_fail():
    rng = np.random.default_rng(5)
    a = assess(_tree({"x": _iid(rng)}, _stats(rng), attrs={"ppl_complete": 0}))
    assert a.verdict == "do not trust"
    assert any("incomplete" in r for r in a.reasons)
    x = _iid(rng)
    x[0, 5] = np.nan
    a = assess(_tree({"x": x}, _stats(rng)))
    assert any("NaN or infinite draws in x" in r for r in a.reasons)


def _images(html):
    found = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    for data in found:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    return found


@pytest.fixture(scope="module")
def large_report(tmp_path_factory):
    """A model with 150 parameters, one bad, with divergences, LOO and predictive draws.

    The table limits are lowered (30 rows, 70 more behind "show more", the rest summarised)
    so that a small model exercises them: ArviZ's summary takes ms per parameter.
    """
    rng = np.random.default_rng(6)
    z = _iid(rng, 150)
    z[0, :, 123] += 3.0
    div = np.zeros((CHAINS, DRAWS), bool)
    div[:, ::100] = True
    n_obs = 20
    mu = _iid(rng)
    ll = -0.5 * (rng.normal(size=(CHAINS, DRAWS, n_obs))) ** 2 - 0.92
    tree = _tree(
        {"mu": mu, "z": z},
        _stats(rng, diverging=div),
        dims={"z": ["unit"], "y": ["obs"]},
        log_likelihood={"y": ll},
        posterior_predictive={"y": rng.normal(size=(CHAINS, DRAWS, n_obs))},
        observed_data={"y": rng.normal(size=n_obs)},
    )
    path = tmp_path_factory.mktemp("report") / "large.html"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report_html, "MORE_ROWS", 70)
        write_report(tree, path)
    return path.read_text()


def test_report_of_a_large_model(large_report):
    html = large_report
    assert len(html.encode()) < 10e6
    assert 'data-verdict="do not trust"' in html
    # worst first: the shifted parameter leads the summary table, and is highlighted
    summary = html[html.index("<h2>Summary</h2>") :]
    first_row = re.search(r"<tbody><tr([^>]*)><td[^>]*>([^<]+)</td>", summary)
    assert first_row.group(2) == "z[123]" and 'class="flag"' in first_row.group(1)
    assert "Show 70 more parameter(s)" in html
    assert "The remaining 51 parameter(s)" in html
    for section in (
        "Verdict: Do not trust",
        "<h2>Checks</h2>",
        "<h2>Summary</h2>",
        "<h2>Divergences</h2>",
        "<h2>Tree depth</h2>",
        "<h2>Energy and E-BFMI</h2>",
        "<h2>Trace and rank plots</h2>",
        "<h2>Posterior predictive check</h2>",
        "<h2>PSIS-LOO</h2>",
        "<h2>How to read this report</h2>",
    ):
        assert section in html, section
    # thresholds are written into the report
    for text in ("R-hat ≤ 1.01", "ESS ≥ 100 per chain", "E-BFMI ≥ 0.3", "Pareto k ≤ 0.7"):
        assert text in html, text
    assert "Figure failed" not in html
    # pair plot of divergences, energy, trace, rank, ppc, khat
    assert len(_images(html)) == 6
    assert "http://" not in html.replace("http://www.w3.org", "")
    assert "<script" not in html


def test_variational_run_shows_loss_and_pareto_k():
    rng = np.random.default_rng(7)
    draws = rng.normal(size=(1, 400, 2))
    loss = 100.0 * np.exp(-np.arange(300) / 50.0) + rng.normal(size=300)
    for k, verdict in ((0.4, "trust"), (0.9, "do not trust")):
        tree = _tree({"w": draws}, attrs={"ppl_method": "advi", "ppl_pareto_k": k})
        tree["optimization"] = xr.DataTree(xr.Dataset({"loss": ("step", loss)}))
        a = assess(tree)
        assert a.verdict == verdict, a.text()
        assert a.pareto_k_vi == k
    html = render_report(tree)
    assert "<h2>Variational fit</h2>" in html and "loss curve" in html
    assert len(_images(html)) == 1
    assert "R-hat above" not in html


def _model(y):
    mu = ppl.sample("mu", dist.Normal(0.0, 10.0))
    sigma = ppl.sample("sigma", dist.HalfNormal(5.0))
    with ppl.plate("obs", y.shape[0]):  # the size comes from the data: y cannot be None
        ppl.sample("y", dist.Normal(mu, sigma), obs=y)


def test_posterior_predictive_replaces_observations_by_draws():
    y = jnp.zeros(30)
    latent = {"mu": jnp.full((2, 50), 3.0), "sigma": jnp.ones((2, 50))}
    out = posterior_predictive(_model, latent, ["y"], {"y": y}, jax.random.PRNGKey(0))
    assert set(out) == {"y"} and out["y"].shape == (2, 50, 30)
    # 3000 draws of N(3, 1): the mean is within 5 standard errors (5 / sqrt(3000)) of 3
    assert abs(out["y"].mean() - 3.0) < 5 / np.sqrt(3000)
    assert abs(out["y"].std() - 1.0) < 0.1


def test_data_files_and_their_checks(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"y": [1.5, 2.0], "n": 2, "idx": [0, 1]}))
    data = load_data_file(path)
    assert data["n"] == 2 and isinstance(data["n"], int)
    assert data["y"].dtype == jnp.float32 and data["idx"].dtype == jnp.int32
    np.savez(tmp_path / "d.npz", y=np.ones(3), n=np.int64(3))
    data = load_data_file(tmp_path / "d.npz")
    assert data["n"] == 3 and isinstance(data["n"], int) and data["y"].shape == (3,)

    check_data(_model, {"y": 1}, "here")
    with pytest.raises(UsageError, match=r"here: key\(s\) bogus, z match no argument .*\(its "):
        check_data(_model, {"y": 1, "z": 2, "bogus": 3}, "here")
    with pytest.raises(UsageError, match=r"argument\(s\) y have no value"):
        check_data(_model, {}, "here")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match="must hold a JSON object"):
        load_data_file(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(UsageError, match="is not valid JSON"):
        load_data_file(tmp_path / "broken.json")


def test_run_files_round_trip_and_corrupt_files_are_rejected(tmp_path):
    rng = np.random.default_rng(8)
    tree = _tree({"x": _iid(rng)}, _stats(rng))
    tree.attrs.update({"ppl_format": "ppl-run-1", "ppl_settings": Settings(seed=3).to_json()})
    path = save_run(tree, tmp_path / "run.nc")
    back = load_run(path)
    np.testing.assert_array_equal(back["posterior"]["x"].values, tree["posterior"]["x"].values)
    assert back["sample_stats"]["diverging"].dtype == bool
    assert Settings.from_json(back.attrs["ppl_settings"]).seed == 3

    (tmp_path / "junk.nc").write_bytes(b"this is not netCDF" * 10)
    with pytest.raises(RunError, match="could not be read as a netCDF run"):
        load_run(tmp_path / "junk.nc")
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(RunError, match="could not be read"):
        load_run(truncated)
    del tree.attrs["ppl_format"]
    save_run(tree, tmp_path / "foreign.nc")
    with pytest.raises(RunError, match="not a ppl run"):
        load_run(tmp_path / "foreign.nc")
    with pytest.raises(RunError, match="does not exist"):
        load_run(tmp_path / "missing.nc")


def test_pointwise_groups_are_kept_in_float32_and_the_posterior_is_not():
    from ppl.runs.pipelines import _pointwise_as_float32

    rng = np.random.default_rng(4)
    tree = _tree(
        {"x": _iid(rng)},
        _stats(rng),
        log_likelihood={"y": rng.normal(size=(CHAINS, DRAWS, 7))},
        posterior_predictive={"y": rng.normal(size=(CHAINS, DRAWS, 7))},
    )
    before = tree["log_likelihood"]["y"].values.copy()
    _pointwise_as_float32(tree)
    assert tree["log_likelihood"]["y"].dtype == np.float32
    assert tree["posterior_predictive"]["y"].dtype == np.float32
    assert tree["posterior"]["x"].dtype == np.float64
    np.testing.assert_allclose(tree["log_likelihood"]["y"].values, before, rtol=1e-6)
