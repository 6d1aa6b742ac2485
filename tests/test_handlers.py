"""Effect-handler semantics (after Pyro's and NumPyro's test_handlers.py).

Covers trace, seed, condition / substitute, block, replay, scale, mask, do and
reparam, their composition, the Messenger protocol and the cleanup of the
handler stack after an exception.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
import ppl.distributions as dist
from ppl import runtime
from ppl.handlers import (
    Messenger,
    block,
    condition,
    do,
    mask,
    reparam,
    replay,
    scale,
    seed,
    substitute,
    trace,
)
from ppl.reparam import LocScaleReparam
from ppl.runtime import CondIndepStackFrame

Y = jnp.array([0.5, -1.0, 2.0])


def chain():
    """x -> y -> z, all latent; returns the three values."""
    x = ppl.sample("x", dist.Normal(0.0, 1.0))
    y = ppl.sample("y", dist.Normal(x, 1.0))
    z = ppl.sample("z", dist.Normal(y, 1.0))
    return x, y, z


def regression(data=Y):
    """A latent, a positive latent, a deterministic and a plate of observations."""
    mu = ppl.sample("mu", dist.Normal(0.0, 2.0))
    sigma = ppl.sample("sigma", dist.HalfNormal(1.0))
    shifted = ppl.deterministic("shifted", mu + 1.0)
    with ppl.plate("data", data.shape[0]):
        ppl.sample("obs", dist.Normal(shifted, sigma), obs=data)
    return mu


def get_trace(model, *args, rng_seed=0, **kwargs):
    return trace(seed(model, rng_seed=rng_seed)).get_trace(*args, **kwargs)


@pytest.fixture(autouse=True)
def _clean_handler_stack():
    """Every test starts and must end with an empty handler stack."""
    runtime.handler_stack().clear()
    yield
    leftover = list(runtime.handler_stack())
    runtime.handler_stack().clear()
    assert leftover == [], f"handlers left on the stack after the test: {leftover}"


# ---------------------------------------------------------------------- trace


def test_trace_records_sites_in_order_with_fields():
    tr = get_trace(regression)
    assert list(tr) == ["mu", "sigma", "shifted", "data", "obs"]
    assert [tr[n]["type"] for n in tr] == [
        "sample",
        "sample",
        "deterministic",
        "plate",
        "sample",
    ]
    mu = tr["mu"]
    assert mu["name"] == "mu"
    assert isinstance(mu["fn"], dist.Normal)
    assert mu["is_observed"] is False
    assert mu["scale"] is None and mu["mask"] is None
    assert mu["cond_indep_stack"] == []
    assert jnp.shape(mu["value"]) == ()

    obs = tr["obs"]
    assert obs["is_observed"] is True
    np.testing.assert_array_equal(obs["value"], Y)
    assert obs["cond_indep_stack"] == [CondIndepStackFrame("data", -1, 3)]
    assert obs["fn"].batch_shape == (3,)
    np.testing.assert_allclose(tr["shifted"]["value"], mu["value"] + 1.0)
    np.testing.assert_array_equal(tr["data"]["value"], jnp.arange(3))


def test_trace_get_trace_passes_args_and_kwargs():
    tr = get_trace(regression, data=jnp.zeros(5))
    assert tr["obs"]["value"].shape == (5,)
    tr = get_trace(regression, jnp.zeros(2))
    assert tr["obs"]["value"].shape == (2,)


def test_trace_as_context_manager_and_fresh_on_each_run():
    with seed(rng_seed=0), trace() as tr:
        chain()
    assert list(tr) == ["x", "y", "z"]

    tracer = trace(seed(chain, rng_seed=0))
    first = tracer.get_trace()
    second = tracer.get_trace()
    assert list(second) == ["x", "y", "z"]  # no duplicate-name error: a new trace per run
    assert first is not second


def test_trace_value_matches_returned_value():
    tracer = trace(seed(chain, rng_seed=3))
    x, y, z = tracer()
    tr = tracer.trace
    for name, value in zip("xyz", (x, y, z), strict=True):
        np.testing.assert_array_equal(tr[name]["value"], value)


# ---------------------------------------------------------------------- seed


def test_seed_same_seed_same_draws_and_different_seeds_differ():
    a = seed(chain, rng_seed=0)()
    b = seed(chain, rng_seed=0)()
    c = seed(chain, rng_seed=1)()
    np.testing.assert_array_equal(jnp.stack(a), jnp.stack(b))
    assert not np.allclose(jnp.stack(a), jnp.stack(c))


def test_seed_key_resets_each_call():
    seeded = seed(chain, rng_seed=0)
    np.testing.assert_array_equal(jnp.stack(seeded()), jnp.stack(seeded()))

    handler = seed(rng_seed=0)
    with handler:
        first = chain()
    with handler:
        second = chain()
    np.testing.assert_array_equal(jnp.stack(first), jnp.stack(second))


def test_seed_different_sites_get_different_keys():
    def model():
        a = ppl.sample("a", dist.Normal(0.0, 1.0))
        b = ppl.sample("b", dist.Normal(0.0, 1.0))
        return a, b

    tr = get_trace(model)
    assert float(tr["a"]["value"]) != float(tr["b"]["value"])
    key_a, key_b = tr["a"]["kwargs"]["rng_key"], tr["b"]["kwargs"]["rng_key"]
    assert not np.array_equal(jax.random.key_data(key_a), jax.random.key_data(key_b))


def test_seed_context_manager_equals_wrapper():
    wrapped = seed(chain, rng_seed=7)()
    with seed(rng_seed=7):
        managed = chain()
    np.testing.assert_array_equal(jnp.stack(wrapped), jnp.stack(managed))


@pytest.mark.parametrize(
    "rng_seed",
    [
        0,
        np.int32(0),
        jax.random.PRNGKey(0),
        jax.random.key(0),
    ],
    ids=["int", "numpy-int", "PRNGKey", "typed-key"],
)
def test_seed_accepts_int_or_key(rng_seed):
    expected = seed(chain, rng_seed=0)()
    got = seed(chain, rng_seed=rng_seed)()
    np.testing.assert_array_equal(jnp.stack(got), jnp.stack(expected))


def test_seed_under_jit_and_vmap():
    eager = jnp.stack(seed(chain, rng_seed=jax.random.PRNGKey(4))())
    jitted = jax.jit(lambda k: jnp.stack(seed(chain, rng_seed=k)()))(jax.random.PRNGKey(4))
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    draws = jax.vmap(lambda k: jnp.stack(seed(chain, rng_seed=k)()))(keys)
    assert draws.shape == (3, 3)
    assert len(np.unique(np.asarray(draws[:, 0]))) == 3


def test_seed_requires_rng_seed():
    with pytest.raises(ValueError, match="rng_seed"):
        seed(chain)


def test_nested_seed_innermost_wins():
    inner_only = seed(chain, rng_seed=1)()
    nested = seed(seed(chain, rng_seed=1), rng_seed=0)()
    np.testing.assert_array_equal(jnp.stack(nested), jnp.stack(inner_only))


def test_seed_does_not_spend_keys_on_sites_with_values():
    def latent_only():
        return ppl.sample("x", dist.Normal(0.0, 1.0))

    def with_observed_first():
        ppl.sample("y", dist.Normal(0.0, 1.0), obs=1.0)
        ppl.deterministic("d", 2.0)
        ppl.param("p", jnp.ones(2))
        with ppl.plate("full", 4):  # not subsampled: needs no key
            pass
        return ppl.sample("x", dist.Normal(0.0, 1.0))

    assert float(seed(latent_only, rng_seed=0)()) == float(seed(with_observed_first, rng_seed=0)())


# ---------------------------------------------------------------------- condition / substitute


def test_condition_makes_site_observed_and_changes_value():
    conditioned = condition(seed(chain, rng_seed=0), data={"y": 3.0})
    tr = trace(conditioned).get_trace()
    assert tr["y"]["is_observed"] is True
    assert float(tr["y"]["value"]) == 3.0
    assert tr["x"]["is_observed"] is False and tr["z"]["is_observed"] is False
    # downstream z is drawn around the conditioned y
    _, y, _ = conditioned()
    assert float(y) == 3.0
    assert float(tr["z"]["fn"].loc) == 3.0


def test_substitute_keeps_site_latent_and_changes_value():
    substituted = substitute(seed(chain, rng_seed=0), data={"y": 3.0})
    tr = trace(substituted).get_trace()
    assert tr["y"]["is_observed"] is False
    assert float(tr["y"]["value"]) == 3.0
    assert float(tr["z"]["fn"].loc) == 3.0
    assert float(substituted()[1]) == 3.0


def test_condition_counts_as_likelihood_substitute_as_latent():
    def model():
        x = ppl.sample("x", dist.Normal(0.0, 1.0))
        ppl.sample("y", dist.Normal(x, 2.0))

    cond = ppl.logdensity(condition(model, data={"y": 1.5}))
    subs = ppl.logdensity(substitute(model, data={"y": 1.5}))
    assert cond.sites["y"].kind == "observed" and cond.dim == 1
    assert subs.sites["y"].kind == "latent" and subs.dim == 2

    x = 0.3
    expected = dist.Normal(0.0, 1.0).log_prob(x) + dist.Normal(x, 2.0).log_prob(1.5)
    np.testing.assert_allclose(cond(jnp.array([x])), expected, rtol=1e-6)


def test_condition_matches_obs_keyword():
    def with_obs(y):
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        with ppl.plate("data", 3):
            ppl.sample("y", dist.Normal(mu, 1.0), obs=y)

    ld_obs = ppl.logdensity(with_obs, Y)
    ld_cond = ppl.logdensity(condition(with_obs, data={"y": Y}), None)
    theta = jnp.array([0.7])
    np.testing.assert_allclose(ld_cond(theta), ld_obs(theta), rtol=1e-6)


def test_condition_fn_and_substitute_fn():
    def by_name(msg):
        return 2.0 if msg["name"] == "x" else None

    tr_c = trace(condition(seed(chain, rng_seed=0), condition_fn=by_name)).get_trace()
    tr_s = trace(substitute(seed(chain, rng_seed=0), substitute_fn=by_name)).get_trace()
    assert float(tr_c["x"]["value"]) == 2.0 and tr_c["x"]["is_observed"] is True
    assert float(tr_s["x"]["value"]) == 2.0 and tr_s["x"]["is_observed"] is False
    assert tr_c["y"]["is_observed"] is False and tr_s["y"]["is_observed"] is False


def test_substitute_fn_sees_every_site_type():
    seen = []

    def record(msg):
        seen.append((msg["type"], msg["name"]))

    def model():
        ppl.param("p", 1.0)
        with ppl.plate("N", 2):
            ppl.sample("x", dist.Normal(0.0, 1.0))

    substitute(seed(model, rng_seed=0), substitute_fn=record)()
    assert seen == [("param", "p"), ("plate", "N"), ("sample", "x")]


def test_substitute_does_not_touch_observed_or_deterministic_sites():
    def model():
        x = ppl.sample("x", dist.Normal(0.0, 1.0), obs=0.25)
        return x, ppl.deterministic("d", x + 1.0)

    tr = trace(substitute(model, data={"x": 9.0, "d": 9.0})).get_trace()
    assert float(tr["x"]["value"]) == 0.25 and tr["x"]["is_observed"] is True
    assert float(tr["d"]["value"]) == 1.25


def test_substitute_param_site():
    def model():
        return ppl.param("p", jnp.ones(2))

    np.testing.assert_array_equal(substitute(model, data={"p": jnp.zeros(2)})(), jnp.zeros(2))


def test_condition_ignores_param_and_deterministic_sites():
    def model():
        p = ppl.param("p", 1.0)
        return p, ppl.deterministic("d", 2.0)

    tr = trace(condition(model, data={"p": 5.0, "d": 5.0})).get_trace()
    assert float(tr["p"]["value"]) == 1.0 and float(tr["d"]["value"]) == 2.0


def test_condition_overrides_obs():
    def model():
        return ppl.sample("x", dist.Normal(0.0, 1.0), obs=0.0)

    assert float(condition(model, data={"x": 4.0})()) == 4.0


@pytest.mark.parametrize("handler", [condition, substitute])
def test_condition_substitute_need_exactly_one_source(handler):
    with pytest.raises(ValueError, match="exactly one"):
        handler(chain)
    with pytest.raises(ValueError, match="exactly one"):
        handler(chain, {"x": 1.0}, lambda msg: None)


def test_conditioned_value_outside_support_names_site():
    def model():
        ppl.sample("k", dist.Poisson(2.0))

    with pytest.raises(ValueError, match=r"site 'k'.*support"):
        condition(model, data={"k": -1})()


# ---------------------------------------------------------------------- block


@pytest.mark.parametrize(
    "kwargs, visible",
    [
        ({"hide": ["y", "N"]}, ["x", "z", "d"]),
        ({"expose": ["y"]}, ["y"]),
        ({"hide_fn": lambda msg: msg["type"] == "sample"}, ["d", "N"]),
        ({"expose_types": ["sample"]}, ["x", "y", "z"]),
        ({}, []),
    ],
    ids=["hide", "expose", "hide_fn", "expose_types", "everything"],
)
def test_block_hides_sites_from_outer_trace_only(kwargs, visible):
    def model():
        chain()
        ppl.deterministic("d", 1.0)
        with ppl.plate("N", 2):
            pass

    with trace() as outer, block(**kwargs), trace() as inner, seed(rng_seed=0):
        model()
    assert list(outer) == visible
    assert list(inner) == ["x", "y", "z", "d", "N"]


def test_block_as_wrapper_keeps_values_flowing():
    blocked = block(seed(chain, rng_seed=0), hide=["x"])
    tr = trace(blocked).get_trace()
    assert list(tr) == ["y", "z"]
    x, y, _ = seed(chain, rng_seed=0)()
    np.testing.assert_array_equal(tr["y"]["value"], y)
    np.testing.assert_array_equal(tr["y"]["fn"].loc, x)


def test_block_hides_from_outer_handlers_that_change_values():
    # a blocked site does not see an outer substitute
    model = substitute(block(seed(chain, rng_seed=0), hide=["x"]), data={"x": 5.0, "y": 6.0})
    x, y, _ = model()
    assert float(x) != 5.0
    assert float(y) == 6.0


# ---------------------------------------------------------------------- replay


def guide():
    ppl.sample("x", dist.Normal(10.0, 0.1))
    ppl.sample("y", dist.Normal(-10.0, 0.1))


def test_replay_reuses_guide_latent_values():
    guide_tr = get_trace(guide, rng_seed=1)
    tr = trace(replay(seed(chain, rng_seed=0), trace=guide_tr)).get_trace()
    for name in ("x", "y"):
        np.testing.assert_array_equal(tr[name]["value"], guide_tr[name]["value"])
        assert tr[name]["is_observed"] is False
        assert isinstance(tr[name]["fn"], dist.Normal)  # the model's distribution is kept
    np.testing.assert_array_equal(tr["y"]["fn"].loc, guide_tr["x"]["value"])
    # z is not in the guide: drawn from the model around the replayed y
    assert abs(float(tr["z"]["value"]) - float(guide_tr["y"]["value"])) < 6.0


def test_replay_does_not_replay_observed_sites():
    guide_tr = get_trace(guide, rng_seed=1)

    def model():
        x = ppl.sample("x", dist.Normal(0.0, 1.0))
        return x, ppl.sample("y", dist.Normal(x, 1.0), obs=0.5)

    x, y = replay(model, trace=guide_tr)()
    np.testing.assert_array_equal(x, guide_tr["x"]["value"])
    assert float(y) == 0.5


def test_replay_of_conditioned_model_keeps_observation():
    guide_tr = get_trace(guide, rng_seed=1)
    model = condition(replay(seed(chain, rng_seed=0), trace=guide_tr), data={"y": 0.5})
    tr = trace(model).get_trace()
    assert float(tr["y"]["value"]) == 0.5 and tr["y"]["is_observed"] is True
    np.testing.assert_array_equal(tr["x"]["value"], guide_tr["x"]["value"])


def test_replay_subsample_indices():
    def model():
        with ppl.plate("N", 100, subsample_size=5) as idx:
            ppl.sample("x", dist.Normal(0.0, 1.0))
        return idx

    first = get_trace(model, rng_seed=0)
    again = trace(replay(seed(model, rng_seed=123), trace=first)).get_trace()
    np.testing.assert_array_equal(again["N"]["value"], first["N"]["value"])
    np.testing.assert_array_equal(again["x"]["value"], first["x"]["value"])


def test_replay_site_type_mismatch_raises():
    def plate_named_x():
        with ppl.plate("x", 2):
            pass

    with pytest.raises(ValueError, match="site 'x'"):
        replay(seed(chain, rng_seed=0), trace=get_trace(plate_named_x))()


def test_replay_requires_trace():
    with pytest.raises(ValueError, match="trace"):
        replay(chain)


# ---------------------------------------------------------------------- scale / mask


def test_scale_is_recorded_on_sample_sites_only():
    def model():
        ppl.sample("x", dist.Normal(0.0, 1.0))
        ppl.deterministic("d", 1.0)
        ppl.param("p", 1.0)

    tr = get_trace(scale(model, scale=3.0))
    assert tr["x"]["scale"] == 3.0
    assert tr["d"]["scale"] is None and tr["p"]["scale"] is None


def test_nested_scales_multiply():
    def model():
        with scale(scale=2.0):
            ppl.sample("a", dist.Normal(0.0, 1.0))
            with scale(scale=3.0):
                ppl.sample("b", dist.Normal(0.0, 1.0))
        ppl.sample("c", dist.Normal(0.0, 1.0))

    tr = get_trace(scale(model, scale=5.0))
    assert tr["a"]["scale"] == pytest.approx(10.0)
    assert tr["b"]["scale"] == pytest.approx(30.0)
    assert tr["c"]["scale"] == pytest.approx(5.0)


def test_scale_multiplies_subsample_scale():
    def model():
        with ppl.plate("N", 10, subsample_size=5):
            ppl.sample("x", dist.Normal(0.0, 1.0))

    assert get_trace(scale(model, scale=3.0))["x"]["scale"] == pytest.approx(6.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, jnp.array([1.0, 0.0])], ids=["zero", "neg", "array"])
def test_scale_rejects_non_positive(bad):
    with pytest.raises(ValueError, match="positive"):
        scale(chain, scale=bad)


def test_scale_accepts_traced_value():
    def scaled_log_density(s):
        return ppl.logdensity(scale(chain, scale=s))(jnp.zeros(3))

    base = ppl.logdensity(chain)(jnp.zeros(3))
    np.testing.assert_allclose(jax.jit(scaled_log_density)(2.0), 2 * base, rtol=1e-6)


def test_mask_is_recorded_and_nested_masks_and():
    m1 = jnp.array([True, True, False])
    m2 = jnp.array([True, False, True])

    def model():
        with ppl.plate("N", 3), mask(mask=m1):
            ppl.sample("a", dist.Normal(0.0, 1.0))
            with mask(mask=m2):
                ppl.sample("b", dist.Normal(0.0, 1.0))
        ppl.sample("c", dist.Normal(0.0, 1.0))

    tr = get_trace(model)
    np.testing.assert_array_equal(tr["a"]["mask"], m1)
    np.testing.assert_array_equal(tr["b"]["mask"], m1 & m2)
    assert tr["c"]["mask"] is None

    tr = get_trace(mask(model, mask=False))
    np.testing.assert_array_equal(tr["b"]["mask"], jnp.zeros(3, bool))
    assert not bool(tr["c"]["mask"])


def test_mask_rejects_non_boolean():
    with pytest.raises(TypeError, match="boolean"):
        mask(chain, mask=jnp.array([1.0, 0.0]))


def test_scale_doubles_log_density():
    ld = ppl.logdensity(regression)
    ld2 = ppl.logdensity(scale(regression, scale=2.0))
    for theta in (jnp.array([0.3, -0.2]), jnp.array([-1.0, 1.5])):
        np.testing.assert_allclose(ld2(theta), 2.0 * ld(theta), rtol=1e-6)


def test_scale_of_one_site_in_log_density():
    def model(s):
        x = ppl.sample("x", dist.Normal(0.0, 1.0))
        with scale(scale=s):
            ppl.sample("y", dist.Normal(x, 1.0), obs=2.0)

    theta = jnp.array([0.5])
    lp_x = dist.Normal(0.0, 1.0).log_prob(0.5)
    lp_y = dist.Normal(0.5, 1.0).log_prob(2.0)
    np.testing.assert_allclose(ppl.logdensity(model, 4.0)(theta), lp_x + 4.0 * lp_y, rtol=1e-6)


def test_masked_site_contributes_nothing():
    def model(keep):
        x = ppl.sample("x", dist.Normal(0.0, 1.0))
        with mask(mask=keep):
            ppl.sample("y", dist.Normal(x, 1.0), obs=2.0)

    theta = jnp.array([0.5])
    lp_x = dist.Normal(0.0, 1.0).log_prob(0.5)
    lp_y = dist.Normal(0.5, 1.0).log_prob(2.0)
    np.testing.assert_allclose(ppl.logdensity(model, False)(theta), lp_x, rtol=1e-6)
    np.testing.assert_allclose(ppl.logdensity(model, True)(theta), lp_x + lp_y, rtol=1e-6)


def test_masked_latent_contributes_nothing_including_jacobian():
    def model():
        with mask(mask=False):
            ppl.sample("s", dist.HalfNormal(1.0))

    ld = ppl.logdensity(model)
    assert ld.dim == 1
    np.testing.assert_allclose(ld(jnp.array([0.7])), 0.0)


def test_mask_array_in_plate_log_density():
    keep = jnp.array([True, False, True])

    def model():
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        with ppl.plate("data", 3), mask(mask=keep):
            ppl.sample("y", dist.Normal(mu, 1.0), obs=Y)

    theta = jnp.array([0.2])
    expected = dist.Normal(0.0, 1.0).log_prob(0.2) + jnp.sum(
        jnp.where(keep, dist.Normal(0.2, 1.0).log_prob(Y), 0.0)
    )
    np.testing.assert_allclose(ppl.logdensity(model)(theta), expected, rtol=1e-6)


# ---------------------------------------------------------------------- do


def test_do_intervention_flows_downstream_original_still_sampled():
    intervened = do(seed(chain, rng_seed=0), data={"y": 7.0})
    _, y, _ = intervened()
    assert float(y) == 7.0

    tr = trace(intervened).get_trace()
    assert list(tr) == ["x", "y", "z"]
    # the original site is still drawn, from its own distribution, and stays latent
    assert tr["y"]["is_observed"] is False
    assert float(tr["y"]["value"]) != 7.0
    np.testing.assert_array_equal(tr["y"]["fn"].loc, tr["x"]["value"])
    # downstream sees the intervention value
    assert float(tr["z"]["fn"].loc) == 7.0


def test_do_counterfactual_site_hidden_from_outer_trace_only():
    with trace() as outer, do(data={"y": 7.0}), trace() as inner, seed(rng_seed=0):
        chain()
    assert "y__CF" not in outer
    assert inner["y__CF"]["is_observed"] is True
    assert float(inner["y__CF"]["value"]) == 7.0


def test_do_in_log_density():
    ld = ppl.logdensity(do(chain, data={"y": 7.0}))
    assert ld.latent_names == ("x", "y", "z") and "y__CF" not in ld.sites
    x, y, z = 0.1, 0.2, 0.3
    expected = (
        dist.Normal(0.0, 1.0).log_prob(x)
        + dist.Normal(x, 1.0).log_prob(y)
        + dist.Normal(7.0, 1.0).log_prob(z)
    )
    np.testing.assert_allclose(ld(jnp.array([x, y, z])), expected, rtol=1e-6)


def test_do_site_inside_plate():
    # BUG: do re-sends the site through the whole handler stack, so an enclosing
    # plate sees the site twice and raises "plate 'N' is nested inside itself".
    def model():
        with ppl.plate("N", 3):
            x = ppl.sample("x", dist.Normal(0.0, 1.0))
        return ppl.sample("total", dist.Normal(x.sum(), 1.0))

    try:
        tr = trace(do(seed(model, rng_seed=0), data={"x": jnp.ones(3)})).get_trace()
    except ValueError as err:
        pytest.fail(f"do() of a site inside a plate must work, but raised: {err}")
    assert tr["x"]["value"].shape == (3,)
    assert tr["x"]["cond_indep_stack"] == [CondIndepStackFrame("N", -1, 3)]
    assert float(tr["total"]["fn"].loc) == 3.0


def test_do_does_not_apply_inner_scale_twice():
    # BUG: do re-sends the site through the handlers inside it, so an inner
    # scale (or a subsampling plate) multiplies the site's scale a second time.
    def model():
        with scale(scale=3.0):
            x = ppl.sample("x", dist.Normal(0.0, 1.0))
        return ppl.sample("y", dist.Normal(x, 1.0))

    tr = trace(do(seed(model, rng_seed=0), data={"x": 1.0})).get_trace()
    assert tr["x"]["scale"] == pytest.approx(3.0), (
        f"site 'x' is scaled by 3 inside the model but do() recorded scale "
        f"{tr['x']['scale']}: the inner scale handler was applied twice"
    )


def test_do_requires_data():
    with pytest.raises(ValueError, match="data"):
        do(chain)


# ---------------------------------------------------------------------- reparam


def test_loc_scale_reparam_creates_decentered_site():
    def model():
        return ppl.sample("x", dist.Normal(1.0, 2.0))

    tracer = trace(seed(reparam(model, config={"x": LocScaleReparam()}), rng_seed=0))
    value = tracer()
    tr = tracer.trace
    assert list(tr) == ["x_decentered", "x"]
    aux = tr["x_decentered"]
    assert aux["type"] == "sample" and aux["is_observed"] is False
    assert float(aux["fn"].loc) == 0.0 and float(aux["fn"].scale) == 1.0
    assert tr["x"]["type"] == "deterministic"
    np.testing.assert_allclose(tr["x"]["value"], 1.0 + 2.0 * aux["value"], rtol=1e-6)
    np.testing.assert_array_equal(value, tr["x"]["value"])


def test_loc_scale_reparam_centered_one_keeps_distribution():
    def model():
        return ppl.sample("x", dist.Normal(1.0, 2.0))

    tr = get_trace(reparam(model, config={"x": LocScaleReparam(centered=1.0)}))
    aux = tr["x_decentered"]
    assert float(aux["fn"].loc) == 1.0 and float(aux["fn"].scale) == 2.0
    np.testing.assert_allclose(tr["x"]["value"], aux["value"], rtol=1e-6)


def test_loc_scale_reparam_partially_centered():
    def model():
        return ppl.sample("x", dist.Normal(1.0, 4.0))

    tr = get_trace(reparam(model, config={"x": LocScaleReparam(centered=0.5)}))
    aux = tr["x_decentered"]
    assert float(aux["fn"].loc) == pytest.approx(0.5) and float(aux["fn"].scale) == 2.0
    # x = loc + scale^(1-c) * (aux - c * loc)
    np.testing.assert_allclose(tr["x"]["value"], 1.0 + 2.0 * (aux["value"] - 0.5), rtol=1e-6)


@pytest.mark.parametrize(
    "family",
    [
        lambda loc, s: dist.Normal(loc, s),
        lambda loc, s: dist.StudentT(3.0, loc, s),
        lambda loc, s: dist.Cauchy(loc, s),
        lambda loc, s: dist.Laplace(loc, s),
        lambda loc, s: dist.Logistic(loc, s),
        lambda loc, s: dist.Gumbel(loc, s),
    ],
    ids=["Normal", "StudentT", "Cauchy", "Laplace", "Logistic", "Gumbel"],
)
def test_loc_scale_reparam_supported_families(family):
    def model():
        return ppl.sample("x", family(1.5, 0.5))

    tr = get_trace(reparam(model, config={"x": LocScaleReparam()}))
    aux = tr["x_decentered"]
    assert type(aux["fn"]) is type(tr["x_decentered"]["fn"])
    assert float(aux["fn"].loc) == 0.0 and float(aux["fn"].scale) == 1.0
    np.testing.assert_allclose(tr["x"]["value"], 1.5 + 0.5 * aux["value"], rtol=1e-6)
    if isinstance(aux["fn"], dist.StudentT):
        assert float(aux["fn"].df) == 3.0


def test_loc_scale_reparam_inside_plates():
    loc = jnp.arange(4.0)

    def model():
        with ppl.plate("N", 4):
            return ppl.sample("x", dist.Normal(loc, 3.0))

    tr = get_trace(reparam(model, config={"x": LocScaleReparam()}))
    aux = tr["x_decentered"]
    assert aux["value"].shape == (4,) and aux["fn"].batch_shape == (4,)
    assert aux["cond_indep_stack"] == [CondIndepStackFrame("N", -1, 4)]
    assert tr["x"]["cond_indep_stack"] == [CondIndepStackFrame("N", -1, 4)]
    np.testing.assert_allclose(tr["x"]["value"], loc + 3.0 * aux["value"], rtol=1e-6)


def test_loc_scale_reparam_with_to_event_inside_plate():
    def model():
        with ppl.plate("N", 4):
            return ppl.sample("x", dist.Normal(1.0, 2.0).expand([3]).to_event(1))

    tr = get_trace(reparam(model, config={"x": LocScaleReparam()}))
    aux = tr["x_decentered"]
    assert aux["fn"].batch_shape == (4,) and aux["fn"].event_shape == (3,)
    assert aux["value"].shape == (4, 3)
    assert tr["x"]["value"].shape == (4, 3)
    np.testing.assert_allclose(tr["x"]["value"], 1.0 + 2.0 * aux["value"], rtol=1e-6)


def test_loc_scale_reparam_unsupported_family_names_site():
    def model():
        ppl.sample("sigma", dist.HalfNormal(1.0))

    with pytest.raises(TypeError, match=r"site 'sigma'.*HalfNormal"):
        seed(reparam(model, config={"sigma": LocScaleReparam()}), rng_seed=0)()


def test_loc_scale_reparam_refuses_observed_site():
    def model():
        ppl.sample("y", dist.Normal(0.0, 1.0), obs=1.0)

    with pytest.raises(ValueError, match="site 'y'"):
        reparam(model, config={"y": LocScaleReparam()})()


@pytest.mark.parametrize("centered", [-0.1, 1.5])
def test_loc_scale_reparam_rejects_bad_centered(centered):
    with pytest.raises(ValueError, match="centered"):
        LocScaleReparam(centered=centered)


def test_reparam_config_function():
    def config(msg):
        return LocScaleReparam() if msg["name"] == "y" else None

    tr = get_trace(reparam(chain, config=config))
    assert list(tr) == ["x", "y_decentered", "y", "z"]
    assert tr["x"]["type"] == "sample" and tr["y"]["type"] == "deterministic"
    np.testing.assert_array_equal(tr["z"]["fn"].loc, tr["y"]["value"])


def test_reparam_log_density():
    def model():
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        with ppl.plate("N", 2):
            ppl.sample("x", dist.Normal(mu, 2.0))

    ld = ppl.logdensity(reparam(model, config={"x": LocScaleReparam()}))
    assert ld.latent_names == ("mu", "x_decentered") and ld.sites["x"].kind == "deterministic"
    theta = jnp.array([0.5, -1.0, 2.0])
    expected = (
        dist.Normal(0.0, 1.0).log_prob(0.5)
        + dist.Normal(0.0, 1.0).log_prob(jnp.array([-1.0, 2.0])).sum()
    )
    np.testing.assert_allclose(ld(theta), expected, rtol=1e-6)
    np.testing.assert_allclose(
        ld.constrain(theta)["x"], 0.5 + 2.0 * jnp.array([-1.0, 2.0]), rtol=1e-6
    )


def test_reparam_requires_config():
    with pytest.raises(ValueError, match="config"):
        reparam(chain)


# ---------------------------------------------------------------------- composition


def test_seed_and_condition_commute():
    # the conditioned site and everything drawn before it agree whichever handler
    # is outermost; the log densities agree too
    def model():
        a = ppl.sample("a", dist.Normal(0.0, 1.0))
        ppl.sample("b", dist.Normal(a, 1.0))

    data = {"b": 0.3}
    t1 = trace(seed(condition(model, data=data), rng_seed=0)).get_trace()
    t2 = trace(condition(seed(model, rng_seed=0), data=data)).get_trace()
    assert list(t1) == list(t2)
    for name in t1:
        np.testing.assert_array_equal(t1[name]["value"], t2[name]["value"])
        assert t1[name]["is_observed"] == t2[name]["is_observed"]

    theta = jnp.array([0.4])
    np.testing.assert_allclose(
        ppl.logdensity(seed(condition(model, data=data), rng_seed=0))(theta),
        ppl.logdensity(condition(seed(model, rng_seed=0), data=data))(theta),
        rtol=1e-6,
    )


def test_seed_and_substitute_commute_on_substituted_values():
    t1 = trace(seed(substitute(chain, data={"z": 1.0}), rng_seed=0)).get_trace()
    t2 = trace(substitute(seed(chain, rng_seed=0), data={"z": 1.0})).get_trace()
    for name in "xyz":
        np.testing.assert_array_equal(t1[name]["value"], t2[name]["value"])


def test_trace_inside_or_outside_seed():
    outside = trace(seed(chain, rng_seed=0)).get_trace()
    inner = trace(chain)
    seed(inner, rng_seed=0)()
    for name in "xyz":
        np.testing.assert_array_equal(outside[name]["value"], inner.trace[name]["value"])


def test_scale_and_mask_commute():
    keep = jnp.array([True, False, True])

    def model():
        with ppl.plate("N", 3):
            ppl.sample("x", dist.Normal(0.0, 1.0))

    a = ppl.logdensity(scale(mask(model, mask=keep), scale=2.0))
    b = ppl.logdensity(mask(scale(model, scale=2.0), mask=keep))
    theta = jnp.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(a(theta), b(theta), rtol=1e-6)
    expected = 2.0 * dist.Normal(0.0, 1.0).log_prob(jnp.array([0.1, 0.3])).sum()
    np.testing.assert_allclose(a(theta), expected, rtol=1e-6)


def test_condition_and_substitute_order():
    # inner condition: the site is observed first, so the outer substitute leaves it alone
    tr = get_trace(substitute(condition(chain, data={"x": 1.0}), data={"x": 2.0}))
    assert float(tr["x"]["value"]) == 1.0 and tr["x"]["is_observed"] is True
    # inner substitute: the outer condition overrides the value and observes it
    tr = get_trace(condition(substitute(chain, data={"x": 2.0}), data={"x": 1.0}))
    assert float(tr["x"]["value"]) == 1.0 and tr["x"]["is_observed"] is True


# ---------------------------------------------------------------------- Messenger protocol


class Recorder(Messenger):
    """Appends (label, phase, site) to a shared log."""

    def __init__(self, log, label, fn=None, stop=False):
        self.log = log
        self.label = label
        self.stop = stop
        super().__init__(fn)

    def process_message(self, msg):
        self.log.append((self.label, "process", msg["name"]))
        if self.stop:
            msg["stop"] = True

    def postprocess_message(self, msg):
        self.log.append((self.label, "post", msg["name"]))


def test_messenger_dispatch_order():
    log = []

    def model():
        ppl.sample("x", dist.Normal(0.0, 1.0), obs=0.0)

    with Recorder(log, "outer"), Recorder(log, "inner"):
        model()
    assert log == [
        ("inner", "process", "x"),
        ("outer", "process", "x"),
        ("outer", "post", "x"),
        ("inner", "post", "x"),
    ]


def test_messenger_stop_hides_from_outer_handlers():
    log = []

    def model():
        ppl.sample("x", dist.Normal(0.0, 1.0), obs=0.0)

    with Recorder(log, "outer"), Recorder(log, "blocker", stop=True), Recorder(log, "inner"):
        model()
    assert [entry[0] for entry in log] == ["inner", "blocker", "blocker", "inner"]


def test_messenger_context_manager_and_wrapper():
    log_cm, log_wrap = [], []

    def model():
        return ppl.sample("x", dist.Normal(0.0, 1.0), obs=1.0)

    with Recorder(log_cm, "r") as handler:
        assert runtime.handler_stack() == [handler]
        model()
    assert runtime.handler_stack() == []
    assert float(Recorder(log_wrap, "r", fn=model)()) == 1.0
    assert log_cm == log_wrap == [("r", "process", "x"), ("r", "post", "x")]


def test_messenger_requires_callable_and_function_to_call():
    with pytest.raises(TypeError, match="callable"):
        trace(3)
    with pytest.raises(TypeError, match="without a function"):
        trace()()


def failing_model():
    with ppl.plate("N", 2):
        ppl.sample("x", dist.Normal(0.0, 1.0))
        with scale(scale=2.0), mask(mask=True):
            ppl.sample("y", dist.Normal(0.0, 1.0))
            raise RuntimeError("boom")


@pytest.mark.parametrize(
    "wrap",
    [
        lambda m: m,
        lambda m: seed(m, rng_seed=0),
        lambda m: trace(seed(m, rng_seed=0)),
        lambda m: block(condition(seed(m, rng_seed=0), data={"x": jnp.zeros(2)})),
        lambda m: reparam(do(seed(m, rng_seed=0), data={"q": 1.0}), config={}),
    ],
    ids=["bare", "seed", "trace-seed", "block-condition-seed", "reparam-do-seed"],
)
def test_handler_stack_cleaned_after_exception(wrap):
    with pytest.raises((RuntimeError, ppl.MissingSeedError)):
        wrap(failing_model)()
    assert runtime.handler_stack() == []


def test_handler_stack_cleaned_after_error_in_site_validation():
    def model():
        with ppl.plate("N", 3):
            ppl.sample("k", dist.Poisson(1.0), obs=jnp.array([1, -1, 2]))

    with pytest.raises(ValueError, match="support"):
        trace(seed(model, rng_seed=0)).get_trace()
    assert runtime.handler_stack() == []

    with pytest.raises(ValueError, match="support"), trace(), seed(rng_seed=0):
        model()
    assert runtime.handler_stack() == []
    # the stack still works afterwards
    assert list(get_trace(chain)) == ["x", "y", "z"]


def test_handler_stack_cleaned_after_out_of_order_exit():
    # BUG: when a model leaves a handler on the stack, the enclosing handler raises
    # "exited out of order" but leaves both handlers on the global stack, so every
    # later model run in the process is silently seeded / traced by the leftovers.
    def leaky_model():
        seed(rng_seed=0).__enter__()  # entered, never exited

    with pytest.raises(RuntimeError, match="out of order"):
        trace(leaky_model).get_trace()
    leftover = list(runtime.handler_stack())
    runtime.handler_stack().clear()
    assert leftover == [], f"handlers left on the global stack after the error: {leftover}"


def test_handler_stacks_are_per_thread():
    """Each thread has its own handler stack: models traced in two threads at once (as JAX
    may do in worker threads) each see only their own handlers."""
    import threading

    inside = threading.Barrier(2)

    def run(value, out):
        with trace() as tr, seed(rng_seed=value), condition(data={"x": float(value)}):
            inside.wait()  # both threads are inside their handlers here
            ppl.sample("x", dist.Normal(0.0, 1.0))
            ppl.sample("y", dist.Normal(0.0, 1.0))
            inside.wait()
        out[value] = tr

    out = {}
    threads = [threading.Thread(target=run, args=(v, out)) for v in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for value in (1, 2):
        assert list(out[value]) == ["x", "y"]
        assert float(out[value]["x"]["value"]) == value
    assert runtime.handler_stack() == []
