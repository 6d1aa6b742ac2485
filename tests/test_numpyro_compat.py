"""NumPyro idioms that ``ppl.from_numpyro`` models use: prng_key, block, NumPy on the data,
float params, handlers as decorators and robust set-up runs."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.reparam import LocScaleReparam as NumPyroLocScaleReparam
from numpyro.infer.util import log_density as numpyro_log_density

import ppl
from ppl.reparam import LocScaleReparam


def run_nuts(ld, *args, **kwargs):
    mcmc = ppl.infer.MCMC(
        ppl.infer.NUTS(ld), num_warmup=50, num_samples=50, num_chains=1, progress_bar=False
    )
    mcmc.run(jax.random.PRNGKey(0), *args, **kwargs)
    return mcmc.get_samples()


# ---------------------------------------------------------------------- prng_key


def dropout_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    keep = jax.random.bernoulli(numpyro.prng_key(), 0.5, y.shape)
    other = jax.random.normal(numpyro.prng_key())
    numpyro.deterministic("other", other)
    with numpyro.plate("obs", y.shape[0]), numpyro.handlers.mask(mask=keep):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_numpyro_prng_key_comes_from_ppl_seed():
    y = jnp.linspace(-1.0, 1.0, 8)
    model = ppl.interop.numpyro_model(dropout_model)
    draws = [
        ppl.handlers.trace(ppl.handlers.seed(model, rng_seed=s)).get_trace(y)["other"]["value"]
        for s in (0, 0, 1)
    ]
    assert draws[0] == draws[1] != draws[2]


def test_numpyro_prng_key_is_fixed_inside_the_log_density():
    ld = ppl.from_numpyro(dropout_model, jnp.linspace(-1.0, 1.0, 8))
    theta = jnp.array([0.3])
    # fixed keys: the density is a deterministic function of theta, jitted or not
    assert ld(theta) == ld(theta) == jax.jit(ld)(theta)
    # two requests in one run get different keys
    assert ld.constrain(theta)["other"] != jax.random.normal(jax.random.PRNGKey(0))
    samples = run_nuts(ld)
    assert samples["mu"].shape == (50,)


def test_ppl_prng_key_primitive():
    def model():
        first, second = ppl.prng_key(), ppl.prng_key()
        ppl.sample("x", dist.Normal(0.0, 1.0))
        return first, second

    tr = ppl.handlers.trace(ppl.handlers.seed(model, rng_seed=0)).get_trace()
    assert list(tr) == ["x"]  # a key request is not a site
    first, second = ppl.handlers.seed(model, rng_seed=0)()
    assert not jnp.array_equal(first, second)
    again, _ = ppl.handlers.seed(model, rng_seed=0)()
    assert jnp.array_equal(first, again)
    # a block hides sites, not key requests (as in NumPyro)
    given = ppl.handlers.substitute(model, data={"x": 0.0})
    blocked, _ = ppl.handlers.seed(ppl.handlers.block(given, hide=["x"]), rng_seed=0)()
    assert jnp.array_equal(blocked, first)
    # without a seed: the fixed key, the same every call
    with ppl.handlers.substitute(data={"x": 0.0}):
        unseeded, also = model()
    assert jnp.array_equal(unseeded, jax.random.PRNGKey(0))
    assert jnp.array_equal(unseeded, also)


# ---------------------------------------------------------------------- block


def blocked_model(y):
    with numpyro.handlers.block(hide=["x"]):
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.deterministic("x_seen", x)
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_numpyro_block_hides_a_latent_site_like_numpyro_log_density():
    y = jnp.array([0.5, -0.2, 1.1])
    ld = ppl.from_numpyro(blocked_model, y)
    # numpyro's log_density does not see the hidden site: no latent, no term
    assert ld.latent_names == ("mu",)
    assert "x" not in ld.sites and "x_seen" in ld.sites
    seeded = numpyro.handlers.seed(blocked_model, 0)
    for mu in (-0.7, 0.0, 1.3):
        expected, _ = numpyro_log_density(seeded, (y,), {}, {"mu": jnp.asarray(mu)})
        np.testing.assert_allclose(ld(jnp.array([mu])), expected, rtol=1e-6)
    # its value is a prior draw with a fixed key: the same at every theta
    assert ld.constrain(jnp.array([0.1]))["x_seen"] == ld.constrain(jnp.array([2.0]))["x_seen"]
    samples = run_nuts(ld)
    assert np.ptp(np.asarray(samples["x_seen"])) == 0.0


# ---------------------------------------------------------------------- NumPy on the data


def ucbadmit_like(dept, male, applications, admit=None):
    num_depts = len(np.unique(dept))  # NumPy on an array argument: needs its values
    num_levels = int(np.max(male)) + 1
    b_male = numpyro.sample("b_male", dist.Normal(0.0, 1.0).expand([num_levels]).to_event(1))
    with numpyro.plate("dept", num_depts):
        a = numpyro.sample("a", dist.Normal(0.0, 2.0))
    logits = a[dept] + b_male[male]
    with numpyro.plate("obs", dept.shape[0]):
        numpyro.sample("admit", dist.Binomial(applications, logits=logits), obs=admit)


UCB = {
    "dept": np.array([0, 0, 1, 1, 2, 2], np.int32),
    "male": np.array([1, 0, 1, 0, 1, 0], np.int32),
    "applications": np.array([825, 108, 560, 25, 325, 593], np.int32),
    "admit": np.array([512, 89, 353, 17, 120, 202], np.int32),
}


def test_numpy_on_array_arguments_keeps_just_them_concrete():
    ld = ppl.from_numpyro(ucbadmit_like, **UCB)
    # dept and male are compiled in; applications and admit stay traced inputs
    assert ld.concrete_arguments == ("dept", "male")
    assert len(ld.data_tree()["args"]) == 2
    samples = run_nuts(ld)
    assert samples["a"].shape == (50, 3)
    assert samples["b_male"].shape == (50, 2)


def test_model_without_numpy_on_its_data_keeps_the_fast_path():
    def model(x, y):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        with numpyro.plate("obs", x.shape[0]):
            numpyro.sample("y", dist.Normal(w * x, 1.0), obs=y)

    ld = ppl.from_numpyro(model, jnp.arange(4.0), jnp.ones(4))
    assert ld.concrete_arguments == ()
    assert ld.layout_key() is not None
    assert len(ld.data_tree()["args"]) == 2


def test_numpy_on_a_latent_value_says_what_happened():
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        scale = 1.0 if float(mu) > 0 else 2.0  # needs the latent's value
        numpyro.sample("y", dist.Normal(mu, scale), obs=y)

    ld = ppl.from_numpyro(model, jnp.ones(3))
    assert jnp.isfinite(ld(jnp.array([0.5])))  # evaluated eagerly it works
    with pytest.raises(TypeError, match="even with its array arguments held fixed"):
        ld.init(jax.random.PRNGKey(0))


# ---------------------------------------------------------------------- set-up run


def overflowing_model():
    # a small prior draw of `length` overflows `jnp.exp` and makes `loc` NaN (as in
    # NumPyro's examples/hsgp.py), which numpyro's argument validation refuses
    length = numpyro.sample("length", dist.HalfNormal(0.2))
    big = jnp.exp(length**-2)
    numpyro.sample("z", dist.Normal(big - big, 1.0))


def test_prototype_run_survives_an_unlucky_prior_draw():
    lengths = [
        float(ppl.from_numpyro(overflowing_model, rng_seed=s).prototype_trace["length"]["value"])
        for s in range(8)
    ]
    # some seeds fell back on the point of unconstrained zeros (length 1); the others
    # kept their prior draw
    assert 1.0 in lengths
    assert len(set(lengths)) > 1


def test_prototype_run_still_reports_a_broken_model():
    def model():
        numpyro.sample("z", dist.Normal(0.0, -1.0))

    with pytest.raises(ValueError, match="invalid scale") as info:
        ppl.from_numpyro(model)
    assert any("failed too" in note for note in info.value.__notes__)


def test_from_numpyro_rng_seed_is_not_passed_to_the_model():
    def model(y, subsample_size=2):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("obs", y.shape[0], subsample_size=subsample_size) as idx:
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y[idx])

    y = jnp.arange(20.0)
    indices = {
        s: tuple(np.asarray(ppl.from_numpyro(model, y, rng_seed=s).fixed_values["obs"]))
        for s in (0, 0, 3)
    }
    assert len(set(indices.values())) == 2

    def seeded_model(rng_seed):
        numpyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(TypeError, match="argument named 'rng_seed'"):
        ppl.from_numpyro(seeded_model, rng_seed=1)


# ---------------------------------------------------------------------- params


def test_float_params_in_mcmc():
    def numpyro_model(y):
        s = numpyro.param("s", 1.0)
        mu = numpyro.sample("mu", dist.Normal(0.0, s))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    def ppl_model(y):
        s = ppl.param("s", 1.0)
        mu = ppl.sample("mu", dist.Normal(0.0, s))
        ppl.sample("y", dist.Normal(mu, 1.0), obs=y)

    y = jnp.array([0.3, 0.1])
    assert run_nuts(ppl.from_numpyro(numpyro_model, y))["mu"].shape == (50,)
    assert run_nuts(ppl_model, y)["mu"].shape == (50,)


# ---------------------------------------------------------------------- decorators


def test_handlers_made_without_fn_decorate():
    reparam = ppl.handlers.reparam(config={"theta": LocScaleReparam(0)})

    @reparam
    def model():
        ppl.sample("theta", dist.Normal(1.0, 2.0))

    @ppl.handlers.seed(rng_seed=0)
    def seeded():
        return ppl.sample("x", dist.Normal(0.0, 1.0))

    tr = ppl.handlers.trace(ppl.handlers.seed(model, rng_seed=0)).get_trace()
    assert sorted(tr) == ["theta", "theta_decentered"]
    assert reparam.fn is None  # the decorator wrapped a copy
    assert seeded() == seeded()
    assert ppl.logdensity(model).latent_names == ("theta_decentered",)
    with pytest.raises(TypeError, match="created without a function"):
        reparam(1.0)
    with pytest.raises(TypeError, match="created without a function"):
        reparam(model, 2)


def test_numpyro_reparam_decorator_inside_from_numpyro():
    @numpyro.handlers.reparam(config={"theta": NumPyroLocScaleReparam(0)})
    def model(y):
        tau = numpyro.sample("tau", dist.HalfNormal(1.0))
        with numpyro.plate("obs", y.shape[0]):
            theta = numpyro.sample("theta", dist.Normal(0.0, tau))
            numpyro.sample("y", dist.Normal(theta, 1.0), obs=y)

    ld = ppl.from_numpyro(model, jnp.array([0.5, -1.0, 2.0]))
    assert ld.latent_names == ("tau", "theta_decentered")
    assert run_nuts(ld)["theta"].shape == (50, 3)


def test_numpyro_module_network_params():
    # numpyro.module looks its params up (no value) before it initializes them, and the
    # params are a pytree of the network's weights (NumPyro's examples/vae.py)
    from jax.example_libraries import stax

    def model(batch, hidden_dim=4, z_dim=2):
        batch_dim, out_dim = jnp.shape(batch)
        decoder = stax.serial(stax.Dense(hidden_dim), stax.Relu, stax.Dense(out_dim))
        decode = numpyro.module("decoder", decoder, (batch_dim, z_dim))
        with numpyro.plate("batch", batch_dim):
            z = numpyro.sample("z", dist.Normal(0, 1).expand([z_dim]).to_event(1))
            numpyro.sample("obs", dist.Bernoulli(logits=decode(z)).to_event(1), obs=batch)

    batch = jnp.asarray(np.random.default_rng(0).random((3, 5)) < 0.5, jnp.float32)
    ld = ppl.from_numpyro(model, batch)
    assert ld.latent_names == ("z",)
    assert ld.sites["decoder$params"].kind == "param"
    weights = ld.fixed_values["decoder$params"]
    assert jax.tree.leaves(weights)[0].shape == (2, 4)
    assert run_nuts(ld)["z"].shape == (50, 3, 2)


def test_concrete_arguments_named_through_a_decorated_model():
    @numpyro.handlers.reparam(config={"a": NumPyroLocScaleReparam(0)})
    def model(group, y):
        with numpyro.plate("groups", len(np.unique(group))):
            a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(a[group], 1.0), obs=y)

    ld = ppl.from_numpyro(model, np.array([0, 1, 1], np.int32), jnp.zeros(3))
    assert ld.concrete_arguments == ("group",)


def test_concrete_arguments_cannot_be_sharded():
    from ppl.infer import make_mesh
    from ppl.infer.driver import sharding

    ld = ppl.from_numpyro(ucbadmit_like, **UCB)
    mesh = make_mesh(chains=1, data=1)
    shardings = sharding.data_shardings(ld, ld.data_tree(), ("applications", "admit"), mesh)
    assert len(shardings["args"]) == len(ld.data_tree()["args"]) == 2
    with pytest.raises(ValueError, match=r"argument .dept.*compiled in"):
        sharding.data_shardings(ld, ld.data_tree(), ("dept",), mesh)
