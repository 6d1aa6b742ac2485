"""Shared test helpers for the kernels: Gaussian targets and MCSE-based moment checks."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro  # noqa: F401  (the real package before arviz_stats; see DESIGN.md pitfalls)
from arviz_stats.base import array_stats

SCALES_10 = np.logspace(-1, 1, 10)  # 0.1 ... 10


def correlated_cov(dim: int, seed: int = 0) -> np.ndarray:
    """A random correlated covariance with unequal scales (0.5x to 3x)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim))
    cov = a @ a.T / dim + 0.2 * np.eye(dim)
    sd = np.sqrt(np.diag(cov)) * np.linspace(0.5, 3.0, dim)
    corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    return corr * np.outer(sd, sd)


def gaussian(cov: np.ndarray):
    """Log density (up to a constant) of N(0, cov)."""
    prec = jnp.asarray(np.linalg.inv(cov))
    return lambda x: -0.5 * x @ (prec @ x)


def assert_expectations(values: np.ndarray, expected: np.ndarray, num_mcse: float = 5.0):
    """Check Monte Carlo averages of (chain, draw, k) values against their expectations.

    Tolerance: ``num_mcse`` Monte Carlo standard errors per component, estimated by arviz-stats
    from the chains' autocorrelations (effective sample size of each component).
    """
    values = np.asarray(values, dtype=np.float64)
    mcse = array_stats.mcse(values, chain_axis=0, draw_axis=1, method="mean")
    err = values.mean(axis=(0, 1)) - expected
    assert np.all(np.abs(err) < num_mcse * mcse), (err, mcse)


def assert_moments(draws: np.ndarray, mean: np.ndarray, cov: np.ndarray):
    """Means, and variances (``cov`` 1-D) or all second central moments (``cov`` 2-D)."""
    draws = np.asarray(draws, dtype=np.float64)
    assert_expectations(draws, mean)
    centred = draws - mean
    if np.ndim(cov) == 1:
        assert_expectations(centred**2, cov)
    else:
        i, j = np.triu_indices(len(mean))
        assert_expectations(centred[..., i] * centred[..., j], cov[i, j])


def run_kernel(kernel, logdensity_fn, dim, step_size, imm, num_draws, num_chains=4, seed=0, **kw):
    """``num_chains`` vmapped chains of ``num_draws`` draws of ``kernel`` (the ``hmc`` or
    ``nuts`` module, or anything with ``init`` and ``step``); returns (draws, info)."""

    def one_chain(key, position):
        state = kernel.init(position, logdensity_fn)

        def body(state, key):
            state, info = kernel.step(key, state, logdensity_fn, step_size, imm, **kw)
            return state, (state.position, info)

        return jax.lax.scan(body, state, jax.random.split(key, num_draws))[1]

    key_init, key_run = jax.random.split(jax.random.key(seed))
    positions = jax.random.normal(key_init, (num_chains, dim))
    keys = jax.random.split(key_run, num_chains)
    draws, info = jax.jit(jax.vmap(one_chain))(keys, positions)
    return np.asarray(draws), info
