"""Prior / posterior predictive draws and pointwise log-likelihoods."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
import ppl.distributions as dist
from ppl.infer import Predictive, log_likelihood


def regression(x, y=None):
    alpha = ppl.sample("alpha", dist.Normal(0.0, 1.0))
    beta = ppl.sample("beta", dist.Normal(0.0, 1.0))
    sigma = ppl.sample("sigma", dist.HalfNormal(1.0))
    mu = ppl.deterministic("mu", alpha + beta * x)
    with ppl.plate("obs", x.shape[0]):
        ppl.sample("y", dist.Normal(mu, sigma), obs=y)


X = jnp.linspace(-1.0, 1.0, 5)


def test_prior_predictive_shapes_and_moments():
    draws = Predictive(regression, num_samples=4000)(jax.random.PRNGKey(0), X)
    assert set(draws) == {"alpha", "beta", "sigma", "mu", "y"}
    assert draws["y"].shape == (4000, 5) and draws["alpha"].shape == (4000,)
    # Var(y_i) = 1 + x_i^2 + E[sigma^2] = 1 + x_i^2 + 1; mean 0 within 5 standard errors
    var = 2.0 + X**2
    se = np.sqrt(var / 4000)
    assert np.all(np.abs(np.asarray(draws["y"].mean(0))) < 5 * se)
    # the variance of a sample variance of a near-normal variable: ~2 var^2 / n
    assert np.all(np.abs(np.asarray(draws["y"].var(0)) - var) < 5 * np.sqrt(2 * var**2 / 4000))


def test_prior_predictive_is_reproducible():
    a = Predictive(regression, num_samples=10)(jax.random.PRNGKey(1), X)
    b = Predictive(regression, num_samples=10)(jax.random.PRNGKey(1), X)
    np.testing.assert_array_equal(a["y"], b["y"])


def test_posterior_predictive_uses_the_draws():
    post = {
        "alpha": jnp.array([0.0, 1.0, 2.0]),
        "beta": jnp.array([1.0, 1.0, -1.0]),
        "sigma": jnp.array([1e-6, 1e-6, 1e-6]),
    }
    out = Predictive(regression, post)(jax.random.PRNGKey(0), X)
    assert set(out) == {"mu", "y"}
    expected = post["alpha"][:, None] + post["beta"][:, None] * X
    np.testing.assert_allclose(out["mu"], expected, rtol=1e-6)
    np.testing.assert_allclose(out["y"], expected, atol=1e-4)


def test_posterior_predictive_with_chain_dim_and_return_sites():
    post = {
        "alpha": jnp.zeros((2, 3)),
        "beta": jnp.ones((2, 3)),
        "sigma": jnp.ones((2, 3)),
    }
    out = Predictive(regression, post, batch_ndims=2, return_sites=["y"])(jax.random.PRNGKey(0), X)
    assert list(out) == ["y"] and out["y"].shape == (2, 3, 5)


def test_predictive_errors():
    with pytest.raises(ValueError, match="posterior_samples or num_samples"):
        Predictive(regression)
    with pytest.raises(ValueError, match="disagree"):
        Predictive(regression, {"alpha": jnp.zeros(3), "beta": jnp.zeros(4)})
    with pytest.raises(KeyError, match="nope"):
        Predictive(regression, num_samples=2, return_sites=["nope"])(jax.random.PRNGKey(0), X)


def test_log_likelihood_is_pointwise():
    y = jnp.array([0.1, -0.2, 0.3, 0.0, 1.0])
    post = {
        "alpha": jnp.array([0.0, 0.5]),
        "beta": jnp.array([1.0, -1.0]),
        "sigma": jnp.array([1.0, 2.0]),
    }
    ll = log_likelihood(regression, post, X, y)
    assert set(ll) == {"y"} and ll["y"].shape == (2, 5)
    for i in range(2):
        mu = post["alpha"][i] + post["beta"][i] * X
        expected = dist.Normal(mu, post["sigma"][i]).log_prob(y)
        np.testing.assert_allclose(ll["y"][i], expected, rtol=1e-6)


def test_log_likelihood_skips_factors_and_respects_mask():
    def model(y):
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ppl.factor("prior_tweak", -(mu**2))
        with ppl.plate("obs", 3), ppl.handlers.mask(mask=jnp.array([True, False, True])):
            ppl.sample("y", dist.Normal(mu, 1.0), obs=y)

    y = jnp.array([0.0, 1.0, 2.0])
    ll = log_likelihood(model, {"mu": jnp.zeros((2, 4))}, y, batch_ndims=2)
    assert set(ll) == {"y"} and ll["y"].shape == (2, 4, 3)
    assert float(ll["y"][0, 0, 1]) == 0.0
    np.testing.assert_allclose(ll["y"][0, 0, 2], dist.Normal(0.0, 1.0).log_prob(2.0), rtol=1e-6)
