"""Tests for ChEES-HMC (ppl.infer.warmup.chees, ppl.infer.kernels.ensemble) and the cross-chain
statistics (ppl.infer.core.chain_stats, ppl.infer.core.rng)."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro  # noqa: F401  (the real package before arviz_stats; see DESIGN.md pitfalls)
import pytest
from arviz_stats.base import array_stats

import ppl
import ppl.distributions as dist
from ppl.infer import MCMC, NUTS, ChEES
from ppl.infer.core.chain_stats import chain_mean, max_eigenvalue
from ppl.infer.core.rng import halton
from ppl.infer.driver import progress as mcmc_module
from tests.infer.gaussian_targets import SCALES_10, assert_moments, correlated_cov, gaussian

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = json.loads((ROOT / "models" / "data" / "posteriordb_reference.json").read_text())


def run(kernel, num_chains=64, num_warmup=300, num_samples=200, seed=0, dim=None, **kw):
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        progress_bar=False,
        **kw,
    )
    init = None
    if dim is not None:
        init = jax.random.normal(jax.random.key(seed + 100), (num_chains, dim))
    mcmc.run(jax.random.key(seed), init_params=init)
    return mcmc


# ------------------------------------------------------------------ ensemble helpers


def test_halton_is_the_van_der_corput_sequence():
    got = np.asarray(halton(jnp.arange(1, 8)))
    np.testing.assert_allclose(got, [0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875])
    # the first 2^k - 1 values are exactly the odd multiples of 2^-k, evenly spread
    values = np.sort(np.asarray(halton(jnp.arange(1, 64))))
    np.testing.assert_allclose(values, np.arange(1, 64) / 64)


def test_max_eigenvalue_estimate():
    # rows x ~ N(0, diag(lam)): the estimate tr(Σ²)/tr(Σ) is 100²+10*1 / (100+10) ≈ 91
    lam = np.array([100.0] + [1.0] * 10)
    x = np.random.default_rng(0).normal(size=(4000, 11)) * np.sqrt(lam)
    expected = np.sum(lam**2) / np.sum(lam)
    assert abs(float(max_eigenvalue(jnp.asarray(x))) - expected) < 0.1 * expected


def test_chain_mean_ignores_non_finite_rows():
    x = jnp.array([[1.0, 2.0], [jnp.nan, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(chain_mean(x), [2.0, 3.0])
    np.testing.assert_allclose(chain_mean(x, jnp.array([1.0, 1.0, 3.0])), [2.5, 3.5])


# ------------------------------------------------------------------ posterior checks


def test_iid_gaussian_moments_and_stats():
    """Scales 0.1..10: means and variances within 5 MCSE (arviz-stats, from the chains)."""
    scales = jnp.asarray(SCALES_10)
    mcmc = run(ChEES(logdensity_fn=lambda x: -0.5 * jnp.sum((x / scales) ** 2)), dim=10)
    draws = np.asarray(mcmc._draws.position)
    assert_moments(draws, np.zeros(10), SCALES_10**2)
    stats = mcmc.get_sample_stats()
    assert "tree_depth" not in stats
    assert stats["step_size"].shape == stats["n_steps"].shape == (64, 200)
    assert mcmc.step_size.shape == (64,) and np.all(mcmc.step_size == mcmc.step_size[0])
    # the trajectory length was adapted: after preconditioning the target is N(0, I), whose
    # quarter period π/2 decorrelates; ChEES settles near T ≈ 2.5 (mean jittered length T/2)
    length = 2.0 * np.mean(stats["n_steps"] * stats["step_size"])
    assert 1.0 < length < 5.0 and stats["diverging"].sum() == 0
    ess = array_stats.ess(draws, chain_axis=0, draw_axis=1, method="bulk")
    assert ess.min() > 0.25 * 64 * 200, ess
    # the metric was adapted to the variances
    ratio = np.asarray(mcmc.inverse_mass_matrix[0]) / SCALES_10**2
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio
    # the step size hits the harmonic-mean target 0.651 (mean acceptance is above it)
    harmonic = 1.0 / np.mean(1.0 / np.maximum(stats["acceptance_rate"], 1e-6), axis=0)
    assert 0.5 < np.median(harmonic) < 0.85


@pytest.mark.slow
def test_correlated_gaussian_second_moments():
    cov = correlated_cov(5)
    mcmc = run(
        ChEES(logdensity_fn=gaussian(cov), preconditioner="variance"),
        num_warmup=400,
        num_samples=250,
        dim=5,
        seed=1,
    )
    assert_moments(np.asarray(mcmc._draws.position), np.zeros(5), cov)


def _eight_schools_check(mcmc, num_mcse=5.0):
    """Means and sds against posteriordb's reference (10,000 independent draws)."""
    ref = REFERENCE["posteriors"]["eight_schools-eight_schools_noncentered"]["params"]
    samples = mcmc.get_samples(group_by_chain=True)
    columns = {"mu": samples["mu"], "tau": samples["tau"]}
    for j in range(8):
        columns[f"theta[{j + 1}]"] = samples["theta"][..., j]
    for name, values in columns.items():
        x = np.asarray(values, np.float64)
        mean_ref, sd_ref = ref[name]
        # tolerance: our MCSE of the mean and of the sd (arviz-stats, from the chains'
        # autocorrelation) combined with the reference's own standard errors
        mcse_mean = array_stats.mcse(x, chain_axis=0, draw_axis=1, method="mean")
        mcse_sd = array_stats.mcse(x, chain_axis=0, draw_axis=1, method="sd")
        tol_mean = num_mcse * np.sqrt(mcse_mean**2 + sd_ref**2 / 10_000)
        tol_sd = num_mcse * np.sqrt(mcse_sd**2 + sd_ref**2 / (2 * 10_000))
        assert abs(x.mean() - mean_ref) < tol_mean, (name, x.mean(), mean_ref, tol_mean)
        assert abs(x.std() - sd_ref) < tol_sd, (name, x.std(), sd_ref, tol_sd)


def eight_schools_mcmc(kernel, seed=0, **kw):
    from models import eight_schools

    mcmc = MCMC(kernel(eight_schools.model), progress_bar=False, **kw)
    mcmc.run(jax.random.key(seed), **eight_schools.load_data())
    return mcmc


def test_eight_schools_noncentered_matches_posteriordb():
    mcmc = eight_schools_mcmc(ChEES, num_chains=64, num_warmup=200, num_samples=150)
    assert int(mcmc.get_sample_stats()["diverging"].sum()) == 0
    _eight_schools_check(mcmc)
    tree = mcmc.to_datatree()
    assert tree.posterior["theta"].dims == ("chain", "draw", "school")
    assert tree.sample_stats["step_size"].shape == (64, 150)
    assert "log_likelihood" in tree.children


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_eight_schools_noncentered_long(seed):
    mcmc = eight_schools_mcmc(ChEES, seed, num_chains=256, num_warmup=500, num_samples=500)
    _eight_schools_check(mcmc)


@pytest.mark.slow
def test_ill_conditioned_gaussian_100d():
    scales = np.logspace(-2, 2, 100)
    sd = jnp.asarray(scales)
    mcmc = run(
        ChEES(logdensity_fn=lambda x: -0.5 * jnp.sum((x / sd) ** 2)),
        num_chains=128,
        num_warmup=500,
        num_samples=300,
        dim=100,
    )
    assert_moments(np.asarray(mcmc._draws.position, np.float64), np.zeros(100), scales**2)


# ------------------------------------------------------------------ determinism and resume


def _model(y):
    mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
    sigma = ppl.sample("sigma", dist.HalfNormal(2.0))
    with ppl.plate("obs", y.shape[0]):
        ppl.sample("y", dist.Normal(mu, sigma), obs=y)


Y = jnp.array([0.3, -1.2, 0.8, 2.1, 0.4])


def _small(kernel_cls, **kw):
    return MCMC(
        kernel_cls(_model, **kw),
        num_warmup=60,
        num_samples=40,
        num_chains=16,
        chunk_size=20,
        progress_bar=True,
    )


def _interrupt_on_update(monkeypatch, call_number):
    calls = {"n": 0}
    original = mcmc_module.Progress.update

    def update(self, n, phase, num_divergent):
        calls["n"] += 1
        if calls["n"] == call_number:
            raise KeyboardInterrupt
        return original(self, n, phase, num_divergent)

    monkeypatch.setattr(mcmc_module.Progress, "update", update)
    return lambda: monkeypatch.setattr(mcmc_module.Progress, "update", original)


def check_determinism_and_resume(kernel_cls, monkeypatch, fresh=True, **kw):
    """Same key -> same draws; an interrupted run, resumed (in place and, with ``fresh``, from
    a saved state in a new MCMC object), gives exactly the uninterrupted draws."""
    mcmc = _small(kernel_cls, **kw)  # one MCMC object: its compiled program is reused
    mcmc.run(jax.random.key(3), Y)
    expected = mcmc.get_samples(group_by_chain=True)
    step_size = np.asarray(mcmc.step_size)
    mcmc.run(jax.random.key(4), Y)
    assert not np.array_equal(expected["mu"], mcmc.get_samples(group_by_chain=True)["mu"])

    def assert_expected(m):
        assert m.complete
        for name in expected:
            np.testing.assert_array_equal(expected[name], m.get_samples(group_by_chain=True)[name])
        np.testing.assert_array_equal(step_size, m.step_size)

    mcmc.run(jax.random.key(3), Y)
    assert_expected(mcmc)

    # interrupted during warmup, resumed in place
    restore = _interrupt_on_update(monkeypatch, call_number=2)
    with pytest.warns(UserWarning, match="interrupted: 0 of 40 draws"):
        mcmc.run(jax.random.key(3), Y)
    restore()
    mcmc.resume()
    assert_expected(mcmc)

    # interrupted while sampling, continued in a fresh MCMC from the saved state
    restore = _interrupt_on_update(monkeypatch, call_number=4)
    with pytest.warns(UserWarning, match="20 of 40 draws"):
        mcmc.run(jax.random.key(3), Y)
    restore()
    assert mcmc.get_sample_stats()["lp"].shape == (16, 20)
    if not fresh:
        mcmc.resume()
        assert_expected(mcmc)
        return
    state = {k: np.array(v) for k, v in mcmc.sampler_state().items()}
    fresh = _small(kernel_cls, **kw)
    fresh.resume_from(state, Y)
    assert_expected(fresh)


def test_determinism_and_resume(monkeypatch):
    check_determinism_and_resume(ChEES, monkeypatch)


# ------------------------------------------------------------------ divergences and errors


def test_non_finite_proposals_are_rejected_and_counted():
    """A hard wall (log density NaN beyond x0 > 1.5): proposals there are divergent, never kept."""

    def wall(x):
        inside = -0.5 * jnp.sum(x**2)
        return jnp.where(x[0] > 1.5, jnp.nan, inside)

    mcmc = MCMC(
        ChEES(logdensity_fn=wall, step_size=0.5),
        num_warmup=100,
        num_samples=100,
        num_chains=32,
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), init_params=jnp.zeros(3))
    draws = np.asarray(mcmc._draws.position)
    stats = mcmc.get_sample_stats()
    assert np.all(np.isfinite(draws)) and np.all(draws[..., 0] <= 1.5)
    assert stats["diverging"].sum() > 0
    assert int(mcmc.last_state.num_divergent.sum()) == int(stats["diverging"].sum())
    assert np.all(np.isfinite(stats["lp"]))


def test_bad_settings_have_clear_errors():
    with pytest.raises(ValueError, match="num_chains >= 2"):
        MCMC(ChEES(logdensity_fn=jnp.sum), num_chains=1, progress_bar=False).run(
            jax.random.key(0), init_params=Y
        )
    with pytest.raises(ValueError, match="sequential"):
        MCMC(ChEES(_model), num_chains=8, chain_method="sequential")
    with pytest.raises(ValueError, match="preconditioner"):
        ChEES(_model, preconditioner="dense")
    with pytest.raises(ValueError, match="target_accept_prob"):
        ChEES(_model, target_accept_prob=1.5)
    with pytest.raises(ValueError, match="max_num_steps"):
        ChEES(_model, max_num_steps=0)
    with pytest.raises(ValueError, match="jitter"):
        ChEES(_model, jitter=2.0)
    with pytest.raises(ValueError, match="exactly one"):
        ChEES()
    assert NUTS(_model).chains_batched is False and ChEES(_model).chains_batched is True


# ------------------------------------------------------------------ chains over devices

_PARALLEL_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from ppl.infer import MCMC, ChEES, MEADS
assert len(jax.devices()) == 4
f = lambda x: -0.5 * jnp.sum((x / jnp.arange(1.0, 4.0)) ** 2)
init = jax.random.normal(jax.random.key(1), (16, 3))
for kernel in (ChEES, MEADS):
    out = {}
    for method in ("vectorized", "parallel"):
        mcmc = MCMC(kernel(logdensity_fn=f), num_warmup=50, num_samples=20, num_chains=16,
                    chain_method=method, progress_bar=False)
        mcmc.run(jax.random.key(0), init_params=init)
        out[method] = np.asarray(mcmc._draws.position)
    print(kernel.__name__, float(np.max(np.abs(out["vectorized"] - out["parallel"]))))
"""


@pytest.mark.slow
def test_chains_sharded_over_devices_match_one_device():
    """chain_method="parallel" on 4 CPU devices: the cross-chain means become all-reduces.
    In float64 MEADS matches the single-device run to rounding; ChEES's adaptation (the
    discrete step count ceil(u T / ε), Adam's normalised steps) amplifies the reduction-order
    differences, so it matches to 1e-5 only."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    result = subprocess.run(
        [sys.executable, "-c", _PARALLEL_SCRIPT],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    diffs = dict(line.split() for line in result.stdout.strip().splitlines())
    assert float(diffs["MEADS"]) < 1e-10, diffs
    assert float(diffs["ChEES"]) < 1e-5, diffs
