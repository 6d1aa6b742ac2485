"""Bad input gets a clear error that names the site (or plate) and the cause."""

import jax
import jax.numpy as jnp
import pytest

import ppl
import ppl.distributions as dist
from ppl.handlers import seed, trace


def test_duplicate_site_names():
    def model():
        ppl.sample("x", dist.Normal(0.0, 1.0))
        ppl.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="duplicate site name 'x'"):
        ppl.logdensity(model)


def test_duplicate_between_sample_and_deterministic():
    def model():
        x = ppl.sample("x", dist.Normal(0.0, 1.0))
        ppl.deterministic("x", 2 * x)

    with pytest.raises(ValueError, match="duplicate site name 'x'"):
        trace(seed(model, rng_seed=0)).get_trace()


def test_observed_outside_support_names_site():
    def model(counts):
        rate = ppl.sample("rate", dist.Gamma(2.0, 1.0))
        with ppl.plate("obs", counts.shape[0]):
            ppl.sample("counts", dist.Poisson(rate), obs=counts)

    with pytest.raises(ValueError, match=r"site 'counts' is outside the support of Poisson") as e:
        ppl.logdensity(model, jnp.array([1, 2, -3]))
    assert "index (2,)" in str(e.value) and "-3" in str(e.value)


def test_observed_outside_simplex_support():
    def model(p):
        ppl.sample("p", dist.Dirichlet(jnp.ones(3)), obs=p)

    with pytest.raises(ValueError, match="site 'p' is outside the support of Dirichlet"):
        ppl.logdensity(model, jnp.array([0.5, 0.6, 0.1]))


def test_observed_nan_names_site():
    def model(y):
        with ppl.plate("obs", 3):
            ppl.sample("y", dist.Normal(0.0, 1.0), obs=y)

    with pytest.raises(ValueError, match="site 'y' contains NaN"):
        ppl.logdensity(model, jnp.array([0.0, jnp.nan, 1.0]))


def test_observed_shape_does_not_broadcast():
    def model(y):
        loc = ppl.sample("loc", dist.Normal(jnp.zeros(4), 1.0).to_event(1))
        ppl.sample("y", dist.Normal(loc, 1.0), obs=y)

    with pytest.raises(ValueError, match=r"site 'y' has shape \(3,\).*\(4,\)"):
        ppl.logdensity(model, jnp.zeros(3))


def test_observed_event_shape_mismatch():
    def model(y):
        ppl.sample("y", dist.MultivariateNormal(jnp.zeros(3), jnp.eye(3)), obs=y)

    with pytest.raises(ValueError, match="site 'y'"):
        ppl.logdensity(model, jnp.zeros((5, 2)))


def test_plate_size_disagrees_with_data():
    def model(y):
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        with ppl.plate("data", 10):
            ppl.sample("y", dist.Normal(mu, 1.0), obs=y)

    with pytest.raises(ValueError, match=r"plate 'data' has size 10.*site 'y'.*\(12,\)"):
        ppl.logdensity(model, jnp.zeros(12))


def test_plate_size_disagrees_with_data_under_condition():
    # the data reach the site through an outer handler, after the plate saw the site
    def model():
        with ppl.plate("data", 10):
            ppl.sample("y", dist.Normal(0.0, 1.0))

    conditioned = ppl.handlers.condition(model, data={"y": jnp.zeros(7)})
    with pytest.raises(ValueError, match=r"plate 'data' has size 10.*site 'y'"):
        ppl.logdensity(conditioned)


def test_distribution_batch_shape_disagrees_with_plate():
    def model():
        with ppl.plate("groups", 3):
            ppl.sample("z", dist.Normal(jnp.zeros(4), 1.0))

    with pytest.raises(ValueError, match=r"site 'z' inside plate 'groups' \(size 3"):
        trace(seed(model, rng_seed=0)).get_trace()


def test_sampling_outside_seed():
    def model():
        return ppl.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ppl.MissingSeedError, match=r"site 'x'.*seed"):
        model()
    with pytest.raises(ppl.MissingSeedError, match=r"site 'x'.*seed"):
        trace(model).get_trace()


def test_subsampled_plate_outside_seed():
    def model():
        with ppl.plate("data", 100, subsample_size=10):
            pass

    with pytest.raises(ppl.MissingSeedError, match=r"plate 'data'.*seed"):
        model()


def test_nan_log_density_at_every_initial_point_names_site():
    def model(y):
        a = 1.0 + ppl.sample("a_minus_1", dist.HalfNormal(1.0))
        # exact zeros are in Beta's support but have zero density when a > 1
        with ppl.plate("obs", y.shape[0]):
            ppl.sample("y", dist.Beta(a, 2.0), obs=y)

    ld = ppl.logdensity(model, jnp.array([0.0, 0.5, 0.2]))
    with pytest.raises(ppl.InitializationError, match="site 'y' log-probability not finite") as e:
        ld.init(jax.random.PRNGKey(0), max_tries=10)
    assert "in 10 of 10 tries" in str(e.value)


def test_invalid_distribution_argument_notes_last_site():
    def model(y):
        scale = ppl.sample("scale", dist.HalfNormal(1.0))
        with ppl.plate("obs", y.shape[0]):
            ppl.sample("y", dist.Normal(0.0, -scale), obs=y)

    with pytest.raises(ValueError, match="invalid scale parameter") as e:
        ppl.logdensity(model, jnp.zeros(3))
    assert "after site 'scale'" in " ".join(getattr(e.value, "__notes__", []))


def test_infinite_log_density_from_factor_names_site():
    def model():
        x = ppl.sample("x", dist.Normal(0.0, 1.0))
        ppl.factor("penalty", jnp.where(x > 100.0, 0.0, -jnp.inf))

    ld = ppl.logdensity(model)
    with pytest.raises(ppl.InitializationError, match="site 'penalty'"):
        ld.init(jax.random.PRNGKey(0), max_tries=5)


def test_discrete_latent_is_refused():
    def model():
        ppl.sample("k", dist.Poisson(3.0))

    with pytest.raises(TypeError, match="latent site 'k' has a discrete distribution"):
        ppl.logdensity(model)


def test_bad_init_strategy_and_values():
    def model():
        ppl.sample("x", dist.Normal(0.0, 1.0))

    ld = ppl.logdensity(model)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="unknown init strategy 'middle'"):
        ld.init(key, "middle")
    with pytest.raises(KeyError, match="'y'"):
        ld.init(key, {"y": 1.0})
    with pytest.raises(ValueError, match="site 'x' has shape"):
        ld.init(key, {"x": jnp.zeros(2)})


def test_theta_of_wrong_shape():
    def model():
        ppl.sample("x", dist.Normal(jnp.zeros(3), 1.0).to_event(1))

    ld = ppl.logdensity(model)
    with pytest.raises(ValueError, match=r"shape \(3,\), got shape \(2,\)"):
        ld(jnp.zeros(2))


def test_dynamic_structure_is_refused():
    def model():
        x = ppl.sample("x", dist.Normal(0.0, 1.0))
        if isinstance(x, jax.core.Tracer):
            ppl.sample("surprise", dist.Normal(0.0, 1.0))

    ld = ppl.logdensity(model)
    with pytest.raises(ValueError, match="latent site 'surprise' appeared"):
        jax.jit(ld)(jnp.zeros(1))


def test_bad_plate_arguments():
    with pytest.raises(ValueError, match="plate 'p': size must be a positive int"):
        ppl.plate("p", 0)
    with pytest.raises(ValueError, match="subsample_size 20 exceeds size 10"):
        ppl.plate("p", 10, subsample_size=20)
    with pytest.raises(ValueError, match="dim must be a negative int"):
        ppl.plate("p", 10, dim=1)


def test_sample_rejects_non_distribution():
    with pytest.raises(TypeError, match=r"site 'x': expected a ppl\.distributions distribution"):
        ppl.sample("x", 3.0)
