"""Tests for ppl.infer.results.datatree: the DataTree builders, called as their users call them."""

import jax
import jax.numpy as jnp
import numpy as np

import ppl
import ppl.distributions as dist
from ppl.infer.results.datatree import add_group, draws_to_datatree, observed_data, vi_datatree


def model(y):
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    with ppl.plate("obs", y.shape[0]):
        ppl.sample("y", dist.Normal(mu, 1.0), obs=y)


Y = jnp.array([0.5, -0.2, 1.1])


def _draws(ld, n):
    thetas = jax.random.normal(jax.random.key(0), (n, ld.dim))
    return {k: np.asarray(v) for k, v in jax.vmap(ld.constrain)(thetas).items()}


def test_draws_to_datatree_groups_and_plate_dims():
    ld = ppl.logdensity(model, Y)
    posterior = {k: v.reshape(2, 5, *v.shape[1:]) for k, v in _draws(ld, 10).items()}
    tree = draws_to_datatree(ld, posterior, coords={"obs": ["a", "b", "c"]})
    assert sorted(tree.children) == ["log_likelihood", "observed_data", "posterior"]
    assert tree["log_likelihood"]["y"].dims == ("chain", "draw", "obs")
    assert list(tree["observed_data"]["y"].coords["obs"].values) == ["a", "b", "c"]
    np.testing.assert_array_equal(observed_data(ld)["y"], np.asarray(Y))
    only_observed = draws_to_datatree(ld, posterior, pointwise_log_likelihood=False)
    assert sorted(only_observed.children) == ["observed_data", "posterior"]
    assert sorted(draws_to_datatree(ld, posterior, observed=False).children) == ["posterior"]


def test_vi_datatree_and_add_group_as_the_command_line_calls_them():
    ld = ppl.logdensity(model, Y)
    samples = _draws(ld, 40)
    # positional dims and coords, as ppl.runs.pipelines passes them
    tree = vi_datatree(ld, samples, np.arange(7.0), ("step",), 0.3, None, None)
    assert sorted(tree.children) == ["optimization", "posterior"]
    assert tree["posterior"]["mu"].shape == (1, 40)
    assert tree["optimization"]["loss"].dims == ("step",)
    assert tree.attrs["ppl_pareto_k"] == 0.3
    add_group(tree, "posterior_predictive", {"y": np.zeros((1, 40, 3))}, ld, None, None)
    assert tree["posterior_predictive"]["y"].dims == ("chain", "draw", "obs")
