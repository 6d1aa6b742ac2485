"""Tests for MEADS (ppl.infer.warmup.meads and the GHMC kernel in ppl.infer.kernels.ensemble)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_chees import (
    Y,
    _eight_schools_check,
    _model,
    check_determinism_and_resume,
    eight_schools_mcmc,
    run,
)

from ppl.infer import MCMC, MEADS
from ppl.infer.warmup.meads import meads_parameters, meads_warmup
from tests.infer.gaussian_targets import SCALES_10, assert_moments, correlated_cov, gaussian


def test_parameters_from_a_gaussian_ensemble():
    """On draws of N(0, diag(s²)): the gradient-based scale is s exactly, the step size about
    0.5 (λ_max of the whitened Fisher matrix is 1), and the variance-based scale s within
    sampling error (relative sd of a sd from n draws ≈ 1/sqrt(2n), here 3%; 5 sd allowed)."""
    s = np.logspace(-1, 1, 6)
    x = np.random.default_rng(0).normal(size=(512, 6)) * s
    g = -x / s**2
    params = meads_parameters(jnp.asarray(x), jnp.asarray(g), 1000)
    np.testing.assert_allclose(params.scale, s, rtol=1e-5)
    assert 0.35 < float(params.step_size) < 0.6
    assert 0.0 < float(params.alpha) < 1.0 and float(params.delta) == pytest.approx(
        float(params.alpha) / 2
    )
    variance = meads_parameters(jnp.asarray(x), jnp.asarray(g), 1000, preconditioner="variance")
    np.testing.assert_allclose(variance.scale, s, rtol=5 / np.sqrt(2 * 512))
    # early on the damping floor 1 / (t ε) forces a nearly full momentum refresh
    assert float(meads_parameters(jnp.asarray(x), jnp.asarray(g), 1).alpha) > 0.8


def test_fold_parameters_come_from_the_previous_fold_only():
    """A fold's parameters must not depend on its own chains (the Gibbs argument)."""
    warmup = meads_warmup(10, 16, num_folds=4)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(16, 3)))
    order = jnp.asarray(rng.permutation(16), jnp.int32)
    fold = np.zeros(16, int)
    fold[np.asarray(order)] = np.arange(16) // 4  # fold k: chains order[4k : 4k + 4]
    keys = jax.random.split(jax.random.key(0), 16)

    def ld(x):
        return -0.5 * jnp.sum(x**2)

    def parameters(x):  # iteration 5 of warmup: no reshuffle of the folds
        w = warmup.init(_state(x), ld, None)._replace(order=order)
        return warmup.before(keys, w, _state(x), jnp.int32(5), (), ld).parameters

    fold_parameters = jax.jit(parameters)
    base = fold_parameters(x)
    # moving the chains of fold 2 changes the parameters of fold 3 and of no other fold
    moved = x.at[np.flatnonzero(fold == 2)].multiply(3.0)
    after = fold_parameters(moved)
    changed = np.asarray(after.step_size != base.step_size)
    np.testing.assert_array_equal(changed, fold == 3)


def _state(x):
    from ppl.infer.kernels.hmc import HMCState

    return HMCState(x, -0.5 * jnp.sum(x**2, -1), -x)


def test_iid_gaussian_moments_and_stats():
    scales = jnp.asarray(SCALES_10)
    mcmc = run(
        MEADS(logdensity_fn=lambda x: -0.5 * jnp.sum((x / scales) ** 2)),
        num_warmup=200,
        num_samples=400,
        dim=10,
    )
    # means and variances within 5 MCSE (arviz-stats, from the chains' autocorrelation)
    assert_moments(np.asarray(mcmc._draws.position), np.zeros(10), SCALES_10**2)
    stats = mcmc.get_sample_stats()
    assert "tree_depth" not in stats and np.all(stats["n_steps"] == 1)
    assert stats["step_size"].shape == (64, 400) and stats["diverging"].sum() == 0
    assert mcmc.step_size.shape == (64,)
    ratio = np.asarray(mcmc.inverse_mass_matrix[0]) / SCALES_10**2
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio
    assert int(mcmc.last_state.num_steps_warmup[0]) == 200


@pytest.mark.slow
def test_correlated_gaussian_second_moments():
    cov = correlated_cov(5)
    mcmc = run(MEADS(logdensity_fn=gaussian(cov)), num_warmup=500, num_samples=2000, dim=5)
    assert_moments(np.asarray(mcmc._draws.position), np.zeros(5), cov)


@pytest.mark.slow
def test_eight_schools_noncentered_matches_posteriordb():
    mcmc = eight_schools_mcmc(MEADS, num_chains=64, num_warmup=300, num_samples=600)
    assert int(mcmc.get_sample_stats()["diverging"].sum()) == 0
    _eight_schools_check(mcmc)


@pytest.mark.slow
@pytest.mark.parametrize("preconditioner", ["gradient", "variance"])
def test_eight_schools_noncentered_long(preconditioner):
    mcmc = eight_schools_mcmc(
        lambda m: MEADS(m, preconditioner=preconditioner),
        seed=1,
        num_chains=256,
        num_warmup=1000,
        num_samples=2000,
    )
    _eight_schools_check(mcmc)


@pytest.mark.slow
def test_ill_conditioned_gaussian_100d():
    scales = np.logspace(-2, 2, 100)
    sd = jnp.asarray(scales)
    mcmc = run(
        MEADS(logdensity_fn=lambda x: -0.5 * jnp.sum((x / sd) ** 2)),
        num_chains=128,
        num_warmup=1000,
        num_samples=1000,
        dim=100,
    )
    assert_moments(np.asarray(mcmc._draws.position, np.float64), np.zeros(100), scales**2)


def test_determinism_and_resume(monkeypatch):
    # the resume from a saved state in a new MCMC object is the driver's (tested with ChEES)
    check_determinism_and_resume(MEADS, monkeypatch, fresh=False)


def test_bad_settings_have_clear_errors():
    with pytest.raises(ValueError, match="num_folds must be an int >= 2"):
        MEADS(_model, num_folds=1)
    kernel = MEADS(logdensity_fn=lambda x: -0.5 * jnp.sum(x**2))
    with pytest.raises(ValueError, match="not a multiple"):
        MCMC(kernel, num_chains=18, progress_bar=False).run(jax.random.key(0), init_params=Y)
    with pytest.raises(ValueError, match="num_chains >= 8"):
        MCMC(kernel, num_chains=4, progress_bar=False).run(jax.random.key(0), init_params=Y)
    with pytest.raises(ValueError, match="preconditioner"):
        MEADS(_model, preconditioner="dense")
    with pytest.raises(ValueError, match="step_size_multiplier"):
        MEADS(_model, step_size_multiplier=0.0)
