"""Enumerated discrete sites and ``ppl.scan`` against NumPyro's enumeration (funsor).

Each model is written once with ``numpyro.sample``/``numpyro.plate``/NumPyro's ``scan`` and
compiled by ``ppl.from_numpyro``; NumPyro's reference is
``numpyro.contrib.funsor.log_density`` of the same model under ``enum``. At random points
theta we check, in float64, that ``ld(theta)`` equals NumPyro's log density plus the
log-Jacobians of the constraint transforms, and that the gradients agree.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pytest
from numpyro.contrib.control_flow import scan as numpyro_scan
from numpyro.contrib.funsor import config_enumerate as numpyro_config_enumerate
from numpyro.contrib.funsor import enum
from numpyro.contrib.funsor.infer_util import log_density as funsor_log_density
from numpyro.distributions.transforms import biject_to
from numpyro.ops.indexing import Vindex

import ppl
import ppl.distributions as dist
from ppl.infer import MCMC, NUTS, config_enumerate, infer_discrete

TOL = 1e-6


@pytest.fixture(scope="module", autouse=True)
def _float64():
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


_rng = np.random.default_rng(15)


# ---------------------------------------------------------------------- models (NumPyro)


def mixture(y):
    w = numpyro.sample("w", ndist.Dirichlet(np.ones(3)))
    mu = numpyro.sample("mu", ndist.Normal(0.0, 5.0).expand([3]).to_event(1))
    s = numpyro.sample("s", ndist.HalfNormal(1.0).expand([3]).to_event(1))
    with numpyro.plate("n", y.shape[0]):
        z = numpyro.sample("z", ndist.Categorical(w))
        numpyro.sample("y", ndist.Normal(mu[z], s[z]), obs=y)


def dawid_skene(positions, annotations):
    num_annotators, num_classes = 6, 3
    num_items, num_positions = annotations.shape
    with numpyro.plate("annotator", num_annotators, dim=-2):
        with numpyro.plate("class", num_classes):
            beta = numpyro.sample("beta", ndist.Dirichlet(np.ones(num_classes)))
    pi = numpyro.sample("pi", ndist.Dirichlet(np.ones(num_classes)))
    with numpyro.plate("item", num_items, dim=-2):
        c = numpyro.sample("c", ndist.Categorical(pi), infer={"enumerate": "parallel"})
        with numpyro.plate("position", num_positions):
            numpyro.sample("y", ndist.Categorical(Vindex(beta)[positions, c, :]), obs=annotations)


def hmm(y):
    K = 3
    trans = numpyro.sample("trans", ndist.Dirichlet(np.ones(K)).expand([K]).to_event(1))
    mu = numpyro.sample("mu", ndist.Normal(np.arange(K) * 2.0, 1.0).to_event(1))

    def step(x_prev, y_t):
        x = numpyro.sample("x", ndist.Categorical(trans[x_prev]))
        numpyro.sample("y", ndist.Normal(mu[x], 1.0), obs=y_t)
        return x, None

    numpyro_scan(step, 0, y)


def hmm_in_plates(seqs, lengths):
    """NumPyro's hmm_enum style: sequences plate around the scan, tones plate inside."""
    N, _, D = seqs.shape
    K = 3
    probs_x = numpyro.sample("probs_x", ndist.Dirichlet(0.9 * np.eye(K) + 0.1).to_event(1))
    probs_y = numpyro.sample("probs_y", ndist.Beta(0.1, 0.9).expand([K, D]).to_event(2))

    def transition(carry, y):
        x_prev, t = carry
        with numpyro.plate("sequences", N, dim=-2):
            with numpyro.handlers.mask(mask=(t < lengths)[..., None]):
                x = numpyro.sample("x", ndist.Categorical(probs_x[x_prev]))
                with numpyro.plate("tones", D, dim=-1):
                    numpyro.sample("y", ndist.Bernoulli(probs_y[x.squeeze(-1)]), obs=y)
        return (x, t + 1), None

    numpyro_scan(transition, (np.zeros((N, 1), dtype=np.int32), 0), np.swapaxes(seqs, 0, 1))


def global_and_local(y):
    """A discrete site outside the plate, one inside, and a continuous site depending on it."""
    g = numpyro.sample("g", ndist.Bernoulli(0.3))
    mu = numpyro.sample("mu", ndist.Normal(0.0, 3.0))
    with numpyro.plate("n", y.shape[0]):
        z = numpyro.sample("z", ndist.Bernoulli(0.2 + 0.6 * g))
        s = numpyro.sample("s", ndist.HalfNormal(1.0 + z))
        numpyro.sample("y", ndist.Normal(mu * z, s), obs=y)


def ar2(y):
    """``scan`` without discrete sites."""
    a1 = numpyro.sample("a1", ndist.Normal(0.0, 1.0))
    a2 = numpyro.sample("a2", ndist.Normal(0.0, 1.0))
    sigma = numpyro.sample("sigma", ndist.HalfNormal(1.0))

    def step(carry, y_t):
        y1, y2 = carry
        m = a1 * y1 + a2 * y2
        y_now = numpyro.sample("y", ndist.Normal(m, sigma), obs=y_t)
        return (y_now, y1), m

    numpyro_scan(step, (y[1], y[0]), y[2:])


def local_level(y):
    """``scan`` with a continuous latent state per step."""
    sigma = numpyro.sample("sigma", ndist.HalfNormal(1.0))

    def step(level, y_t):
        level = numpyro.sample("level", ndist.Normal(level, sigma))
        numpyro.sample("y", ndist.Normal(level, 0.5), obs=y_t)
        return level, None

    numpyro_scan(step, 0.0, y)


def factorial_hmm(seqs):
    """Two chains w and x carried together, x's transition depends on w (in a plate)."""
    N, _, D = seqs.shape
    K = 2
    probs_w = numpyro.sample("probs_w", ndist.Dirichlet(0.9 * np.eye(K) + 0.1).to_event(1))
    probs_x = numpyro.sample(
        "probs_x", ndist.Dirichlet(0.9 * np.eye(K) + 0.1).expand_by([K]).to_event(2)
    )
    probs_y = numpyro.sample("probs_y", ndist.Beta(0.1, 0.9).expand([K, K, D]).to_event(3))

    def step(carry, y):
        w_prev, x_prev = carry
        with numpyro.plate("sequences", N, dim=-2):
            w = numpyro.sample("w", ndist.Categorical(probs_w[w_prev]))
            x = numpyro.sample("x", ndist.Categorical(Vindex(probs_x)[w, x_prev]))
            with numpyro.plate("tones", D, dim=-1) as tones:
                numpyro.sample("y", ndist.Bernoulli(probs_y[w, x, tones]), obs=y)
        return (w, x), None

    init = (np.zeros((N, 1), dtype=np.int32), np.zeros((N, 1), dtype=np.int32))
    numpyro_scan(step, init, np.swapaxes(seqs, 0, 1))


def second_order_hmm(seqs):
    """x[t] depends on x[t-1] and x[t-2]: ``history=2``."""
    N, _, D = seqs.shape
    K = 3
    probs_x = numpyro.sample(
        "probs_x", ndist.Dirichlet(0.9 * np.eye(K) + 0.1).expand([K, K]).to_event(2)
    )
    probs_y = numpyro.sample("probs_y", ndist.Beta(0.1, 0.9).expand([K, D]).to_event(2))

    def step(carry, y):
        x_prev, x_curr = carry
        with numpyro.plate("sequences", N, dim=-2):
            x_new = numpyro.sample("x", ndist.Categorical(Vindex(probs_x)[x_prev, x_curr]))
            with numpyro.plate("tones", D, dim=-1):
                numpyro.sample("y", ndist.Bernoulli(probs_y[x_new.squeeze(-1)]), obs=y)
        return (x_curr, x_new), None

    init = (np.zeros((N, 1), dtype=np.int32), np.zeros((N, 1), dtype=np.int32))
    numpyro_scan(step, init, np.swapaxes(seqs, 0, 1), history=2)


def capture_recapture(capture_history):
    """Alive state carried in a scan, masked before the first capture (CJS style)."""
    N, _ = capture_history.shape
    phi = numpyro.sample("phi", ndist.Uniform(0.0, 1.0))
    rho = numpyro.sample("rho", ndist.Uniform(0.0, 1.0))

    def step(carry, y):
        seen, z = carry
        with numpyro.plate("animals", N, dim=-1):
            with numpyro.handlers.mask(mask=seen):
                mu_z = seen * phi * z + (1 - seen)
                z = numpyro.sample(
                    "z",
                    ndist.Bernoulli(ndist.util.clamp_probs(mu_z)),
                    infer={"enumerate": "parallel"},
                )
                numpyro.sample("y", ndist.Bernoulli(ndist.util.clamp_probs(rho * z)), obs=y)
        return (seen | y.astype(bool), z), None

    seen = capture_history[:, 0].astype(bool)
    numpyro_scan(
        step, (seen, np.ones(N, dtype=np.int32)), np.swapaxes(capture_history[:, 1:], 0, 1)
    )


def smoothing_with_condition(y, future=0):
    """Observed through ``numpyro.handlers.condition`` around the scan (Holt-Winters style)."""
    alpha = numpyro.sample("alpha", ndist.Beta(2.0, 2.0))
    noise = numpyro.sample("noise", ndist.HalfNormal(1.0))
    y = jnp.asarray(y)
    T = y.shape[0]

    def step(level, t):
        pred = numpyro.sample("pred", ndist.Normal(level, noise))
        level = jnp.where(t < T, alpha * y[jnp.minimum(t, T - 1)] + (1 - alpha) * level, level)
        return level, pred

    with numpyro.handlers.condition(data={"pred": y}):
        _, preds = numpyro_scan(step, y[0], jnp.arange(T + future))
    if future:
        numpyro.deterministic("forecast", preds[-future:])


_seqs = _rng.integers(0, 2, size=(3, 10, 4)).astype(float)
_captures = (_rng.uniform(size=(20, 6)) < 0.4).astype(float)
_captures[:, 0] = 1.0

CASES = {
    "mixture": (mixture, (_rng.normal(size=40) * 3,), 1),
    "dawid_skene": (
        dawid_skene,
        (np.array([1, 1, 1, 2, 3, 4, 5]), _rng.integers(0, 3, size=(15, 7))),
        2,
    ),
    "hmm": (hmm, (_rng.normal(size=40) * 3,), 0),
    "hmm_in_plates": (
        hmm_in_plates,
        (_rng.integers(0, 2, size=(4, 12, 5)).astype(float), np.array([12, 10, 7, 12])),
        2,
    ),
    "global_and_local": (global_and_local, (_rng.normal(size=8),), 1),
    "ar2": (ar2, (_rng.normal(size=30),), 0),
    "factorial_hmm": (factorial_hmm, (_seqs,), 2),
    "second_order_hmm": (second_order_hmm, (_seqs,), 2),
    "capture_recapture": (capture_recapture, (_captures,), 1),
    "smoothing_with_condition": (smoothing_with_condition, (_rng.normal(size=20) + 3.0,), 0),
    "local_level": (local_level, (_rng.normal(size=25),), 0),
}


def _reference(model, args, nesting, ld):
    enumerated = enum(numpyro_config_enumerate(model), -(nesting + 1))

    def log_density(theta):
        values = ld.constrain(theta)
        values = {k: values[k] for k in ld.latent_names}
        unconstrained = ld.unflatten(theta)
        jacobian = sum(
            jnp.sum(
                biject_to(ld.sites[n].support).log_abs_det_jacobian(unconstrained[n], values[n])
            )
            for n in ld.latent_names
        )
        return funsor_log_density(enumerated, args, {}, values)[0] + jacobian

    return log_density


@pytest.mark.parametrize("name", list(CASES))
def test_log_density_and_gradient_equal_numpyros(name):
    model, args, nesting = CASES[name]
    ld = ppl.from_numpyro(numpyro_config_enumerate(model), *args)
    reference = _reference(model, args, nesting, ld)
    ours = jax.jit(jax.value_and_grad(ld))
    theirs = jax.jit(jax.value_and_grad(reference))
    for i in range(4):
        theta = jax.random.uniform(jax.random.PRNGKey(i), (ld.dim,), minval=-2.0, maxval=2.0)
        value, grad = ours(theta)
        ref_value, ref_grad = theirs(theta)
        np.testing.assert_allclose(value, ref_value, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(grad, ref_grad, rtol=TOL, atol=TOL)


def test_enumerated_sites_are_not_coordinates():
    model, args, _ = CASES["dawid_skene"]
    ld = ppl.from_numpyro(model, *args)
    assert ld.sites["c"].kind == "enumerated"
    assert ld.sites["c"].shape == (15, 1)
    assert "c" not in ld.latent_names
    assert ld.dim == 6 * 3 * 2 + 2


def test_native_model_equals_numpyro_model():
    """The same mixture written with ppl's primitives and config_enumerate."""

    @config_enumerate
    def native(y):
        w = ppl.sample("w", dist.Dirichlet(np.ones(3)))
        mu = ppl.sample("mu", dist.Normal(0.0, 5.0).expand([3]).to_event(1))
        s = ppl.sample("s", dist.HalfNormal(1.0).expand([3]).to_event(1))
        with ppl.plate("n", y.shape[0]):
            z = ppl.sample("z", dist.Categorical(w))
            ppl.sample("y", dist.Normal(mu[z], s[z]), obs=y)

    y = CASES["mixture"][1][0]
    ours = ppl.logdensity(native, y)
    theirs = ppl.from_numpyro(numpyro_config_enumerate(mixture), y)
    theta = jax.random.normal(jax.random.PRNGKey(3), (ours.dim,))
    np.testing.assert_allclose(ours(theta), theirs(theta), rtol=1e-12)


def test_hmm_costs_linear_time():
    """The chain is summed by a recursion: T = 2,000 steps compile and run (K^T would not)."""
    y = np.random.default_rng(0).normal(size=2000)
    ld = ppl.from_numpyro(numpyro_config_enumerate(hmm), y)
    value = jax.jit(ld)(jnp.zeros(ld.dim))
    assert np.isfinite(value)


# ---------------------------------------------------------------------- infer_discrete


def _brute_force(log_joint, sizes):
    keys = list(itertools.product(*(range(k) for k in sizes)))
    logp = np.array([log_joint(k) for k in keys])
    p = np.exp(logp - logp.max())
    return keys, p / p.sum()


def test_infer_discrete_matches_exact_posterior():
    weights = np.array([0.2, 0.5, 0.3])

    @config_enumerate
    def model(y):
        g = ppl.sample("g", dist.Bernoulli(0.4))
        mu = ppl.sample("mu", dist.Normal(0.0, 3.0))
        with ppl.plate("n", y.shape[0]):
            z = ppl.sample("z", dist.Categorical(weights))
            ppl.sample("y", dist.Normal(mu + z + g, 1.0), obs=y)

    y, mu = np.array([0.3, 2.1, 1.2]), 0.4

    def log_joint(k):
        g, zs = k[0], k[1:]
        lp = np.log([0.6, 0.4][g]) + np.log(weights[list(zs)]).sum()
        return lp + sum(
            float(dist.Normal(mu + z + g, 1.0).log_prob(v)) for z, v in zip(zs, y, strict=True)
        )

    keys, p = _brute_force(log_joint, (2, 3, 3, 3))
    n = 20_000
    draws = infer_discrete(model, {"mu": np.full(n, mu)}, y, rng_key=jax.random.PRNGKey(0))
    assert draws["g"].shape == (n,) and draws["z"].shape == (n, 3)
    joint = np.concatenate([np.asarray(draws["g"])[:, None], np.asarray(draws["z"])], axis=1)
    for column in range(4):
        for value in range(2 if column == 0 else 3):
            exact = sum(q for k, q in zip(keys, p, strict=True) if k[column] == value)
            freq = float((joint[:, column] == value).mean())
            assert abs(freq - exact) < 5 * np.sqrt(exact * (1 - exact) / n) + 1e-3
    # a pair: the joint frequencies too (the draws are joint, not per-site marginals)
    exact = sum(q for k, q in zip(keys, p, strict=True) if k[0] == 1 and k[1] == 2)
    freq = float(((joint[:, 0] == 1) & (joint[:, 1] == 2)).mean())
    assert abs(freq - exact) < 5 * np.sqrt(exact * (1 - exact) / n) + 1e-3
    best = infer_discrete(model, {"mu": np.full(1, mu)}, y, temperature=0)
    map_key = keys[int(np.argmax(p))]
    assert (int(best["g"][0]), *map(int, best["z"][0])) == map_key


def test_infer_discrete_hmm_chain_and_viterbi():
    K, T = 3, 5
    trans = jnp.array([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.3, 0.3, 0.4]])
    means = jnp.array([-1.0, 0.5, 2.0])

    def model(y):
        s = ppl.sample("s", dist.HalfNormal(1.0))

        def step(x_prev, y_t):
            x = ppl.sample("x", dist.Categorical(trans[x_prev]), infer={"enumerate": "parallel"})
            ppl.sample("y", dist.Normal(means[x], s), obs=y_t)
            return x, None

        ppl.scan(step, 0, y)

    y, s = np.array([0.1, 1.9, 1.0, -0.8, 0.4]), 0.9

    def log_joint(xs):
        prev, lp = 0, 0.0
        for t, x in enumerate(xs):
            lp += float(jnp.log(trans[prev, x])) + float(dist.Normal(means[x], s).log_prob(y[t]))
            prev = x
        return lp

    keys, p = _brute_force(log_joint, (K,) * T)
    n = 20_000
    draws = np.asarray(
        infer_discrete(model, {"s": np.full(n, s)}, y, rng_key=jax.random.PRNGKey(1))["x"]
    )
    assert draws.shape == (n, T)
    for t in range(T):
        for v in range(K):
            exact = sum(q for k, q in zip(keys, p, strict=True) if k[t] == v)
            assert (
                abs(float((draws[:, t] == v).mean()) - exact)
                < 5 * np.sqrt(exact * (1 - exact) / n) + 1e-3
            )
    for a, b in itertools.product(range(K), repeat=2):
        exact = sum(q for k, q in zip(keys, p, strict=True) if k[1] == a and k[2] == b)
        freq = float(((draws[:, 1] == a) & (draws[:, 2] == b)).mean())
        assert abs(freq - exact) < 5 * np.sqrt(exact * (1 - exact) / n) + 1e-3
    viterbi = infer_discrete(model, {"s": np.full(1, s)}, y, temperature=0)["x"]
    assert tuple(int(v) for v in viterbi[0]) == keys[int(np.argmax(p))]


def test_mcmc_datatree_holds_the_discrete_sites():
    @config_enumerate
    def model(y):
        mu = ppl.sample("mu", dist.Normal(np.array([-2.0, 2.0]), 1.0).to_event(1))
        with ppl.plate("obs", y.shape[0]):
            z = ppl.sample("z", dist.Categorical(np.array([0.5, 0.5])))
            ppl.sample("y", dist.Normal(mu[z], 0.5), obs=y)

    y = np.array([-2.1, -1.8, 2.2, 1.9])
    mcmc = MCMC(NUTS(model), num_warmup=100, num_samples=100, num_chains=2, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), y)
    tree = mcmc.to_datatree()
    z = tree.posterior["z"]
    assert z.dims == ("chain", "draw", "obs")
    np.testing.assert_array_equal(z.mean(("chain", "draw")).values.round(), [0, 0, 1, 1])
    # pointwise log-likelihood: the mixture's marginal log(sum_k w_k p(y_i | k)), for LOO
    mu = tree.posterior["mu"].values[0, :5]
    expected = jax.nn.logsumexp(
        np.log(0.5) + dist.Normal(mu[:, None, :], 0.5).log_prob(y[None, :, None]), axis=-1
    )
    np.testing.assert_allclose(tree.log_likelihood["y"].values[0, :5], expected, rtol=1e-6)
    skipped = mcmc.to_datatree(discrete=False)
    assert "z" not in skipped.posterior
    np.testing.assert_allclose(skipped.log_likelihood["y"], tree.log_likelihood["y"])


def test_scanned_observed_sites_log_likelihood_given_discrete_draws():
    def model(y):
        p = ppl.sample("p", dist.Beta(2.0, 2.0))

        def step(x_prev, y_t):
            x = ppl.sample("x", dist.Bernoulli(0.2 + 0.6 * x_prev), infer={"enumerate": "parallel"})
            ppl.sample("y", dist.Bernoulli(jnp.where(x == 1, p, 0.1)), obs=y_t)
            return x, None

        ppl.scan(step, 0, y)

    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    mcmc = MCMC(NUTS(model), num_warmup=50, num_samples=20, num_chains=1, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), y)
    tree = mcmc.to_datatree()
    x, p = tree.posterior["x"].values[0], tree.posterior["p"].values[0]
    expected = dist.Bernoulli(np.where(x == 1, p[:, None], 0.1)).log_prob(y)
    np.testing.assert_allclose(tree.log_likelihood["y"].values[0], expected, rtol=1e-6)
    assert "log_likelihood" not in mcmc.to_datatree(discrete=False).children


def _frequencies_match(draws, keys, p, n):
    """Every site-step marginal and the joint of the first two columns within 5 MC SEs."""
    draws = np.asarray(draws)
    for col in range(draws.shape[1]):
        for value in np.unique([k[col] for k in keys]):
            exact = sum(q for k, q in zip(keys, p, strict=True) if k[col] == value)
            freq = float((draws[:, col] == value).mean())
            assert abs(freq - exact) < 5 * np.sqrt(exact * (1 - exact) / n) + 1e-3
    for a, b in itertools.product(np.unique([k[0] for k in keys]), repeat=2):
        exact = sum(q for k, q in zip(keys, p, strict=True) if k[0] == a and k[1] == b)
        freq = float(((draws[:, 0] == a) & (draws[:, 1] == b)).mean())
        assert abs(freq - exact) < 5 * np.sqrt(exact * (1 - exact) / n) + 1e-3


def test_infer_discrete_second_order_chain():
    T = 4
    table = jnp.array([[[0.7, 0.3], [0.4, 0.6]], [[0.2, 0.8], [0.5, 0.5]]])  # [x(t-2), x(t-1)]

    def model(y):
        s = ppl.sample("s", dist.HalfNormal(1.0))

        def step(carry, y_t):
            x_prev, x_curr = carry
            x_new = ppl.sample(
                "x", dist.Categorical(table[x_prev, x_curr]), infer={"enumerate": "parallel"}
            )
            ppl.sample("y", dist.Normal(x_new * 1.5, s), obs=y_t)
            return (x_curr, x_new), None

        ppl.scan(step, (0, 0), y, history=2)

    y, s = np.array([0.2, 1.4, 1.1, -0.3]), 0.8

    def log_joint(xs):
        a, b, lp = 0, 0, 0.0
        for t, x in enumerate(xs):
            lp += float(jnp.log(table[a, b, x]) + dist.Normal(x * 1.5, s).log_prob(y[t]))
            a, b = b, x
        return lp

    keys, p = _brute_force(log_joint, (2,) * T)
    n = 20_000
    ld = ppl.logdensity(model, y)
    theta = ld.unconstrain({"s": jnp.asarray(s)})
    np.testing.assert_allclose(
        ld(theta),
        jax.nn.logsumexp(np.array([log_joint(k) for k in keys]))
        + float(dist.HalfNormal(1.0).log_prob(s))
        + float(theta[0]),
        rtol=1e-8,
    )
    draws = infer_discrete(ld, {"s": np.full(n, s)}, rng_key=jax.random.PRNGKey(2))["x"]
    _frequencies_match(draws, keys, p, n)
    best = infer_discrete(ld, {"s": np.full(1, s)}, temperature=0)["x"]
    assert tuple(int(v) for v in best[0]) == keys[int(np.argmax(p))]


def test_infer_discrete_two_chains_carried_together():
    T = 3
    pw = jnp.array([[0.8, 0.2], [0.3, 0.7]])
    px = jnp.array([[[0.9, 0.1], [0.2, 0.8]], [[0.5, 0.5], [0.4, 0.6]]])  # [w, x_prev]

    def model(y):
        s = ppl.sample("s", dist.HalfNormal(1.0))

        def step(carry, y_t):
            w_prev, x_prev = carry
            w = ppl.sample("w", dist.Categorical(pw[w_prev]), infer={"enumerate": "parallel"})
            x = ppl.sample(
                "x", dist.Categorical(Vindex(px)[w, x_prev]), infer={"enumerate": "parallel"}
            )
            ppl.sample("y", dist.Normal(w + 2.0 * x, s), obs=y_t)
            return (w, x), None

        ppl.scan(step, (0, 0), y)

    y, s = np.array([2.1, 0.2, 2.9]), 0.7

    def log_joint(k):
        ws, xs = k[:T], k[T:]
        w0, x0, lp = 0, 0, 0.0
        for t in range(T):
            lp += float(jnp.log(pw[w0, ws[t]]) + jnp.log(px[ws[t], x0, xs[t]]))
            lp += float(dist.Normal(ws[t] + 2.0 * xs[t], s).log_prob(y[t]))
            w0, x0 = ws[t], xs[t]
        return lp

    keys, p = _brute_force(log_joint, (2,) * (2 * T))
    n = 20_000
    draws = infer_discrete(model, {"s": np.full(n, s)}, y, rng_key=jax.random.PRNGKey(3))
    joint = np.concatenate([np.asarray(draws["w"]), np.asarray(draws["x"])], axis=1)
    _frequencies_match(joint, keys, p, n)


def test_forecast_through_numpyro_condition_around_the_scan():
    y = jnp.asarray(_rng.normal(size=20) + 3.0)
    ld = ppl.from_numpyro(smoothing_with_condition, y)
    assert ld.sites["pred"].kind == "observed" and ld.sites["pred"].dims == ("time",)
    draws = {"alpha": jnp.full(3, 0.5), "noise": jnp.full(3, 0.1)}
    forecast = ppl.Predictive(ppl.interop.numpyro_model(smoothing_with_condition), draws)(
        jax.random.PRNGKey(0), y, future=4
    )["forecast"]
    assert forecast.shape == (3, 4)
    assert len(np.unique(np.asarray(forecast))) == 12  # fresh draws past the data
