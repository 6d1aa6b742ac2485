"""The LogDensity contract: layout, metadata, constrain/unconstrain, init strategies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.distributions import constraints

import ppl
import ppl.distributions as dist


def hierarchical(y=None):
    mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
    tau = ppl.sample("tau", dist.HalfNormal(2.0))
    w = ppl.sample("w", dist.Dirichlet(jnp.ones(3)))
    with ppl.plate("region", 2, dim=-2):
        eta = ppl.sample("eta", dist.Normal(0.0, 1.0))
        with ppl.plate("county", 4):
            theta = ppl.deterministic("theta", mu + tau * eta + w[0] * jnp.arange(4.0))
            ppl.sample("y", dist.Normal(theta, 1.0), obs=y)


Y = jnp.arange(8.0).reshape(2, 4)


def test_layout_and_site_metadata():
    ld = ppl.logdensity(hierarchical, Y)
    assert ld.latent_names == ("mu", "tau", "w", "eta")
    # simplex of 3 is 2 unconstrained coordinates
    assert ld.dim == 1 + 1 + 2 + 2
    w = ld.sites["w"]
    assert (w.kind, w.shape, w.unconstrained_shape, w.offset, w.size) == (
        "latent",
        (3,),
        (2,),
        2,
        2,
    )
    assert w.event_shape == (3,) and w.distribution == "Dirichlet"
    assert isinstance(w.support, type(constraints.simplex))
    assert ld.sites["eta"].shape == (2, 1) and ld.sites["eta"].dims == ("region", None)
    assert ld.sites["theta"].kind == "deterministic"
    assert ld.sites["theta"].dims == ("region", "county")
    assert ld.sites["y"].kind == "observed" and ld.sites["y"].dims == ("region", "county")
    assert "dim=6" in repr(ld)


def test_constrain_unconstrain_roundtrip_and_deterministic():
    ld = ppl.logdensity(hierarchical, Y)
    theta = ld.init(jax.random.PRNGKey(0))
    values = ld.constrain(theta)
    assert set(values) == {"mu", "tau", "w", "eta", "theta"}
    assert values["tau"] > 0 and np.isclose(float(values["w"].sum()), 1.0, atol=1e-6)
    expected = values["mu"] + values["tau"] * values["eta"] + values["w"][0] * jnp.arange(4.0)
    assert values["theta"].shape == (2, 4)
    np.testing.assert_allclose(values["theta"], expected, rtol=1e-6)
    np.testing.assert_allclose(ld.unconstrain(values), theta, rtol=1e-5, atol=1e-6)
    # unflatten/flatten are inverse
    np.testing.assert_allclose(ld.flatten(ld.unflatten(theta)), theta)


def test_unconstrain_errors():
    ld = ppl.logdensity(hierarchical, Y)
    with pytest.raises(KeyError, match="'eta'"):
        ld.unconstrain({"mu": 0.0, "tau": 1.0, "w": jnp.ones(3) / 3})
    with pytest.raises(ValueError, match="site 'mu' has shape"):
        ld.unconstrain({"mu": jnp.zeros(2), "tau": 1.0, "w": jnp.ones(3) / 3, "eta": 0})


def test_log_density_is_jittable_vmappable_differentiable():
    ld = ppl.logdensity(hierarchical, Y)
    thetas = ld.init(jax.random.PRNGKey(1), num_chains=5)
    direct = jnp.stack([ld(t) for t in thetas])
    np.testing.assert_allclose(jax.jit(ld)(thetas[0]), direct[0], rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(ld)(thetas), direct, rtol=1e-6)
    grads = jax.vmap(jax.grad(ld))(thetas)
    assert grads.shape == thetas.shape and bool(jnp.all(jnp.isfinite(grads)))
    terms = ld.log_density_terms(thetas[0])
    assert set(terms) == {"mu", "tau", "w", "eta", "y"}
    np.testing.assert_allclose(sum(terms.values()), direct[0], rtol=1e-6)


@pytest.mark.parametrize("strategy", ["uniform", "median", "prior"])
def test_init_strategies_give_finite_points(strategy):
    ld = ppl.logdensity(hierarchical, Y)
    thetas = ld.init(jax.random.PRNGKey(2), strategy, num_chains=8)
    assert thetas.shape == (8, ld.dim)
    assert bool(jnp.all(jnp.isfinite(jax.vmap(ld)(thetas))))
    assert len({tuple(np.asarray(t).round(6)) for t in thetas}) == 8  # chains differ
    single = ld.init(jax.random.PRNGKey(2), strategy)
    assert single.shape == (ld.dim,)


def test_uniform_init_stays_in_radius():
    ld = ppl.logdensity(hierarchical, Y)
    thetas = ld.init(jax.random.PRNGKey(3), "uniform", num_chains=50, radius=0.5)
    assert float(jnp.max(jnp.abs(thetas))) <= 0.5


def test_median_init_is_close_to_prior_median():
    def model():
        ppl.sample("s", dist.LogNormal(1.0, 0.1))

    ld = ppl.logdensity(model)
    # the median of 15 LogNormal(1, 0.1) draws is e within a few percent
    s = ld.constrain(ld.init(jax.random.PRNGKey(0), "median"))["s"]
    assert abs(float(s) - np.e) < 0.25


def test_init_from_values_keeps_given_sites():
    ld = ppl.logdensity(hierarchical, Y)
    theta = ld.init(jax.random.PRNGKey(4), {"mu": 1.5, "tau": 0.25})
    values = ld.constrain(theta)
    np.testing.assert_allclose(values["mu"], 1.5, rtol=1e-6)
    np.testing.assert_allclose(values["tau"], 0.25, rtol=1e-5)


def test_model_without_latents():
    def model(y):
        ppl.sample("y", dist.Normal(0.0, 1.0), obs=y)

    ld = ppl.logdensity(model, 0.5)
    assert ld.dim == 0
    theta = ld.init(jax.random.PRNGKey(0))
    assert theta.shape == (0,)
    np.testing.assert_allclose(ld(theta), -0.5 * 0.25 - 0.5 * np.log(2 * np.pi), rtol=1e-6)


def test_subsampled_plate_keeps_indices_and_scales():
    data = jnp.arange(100.0)

    def model():
        mu = ppl.sample("mu", dist.Normal(0.0, 100.0))
        with ppl.plate("data", 100, subsample_size=10) as idx:
            ppl.sample("y", dist.Normal(mu, 10.0), obs=data[idx])

    ld = ppl.logdensity(model)
    idx = ld.prototype_trace["data"]["value"]
    assert idx.shape == (10,) and len(set(np.asarray(idx).tolist())) == 10
    theta = jnp.array([0.3])
    expected = dist.Normal(0.0, 100.0).log_prob(0.3) + 10.0 * jnp.sum(
        dist.Normal(0.3, 10.0).log_prob(data[idx])
    )
    np.testing.assert_allclose(ld(theta), expected, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(ld)(theta), expected, rtol=1e-6)


def test_params_are_fixed_at_their_init_value():
    def model():
        loc = ppl.param("loc", jnp.array(2.0))
        ppl.sample("x", dist.Normal(loc, 1.0))

    ld = ppl.logdensity(model)
    assert ld.sites["loc"].kind == "param"
    np.testing.assert_allclose(ld(jnp.array([2.0])), dist.Normal(2.0, 1.0).log_prob(2.0))


def test_jacobian_matches_change_of_variables():
    # x ~ Exponential(1) on log scale: log p(u) = -exp(u) + u
    def model():
        ppl.sample("x", dist.Exponential(1.0))

    ld = ppl.logdensity(model)
    u = jnp.array([0.7])
    np.testing.assert_allclose(ld(u), -jnp.exp(0.7) + 0.7, rtol=1e-6)


@pytest.mark.parametrize("strategy", ["uniform", "median", "prior"])
def test_improper_prior_compiles_and_initializes(strategy):
    def model():
        c = ppl.sample("c", dist.ImproperUniform(constraints.ordered_vector, (), (3,)))
        ppl.sample("y", dist.Normal(c, 1.0).to_event(1), obs=jnp.array([-1.0, 0.0, 1.0]))

    ld = ppl.logdensity(model)
    c = ld.constrain(ld.init(jax.random.PRNGKey(0), strategy))["c"]
    assert bool(jnp.all(jnp.diff(c) > 0))
