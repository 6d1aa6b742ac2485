"""Tests for ppl.infer.core.metrics, ppl.infer.core.integrators (the leapfrog integrator) and
ppl.infer.kernels.hmc (the HMC kernel)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro  # noqa: F401  (the real package before arviz_stats; see DESIGN.md pitfalls)
import pytest

from ppl.infer.core import integrators, metrics
from ppl.infer.kernels import hmc
from tests.infer.gaussian_targets import (
    SCALES_10,
    assert_moments,
    correlated_cov,
    gaussian,
    run_kernel,
)

# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("dense", [False, True])
def test_momentum_covariance_is_mass_matrix(dense):
    cov = correlated_cov(3)
    imm = jnp.asarray(cov if dense else np.diag(cov))
    keys = jax.random.split(jax.random.key(0), 40_000)
    p = jax.vmap(lambda k: metrics.sample_momentum(k, jnp.zeros(3), imm))(keys)
    mass = np.linalg.inv(cov) if dense else np.diag(1.0 / np.diag(cov))
    # Entries of a sample covariance from n draws have sd <= sqrt(2/n) * max variance.
    tol = 5 * math.sqrt(2 / p.shape[0]) * np.abs(mass).max()
    np.testing.assert_allclose(np.cov(np.asarray(p).T), mass, atol=tol)


@pytest.mark.usefixtures("x64")
def test_kinetic_energy_and_velocity_diag_and_dense_agree():
    diag = jnp.array([0.5, 2.0, 3.0])
    p = jnp.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(metrics.velocity(p, diag), diag * p)
    np.testing.assert_allclose(metrics.velocity(p, jnp.diag(diag)), diag * p)
    expected = 0.5 * np.sum(diag * p**2)
    np.testing.assert_allclose(metrics.kinetic_energy(p, diag), expected)
    np.testing.assert_allclose(metrics.kinetic_energy(p, jnp.diag(diag)), expected)


def test_metric_rejects_bad_shape():
    with pytest.raises(ValueError, match="inverse_mass_matrix must be 1-D"):
        metrics.velocity(jnp.ones(2), jnp.ones((2, 2, 2)))


# ---------------------------------------------------------------------------------------------
# Integrator
# ---------------------------------------------------------------------------------------------


def _integrate(logdensity_fn, imm, q0, p0, step_size, num_steps):
    step = integrators.velocity_verlet(logdensity_fn, imm)
    ld, g = jax.value_and_grad(logdensity_fn)(q0)
    z = integrators.IntegratorState(q0, p0, ld, g)
    energies = [float(-z.log_density + metrics.kinetic_energy(z.momentum, imm))]
    for _ in range(num_steps):
        z = step(z, step_size)
        energies.append(float(-z.log_density + metrics.kinetic_energy(z.momentum, imm)))
    return z, np.array(energies)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("dense", [False, True])
def test_leapfrog_energy_error_is_second_order(dense):
    cov = correlated_cov(4)
    logdensity_fn = gaussian(cov)
    imm = jnp.asarray(cov if dense else np.diag(cov))
    q0 = jnp.asarray([1.0, -0.5, 0.3, 2.0])
    p0 = jnp.asarray([0.2, 1.0, -1.0, 0.5])
    errors = []
    for step_size in (0.1, 0.05, 0.025):
        num_steps = round(1.0 / step_size)  # the same integration time
        _, energies = _integrate(logdensity_fn, imm, q0, p0, step_size, num_steps)
        errors.append(np.max(np.abs(energies - energies[0])))
    # Halving the step size divides the (bounded) energy error by about 4.
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    np.testing.assert_allclose(ratios, 4.0, rtol=0.15)


@pytest.mark.usefixtures("x64")
def test_leapfrog_is_reversible():
    logdensity_fn = gaussian(correlated_cov(3))
    imm = jnp.asarray(correlated_cov(3, seed=1))
    q0 = jnp.asarray([0.3, -1.0, 2.0])
    p0 = jnp.asarray([1.0, 0.5, -0.7])
    z, _ = _integrate(logdensity_fn, imm, q0, p0, 0.1, 25)
    back, _ = _integrate(logdensity_fn, imm, z.position, -z.momentum, 0.1, 25)
    np.testing.assert_allclose(back.position, q0, atol=1e-10)
    np.testing.assert_allclose(-back.momentum, p0, atol=1e-10)
    # Integrating with a negative step size is the same as flipping the momentum.
    back2, _ = _integrate(logdensity_fn, imm, z.position, z.momentum, -0.1, 25)
    np.testing.assert_allclose(back2.position, q0, atol=1e-10)


def test_init_rejects_non_flat_position():
    with pytest.raises(ValueError, match="flat 1-D array"):
        hmc.init(jnp.zeros((2, 2)), lambda x: -jnp.sum(x**2))


# ---------------------------------------------------------------------------------------------
# HMC kernel
# ---------------------------------------------------------------------------------------------


def run_hmc(logdensity_fn, dim, step_size, imm, num_draws, num_chains=4, seed=0, **kwargs):
    """``num_chains`` vmapped chains of ``num_draws`` HMC draws; returns (draws, info)."""
    return run_kernel(
        hmc, logdensity_fn, dim, step_size, imm, num_draws, num_chains, seed, **kwargs
    )


def test_hmc_standard_normal_1d():
    def ld(x):
        return -0.5 * jnp.sum(x**2)

    draws, info = run_hmc(ld, 1, 0.5, jnp.ones(1), 2000, trajectory_length=2.0, jitter=True)
    assert_moments(draws, np.zeros(1), np.ones(1))
    assert 0.8 < float(info.acceptance_rate.mean()) <= 1.0
    assert not bool(info.diverging.any())


@pytest.mark.parametrize("with_metric", [True, False])
def test_hmc_diagonal_gaussian_scales(with_metric):
    def ld(x):
        return -0.5 * jnp.sum((x / SCALES_10) ** 2)

    if with_metric:
        imm, step_size, length = jnp.asarray(SCALES_10**2), 0.5, 2.0
    else:  # identity metric: the step size is bound by the smallest scale (0.1)
        imm, step_size, length = jnp.ones(10), 0.1, 15.0
    draws, info = run_hmc(ld, 10, step_size, imm, 2000, trajectory_length=length, jitter=True)
    assert_moments(draws, np.zeros(10), SCALES_10**2)
    assert float(info.acceptance_rate.mean()) > 0.6


def test_hmc_correlated_gaussian_dense_metric():
    cov = correlated_cov(5)
    draws, info = run_hmc(
        gaussian(cov), 5, 0.5, jnp.asarray(cov), 2000, trajectory_length=2.0, jitter=True
    )
    assert_moments(draws, np.zeros(5), cov)  # all of E[x_i x_j], off-diagonal included
    assert float(info.acceptance_rate.mean()) > 0.7


def test_hmc_num_steps_from_trajectory_length():
    def ld(x):
        return -0.5 * jnp.sum(x**2)

    state = hmc.init(jnp.zeros(2), ld)
    _, info = hmc.step(jax.random.key(0), state, ld, 0.3, jnp.ones(2), trajectory_length=1.0)
    assert int(info.num_steps) == 4  # ceil(1.0 / 0.3)
    _, info = hmc.step(jax.random.key(0), state, ld, 0.3, jnp.ones(2), num_integration_steps=7)
    assert int(info.num_steps) == 7
    keys = jax.random.split(jax.random.key(1), 500)
    jittered = jax.vmap(
        lambda k: hmc.step(k, state, ld, 0.1, jnp.ones(2), trajectory_length=1.0, jitter=True)[1]
    )(keys).num_steps
    assert int(jittered.min()) >= 1 and int(jittered.max()) <= 10
    assert len(np.unique(np.asarray(jittered))) == 10  # uniform jitter covers 1..10 steps


def test_hmc_flags_divergence_and_rejects():
    # scale 0.01, step size 5
    def ld(x):
        return -0.5 * jnp.sum(x**2) / 0.01**2

    state = hmc.init(jnp.full(3, 0.01), ld)
    new_state, info = hmc.step(
        jax.random.key(0), state, ld, 5.0, jnp.ones(3), num_integration_steps=3
    )
    assert bool(info.diverging)
    assert float(info.acceptance_rate) == 0.0
    assert not bool(info.is_accepted)
    np.testing.assert_array_equal(new_state.position, state.position)


def test_hmc_needs_exactly_one_length_argument():
    def ld(x):
        return -0.5 * jnp.sum(x**2)

    state = hmc.init(jnp.zeros(2), ld)
    with pytest.raises(ValueError, match="exactly one"):
        hmc.step(jax.random.key(0), state, ld, 0.1, jnp.ones(2))
    with pytest.raises(ValueError, match="exactly one"):
        hmc.step(
            jax.random.key(0),
            state,
            ld,
            0.1,
            jnp.ones(2),
            num_integration_steps=3,
            trajectory_length=1.0,
        )
