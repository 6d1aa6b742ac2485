"""``ppl.scan``: a model body over time, and how the handlers see it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
import ppl.distributions as dist
from ppl.handlers import block, condition, mask, scale, seed, substitute, trace
from ppl.infer import MCMC, NUTS, Predictive


def random_walk(y=None, T=6):
    sigma = ppl.sample("sigma", dist.HalfNormal(1.0))

    def step(level, y_t):
        level = ppl.sample("level", dist.Normal(level, sigma))
        ppl.sample("y", dist.Normal(level, 0.5), obs=y_t)
        ppl.deterministic("twice", 2 * level)
        return level, level

    xs = None if y is None else y
    _, levels = ppl.scan(step, 0.0, xs, length=T)
    return levels


def _hand_written(sigma, levels, y):
    prev = jnp.concatenate([jnp.zeros(1), levels[:-1]])
    lp = dist.HalfNormal(1.0).log_prob(sigma)
    lp += dist.Normal(prev, sigma).log_prob(levels).sum()
    return lp + dist.Normal(levels, 0.5).log_prob(y).sum()


def test_without_handlers_it_is_lax_scan():
    carry, ys = ppl.scan(lambda c, x: (c + x, c * x), 0.0, jnp.arange(4.0))
    expected = jax.lax.scan(lambda c, x: (c + x, c * x), 0.0, jnp.arange(4.0))
    np.testing.assert_allclose(carry, expected[0])
    np.testing.assert_allclose(ys, expected[1])


def test_trace_stacks_sites_over_time():
    tr = trace(seed(random_walk, rng_seed=0)).get_trace(T=6)
    assert tr["level"]["value"].shape == (6,)
    assert tr["y"]["value"].shape == (6,)
    assert tr["twice"]["type"] == "deterministic"
    np.testing.assert_allclose(tr["twice"]["value"], 2 * tr["level"]["value"], rtol=1e-6)
    # a seeded model is reproducible, and the steps draw different values
    again = trace(seed(random_walk, rng_seed=0)).get_trace(T=6)
    np.testing.assert_array_equal(tr["level"]["value"], again["level"]["value"])
    assert len(set(np.asarray(tr["y"]["value"]).tolist())) == 6


def test_log_density_equals_hand_written():
    y = jnp.array([0.3, 0.1, -0.4, 0.2, 0.9, 1.1])
    ld = ppl.logdensity(random_walk, y)
    assert ld.latent_names == ("sigma", "level")
    assert ld.sites["level"].shape == (6,) and ld.sites["level"].dims == ("time",)
    assert ld.sites["y"].dims == ("time",)
    theta = jax.random.normal(jax.random.PRNGKey(0), (ld.dim,))
    values = ld.constrain(theta)
    assert set(values) == {"sigma", "level", "twice"}
    expected = _hand_written(values["sigma"], values["level"], y) + theta[0]  # log-Jacobian
    np.testing.assert_allclose(ld(theta), expected, rtol=1e-5)
    np.testing.assert_allclose(ld.unconstrain(values), theta, rtol=1e-5, atol=1e-6)
    grad = jax.grad(ld)(theta)
    assert grad.shape == (7,) and bool(jnp.all(jnp.isfinite(grad)))


def test_substitute_and_condition_give_whole_sequences():
    levels = jnp.arange(6.0)
    tr = trace(substitute(seed(random_walk, 1), data={"level": levels})).get_trace(T=6)
    np.testing.assert_allclose(tr["level"]["value"], levels)
    assert not tr["level"]["is_observed"]
    tr = trace(condition(seed(random_walk, 1), data={"level": levels})).get_trace(T=6)
    assert tr["level"]["is_observed"]
    np.testing.assert_allclose(tr["level"]["value"], levels)


def test_mask_scale_and_block_act_on_stacked_sites():
    y = jnp.zeros(6)
    with trace() as tr, scale(scale=2.0), mask(mask=jnp.arange(6) < 3), seed(rng_seed=0):
        random_walk(y)
    assert tr["y"]["scale"] == 2.0 and tr["y"]["mask"].shape == (6,)
    hidden = trace(block(seed(random_walk, 0), hide=["level"])).get_trace(y)
    assert "level" not in hidden and "y" in hidden


def test_predictive_forecasts_past_the_data():
    prior = Predictive(random_walk, num_samples=4)(jax.random.PRNGKey(1), T=6)
    assert prior["level"].shape == (4, 6) and prior["y"].shape == (4, 6)
    posterior = {"sigma": prior["sigma"], "level": prior["level"]}
    forecast = Predictive(random_walk, posterior, return_sites=["level", "y"])(
        jax.random.PRNGKey(2), T=9
    )
    assert forecast["level"].shape == (4, 9)
    np.testing.assert_allclose(forecast["level"][:, :6], prior["level"])
    assert bool(jnp.all(forecast["level"][:, 6:] != forecast["level"][:, 5:6]))


def test_mcmc_datatree_has_a_time_dimension():
    y = jnp.array([0.3, 0.1, -0.4, 0.2, 0.9, 1.1])
    mcmc = MCMC(NUTS(random_walk), num_warmup=50, num_samples=50, num_chains=1, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), y)
    tree = mcmc.to_datatree()
    assert tree.posterior["level"].dims == ("chain", "draw", "time")
    assert tree.log_likelihood["y"].dims == ("chain", "draw", "time")


def test_plate_inside_the_body():
    def model(y):
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))

        def step(_, y_t):
            with ppl.plate("series", 3):
                ppl.sample("y", dist.Normal(mu, 1.0), obs=y_t)
            return None, None

        ppl.scan(step, None, y)

    y = jnp.ones((5, 3))
    ld = ppl.logdensity(model, y)
    assert ld.sites["y"].dims == ("time", "series")
    np.testing.assert_allclose(
        ld(jnp.array([0.5])),
        dist.Normal(0.0, 1.0).log_prob(0.5) + dist.Normal(0.5, 1.0).log_prob(y).sum(),
        rtol=1e-6,
    )


def test_compile_size_does_not_grow_with_length():
    def size(T):
        ld = ppl.logdensity(random_walk, jnp.zeros(T), T=T)
        return len(jax.make_jaxpr(ld)(jnp.zeros(ld.dim)).eqns)

    assert size(10) == size(1000)


# ---------------------------------------------------------------------- errors


def test_carry_that_changes_shape_is_named():
    def model():
        def step(carry, _):
            x = ppl.sample("x", dist.Normal(0.0, 1.0).expand([2]))
            return {"state": x}, None

        ppl.scan(step, {"state": 0.0}, None, length=3)

    with pytest.raises(ValueError, match=r"carry\['state'\] has shape \(\) initially .* \(2,\)"):
        ppl.logdensity(model)


def test_xs_of_different_lengths():
    with pytest.raises(ValueError, match="different lengths"):
        ppl.scan(lambda c, x: (c, None), 0.0, (jnp.zeros(3), jnp.zeros(4)))
    with pytest.raises(ValueError, match="give length="):
        ppl.scan(lambda c, x: (c, None), 0.0, None)


def test_enumerating_infinite_support_names_the_site():
    def model():
        ppl.sample("n", dist.Poisson(3.0), infer={"enumerate": "parallel"})

    with pytest.raises(TypeError, match=r"site 'n' .*\(Poisson\) has infinite"):
        ppl.logdensity(model)


def test_discrete_latent_without_the_flag_points_to_config_enumerate():
    def model():
        ppl.sample("k", dist.Categorical(jnp.ones(3) / 3))

    with pytest.raises(TypeError, match="config_enumerate"):
        ppl.logdensity(model)


def test_too_large_enumeration_is_refused_before_allocating():
    @ppl.infer.config_enumerate
    def model():
        # 10 sites of 8 values, every pair coupled: summing one out needs 8**9 elements
        ks = [ppl.sample(f"k{i}", dist.Categorical(jnp.ones(8) / 8)) for i in range(10)]
        for i in range(10):
            for j in range(i + 1, 10):
                ppl.factor(f"f{i}_{j}", -0.1 * (ks[i] - ks[j]) ** 2)

    ld = ppl.logdensity(model)
    with pytest.raises(MemoryError, match=r"enumerated sites \[.k0., .k1.*shape \(8, 8, 8"):
        ld(jnp.zeros(0))


def test_svi_refuses_enumerated_sites_clearly():
    import optax

    from ppl.infer import SVI, AutoNormal, Trace_ELBO

    @ppl.infer.config_enumerate
    def model(y):
        mu = ppl.sample("mu", dist.Normal(jnp.zeros(2), 1.0).to_event(1))
        with ppl.plate("obs", y.shape[0]):
            z = ppl.sample("z", dist.Categorical(jnp.ones(2) / 2))
            ppl.sample("y", dist.Normal(mu[z], 1.0), obs=y)

    svi = SVI(model, AutoNormal(model), optax.adam(0.1), Trace_ELBO())
    with pytest.raises(NotImplementedError, match="site 'z' is marked for enumeration"):
        svi.run(jax.random.PRNGKey(0), 2, jnp.zeros(3), progress_bar=False)
