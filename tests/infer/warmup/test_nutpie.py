"""Tests for ppl.infer.warmup.nutpie (nutpie's gradient-based warmup) and the low-rank metric."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.infer import MCMC, NUTS
from ppl.infer.core import metrics
from ppl.infer.core.metrics import LowRankInverseMass, low_rank_to_dense
from ppl.infer.warmup.low_rank import LowRankSettings, low_rank_metric, spd_mean
from ppl.infer.warmup.nutpie import (
    bounded_diagonal,
    buffer_size,
    grad_diagonal,
    grad_window_schedule,
    initial_diagonal,
    stats_init,
    stats_update,
)
from tests.infer.gaussian_targets import assert_moments

pytestmark = pytest.mark.usefixtures("x64")


def _ar1_cov(dim: int, rho: float = 0.9) -> np.ndarray:
    i = np.arange(dim)
    return rho ** np.abs(i[:, None] - i[None, :])


def _stats_of(xs, gs, weights):
    stats = stats_init(xs.shape[1], xs.dtype)
    for x, g, w in zip(xs, gs, weights, strict=True):
        stats = stats_update(stats, jnp.asarray(x), jnp.asarray(g), w)
    return stats


def test_stats_update_is_weighted_welford():
    rng = np.random.default_rng(0)
    xs, gs = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    weights = (rng.uniform(size=30) > 0.3).astype(float)
    stats = _stats_of(xs, gs, weights)
    keep = weights > 0
    assert float(stats.count) == keep.sum()
    np.testing.assert_allclose(stats.mean_x, xs[keep].mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.m2_x, keep.sum() * xs[keep].var(0), rtol=1e-12)
    np.testing.assert_allclose(stats.m2_g, keep.sum() * gs[keep].var(0), rtol=1e-12)


def test_stats_update_ignores_non_finite_draws():
    stats = _stats_of(
        np.array([[1.0], [np.nan], [3.0]]), np.array([[1.0], [1.0], [np.inf]]), [1, 1, 1]
    )
    assert float(stats.count) == 1.0
    np.testing.assert_allclose(stats.mean_x, [1.0])


def test_grad_diagonal_is_exact_for_independent_gaussian():
    # Var(g) = Var(x) / σ⁴ for g = -x / σ², so sqrt(Var x / Var g) = σ² whatever the draws
    sigma = np.logspace(-2, 2, 7)
    xs = np.random.default_rng(1).normal(size=(5, 7)) * sigma
    stats = _stats_of(xs, -xs / sigma**2, np.ones(5))
    np.testing.assert_allclose(grad_diagonal(stats), sigma**2, rtol=1e-10)


def test_bounded_diagonal_keeps_independent_coordinates_and_bounds_tied_ones():
    # independent Gaussian coordinates: Var(x) Var(g) = 1, the exact gradient-based estimate stays
    sigma = np.logspace(-2, 2, 7)
    xs = np.random.default_rng(1).normal(size=(400, 7)) * sigma
    stats = _stats_of(xs, -xs / sigma**2, np.ones(400))
    np.testing.assert_allclose(bounded_diagonal(stats), sigma**2, rtol=1e-10)
    # a strongly correlated pair (rho = 0.999): sqrt(Var x / Var g) = sqrt(1 - rho²) Σ_ii, about
    # Σ_ii / 22, far below the marginal variance; the bound lifts it to Var(x) / 2
    cov = np.array([[1.0, 0.999], [0.999, 1.0]]) * np.array([[4.0, 2.0], [2.0, 1.0]])
    xs = np.random.default_rng(2).multivariate_normal(np.zeros(2), cov, size=4000)
    stats = _stats_of(xs, -xs @ np.linalg.inv(cov), np.ones(4000))
    var_x = xs.var(0, ddof=1)
    assert np.all(grad_diagonal(stats) < var_x / 10)
    np.testing.assert_allclose(bounded_diagonal(stats), var_x / 2, rtol=1e-10)
    np.testing.assert_allclose(bounded_diagonal(stats, 1.0), var_x, rtol=1e-10)


def test_grad_diagonal_and_initial_diagonal_fall_back_to_one():
    stats = _stats_of(np.zeros((4, 2)), np.zeros((4, 2)), np.ones(4))
    np.testing.assert_array_equal(grad_diagonal(stats), [1.0, 1.0])
    np.testing.assert_allclose(
        initial_diagonal(jnp.array([0.0, 2.0, -4.0, np.nan])), [1, 0.5, 0.25, 1]
    )


def test_spd_mean_solves_m_b_m_equals_a():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(4, 4))
    a = a @ a.T + np.eye(4)
    b = rng.normal(size=(4, 4))
    b = b @ b.T + np.eye(4)
    m = np.asarray(spd_mean(jnp.asarray(a), jnp.asarray(b)))
    np.testing.assert_allclose(m @ b @ m, a, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(m, m.T, atol=1e-10)
    sigma = _ar1_cov(4)
    np.testing.assert_allclose(spd_mean(sigma, np.linalg.inv(sigma)), sigma, atol=1e-8)


def test_low_rank_metric_full_rank_recovers_gaussian_covariance():
    dim = 8
    sigma = _ar1_cov(dim) * np.outer(np.arange(1, dim + 1), np.arange(1, dim + 1))
    xs = np.random.default_rng(3).multivariate_normal(np.zeros(dim), sigma, size=60)
    gs = -xs @ np.linalg.inv(sigma)
    metric = low_rank_metric(
        jnp.asarray(xs), jnp.asarray(gs), jnp.ones(60), LowRankSettings(rank=dim, cutoff=1.0)
    )
    # the +I regularization of the projected covariances costs ~1/(n gamma) relative error
    np.testing.assert_allclose(low_rank_to_dense(metric), sigma, rtol=2e-2, atol=2e-2)


def test_low_rank_metric_keeps_only_extreme_directions_and_pads():
    dim = 6
    xs = np.random.default_rng(4).normal(size=(40, dim))  # isotropic: nothing to correct
    metric = low_rank_metric(
        jnp.asarray(xs), jnp.asarray(-xs), jnp.ones(40), LowRankSettings(rank=9, cutoff=2.0)
    )
    assert metric.vectors.shape == (dim, 9) and metric.values.shape == (9,)
    np.testing.assert_allclose(metric.values, 1.0)
    np.testing.assert_allclose(low_rank_to_dense(metric), np.eye(dim), atol=1e-8)


def test_low_rank_metric_ignores_zero_weight_rows():
    rng = np.random.default_rng(5)
    sigma = _ar1_cov(5)
    xs = rng.multivariate_normal(np.zeros(5), sigma, size=30)
    gs = -xs @ np.linalg.inv(sigma)
    settings = LowRankSettings(rank=5, cutoff=1.0)
    junk = np.vstack([xs, 1e6 * np.ones((3, 5))]), np.vstack([gs, np.zeros((3, 5))])
    weights = np.r_[np.ones(30), np.zeros(3)]
    a = low_rank_to_dense(low_rank_metric(*map(jnp.asarray, junk), jnp.asarray(weights), settings))
    b = low_rank_to_dense(low_rank_metric(jnp.asarray(xs), jnp.asarray(gs), jnp.ones(30), settings))
    np.testing.assert_allclose(a, b, rtol=1e-8)


def test_low_rank_metric_falls_back_to_the_diagonal_on_a_transient():
    """A draw and a gradient far out (a chain still in its transient) make the projected
    covariances too ill-conditioned for float64 (numpy's eigh failed on them: stochastic
    volatility, seed 0): that window gets the diagonal alone, and no error."""
    rng = np.random.default_rng(7)
    sigma = _ar1_cov(20)
    xs = rng.multivariate_normal(np.zeros(20), sigma, size=40)
    gs = -xs @ np.linalg.inv(sigma)
    settings = LowRankSettings(rank=10, cutoff=2.0)
    clean = low_rank_metric(jnp.asarray(xs), jnp.asarray(gs), jnp.ones(40), settings)
    assert np.sum(np.asarray(clean.values) != 1.0) >= 3  # the correlation is corrected
    xs[5] *= 1e10
    gs[3] *= 1e10
    far = low_rank_metric(jnp.asarray(xs), jnp.asarray(gs), jnp.ones(40), settings)
    np.testing.assert_array_equal(far.values, 1.0)  # no direction corrected
    dx, dg = xs - xs.mean(0), gs - gs.mean(0)
    scale = np.sqrt(np.sqrt(np.sum(dx**2, 0)) / np.sqrt(np.sum(dg**2, 0)))
    np.testing.assert_allclose(far.scale, scale, rtol=1e-5)  # nutpie's diagonal
    np.testing.assert_allclose(low_rank_to_dense(far), np.diag(scale**2), rtol=1e-5)


def _random_low_rank(dim=6, rank=3, seed=6):
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.normal(size=(dim, rank)))[0]
    return LowRankInverseMass(
        jnp.asarray(rng.uniform(0.5, 2.0, dim)), jnp.asarray(q), jnp.asarray([0.1, 5.0, 1.0])
    )


def test_low_rank_velocity_and_kinetic_energy_match_dense():
    metric = _random_low_rank()
    dense = np.asarray(low_rank_to_dense(metric))
    p = jnp.asarray(np.random.default_rng(7).normal(size=6))
    np.testing.assert_allclose(metrics.velocity(p, metric), dense @ p, rtol=1e-12)
    np.testing.assert_allclose(metrics.kinetic_energy(p, metric), 0.5 * p @ dense @ p, rtol=1e-12)


def test_low_rank_momentum_has_covariance_m():
    metric = _random_low_rank()
    dense = np.asarray(low_rank_to_dense(metric))
    factor = metrics.momentum_factor(metric)
    # the momentum is linear in the standard normal z: recover the map from unit vectors
    inv_scale, shrink = factor
    u = metric.vectors
    b = np.stack([inv_scale * (e + u @ (shrink * (u.T @ e))) for e in np.eye(6)], axis=1)
    np.testing.assert_allclose(b @ b.T, np.linalg.inv(dense), rtol=1e-10, atol=1e-12)
    p = metrics.sample_momentum(jax.random.key(0), jnp.zeros(6), metric)
    assert p.shape == (6,) and np.all(np.isfinite(p))


@pytest.mark.parametrize("num_warmup", [0, 10, 100, 300, 1000])
def test_grad_window_schedule_structure(num_warmup):
    s = grad_window_schedule(num_warmup)
    final_start = num_warmup - int(0.15 * num_warmup)
    assert s.collect.sum() == final_start and not s.collect[final_start:].any()
    assert not s.switch[final_start:].any()
    if num_warmup:
        assert s.restart[0]
    # dual averaging restarts after the first metric update and where the final window (fixed
    # metric) begins; without final_restart it runs on through the final window, as nuts-rs's
    restarts = np.flatnonzero(s.restart)
    if 0 < final_start < num_warmup:
        assert s.restart[final_start]
        restarts = restarts[restarts != final_start]
    assert restarts.size <= 2 and not np.any(restarts >= 3)
    plain = grad_window_schedule(num_warmup, final_restart=False)
    np.testing.assert_array_equal(plain.restart, s.restart & (np.arange(num_warmup) < 3))
    if num_warmup >= 10:
        assert s.update[final_start - 1]  # the final-window metric is fresh
    # every switch leaves at least 10 (early) or 80, 120, 180, ... (later) draws in the new
    # foreground
    switches = np.flatnonzero(s.switch)
    early_end = int(0.3 * num_warmup)
    previous, window = -1, 80
    for i in switches:
        if i < early_end:
            assert i - previous >= 10 - 1
        else:
            assert i - previous >= window - 1
            window = max(window + 1, int(window * 1.5 + 0.5))
        previous = i
    assert buffer_size(s) >= 1


def test_grad_window_schedule_1000_matches_nutpie_cadence():
    s = grad_window_schedule(1000)
    switches = np.flatnonzero(s.switch)
    assert list(switches[:3]) == [8, 18, 28]  # the initial point counts as the first draw
    # windows of 80 then 120 draws after the early 30%; the next (180) would run into the
    # final 15%, so the last foreground (the background begun at 379) grows to the end of
    # collection
    assert list(switches[-3:]) == [298, 378, 498]
    assert list(np.flatnonzero(s.restart)) == [0, 2, 850]
    assert buffer_size(s) == 850 - 379 + 1
    # dual averaging takes the symmetric statistic from where the next window (270 draws
    # after the switch at 498) no longer fits before the final window, to the end
    late = np.flatnonzero(s.late)
    assert late[0] == 850 - 270 + 1 and np.array_equal(late, np.arange(late[0], 1000))
    constant = grad_window_schedule(1000, window_growth=1.0)  # nuts-rs still adds 1 per window
    assert list(np.flatnonzero(constant.switch)[-3:]) == [541, 624, 708]
    with pytest.raises(ValueError, match="window_growth"):
        grad_window_schedule(100, window_growth=0.5)


def _ld(cov):
    prec = jnp.asarray(np.linalg.inv(cov))
    return lambda x: -0.5 * x @ prec @ x


def test_nutpie_diag_warmup_learns_variances_exactly():
    scales = np.logspace(-2, 2, 12)
    mcmc = MCMC(
        NUTS(logdensity_fn=lambda x: -0.5 * jnp.sum((x / scales) ** 2)),
        num_warmup=200,
        num_samples=100,
        num_chains=2,
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), init_params=jnp.ones((2, 12)))
    # any two distinct draws make the estimate exact for a Gaussian
    np.testing.assert_allclose(mcmc.inverse_mass_matrix, np.tile(scales**2, (2, 1)), rtol=1e-6)


@pytest.mark.parametrize("metric", ["low_rank", "dense"])
def test_nutpie_low_rank_and_dense_sample_correlated_gaussian(metric):
    dim = 10
    cov = _ar1_cov(dim) * np.outer(np.linspace(1, 3, dim), np.linspace(1, 3, dim))
    kernel = NUTS(logdensity_fn=_ld(cov), metric=metric)
    mcmc = MCMC(kernel, num_warmup=300, num_samples=600, num_chains=4, progress_bar=False)
    mcmc.run(jax.random.key(1), init_params=0.5 * jnp.ones((4, dim)))
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["theta"])
    assert_moments(draws, np.zeros(dim), cov)
    imm = mcmc.inverse_mass_matrix
    if metric == "dense":
        dense = np.asarray(imm)
        assert dense.shape == (4, dim, dim)
    else:
        assert isinstance(imm, LowRankInverseMass)
        dense = np.asarray(jax.vmap(low_rank_to_dense)(imm))
    # the metric captures the correlation: its condition number relative to Σ is small
    for m in dense:
        eig = np.linalg.eigvalsh(
            np.linalg.solve(np.linalg.cholesky(cov), m) @ np.linalg.inv(np.linalg.cholesky(cov)).T
        )
        assert eig.max() / eig.min() < (5.0 if metric == "dense" else 20.0)
    # well-adapted: short trajectories
    assert mcmc.get_sample_stats()["n_steps"].mean() < 12


def test_kernel_settings_are_checked():
    f = lambda x: -0.5 * jnp.sum(x**2)  # noqa: E731
    with pytest.raises(ValueError, match="adaptation must be one of"):
        NUTS(logdensity_fn=f, adaptation="pymc")
    with pytest.raises(ValueError, match="metric must be one of"):
        NUTS(logdensity_fn=f, metric="full")
    with pytest.raises(ValueError, match="needs adaptation='nutpie'"):
        NUTS(logdensity_fn=f, metric="low_rank", adaptation="stan")
    with pytest.raises(ValueError, match="contradicts"):
        NUTS(logdensity_fn=f, metric="low_rank", dense_mass=True)
    with pytest.raises(ValueError, match="apply to metric='low_rank' or 'auto'"):
        NUTS(logdensity_fn=f, metric="diag", low_rank=LowRankSettings())
    assert NUTS(logdensity_fn=f, dense_mass=True).metric == "dense"
    assert NUTS(logdensity_fn=f).metric == "auto"  # the default
    assert NUTS(logdensity_fn=f, low_rank=LowRankSettings(rank=4)).metric == "auto"
    assert NUTS(logdensity_fn=f, adaptation="stan").metric == "diag"  # auto with Stan's


@pytest.mark.parametrize("low_rank", [None, LowRankSettings(rank=2)])
def test_saturated_transition_resets_the_metric_and_holds_collection(low_rank):
    from ppl.infer.kernels import hmc
    from ppl.infer.kernels.nuts import NUTSInfo
    from ppl.infer.warmup.nutpie import NutpieSchedule, nutpie_warmup

    scales = jnp.array([1e-3, 1.0, 1e3])

    def ld(x):
        return -0.5 * jnp.sum((x / scales) ** 2)

    metric = "diag" if low_rank is None else "low_rank"
    warmup = nutpie_warmup(100, 3, metric=metric, low_rank=low_rank, saturation_steps=1023, hold=5)
    state = hmc.init(jnp.ones(3), ld)
    w = warmup.init(state, ld, None)

    def info(steps):
        return NUTSInfo(
            acceptance_rate=jnp.asarray(0.5),
            acceptance_sym=jnp.asarray(0.5),
            diverging=jnp.asarray(False),
            energy=jnp.asarray(0.0),
            tree_depth=jnp.asarray(1),
            num_steps=jnp.asarray(steps, jnp.int32),
        )

    def after(w, i, steps):
        flags = NutpieSchedule(
            collect=jnp.bool_(True), switch=jnp.bool_(False),
            update=jnp.bool_(low_rank is not None), restart=jnp.bool_(False),
            fg_start=jnp.int32(-1), late=jnp.bool_(False),
        )  # fmt: skip
        return warmup.after(w, state, state, info(steps), jnp.int32(i), flags)

    w = after(w, 0, 7)
    assert float(w.foreground.count) == 2.0 and int(w.hold_until) == 0
    w = after(w, 1, 1023)  # saturated: reset
    assert int(w.hold_until) == 6
    assert float(w.foreground.count) == 0.0 and float(w.background.count) == 0.0
    metric = w.inverse_mass_matrix
    dense = low_rank_to_dense(metric) if low_rank is not None else jnp.diag(metric)
    np.testing.assert_allclose(dense, np.eye(3))
    for i in range(2, 6):  # held: draws do not feed the estimators
        w = after(w, i, 7)
        assert float(w.foreground.count) == 0.0
    w = after(w, 6, 7)
    assert float(w.foreground.count) == 1.0


def test_low_rank_estimate_is_float64_on_a_thread_without_x64():
    """``jax.enable_x64`` is thread-local: a compiled program called on another thread runs its
    host callback there, where a float64 input used to be rounded to float32 on its way to
    the host (so the estimate, and every draw after it, depended on the thread)."""
    import concurrent.futures

    rng = np.random.default_rng(3)
    cov = _ar1_cov(6)
    draws = rng.multivariate_normal(np.zeros(6), cov, size=40)
    grads = -draws @ np.linalg.inv(cov)
    # digits beyond float32 that change the estimate when lost
    draws = draws + 1e-9 * rng.normal(size=draws.shape)
    settings = LowRankSettings(rank=3)
    estimate = jax.jit(lambda d, g, w: low_rank_metric(d, g, w, settings))
    args = (jnp.asarray(draws), jnp.asarray(grads), jnp.ones(40))
    compiled = estimate.lower(*args).compile()
    here = compiled(*args)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a thread that never saw x64
        there = pool.submit(compiled, *args).result()
    for a, b in zip(jax.tree.leaves(here), jax.tree.leaves(there), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
