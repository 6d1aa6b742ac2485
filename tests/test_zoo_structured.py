"""The structured models of the zoo: discrete latent sites summed out by enumeration and time
series in ``ppl.scan`` (gaussian_mixture, hmm_example, coal_mining, cjs, dawid_skene,
ar_state_space).

Default run, in float64 at random points theta:

- each model's log density and gradient equal a hand-marginalised reference written here
  (for the three rewritten models, the zoo's previous ``MixtureSameFamily``,
  forward-algorithm and log-sum-exp versions, kept verbatim; for the new ones, closed forms)
  to 1e-10: the enumeration sums out exactly what the old code summed by hand;
- they equal NumPyro's log density of the same model written with ``numpyro`` primitives
  (``numpyro.contrib.funsor``'s enumeration, NumPyro's ``scan``), so that the slow
  comparison below compares one posterior;
- the enumerated sites are not coordinates of the flat vector, a short NUTS run (1 chain,
  20 draws, as in ``tests/test_models.py``) gives finite draws and a DataTree with the
  discrete sites, and ``infer_discrete`` draws match the exact conditional posteriors
  computed here by brute force (frequencies within 5 binomial sds), with
  ``temperature=0`` giving the exact MAP (the Viterbi path).

Slow run (``-m slow``): ppl's NUTS and NumPyro's NUTS (funsor enumeration), 4 chains x
(1000 warmup + 1000 draws) each, agree on every posterior mean within
5 sqrt(mcse_ppl^2 + mcse_numpyro^2) (MCSE of the mean from arviz-stats, from each run's
effective sample size; a true difference of zero exceeds it with probability about 6e-7
per quantity). So do the posterior frequencies of the discrete sites drawn by
``ppl.infer.infer_discrete`` from ppl's draws and by NumPyro's
``Predictive(infer_discrete=True)`` from NumPyro's draws (with a floor of 0.01 for
indicators that hardly vary); for the two chain models, whose ``scan`` NumPyro's
``infer_discrete`` fails on, the NumPyro side is the exact state probabilities at its draws
(forward-backward, brute force).
"""

from __future__ import annotations

import itertools
import time

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
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.distributions.util import clamp_probs

import ppl
import ppl.distributions as dist
from ppl import zoo
from ppl.infer import MCMC, NUTS, infer_discrete

NAMES = ("gaussian_mixture", "hmm_example", "coal_mining", "cjs", "dawid_skene", "ar_state_space")
#: the enumerated sites of each model (ar_state_space has none: continuous states)
DISCRETE = {
    "gaussian_mixture": ("z",),
    "hmm_example": ("z",),
    "coal_mining": ("switchpoint",),
    "cjs": ("z",),
    "dawid_skene": ("c",),
    "ar_state_space": (),
}


def _data(name: str) -> dict:
    return zoo.load(name).load_data()


def _thetas(dim: int, n: int = 4) -> list[jax.Array]:
    return [
        jax.random.uniform(jax.random.PRNGKey(i), (dim,), minval=-2.0, maxval=2.0) for i in range(n)
    ]


# ------------------------------------------------------------------ hand-marginalised references
# Each has the same latent sites as the zoo model, so both LogDensity objects read the same
# flat vector; the discrete sites are summed out by hand.


def gaussian_mixture_marginalised(y):
    """The zoo's previous gaussian_mixture: labels summed out by ``MixtureSameFamily``."""
    K = 3
    w = ppl.sample("w", dist.Dirichlet(jnp.full(K, 2.0)))
    mu = ppl.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (K,)))
    ppl.factor("mu_prior", dist.Normal(0.0, 5.0).log_prob(mu).sum())
    sigma = ppl.sample("sigma", dist.HalfNormal(1.0).expand([K]).to_event(1))
    mixture = dist.MixtureSameFamily(dist.Categorical(probs=w), dist.Normal(mu, sigma))
    with ppl.plate("obs", y.shape[0]):
        ppl.sample("y", mixture, obs=y)


def forward_log_likelihood(log_trans, log_emit):
    """log p(y) of an HMM by the forward algorithm, with posteriordb's flat initial state
    (the zoo's previous hmm_example)."""

    def step(alpha, emit):
        alpha = jax.nn.logsumexp(alpha[:, None] + log_trans, axis=0) + emit
        return alpha, None

    alpha, _ = jax.lax.scan(step, log_emit[0], log_emit[1:])
    return jax.nn.logsumexp(alpha)


def hmm_example_marginalised(y):
    """The zoo's previous hmm_example: the states summed out by the forward algorithm."""
    theta1 = ppl.sample("theta1", dist.Dirichlet(jnp.ones(2)))
    theta2 = ppl.sample("theta2", dist.Dirichlet(jnp.ones(2)))
    mu = ppl.sample("mu", dist.ImproperUniform(constraints.positive_ordered_vector, (), (2,)))
    prior = dist.Normal(jnp.array([3.0, 10.0]), 1.0).log_prob(mu).sum()
    ppl.factor("mu_prior", prior)
    log_trans = jnp.log(jnp.stack([theta1, theta2]))
    log_emit = dist.Normal(mu, 1.0).log_prob(y[:, None])
    ppl.factor("y", forward_log_likelihood(log_trans, log_emit))


def coal_mining_log_joint(disasters, early, late):
    """log p(disasters, switch at s) for s = 0..T-1 (years t < s early): the zoo's previous
    coal_mining."""
    T = disasters.shape[0]
    log_early = dist.Poisson(early).log_prob(disasters)
    log_late = dist.Poisson(late).log_prob(disasters)
    before = jnp.concatenate([jnp.zeros(1), jnp.cumsum(log_early)[:-1]])
    after = jnp.cumsum(log_late[::-1])[::-1]
    return before + after - jnp.log(T)


def coal_mining_marginalised(disasters):
    early = ppl.sample("early_rate", dist.Exponential(1.0))
    late = ppl.sample("late_rate", dist.Exponential(1.0))
    ppl.factor("disasters", jax.nn.logsumexp(coal_mining_log_joint(disasters, early, late)))


def cjs_log_likelihood(capture_history, survival, rho):
    """Closed-form CJS log-likelihood given first capture: for an animal first seen at f and
    last at l, prod_{f<t<=l} phi (rho or 1 - rho) times chi_l, the probability of not being
    seen after l (chi_{T-1} = 1, chi_t = 1 - phi + phi (1 - rho) chi_{t+1})."""
    history = jnp.asarray(capture_history)
    N, T = history.shape
    t = jnp.arange(T)
    first = jnp.argmax(history, axis=1)
    last = T - 1 - jnp.argmax(history[:, ::-1], axis=1)
    chi = [jnp.ones(N)]
    for _ in range(T - 1):
        chi.insert(0, 1.0 - survival + survival * (1.0 - rho) * chi[0])
    chi = jnp.stack(chi, axis=1)  # (N, T)
    between = (t > first[:, None]) & (t <= last[:, None])
    seen = jnp.where(history == 1, jnp.log(rho), jnp.log1p(-rho))
    known = jnp.sum(jnp.where(between, jnp.log(survival)[:, None] + seen, 0.0))
    return known + jnp.sum(jnp.log(chi[jnp.arange(N), last]))


def cjs_marginalised(capture_history, sex):
    phi = ppl.sample("phi", dist.Uniform(0.0, 1.0).expand([2]).to_event(1))
    rho = ppl.sample("rho", dist.Uniform(0.0, 1.0))
    ppl.factor("y", cjs_log_likelihood(capture_history, phi[sex], rho))


def dawid_skene_class_log_joint(positions, annotations, beta, pi):
    """log p(labels of item i, c_i = k): (I, C)."""
    # beta[positions] (P, C, C): [p, k, label]; the labels of item i: annotations[i] (P,)
    per_label = beta[positions][jnp.arange(len(positions)), :, annotations]  # (I, P, C)
    return jnp.log(pi) + jnp.sum(jnp.log(per_label), axis=1)


def dawid_skene_marginalised(positions, annotations):
    C = 3
    concentration = 1.0 + (2.5 * C - 1.0) * jnp.eye(C)
    with ppl.plate("annotator", 5, dim=-2), ppl.plate("class", C):
        beta = ppl.sample("beta", dist.Dirichlet(concentration))
    pi = ppl.sample("pi", dist.Dirichlet(jnp.ones(C)))
    log_joint = dawid_skene_class_log_joint(positions, annotations, beta, pi)
    ppl.factor("y", jnp.sum(jax.nn.logsumexp(log_joint, axis=1)))


def ar_state_space_by_hand(y):
    """The AR(1) state-space density written out, without ``ppl.scan``."""
    T = y.shape[0]
    mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
    phi = ppl.sample("phi", dist.Uniform(-1.0, 1.0))
    sigma = ppl.sample("sigma", dist.HalfNormal(1.0))
    x_init = ppl.sample("x_init", dist.Normal(mu, sigma / jnp.sqrt(1.0 - phi**2)))
    x = ppl.sample("x", dist.ImproperUniform(constraints.real, (), (T,)))
    prev = jnp.concatenate([x_init[None], x[:-1]])
    ppl.factor("states", dist.Normal(mu + phi * (prev - mu), sigma).log_prob(x).sum())
    ppl.factor("y", dist.Normal(x, 0.4).log_prob(y).sum())


REFERENCES = {
    "gaussian_mixture": gaussian_mixture_marginalised,
    "hmm_example": hmm_example_marginalised,
    "coal_mining": coal_mining_marginalised,
    "cjs": cjs_marginalised,
    "dawid_skene": dawid_skene_marginalised,
    "ar_state_space": ar_state_space_by_hand,
}


@pytest.mark.parametrize("name", NAMES)
def test_log_density_equals_hand_marginalised(name):
    with jax.enable_x64(True):
        data = _data(name)
        ours = ppl.logdensity(zoo.load(name).model, **data)
        reference = ppl.logdensity(REFERENCES[name], **data)
        assert ours.latent_names == reference.latent_names and ours.dim == reference.dim
        value_and_grad = jax.jit(jax.value_and_grad(ours))
        ref_value_and_grad = jax.jit(jax.value_and_grad(reference))
        for theta in _thetas(ours.dim):
            value, grad = value_and_grad(theta)
            ref_value, ref_grad = ref_value_and_grad(theta)
            assert value.dtype == jnp.float64
            np.testing.assert_allclose(value, ref_value, rtol=1e-12, atol=1e-10)
            np.testing.assert_allclose(grad, ref_grad, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ the same models in NumPyro


def np_gaussian_mixture(y):
    K = 3
    w = numpyro.sample("w", ndist.Dirichlet(jnp.full(K, 2.0)))
    mu = numpyro.sample("mu", ndist.ImproperUniform(constraints.ordered_vector, (), (K,)))
    numpyro.factor("mu_prior", ndist.Normal(0.0, 5.0).log_prob(mu).sum())
    sigma = numpyro.sample("sigma", ndist.HalfNormal(1.0).expand([K]).to_event(1))
    with numpyro.plate("obs", y.shape[0]):
        z = numpyro.sample("z", ndist.Categorical(probs=w), infer={"enumerate": "parallel"})
        numpyro.sample("y", ndist.Normal(mu[z], sigma[z]), obs=y)


def np_hmm_example(y):
    K = 2
    theta1 = numpyro.sample("theta1", ndist.Dirichlet(jnp.ones(K)))
    theta2 = numpyro.sample("theta2", ndist.Dirichlet(jnp.ones(K)))
    mu = numpyro.sample("mu", ndist.ImproperUniform(constraints.positive_ordered_vector, (), (K,)))
    numpyro.factor("mu_prior", ndist.Normal(jnp.array([3.0, 10.0]), 1.0).log_prob(mu).sum())
    trans = jnp.stack([theta1, theta2, jnp.full(K, 1.0 / K)])

    def step(z_prev, y_t):
        z = numpyro.sample("z", ndist.Categorical(trans[z_prev]), infer={"enumerate": "parallel"})
        numpyro.sample("y", ndist.Normal(mu[z], 1.0), obs=y_t)
        return z, None

    numpyro_scan(step, K, y)
    numpyro.factor("flat_initial", jnp.log(K))


def np_coal_mining(disasters):
    """The switch year as an index 0..T-1 (year 1851 + index): NumPyro's funsor enumeration
    gives an enumerated site the values 0..K-1, so DiscreteUniform(1851, 1961) would be
    enumerated out of its support (log density -inf)."""
    T = disasters.shape[0]
    early = numpyro.sample("early_rate", ndist.Exponential(1.0))
    late = numpyro.sample("late_rate", ndist.Exponential(1.0))
    switchpoint = numpyro.sample(
        "switchpoint", ndist.DiscreteUniform(0, T - 1), infer={"enumerate": "parallel"}
    )
    with numpyro.plate("year", T):
        rate = jnp.where(jnp.arange(T) < switchpoint, early, late)
        numpyro.sample("disasters", ndist.Poisson(rate), obs=disasters)


def np_cjs(capture_history, sex):
    N, _ = capture_history.shape
    phi = numpyro.sample("phi", ndist.Uniform(0.0, 1.0).expand([2]).to_event(1))
    rho = numpyro.sample("rho", ndist.Uniform(0.0, 1.0))
    survival = phi[sex]

    def step(carry, y):
        seen, z = carry
        with numpyro.plate("animals", N):
            p_alive = jnp.where(seen, survival * z, 1.0)
            z = numpyro.sample(
                "z", ndist.Bernoulli(clamp_probs(p_alive)), infer={"enumerate": "parallel"}
            )
            with numpyro.handlers.mask(mask=seen):
                numpyro.sample("y", ndist.Bernoulli(clamp_probs(rho * z)), obs=y)
        return (seen | y.astype(bool), z), None

    seen = capture_history[:, 0].astype(bool)
    # the alive state's dtype is that of Bernoulli draws (int64 in float64 runs)
    numpyro_scan(step, (seen, jnp.ones(N, dtype=int)), capture_history[:, 1:].T)


def np_dawid_skene(positions, annotations):
    C = 3
    num_items, num_positions = annotations.shape
    concentration = 1.0 + (2.5 * C - 1.0) * jnp.eye(C)
    with numpyro.plate("annotator", 5, dim=-2), numpyro.plate("class", C):
        beta = numpyro.sample("beta", ndist.Dirichlet(concentration))
    pi = numpyro.sample("pi", ndist.Dirichlet(jnp.ones(C)))
    with numpyro.plate("item", num_items):
        c = numpyro.sample("c", ndist.Categorical(pi), infer={"enumerate": "parallel"})
        with numpyro.plate("position", num_positions, dim=-2):
            probs = beta[positions[:, None], c]
            numpyro.sample("y", ndist.Categorical(probs), obs=annotations.T)


def np_ar_state_space(y):
    mu = numpyro.sample("mu", ndist.Normal(0.0, 5.0))
    phi = numpyro.sample("phi", ndist.Uniform(-1.0, 1.0))
    sigma = numpyro.sample("sigma", ndist.HalfNormal(1.0))
    x_init = numpyro.sample("x_init", ndist.Normal(mu, sigma / jnp.sqrt(1.0 - phi**2)))

    def step(x_prev, y_t):
        x = numpyro.sample("x", ndist.Normal(mu + phi * (x_prev - mu), sigma))
        numpyro.sample("y", ndist.Normal(x, 0.4), obs=y_t)
        return x, None

    numpyro_scan(step, x_init, y)


#: NumPyro twin and its max plate nesting (for ``enum``'s first available dim)
NUMPYRO = {
    "gaussian_mixture": (np_gaussian_mixture, 1),
    "hmm_example": (np_hmm_example, 0),
    "coal_mining": (np_coal_mining, 1),
    "cjs": (np_cjs, 1),
    "dawid_skene": (np_dawid_skene, 2),
    "ar_state_space": (np_ar_state_space, 0),
}


def _numpyro_log_density(name: str, data: dict, ld: ppl.LogDensity):
    """NumPyro's log density of the twin (funsor enumeration) at ppl's flat theta, with the
    log-Jacobians of the constraint transforms (as ppl's LogDensity includes them)."""
    model, nesting = NUMPYRO[name]
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
        return funsor_log_density(enumerated, (), data, values)[0] + jacobian

    return log_density


@pytest.mark.parametrize("name", NAMES)
def test_log_density_equals_numpyros(name):
    with jax.enable_x64(True):
        data = _data(name)
        ld = ppl.logdensity(zoo.load(name).model, **data)
        reference = _numpyro_log_density(name, data, ld)
        ours = jax.jit(ld)
        for theta in _thetas(ld.dim, n=2):
            np.testing.assert_allclose(ours(theta), reference(theta), rtol=1e-10, atol=1e-8)


# ------------------------------------------------------------------ sites, short runs


def _short_run(name):
    """1 chain, 20 draws without warmup (a smoke test, as in tests/test_models.py)."""
    module = zoo.load(name)
    data = module.load_data()
    kernel = NUTS(module.model, step_size=0.02, max_tree_depth=6)
    mcmc = MCMC(kernel, num_warmup=0, num_samples=20, num_chains=1, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), **data)
    return module, data, mcmc


@pytest.mark.parametrize("name", NAMES)
def test_short_nuts_run_gives_continuous_and_discrete_draws(name):
    module, _, mcmc = _short_run(name)
    ld = mcmc.logdensity_
    # the discrete sites are summed out, not coordinates of the flat vector
    assert tuple(ld.enumerated_names) == DISCRETE[name]
    for site in DISCRETE[name]:
        assert ld.sites[site].kind == "enumerated" and site not in ld.latent_names
    assert ld.dim == sum(ld.sites[n].size for n in ld.latent_names)
    stats = mcmc.get_sample_stats()
    assert stats["acceptance_rate"].mean() > 0.1, f"{name}: the chain hardly moved"
    assert np.all(np.isfinite(stats["lp"]))
    for site, value in mcmc.get_samples().items():
        assert value.shape == (20, *ld.sites[site].shape) and np.all(np.isfinite(value)), site
    tree = mcmc.to_datatree(dims=module.dims, coords=module.coords)
    for site in DISCRETE[name]:
        draws = tree.posterior[site]
        assert draws.shape == (1, 20, *ld.sites[site].shape), (site, draws.shape)
        support = ld.sites[site].support
        assert bool(jnp.all(support(jnp.asarray(draws.values)))), f"{site} outside its support"
    assert "log_likelihood" in tree.children


# ------------------------------------------------------------------ infer_discrete, exactly

N_DRAWS = 4000


def _assert_frequencies(draws: np.ndarray, exact: np.ndarray, values) -> None:
    """Frequencies of ``values`` among ``draws`` (n, *shape) against ``exact`` (len(values),
    *shape) probabilities: within 5 binomial sds (+1e-3)."""
    n = draws.shape[0]
    for k, value in enumerate(values):
        freq = (draws == value).mean(axis=0)
        bound = 5 * np.sqrt(np.clip(exact[k] * (1 - exact[k]), 0, None) / n) + 1e-3
        worst = np.max(np.abs(freq - exact[k]) - bound)
        assert worst < 0, f"value {value}: frequencies off the exact probabilities by {worst}"


def _repeat(values: dict, n: int) -> dict:
    return {k: jnp.broadcast_to(jnp.asarray(v), (n, *jnp.shape(v))) for k, v in values.items()}


def test_infer_discrete_coal_mining_switch_year_is_exact():
    module = zoo.load("coal_mining")
    data = module.load_data()
    rates = {"early_rate": jnp.array(3.1), "late_rate": jnp.array(0.95)}
    log_joint = coal_mining_log_joint(data["disasters"], rates["early_rate"], rates["late_rate"])
    exact = np.asarray(jax.nn.softmax(log_joint))
    draws = infer_discrete(
        module.model, _repeat(rates, N_DRAWS), **data, rng_key=jax.random.PRNGKey(0)
    )["switchpoint"]
    assert draws.shape == (N_DRAWS,)
    _assert_frequencies(np.asarray(draws), exact, module.YEARS)
    best = infer_discrete(module.model, _repeat(rates, 1), **data, temperature=0)["switchpoint"]
    assert int(best[0]) == module.YEARS[int(np.argmax(exact))]


def test_infer_discrete_gaussian_mixture_labels_are_exact():
    module = zoo.load("gaussian_mixture")
    data = module.load_data()
    values = {
        "w": jnp.array([0.3, 0.4, 0.3]),
        "mu": jnp.array([-3.5, 0.2, 3.8]),
        "sigma": jnp.array([1.2, 1.5, 0.9]),  # wide, so that many labels are uncertain
    }
    y = np.asarray(data["y"])[:, None]
    log_joint = np.log(values["w"]) + dist.Normal(values["mu"], values["sigma"]).log_prob(y)
    exact = np.asarray(jax.nn.softmax(log_joint, axis=1)).T  # (K, N)
    assert np.sum((exact > 0.05) & (exact < 0.95)) > 20  # the check has uncertain labels
    draws = infer_discrete(
        module.model, _repeat(values, N_DRAWS), **data, rng_key=jax.random.PRNGKey(1)
    )["z"]
    assert draws.shape == (N_DRAWS, y.shape[0])
    _assert_frequencies(np.asarray(draws), exact, range(3))


def _hmm_tables(y, values):
    trans = np.stack([values["theta1"], values["theta2"]])
    emit = np.asarray(dist.Normal(values["mu"], 1.0).log_prob(np.asarray(y)[:, None]))
    return np.log(trans), emit


def _hmm_marginals(log_trans, emit):
    """P(z_t = k | y) by forward-backward (flat initial state), (K, T)."""
    T, K = emit.shape
    alpha, beta = np.zeros((T, K)), np.zeros((T, K))
    alpha[0] = emit[0]
    for t in range(1, T):
        alpha[t] = np.logaddexp.reduce(alpha[t - 1][:, None] + log_trans, axis=0) + emit[t]
    for t in range(T - 2, -1, -1):
        beta[t] = np.logaddexp.reduce(log_trans + emit[t + 1] + beta[t + 1], axis=1)
    post = alpha + beta
    return np.exp(post - np.logaddexp.reduce(post, axis=1, keepdims=True)).T


def _viterbi(log_trans, emit):
    T, K = emit.shape
    score, back = emit[0].copy(), np.zeros((T, K), dtype=int)
    for t in range(1, T):
        cand = score[:, None] + log_trans
        back[t] = np.argmax(cand, axis=0)
        score = cand.max(axis=0) + emit[t]
    path = [int(np.argmax(score))]
    for t in range(T - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]


def test_infer_discrete_hmm_example_marginals_and_viterbi_path():
    module = zoo.load("hmm_example")
    data = module.load_data()
    # emission means 1 sd apart and wide transition rows: many states are uncertain
    values = {
        "theta1": jnp.array([0.6, 0.4]),
        "theta2": jnp.array([0.3, 0.7]),
        "mu": jnp.array([5.5, 6.5]),
    }
    log_trans, emit = _hmm_tables(data["y"], values)
    exact = _hmm_marginals(log_trans, emit)
    assert np.sum((exact[1] > 0.05) & (exact[1] < 0.95)) > 10
    draws = infer_discrete(
        module.model, _repeat(values, N_DRAWS), **data, rng_key=jax.random.PRNGKey(2)
    )["z"]
    assert draws.shape == (N_DRAWS, 100)
    _assert_frequencies(np.asarray(draws), exact, range(2))
    path = infer_discrete(module.model, _repeat(values, 1), **data, temperature=0)["z"]
    assert np.asarray(path[0]).tolist() == _viterbi(log_trans, emit)


def test_infer_discrete_dawid_skene_classes_are_exact():
    module = zoo.load("dawid_skene")
    data = module.load_data()
    accuracy = jnp.array([0.7, 0.6, 0.6, 0.55, 0.5])[:, None, None]
    beta = accuracy * jnp.eye(3) + (1 - accuracy) / 2 * (1 - jnp.eye(3))
    values = {"beta": beta, "pi": jnp.array([0.45, 0.35, 0.2])}
    log_joint = dawid_skene_class_log_joint(
        data["positions"], data["annotations"], values["beta"], values["pi"]
    )
    exact = np.asarray(jax.nn.softmax(log_joint, axis=1)).T  # (C, I)
    assert np.sum((exact > 0.05) & (exact < 0.95)) > 10
    draws = infer_discrete(
        module.model, _repeat(values, N_DRAWS), **data, rng_key=jax.random.PRNGKey(3)
    )["c"]
    assert draws.shape == (N_DRAWS, 50)
    _assert_frequencies(np.asarray(draws), exact, range(3))
    best = infer_discrete(module.model, _repeat(values, 1), **data, temperature=0)["c"]
    np.testing.assert_array_equal(best[0], np.argmax(exact, axis=0))


def _cjs_alive_marginals(history, survival, rho):
    """P(alive at occasions 1..T-1 | history) per animal by brute force over the 2^(T-1)
    paths of the model's chain: (T-1, N)."""
    history = np.asarray(history)
    N, T = history.shape
    paths = np.array(list(itertools.product((0, 1), repeat=T - 1)))[:, :, None]  # (S, T-1, 1)
    seen = np.maximum.accumulate(history, axis=1)  # captured at or before each occasion
    weights = np.ones((paths.shape[0], N))
    z_prev = np.ones((1, N))
    for t in range(1, T):
        z = paths[:, t - 1]
        p = np.where(seen[:, t - 1], survival * z_prev, 1.0)
        weights = weights * np.where(z == 1, p, 1 - p)
        q = rho * z
        weights = weights * np.where(seen[:, t - 1], np.where(history[:, t] == 1, q, 1 - q), 1.0)
        z_prev = z
    return np.einsum("sn,st->tn", weights, paths[:, :, 0]) / weights.sum(0)


def test_infer_discrete_cjs_alive_states_are_exact():
    module = zoo.load("cjs")
    data = module.load_data()
    values = {"phi": jnp.array([0.75, 0.6]), "rho": jnp.array(0.7)}
    history = np.asarray(data["capture_history"])
    survival = np.asarray(values["phi"])[np.asarray(data["sex"])]
    exact = _cjs_alive_marginals(history, survival, float(values["rho"]))
    draws = np.asarray(
        infer_discrete(
            module.model, _repeat(values, N_DRAWS), **data, rng_key=jax.random.PRNGKey(4)
        )["z"]
    )
    assert draws.shape == (N_DRAWS, 6, 100)
    _assert_frequencies(draws, np.stack([1 - exact, exact]), range(2))
    # every drawn path is possible: alive when seen, and dead stays dead once seen before
    seen_later = np.maximum.accumulate(history[:, :0:-1], axis=1)[:, ::-1].T  # (T-1, N)
    assert np.all(draws[:, seen_later == 1] == 1)
    after_entry = np.maximum.accumulate(history, axis=1)[:, :-1].T == 1
    died = (draws[:, :-1] == 0) & after_entry[:-1]
    assert not np.any(died & (draws[:, 1:] == 1))


# ------------------------------------------------------------------ slow: ppl vs NumPyro NUTS

NUM_WARMUP, NUM_SAMPLES, NUM_CHAINS = 1000, 1000, 4


def _init_values(name: str, data: dict) -> dict | None:
    """Starting values: the mixture's means at data quantiles (its local modes trap about
    one chain in four from the default start, see models/gaussian_mixture.py)."""
    if name == "gaussian_mixture":
        return {"mu": jnp.quantile(data["y"], jnp.array([0.15, 0.5, 0.85]))}
    return None


def _flat_columns(samples: dict, sites) -> dict[str, np.ndarray]:
    """``{site[index]: (chain, draw)}`` for every element of ``sites``."""
    out = {}
    for site in sites:
        value = np.asarray(samples[site])
        flat = value.reshape(*value.shape[:2], -1)
        for i, index in enumerate(np.ndindex(*value.shape[2:])):
            out[f"{site}{list(index) if index else ''}"] = flat[..., i]
    return out


def _indicators(draws: dict, supports: dict) -> dict:
    """``{site: {value: (chain, draw, *shape)}}``: the discrete draws as indicators, for each
    value of ``supports[site]`` but the last (the indicators of a site sum to one)."""
    return {
        site: {v: (np.asarray(draws[site]) == v).astype(float) for v in support[:-1]}
        for site, support in supports.items()
    }


def _exact_chain_probabilities(name: str, samples: dict, data: dict) -> dict:
    """For the chain models, P(state 0 | theta, y) at every draw theta of ``samples``
    ``(chain, draw, ...)``, exactly (forward-backward, brute force): the Rao-Blackwellised
    counterpart of drawn indicators, with the same expectation."""
    chains, draws = np.shape(samples[next(iter(samples))])[:2]
    flat = {k: np.asarray(v).reshape(chains * draws, *np.shape(v)[2:]) for k, v in samples.items()}
    out = []
    for i in range(chains * draws):
        if name == "hmm_example":
            values = {k: v[i] for k, v in flat.items()}
            out.append(_hmm_marginals(*_hmm_tables(data["y"], values))[0])
        else:  # cjs
            survival = flat["phi"][i][np.asarray(data["sex"])]
            alive = _cjs_alive_marginals(data["capture_history"], survival, flat["rho"][i])
            out.append(1 - alive)
    return {"z": {0: np.reshape(out, (chains, draws, *np.shape(out[0])))}}


def _probability_columns(probabilities: dict) -> dict[str, np.ndarray]:
    """``{site[index]==value: (chain, draw)}`` from ``{site: {value: (chain, draw, *shape)}}``."""
    out = {}
    for site, by_value in probabilities.items():
        for v, p in by_value.items():
            flat = p.reshape(*p.shape[:2], -1)
            for i, index in enumerate(np.ndindex(*p.shape[2:])):
                out[f"{site}{list(index)}=={v}"] = flat[..., i]
    return out


def _compare(ours: dict, theirs: dict, floor: float = 0.0) -> list[str]:
    """Columns whose means differ by more than 5 sqrt(mcse_ppl^2 + mcse_numpyro^2) (+ floor)."""
    from arviz_stats.base import array_stats

    def mcse(x):
        if np.ptp(x) == 0:
            return 0.0
        return float(array_stats.mcse(x, chain_axis=0, draw_axis=1, method="mean"))

    failed, worst = [], 0.0
    for column, a in ours.items():
        b = theirs[column]
        diff = abs(a.mean() - b.mean())
        tol = 5 * np.hypot(mcse(a), mcse(b)) + floor
        worst = max(worst, diff / tol if tol > 0 else (np.inf if diff > 0 else 0.0))
        if not diff <= tol:
            failed.append(f"{column}: ppl {a.mean():.4g}, NumPyro {b.mean():.4g}, tol {tol:.3g}")
    print(f"  {len(ours)} quantities, largest |diff| / tolerance {worst:.2f}")
    return failed


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_nuts_agrees_with_numpyro(name):
    module = zoo.load(name)
    with jax.enable_x64(True):
        data = module.load_data()
        init = _init_values(name, data)
        began = time.perf_counter()
        mcmc = MCMC(
            NUTS(module.model),
            num_warmup=NUM_WARMUP,
            num_samples=NUM_SAMPLES,
            num_chains=NUM_CHAINS,
            progress_bar=False,
        )
        mcmc.run(jax.random.PRNGKey(0), init_params=init, **data)
        ours = mcmc.get_samples(group_by_chain=True)
        ppl_seconds = time.perf_counter() - began
        twin, _ = NUMPYRO[name]
        strategy = (
            numpyro.infer.init_to_uniform
            if init is None
            else numpyro.infer.init_to_value(values=init)
        )
        began = time.perf_counter()
        reference = numpyro.infer.MCMC(
            numpyro.infer.NUTS(twin, init_strategy=strategy),
            num_warmup=NUM_WARMUP,
            num_samples=NUM_SAMPLES,
            num_chains=NUM_CHAINS,
            chain_method="sequential",
            progress_bar=False,
        )
        reference.run(jax.random.PRNGKey(1), **data)
        theirs = reference.get_samples(group_by_chain=True)
        numpyro_seconds = time.perf_counter() - began
        print(f"\n{name}: ppl {ppl_seconds:.0f} s, NumPyro {numpyro_seconds:.0f} s")
        sites = mcmc.logdensity_.latent_names
        failed = _compare(_flat_columns(ours, sites), _flat_columns(theirs, sites))
        assert not failed, f"{name}: ppl and NumPyro disagree:\n" + "\n".join(failed)
        if not DISCRETE[name]:
            return
        # the discrete sites: infer_discrete on ppl's draws against NumPyro's posterior
        our_discrete = infer_discrete(
            mcmc.logdensity_, ours, rng_key=jax.random.PRNGKey(2), batch_ndims=2
        )
        if name in ("hmm_example", "cjs"):
            # NumPyro's infer_discrete fails on models with scan (an AssertionError inside
            # funsor): the exact state probabilities at NumPyro's draws instead
            theirs_p = _exact_chain_probabilities(name, theirs, data)
            ours_p = _indicators(our_discrete, {"z": np.array([0, 1])})
        else:
            flat = {k: jnp.reshape(v, (-1, *v.shape[2:])) for k, v in theirs.items()}
            predictive = numpyro.infer.Predictive(
                twin, flat, infer_discrete=True, return_sites=list(DISCRETE[name])
            )
            their_discrete = {}
            for site, value in predictive(jax.random.PRNGKey(3), **data).items():
                shape = (NUM_CHAINS, NUM_SAMPLES, *our_discrete[site].shape[2:])
                their_discrete[site] = np.asarray(value).reshape(shape)
            if name == "coal_mining":  # NumPyro's twin draws the year's index (np_coal_mining)
                their_discrete["switchpoint"] = their_discrete["switchpoint"] + module.FIRST_YEAR
            supports = {
                site: np.union1d(np.unique(our_discrete[site]), np.unique(their_discrete[site]))
                for site in DISCRETE[name]
            }
            ours_p = _indicators(our_discrete, supports)
            theirs_p = _indicators(their_discrete, supports)
        # indicators with (almost) no variance have no ESS-based MCSE: a floor of 0.01
        failed = _compare(_probability_columns(ours_p), _probability_columns(theirs_p), floor=0.01)
        assert not failed, f"{name}: discrete draws disagree:\n" + "\n".join(failed[:20])
