"""Unchanged NumPyro models run on ppl: ``ppl.from_numpyro``."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.reparam import LocScaleReparam
from numpyro.infer.util import constrain_fn, potential_energy

import ppl


def eight_schools(J, sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", J):
        with numpyro.handlers.reparam(config={"theta": LocScaleReparam(0)}):
            theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)
    numpyro.deterministic("mu2", 2 * mu)
    numpyro.factor("soft", -0.01 * tau**2)


def masked_glm(x, y):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    conc = numpyro.sample("conc", dist.Gamma(2.0, 1.0))
    with numpyro.plate("rows", x.shape[0]), numpyro.handlers.mask(mask=y >= 0):
        numpyro.sample("y", dist.NegativeBinomial2(jnp.exp(x @ w), conc), obs=jnp.abs(y))


DATA = {
    "eight_schools": (
        eight_schools,
        (),
        {
            "J": 8,
            "sigma": jnp.array([15.0, 10, 16, 11, 9, 11, 10, 18]),
            "y": jnp.array([28.0, 8, -3, 7, -1, 1, 18, 12]),
        },
    ),
    "masked_glm": (
        masked_glm,
        (
            jnp.asarray(np.random.default_rng(0).normal(size=(30, 3))),
            jnp.asarray(np.random.default_rng(1).integers(-1, 6, size=30)),
        ),
        {},
    ),
}


@pytest.mark.parametrize("name", sorted(DATA))
def test_from_numpyro_matches_numpyro_potential(name):
    model, args, kwargs = DATA[name]
    ld = ppl.from_numpyro(model, *args, **kwargs)
    thetas = jax.random.uniform(jax.random.PRNGKey(0), (5, ld.dim), minval=-2, maxval=2)
    for theta in thetas:
        params = ld.unflatten(theta)
        expected = -potential_energy(model, args, kwargs, params)
        np.testing.assert_allclose(ld(theta), expected, rtol=1e-5)
        grad = jax.grad(ld)(theta)
        expected_grad = jax.grad(lambda t: -potential_energy(model, args, kwargs, ld.unflatten(t)))(
            theta
        )
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-4)
        ours = ld.constrain(theta)
        theirs = constrain_fn(model, args, kwargs, params, return_deterministic=True)
        for site in ours:
            np.testing.assert_allclose(ours[site], theirs[site], rtol=1e-5, atol=1e-6)


def test_from_numpyro_metadata():
    model, args, kwargs = DATA["eight_schools"]
    ld = ppl.from_numpyro(model, *args, **kwargs)
    assert ld.latent_names == ("mu", "tau", "theta_decentered")
    assert ld.sites["theta"].kind == "deterministic"
    assert ld.sites["y"].kind == "observed" and ld.sites["y"].dims == ("school",)
    assert ld.sites["soft"].kind == "factor"
    assert ld.sites["mu2"].kind == "deterministic"


def test_from_numpyro_samples_with_ppl_nuts():
    model, args, kwargs = DATA["eight_schools"]
    ld = ppl.from_numpyro(model, *args, **kwargs)
    mcmc = ppl.infer.MCMC(ppl.infer.NUTS(ld), num_warmup=200, num_samples=200, num_chains=2)
    mcmc.run(jax.random.PRNGKey(0))
    samples = mcmc.get_samples()
    assert samples["theta"].shape == (400, 8)
    np.testing.assert_allclose(samples["mu2"], 2 * samples["mu"], rtol=1e-6)


def test_from_numpyro_bad_data_names_the_site():
    def model(y):
        rate = numpyro.sample("rate", dist.Gamma(1.0, 1.0))
        numpyro.sample("y", dist.Poisson(rate), obs=y)

    with pytest.raises(ValueError, match="site 'y' is outside the support of Poisson"):
        ppl.from_numpyro(model, jnp.array([1.0, -2.0]))


def test_numpyro_subsampling_plate_gets_ppl_seed():
    def model(data):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("rows", 50, subsample_size=5) as idx:
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=data[idx])

    ld = ppl.from_numpyro(model, jnp.arange(50.0))
    idx = ld.prototype_trace["rows"]["value"]
    assert idx.shape == (5,)
    expected = dist.Normal(0.0, 1.0).log_prob(0.0) + 10 * jnp.sum(
        dist.Normal(0.0, 1.0).log_prob(jnp.arange(50.0)[idx])
    )
    np.testing.assert_allclose(ld(jnp.zeros(1)), expected, rtol=1e-5)
