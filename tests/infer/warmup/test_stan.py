"""Tests for ppl.infer.warmup.stan (Stan's windowed warmup) and ppl.infer.warmup.step_size."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.infer.kernels import hmc, nuts
from ppl.infer.warmup import stan as adaptation
from ppl.infer.warmup.step_size import dual_averaging, find_reasonable_step_size
from tests.infer.gaussian_targets import SCALES_10, correlated_cov


def _diag_gaussian(x):
    return -0.5 * jnp.sum((x / SCALES_10) ** 2)


def _nuts_kernel(logdensity_fn):
    def kernel(key, state, step_size, inverse_mass_matrix):
        return nuts.step(key, state, logdensity_fn, step_size, inverse_mass_matrix)

    return kernel


def _warmup_then_sample(logdensity_fn, dim, kernel, num_warmup, num_draws, num_chains=4, **kw):
    """Vmapped warmup + sampling with the adapted parameters, as one compiled program."""

    def one_chain(key, position):
        key_warmup, key_sample = jax.random.split(key)
        state, step_size, imm, info = adaptation.window_adaptation(
            key_warmup, position, logdensity_fn, kernel, num_warmup, **kw
        )

        def body(state, key):
            state, sample_info = kernel(key, state, step_size, imm)
            return state, (state.position, sample_info.acceptance_rate)

        _, (draws, acceptance) = jax.lax.scan(body, state, jax.random.split(key_sample, num_draws))
        return step_size, imm, info, draws, acceptance

    keys = jax.random.split(jax.random.key(0), num_chains)
    positions = jax.random.normal(jax.random.key(1), (num_chains, dim))
    return jax.jit(jax.vmap(one_chain))(keys, positions)


# ---------------------------------------------------------------------------------------------
# Stan's window schedule
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_warmup", "expected"),
    [
        (1000, (75, [25, 50, 100, 200, 500], 50)),  # last window stretched to end at 949
        (2000, (75, [25, 50, 100, 200, 400, 1100], 50)),
        (500, (75, [25, 50, 100, 200], 50)),
        (150, (75, [25], 50)),
        (160, (75, [25, 10], 50)),  # Stan shrinks a window whose successor would not fit
        (149, (22, [113], 14)),  # below 75 + 25 + 50: 15% / 75% / 10%, truncated
        (100, (15, [75], 10)),
        (20, (3, [15], 2)),
        (19, (19, [], 0)),  # below 20 Stan adapts no metric
    ],
)
def test_stan_windows(num_warmup, expected):
    assert adaptation.stan_windows(num_warmup) == expected


def test_stan_windows_tile_the_warmup():
    for num_warmup in range(0, 3001, 7):
        init_buffer, windows, term_buffer = adaptation.stan_windows(num_warmup)
        assert init_buffer + sum(windows) + term_buffer == num_warmup
        assert all(w > 0 for w in windows)


def test_stan_window_schedule_1000():
    schedule = adaptation.stan_window_schedule(1000)
    assert schedule.slow.shape == schedule.window_end.shape == (1000,)
    np.testing.assert_array_equal(np.flatnonzero(schedule.window_end), [99, 149, 249, 449, 949])
    np.testing.assert_array_equal(np.flatnonzero(schedule.slow), np.arange(75, 950))
    np.testing.assert_array_equal(schedule.fast, ~schedule.slow)


def test_stan_window_schedule_100():
    schedule = adaptation.stan_window_schedule(100)
    np.testing.assert_array_equal(np.flatnonzero(schedule.window_end), [89])
    np.testing.assert_array_equal(np.flatnonzero(schedule.slow), np.arange(15, 90))


# ---------------------------------------------------------------------------------------------
# Dual averaging
# ---------------------------------------------------------------------------------------------


def test_dual_averaging_first_update_by_hand():
    da = dual_averaging()
    state = da.init(0.5)
    np.testing.assert_allclose(state.mu, math.log(10 * 0.5), rtol=1e-6)
    state = da.update(state, 0.3)
    error_avg = (0.8 - 0.3) / (1 + 10)  # H_1 = (target - a_1) / (1 + t0)
    log_eps = math.log(5.0) - math.sqrt(1) / 0.05 * error_avg
    np.testing.assert_allclose(state.error_avg, error_avg, rtol=1e-6)
    np.testing.assert_allclose(state.log_step_size, log_eps, rtol=1e-5)
    np.testing.assert_allclose(state.log_step_size_avg, log_eps, rtol=1e-5)  # weight 1**-κ = 1
    np.testing.assert_allclose(da.final(state), math.exp(log_eps), rtol=1e-5)


@pytest.mark.parametrize("target", [0.6, 0.8, 0.95])
def test_dual_averaging_converges_on_a_deterministic_acceptance_curve(target):
    # alpha(eps) = exp(-(eps / 2)^2) reaches the target at eps* = 2 sqrt(-log target).
    da = dual_averaging(target_accept=target)

    def body(state, _):
        return da.update(state, jnp.exp(-((jnp.exp(state.log_step_size) / 2) ** 2))), None

    state, _ = jax.lax.scan(body, da.init(0.01), None, length=2000)
    np.testing.assert_allclose(da.final(state), 2 * math.sqrt(-math.log(target)), rtol=0.02)


def test_dual_averaging_treats_nan_acceptance_as_zero():
    da = dual_averaging()
    a = da.update(da.init(1.0), jnp.nan)
    b = da.update(da.init(1.0), 0.0)
    np.testing.assert_allclose(a.log_step_size, b.log_step_size)


# ---------------------------------------------------------------------------------------------
# Welford estimators
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dense", [False, True])
def test_welford_matches_numpy_and_stan_regularisation(dense):
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(37, 4)) @ rng.normal(size=(4, 4)) + 3.0
        state = adaptation.welford_init(4, dense=dense)
        for row in x:
            state = adaptation.welford_update(state, jnp.asarray(row))
        raw = np.cov(x.T) if dense else x.var(axis=0, ddof=1)
        np.testing.assert_allclose(state.mean, x.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(
            adaptation.welford_covariance(state, regularize=False), raw, rtol=1e-10
        )
        n = 37
        shrink = 1e-3 * 5 / (n + 5) * (np.eye(4) if dense else np.ones(4))
        np.testing.assert_allclose(
            adaptation.welford_covariance(state), n / (n + 5) * raw + shrink, rtol=1e-10
        )


# ---------------------------------------------------------------------------------------------
# Step-size heuristic
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_find_reasonable_step_size_scales_with_the_target(scale):
    def logdensity_fn(x):
        return -0.5 * jnp.sum((x / scale) ** 2)

    state = hmc.init(jnp.full(5, scale), logdensity_fn)
    keys = jax.random.split(jax.random.key(0), 32)
    step_sizes = jax.jit(
        jax.vmap(lambda k: find_reasonable_step_size(k, state, logdensity_fn, jnp.ones(5), 1.0))
    )(keys)
    # One leapfrog's energy error depends on step_size / scale only; every search stops within
    # a factor of a few of the scale, and the searches are powers-of-two multiples of 1.0.
    ratio = np.asarray(step_sizes) / scale
    assert np.all((ratio > 0.1) & (ratio < 10)), ratio
    np.testing.assert_allclose(np.log2(step_sizes), np.round(np.log2(step_sizes)), atol=1e-5)


def test_find_reasonable_step_size_is_bounded():
    with jax.enable_x64(True):  # float32 round-off would stop the linear case early
        state = hmc.init(jnp.zeros(2), lambda x: jnp.sum(x))
        # A linear log density is integrated exactly: acceptance 1 forever, stops at the cap.
        big = find_reasonable_step_size(
            jax.random.key(0), state, lambda x: jnp.sum(x), jnp.ones(2), 1.0
        )
        assert float(big) == pytest.approx(1e7)

        # A density that is NaN away from the start: halves until the iteration bound.
        def nan_away(x):
            return jnp.where(jnp.all(x == 0), 0.0, jnp.nan)

        small = find_reasonable_step_size(
            jax.random.key(0), state, nan_away, jnp.ones(2), 1.0, max_num_iterations=20
        )
        assert float(small) == pytest.approx(2.0**-20)
        # Degenerate inputs come back unchanged.
        for bad in (0.0, np.nan, 1e8):
            out = find_reasonable_step_size(
                jax.random.key(0), state, lambda x: -jnp.sum(x**2), jnp.ones(2), bad
            )
            np.testing.assert_array_equal(out, bad)


# ---------------------------------------------------------------------------------------------
# The warmup runner
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diag_nuts_run():
    return _warmup_then_sample(
        _diag_gaussian, 10, _nuts_kernel(_diag_gaussian), num_warmup=1000, num_draws=1000
    )


def test_window_adaptation_recovers_diagonal_variances(diag_nuts_run):
    step_size, imm, _, draws, _ = diag_nuts_run
    assert imm.shape == (4, 10) and step_size.shape == (4,)
    rel = np.asarray(imm) / SCALES_10**2 - 1
    # The last slow window has 500 draws; the relative error of a variance estimated from
    # n_eff draws has sd sqrt(2 / n_eff) ~ 0.1 here. Each chain within 5 sd, the mean of the
    # four chains within 4 sd of its own (halved) spread.
    assert np.all(np.abs(rel) < 0.5), rel
    assert np.all(np.abs(rel.mean(axis=0)) < 0.2), rel.mean(axis=0)
    assert np.all(np.isfinite(np.asarray(draws)))


def test_window_adaptation_acceptance(diag_nuts_run):
    step_size, _, info, _, acceptance = diag_nuts_run
    warmup_acceptance = np.asarray(info.kernel_info.acceptance_rate)  # (chain, iteration)
    # Dual averaging drives the mean acceptance statistic of the iterates it runs to the target:
    # over the slow windows (after the initial buffer, before the last restart) it is 0.8.
    assert abs(warmup_acceptance[:, 75:950].mean() - 0.8) < 0.05
    # Sampling with the averaged step size accepts more: on Gaussians Stan, NumPyro and BlackJAX
    # all land near 0.85-0.9 with a 0.8 target (exp(mean log eps) is below the iterates' typical
    # step size). Check the realised rate is in that band.
    realised = float(np.mean(acceptance))
    assert 0.8 < realised < 0.95, realised
    # The per-iteration record: the step size used at every warmup iteration.
    assert info.step_size.shape == (4, 1000)
    assert np.all(np.asarray(info.step_size) > 0)
    np.testing.assert_array_less(0.3, np.asarray(step_size))


def test_window_adaptation_dense_recovers_covariance():
    cov = correlated_cov(5)
    prec = jnp.asarray(np.linalg.inv(cov))

    def logdensity_fn(x):
        return -0.5 * x @ (prec @ x)

    _, imm, _, _, acceptance = _warmup_then_sample(
        logdensity_fn, 5, _nuts_kernel(logdensity_fn), 1000, 200, dense_mass=True
    )
    imm = np.asarray(imm)
    assert imm.shape == (4, 5, 5)
    # Whitened by the true covariance the estimate should be the identity; entries of a sample
    # covariance of whitened draws from n_eff ~ 500 draws have sd ~ 1 / sqrt(n_eff) ~ 0.05.
    chol = np.linalg.cholesky(cov)
    for m in imm:
        np.testing.assert_allclose(m, m.T, atol=1e-6)
        white = np.linalg.solve(chol, np.linalg.solve(chol, m).T)
        assert np.abs(white - np.eye(5)).max() < 0.35
    white_mean = np.linalg.solve(chol, np.linalg.solve(chol, imm.mean(axis=0)).T)
    assert np.abs(white_mean - np.eye(5)).max() < 0.2
    assert 0.75 < float(np.mean(acceptance)) < 0.97


def test_window_adaptation_with_hmc_kernel():
    def kernel(key, state, step_size, inverse_mass_matrix):
        return hmc.step(
            key,
            state,
            _diag_gaussian,
            step_size,
            inverse_mass_matrix,
            trajectory_length=2.0,
            jitter=True,
        )

    step_size, imm, _, _, acceptance = _warmup_then_sample(_diag_gaussian, 10, kernel, 1000, 200)
    rel = np.asarray(imm) / SCALES_10**2 - 1
    assert np.all(np.abs(rel.mean(axis=0)) < 0.3), rel.mean(axis=0)
    assert np.all(np.isfinite(np.asarray(step_size)))
    assert 0.7 < float(np.mean(acceptance)) < 1.0


def test_window_adaptation_short_warmups():
    kernel = _nuts_kernel(_diag_gaussian)
    for num_warmup in (0, 10):  # no slow window: the metric stays the initial one
        step_size, imm, info, _, _ = _warmup_then_sample(
            _diag_gaussian, 10, kernel, num_warmup, 5, num_chains=2
        )
        np.testing.assert_array_equal(imm, np.ones((2, 10)))
        assert np.all(np.asarray(step_size) > 0)
        assert info.step_size.shape == (2, num_warmup)


def test_window_adaptation_checks_initial_metric_shape():
    with pytest.raises(ValueError, match="needs shape"):
        adaptation.window_adaptation(
            jax.random.key(0),
            jnp.zeros(3),
            _diag_gaussian,
            _nuts_kernel(_diag_gaussian),
            10,
            dense_mass=True,
            initial_inverse_mass_matrix=jnp.ones(3),
        )
