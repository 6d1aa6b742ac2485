"""``ppl.logdensity`` against NumPyro's own potential energy.

Every model is written once, as a function of a module-like object ``P``
(``ppl`` or ``numpyro``: both have ``sample``, ``plate``, ``deterministic``,
``factor`` and ``param`` with the same signatures), so the two libraries see
exactly the same model. For each model and 20 random unconstrained points
theta ~ Uniform(-2, 2)^dim we check, in float64:

* ``ld(theta)`` equals ``-numpyro.infer.util.potential_energy`` at
  ``ld.unflatten(theta)``, and so does its gradient with respect to theta;
* ``ld``, ``jax.jit(ld)``, ``jax.vmap(ld)`` and ``jax.grad(ld)`` agree;
* ``ld.constrain(theta)`` equals ``numpyro.infer.util.constrain_fn`` (latent
  and deterministic sites) and ``ld.unconstrain`` inverts it.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.handlers
import pytest
from numpyro.infer.reparam import LocScaleReparam as NumpyroLocScaleReparam
from numpyro.infer.util import constrain_fn, potential_energy

import ppl
import ppl.distributions as dist
from ppl.distributions import constraints, transforms
from ppl.reparam import LocScaleReparam

NUM_POINTS = 20
RADIUS = 2.0
RTOL = 1e-6


@pytest.fixture(scope="module", autouse=True)
def _float64():
    """Run this module in float64; restore the previous setting afterwards."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
    _compiled.cache_clear()


def _handlers(P):
    """The effect-handler module that goes with ``P``."""
    return ppl.handlers if P is ppl else numpyro.handlers


# ---------------------------------------------------------------------- data
# numpy arrays only (created before x64 is switched on, they stay float64).

_rng = np.random.default_rng(20240611)

SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

LOGREG_X = _rng.normal(size=(200, 5))
LOGREG_Y = (
    _rng.uniform(size=200) < 1 / (1 + np.exp(-(0.3 + LOGREG_X @ [1.0, -0.5, 0.0, 2.0, 0.7])))
).astype(np.float64)

NESTED_Y = _rng.normal(size=(5, 3, 4)) + _rng.normal(size=(3, 1)) + 1.0  # (obs, region, group)

CONSTRAINED_COUNTS = np.array([3.0, 7.0, 6.0, 4.0])
CONSTRAINED_Z = _rng.normal(size=(10, 3))
CONSTRAINED_ORD = _rng.integers(0, 4, size=10)
CONSTRAINED_ORD_X = _rng.normal(size=10)

FACTOR_Y = _rng.standard_t(4, size=25) + 1.5

SUB_N, SUB_B = 100, 17
SUB_X = _rng.normal(size=SUB_N)
SUB_Y = 0.5 + 2.0 * SUB_X + _rng.normal(size=SUB_N)

MASK_X = _rng.normal(size=30)
MASK_Y = 1.0 + MASK_X + 0.5 * _rng.normal(size=30)
MASK_Y2 = 1.0 + _rng.normal(size=30)
MASK = _rng.uniform(size=30) < 0.6
WEIGHTS = _rng.uniform(0.2, 3.0, size=30)

INTERVAL_Y = _rng.normal(3.0, 2.0, size=40)
INTERVAL_LO = np.array([-3.0, -1.0, 0.0, 2.5])
INTERVAL_HI = np.array([-2.0, 4.0, 0.1, 10.0])

MVN_Y = _rng.multivariate_normal(
    [1.0, -1.0, 0.5], [[1.0, 0.5, 0.2], [0.5, 2.0, -0.3], [0.2, -0.3, 0.7]], size=50
)

GLM_X = _rng.normal(size=(80, 3))
GLM_EXPOSURE = _rng.uniform(0.5, 2.0, size=80)
GLM_COUNTS = _rng.poisson(GLM_EXPOSURE * np.exp(0.2 + GLM_X @ [0.5, -0.3, 0.1])).astype(float)
GLM_NB_COUNTS = _rng.negative_binomial(3, 3 / (3 + np.exp(1.0 + GLM_X @ [0.4, 0.0, -0.6])))
GLM_NB_COUNTS = GLM_NB_COUNTS.astype(float)

SHAPES_Y = _rng.normal(size=(12, 3))

NOLATENT_Y = _rng.normal(size=15)


# ---------------------------------------------------------------------- models


def eight_schools_centered(P, sigma, y):
    mu = P.sample("mu", dist.Normal(0.0, 5.0))
    tau = P.sample("tau", dist.HalfCauchy(5.0))
    with P.plate("J", y.shape[0]):
        theta = P.sample("theta", dist.Normal(mu, tau))
        P.sample("y", dist.Normal(theta, sigma), obs=y)


def eight_schools_noncentered(P, sigma, y):
    mu = P.sample("mu", dist.Normal(0.0, 5.0))
    tau = P.sample("tau", dist.HalfCauchy(5.0))
    with P.plate("J", y.shape[0]):
        eta = P.sample("eta", dist.Normal(0.0, 1.0))
        theta = P.deterministic("theta", mu + tau * eta)
        P.sample("y", dist.Normal(theta, sigma), obs=y)


def logistic_regression(P, X, y):
    alpha = P.sample("alpha", dist.Normal(0.0, 2.5))
    with P.plate("predictors", X.shape[1]):
        beta = P.sample("beta", dist.Normal(0.0, 1.0))
    with P.plate("rows", X.shape[0]):
        P.sample("y", dist.Bernoulli(logits=alpha + X @ beta), obs=y)


def nested_hierarchical(P, y):
    """Groups within regions: plates at dims -2 (region) and -1 (group), obs at -3."""
    n_obs, n_region, n_group = y.shape
    mu = P.sample("mu", dist.Normal(0.0, 5.0))
    tau_region = P.sample("tau_region", dist.HalfNormal(2.0))
    sigma = P.sample("sigma", dist.Exponential(1.0))
    with P.plate("region", n_region, dim=-2):
        alpha = P.sample("alpha", dist.Normal(mu, tau_region))  # (region, 1)
        tau_group = P.sample("tau_group", dist.HalfNormal(1.0))  # (region, 1)
        with P.plate("group", n_group, dim=-1):
            beta = P.sample("beta", dist.Normal(alpha, tau_group))  # (region, group)
            with P.plate("obs", n_obs, dim=-3):
                P.sample("y", dist.Normal(beta, sigma), obs=y)


def constrained_params(P, counts, z, ordinal, x):
    """Positive, unit-interval, simplex, ordered and correlation-Cholesky latents."""
    sigma = P.sample("sigma", dist.HalfNormal(1.0))
    nu = P.sample("nu", dist.LogNormal(0.0, 1.0))
    rate = P.sample("rate", dist.Gamma(2.0, 2.0))
    p = P.sample("p", dist.Beta(2.0, 3.0))
    w = P.sample("w", dist.Dirichlet(jnp.ones(4)))
    cut = P.sample(
        "cutpoints",
        dist.TransformedDistribution(
            dist.Normal(0.0, 3.0).expand([3]).to_event(1), transforms.OrderedTransform()
        ),
    )
    L = P.sample("L_corr", dist.LKJCholesky(3, 2.0))
    offset = P.param("offset", 0.25)
    P.sample("counts", dist.Multinomial(total_count=20, probs=w), obs=counts)
    P.sample("k", dist.Poisson(rate * nu), obs=3.0)
    P.sample("flip", dist.Bernoulli(p), obs=1.0)
    with P.plate("rows", z.shape[0]):
        P.sample("z", dist.MultivariateNormal(offset, scale_tril=sigma * L), obs=z)
        P.sample("ordinal", dist.OrderedLogistic(x * nu, cut), obs=ordinal)


def ordered_improper_uniform(P, y):
    """An ordered vector with an ImproperUniform prior (NumPyro's idiom for flat priors)."""
    c = P.sample("c", dist.ImproperUniform(constraints.ordered_vector, (), (3,)))
    s = P.sample("s", dist.ImproperUniform(constraints.positive, (), ()))
    with P.plate("N", y.shape[0]):
        P.sample("y", dist.Normal(c.sum(), 1.0 + s), obs=y)


def factor_model(P, y):
    mu = P.sample("mu", dist.Normal(0.0, 10.0))
    sigma = P.sample("sigma", dist.HalfNormal(2.0))
    P.factor("soft_constraint", -0.5 * ((mu - 1.0) / 0.5) ** 2)
    with P.plate("N", y.shape[0]):
        P.factor("likelihood", dist.StudentT(4.0, mu, sigma).log_prob(y))


def subsampled(P, x, y, subsample_size):
    a = P.sample("a", dist.Normal(0.0, 5.0))
    b = P.sample("b", dist.Normal(0.0, 5.0))
    sigma = P.sample("sigma", dist.HalfNormal(2.0))
    with P.plate("data", y.shape[0], subsample_size=subsample_size) as idx:
        lam = P.sample("lam", dist.Gamma(4.0, 4.0))  # a local (minibatch) latent
        xb, yb = jnp.asarray(x)[idx], jnp.asarray(y)[idx]
        P.sample("y", dist.Normal(a + b * xb, sigma / jnp.sqrt(lam)), obs=yb)


def mask_and_scale(P, x, y, y2, obs_mask, weights):
    H = _handlers(P)
    alpha = P.sample("alpha", dist.Normal(0.0, 2.0))
    with H.scale(scale=2.5):
        sigma = P.sample("sigma", dist.HalfCauchy(1.0))  # scaled latent: Jacobian scaled too
    with P.plate("N", y.shape[0]):
        with H.mask(mask=obs_mask):
            lam = P.sample("lam", dist.Gamma(3.0, 3.0))  # masked latent: Jacobian masked too
            P.sample("y", dist.Normal(alpha + x, sigma / jnp.sqrt(lam)), obs=y)
        with H.scale(scale=weights):
            P.sample("y2", dist.Normal(alpha, sigma), obs=y2)
    with H.mask(mask=False):
        P.sample("ignored", dist.Normal(alpha, 1e-3), obs=100.0)


def interval_bounds(P, y, lo, hi):
    low, high = float(np.min(y)) - 1.0, float(np.max(y)) + 1.0  # data-dependent bounds
    mu = P.sample("mu", dist.Uniform(low, high))
    sigma = P.sample("sigma", dist.Uniform(0.1, 5.0))
    with P.plate("N", y.shape[0]):
        P.sample("y", dist.Normal(mu, sigma), obs=y)
    with P.plate("G", lo.shape[0]):
        P.sample("u", dist.Uniform(lo, hi))  # elementwise bounds from data
    P.sample("v", dist.Uniform(-1.0, 1.0 + sigma))  # bound depending on a latent


def mvn_lkj_covariance(P, y):
    n, k = y.shape
    mu = P.sample("mu", dist.Normal(0.0, 5.0).expand([k]).to_event(1))
    with P.plate("K", k):
        tau = P.sample("tau", dist.HalfNormal(2.0))
    omega = P.sample("Omega", dist.LKJ(k, 1.5))  # corr_matrix support
    cov = P.deterministic("cov", tau[:, None] * omega * tau[None, :])
    with P.plate("N", n):
        P.sample("y", dist.MultivariateNormal(mu, covariance_matrix=cov), obs=y)


def poisson_glm(P, X, exposure, counts):
    a = P.sample("a", dist.Normal(0.0, 2.0))
    with P.plate("predictors", X.shape[1]):
        b = P.sample("b", dist.Normal(0.0, 1.0))
    with P.plate("rows", X.shape[0]):
        P.sample("counts", dist.Poisson(exposure * jnp.exp(a + X @ b)), obs=counts)


def negbin_glm(P, X, counts):
    a = P.sample("a", dist.Normal(0.0, 2.0))
    b = P.sample("b", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    phi = P.sample("phi", dist.Gamma(2.0, 0.5))
    with P.plate("rows", X.shape[0]):
        P.sample("counts", dist.NegativeBinomial2(jnp.exp(a + X @ b), phi), obs=counts)


def deterministic_shapes(P, y):
    k = y.shape[1]
    loc = P.sample("loc", dist.Normal(0.0, 1.0).expand([k]).to_event(1))
    scales = P.sample("scales", dist.LogNormal(0.0, 0.5), sample_shape=(k,))
    w = P.sample("w", dist.Gamma(2.0, 1.0).expand([2, k]).to_event(2))
    simplexes = P.sample("simplexes", dist.Dirichlet(jnp.ones(k)), sample_shape=(2,))
    P.deterministic("w_mean", w.mean(0))
    total = P.deterministic("total", loc + scales * (simplexes * w).sum(0))
    with P.plate("N", y.shape[0]):
        P.sample("y", dist.Normal(total, scales).to_event(1), obs=y)


def no_latents(P, y):
    P.deterministic("y_mean", jnp.mean(y))
    P.factor("bonus", 0.25)
    with P.plate("N", y.shape[0]):
        P.sample("y", dist.Normal(0.5, 1.3), obs=y)


# ---------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    name: str
    model: Callable
    args: tuple
    ppl_config: dict | None = None  # ppl.handlers.reparam config
    numpyro_config: dict | None = None  # numpyro.handlers.reparam config
    subsampled_plates: tuple[str, ...] = ()  # numpyro reuses ppl's indices for these


CASES = [
    Case("eight_schools_centered", eight_schools_centered, (SCHOOLS_SIGMA, SCHOOLS_Y)),
    Case("eight_schools_noncentered", eight_schools_noncentered, (SCHOOLS_SIGMA, SCHOOLS_Y)),
    Case(
        "eight_schools_reparam",
        eight_schools_centered,
        (SCHOOLS_SIGMA, SCHOOLS_Y),
        ppl_config={"theta": LocScaleReparam()},
        numpyro_config={"theta": NumpyroLocScaleReparam(0)},
    ),
    Case("logistic_regression", logistic_regression, (LOGREG_X, LOGREG_Y)),
    Case("nested_hierarchical", nested_hierarchical, (NESTED_Y,)),
    Case(
        "constrained_params",
        constrained_params,
        (CONSTRAINED_COUNTS, CONSTRAINED_Z, CONSTRAINED_ORD, CONSTRAINED_ORD_X),
    ),
    Case("ordered_improper_uniform", ordered_improper_uniform, (INTERVAL_Y[:10],)),
    Case("factor", factor_model, (FACTOR_Y,)),
    Case("subsampled_plate", subsampled, (SUB_X, SUB_Y, SUB_B), subsampled_plates=("data",)),
    Case("mask_and_scale", mask_and_scale, (MASK_X, MASK_Y, MASK_Y2, MASK, WEIGHTS)),
    Case("interval_bounds", interval_bounds, (INTERVAL_Y, INTERVAL_LO, INTERVAL_HI)),
    Case("mvn_lkj_covariance", mvn_lkj_covariance, (MVN_Y,)),
    Case("poisson_glm", poisson_glm, (GLM_X, GLM_EXPOSURE, GLM_COUNTS)),
    Case("negbin_glm", negbin_glm, (GLM_X, GLM_NB_COUNTS)),
    Case("deterministic_shapes", deterministic_shapes, (SHAPES_Y,)),
    Case("no_latents", no_latents, (NOLATENT_Y,)),
]
CASE_PARAMS = [pytest.param(case.name, id=case.name) for case in CASES]
_BY_NAME = {case.name: case for case in CASES}


@dataclass
class Compiled:
    case: Case
    ld: ppl.LogDensity
    numpyro_model: Callable
    thetas: jax.Array  # (NUM_POINTS, dim)

    @functools.cached_property
    def _ppl_value_and_grad(self):
        return _jit_run(jax.vmap(jax.value_and_grad(self.ld)), self.thetas)

    def ppl_value_and_grad(self):
        """jit(vmap(value_and_grad(ld))) at all points (computed once)."""
        return self._ppl_value_and_grad

    def numpyro_log_density(self, theta):
        params = self.ld.unflatten(theta)
        return -potential_energy(self.numpyro_model, self.case.args, {}, params)

    def numpyro_constrain(self, theta):
        params = self.ld.unflatten(theta)
        return constrain_fn(
            self.numpyro_model, self.case.args, {}, params, return_deterministic=True
        )


def _jit_run(fn, *args):
    """``jax.jit(fn)(*args)``, compiled with cheap XLA optimisation (keeps the module fast)."""
    lowered = jax.jit(fn).lower(*args)
    options = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
    try:
        compiled = lowered.compile(compiler_options=options)
    except Exception:  # an XLA without these options: compile normally
        compiled = lowered.compile()
    return compiled(*args)


@functools.cache
def _compiled(name: str) -> Compiled:
    case = _BY_NAME[name]
    ppl_model = functools.partial(case.model, ppl)
    np_model = functools.partial(case.model, numpyro)
    if case.ppl_config is not None:
        ppl_model = ppl.handlers.reparam(ppl_model, config=case.ppl_config)
    if case.numpyro_config is not None:
        np_model = numpyro.handlers.reparam(np_model, config=case.numpyro_config)
    try:
        ld = ppl.logdensity(ppl_model, *case.args)
    except Exception as err:
        notes = " ".join(getattr(err, "__notes__", []))
        pytest.fail(
            f"ppl.logdensity could not compile model '{name}', which NumPyro's "
            f"potential_energy handles: {type(err).__name__}: {err} {notes}"
        )
    if case.subsampled_plates:
        indices = {p: ld.prototype_trace[p]["value"] for p in case.subsampled_plates}
        np_model = numpyro.handlers.substitute(np_model, data=indices)
    key = jax.random.PRNGKey(zlib.crc32(name.encode()))
    thetas = jax.random.uniform(key, (NUM_POINTS, ld.dim), minval=-RADIUS, maxval=RADIUS)
    return Compiled(case, ld, np_model, thetas)


def _assert_values_close(actual, expected, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(expected)), f"{what}: reference has non-finite values"
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-8, err_msg=what)


def _assert_grads_close(actual, expected, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(expected)), f"{what}: reference has non-finite values"
    # absolute tolerance relative to the size of the gradient at each point
    scale = np.maximum(1.0, np.max(np.abs(expected), axis=-1, keepdims=True, initial=0.0))
    bad = np.abs(actual - expected) > RTOL * (np.abs(expected) + scale)
    if bad.any():
        first = np.argwhere(bad)[0]
        point = tuple(first[:-1])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} gradient entries differ; first at "
            f"{tuple(int(i) for i in first)}:\nppl     {actual[point]}\nnumpyro {expected[point]}"
        )


# ---------------------------------------------------------------------- tests


def test_enough_models():
    assert len(CASES) >= 12
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("name", CASE_PARAMS)
def test_log_density_and_gradient_match_numpyro(name):
    c = _compiled(name)
    value, grad = c.ppl_value_and_grad()
    expected_value, expected_grad = _jit_run(
        jax.vmap(jax.value_and_grad(c.numpyro_log_density)), c.thetas
    )
    assert value.dtype == jnp.float64, f"log density is {value.dtype}, expected float64"
    _assert_values_close(value, expected_value, f"{name}: log density vs -potential_energy")
    _assert_grads_close(grad, expected_grad, f"{name}: gradient vs -grad potential_energy")


@pytest.mark.parametrize("name", CASE_PARAMS)
def test_jit_vmap_grad_agree_with_plain_call(name):
    c = _compiled(name)
    ld, few = c.ld, c.thetas[:2]
    plain = np.array([float(ld(t)) for t in few])
    jitted = jax.jit(ld)
    _assert_values_close(np.array([float(jitted(t)) for t in few]), plain, f"{name}: jit(ld)")
    # vmap and grad (under jit, as the engines use them) at all points
    value, grad = c.ppl_value_and_grad()
    assert value.shape == (NUM_POINTS,) and grad.shape == (NUM_POINTS, ld.dim)
    _assert_values_close(value[:2], plain, f"{name}: jit(vmap(value_and_grad(ld)))")
    assert np.isfinite(np.asarray(grad)).all(), f"{name}: non-finite gradient"
    # the gradient is the derivative of the plain call: central difference along a direction
    direction = jax.random.normal(jax.random.PRNGKey(1), (ld.dim,))
    h = 1e-5
    numeric = (float(ld(few[0] + h * direction)) - float(ld(few[0] - h * direction))) / (2 * h)
    analytic = float(grad[0] @ direction)
    assert abs(numeric - analytic) <= 1e-5 * (1.0 + abs(analytic) + abs(plain[0])), (
        f"{name}: directional derivative {analytic} of jit(vmap(grad(ld))) disagrees with "
        f"the central difference {numeric} of the plain call"
    )


@pytest.mark.parametrize("name", CASE_PARAMS)
def test_constrain_matches_numpyro_and_round_trips(name):
    c = _compiled(name)
    ld, thetas = c.ld, c.thetas

    # the latent sites are those NumPyro sees as latent, with the same shapes
    numpyro_trace = numpyro.handlers.trace(
        numpyro.handlers.seed(
            numpyro.handlers.substitute(c.numpyro_model, data=ld.constrain(thetas[0])),
            rng_seed=0,
        )
    ).get_trace(*c.case.args)
    numpyro_latent = {
        site_name: tuple(jnp.shape(site["value"]))
        for site_name, site in numpyro_trace.items()
        if site["type"] == "sample" and not site["is_observed"]
    }
    ppl_latent = {n: ld.sites[n].shape for n in ld.latent_names}
    assert ppl_latent == numpyro_latent, f"{name}: latent sites differ from NumPyro's"

    def evaluate(thetas):
        constrained = jax.vmap(ld.constrain)(thetas)
        in_support = {n: jnp.all(ld.sites[n].support(constrained[n])) for n in ld.latent_names}
        expected = jax.vmap(c.numpyro_constrain)(thetas)
        recovered = jax.vmap(lambda t: ld.unconstrain(ld.constrain(t)))(thetas)
        return constrained, in_support, expected, recovered

    constrained, in_support, expected, recovered = _jit_run(evaluate, thetas)
    assert sorted(constrained) == sorted(expected), (
        f"{name}: ld.constrain sites {sorted(constrained)} != NumPyro's {sorted(expected)}"
    )
    for site_name, value in expected.items():
        np.testing.assert_allclose(
            constrained[site_name],
            value,
            rtol=RTOL,
            atol=1e-10,
            err_msg=f"{name}: constrained value of site '{site_name}'",
        )
    for site_name in ld.latent_names:
        assert constrained[site_name].shape == (NUM_POINTS, *ld.sites[site_name].shape)
        assert in_support[site_name], f"{name}: site '{site_name}' constrained outside support"
    np.testing.assert_allclose(
        recovered, thetas, rtol=0, atol=1e-8, err_msg=f"{name}: unconstrain(constrain(theta))"
    )


def test_reparam_handler_matches_hand_written_noncentered():
    """ppl.handlers.reparam(LocScaleReparam()) gives the hand-written non-centered density."""
    by_hand = _compiled("eight_schools_noncentered").ld
    reparam = _compiled("eight_schools_reparam").ld
    assert by_hand.dim == reparam.dim == 10
    assert reparam.sites["theta"].kind == "deterministic"
    assert reparam.sites["theta_decentered"].kind == "latent"
    thetas = _compiled("eight_schools_reparam").thetas

    @jax.jit
    def evaluate(thetas):
        return (
            jax.vmap(reparam)(thetas),
            jax.vmap(by_hand)(thetas),
            jax.vmap(reparam.constrain)(thetas)["theta"],
            jax.vmap(by_hand.constrain)(thetas)["theta"],
        )

    value, expected_value, theta, expected_theta = evaluate(thetas)
    _assert_values_close(value, expected_value, "reparam vs by-hand non-centered")
    np.testing.assert_allclose(theta, expected_theta, rtol=RTOL, err_msg="reparam: theta")


def test_subsampled_plate_scales_log_likelihood():
    """The minibatch log-likelihood is scaled by size / subsample_size, indices fixed."""
    n, b = SUB_N, SUB_B

    def model(y):
        mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
        with ppl.plate("data", n, subsample_size=b) as idx:
            ppl.sample("y", dist.Normal(mu, 1.0), obs=jnp.asarray(y)[idx])

    ld = ppl.logdensity(model, SUB_Y)
    idx = np.asarray(ld.prototype_trace["data"]["value"])
    assert idx.shape == (b,)
    assert len(np.unique(idx)) == b and idx.min() >= 0 and idx.max() < n
    thetas = _compiled("subsampled_plate").thetas[:, :1]
    expected = jax.vmap(
        lambda t: (
            dist.Normal(0.0, 5.0).log_prob(t[0])
            + (n / b) * dist.Normal(t[0], 1.0).log_prob(SUB_Y[idx]).sum()
        )
    )(thetas)
    _assert_values_close(jax.vmap(ld)(thetas), expected, "subsampled log density")
    # the density is a deterministic function of theta: same minibatch every call
    _assert_values_close(jax.vmap(ld)(thetas), expected, "subsampled log density, again")


def test_scale_and_mask_handlers_inside_jit():
    """Handlers with constant (Python float / bool) arguments inside a jitted density."""

    def model():
        x = ppl.sample("x", dist.Normal(0.0, 1.0))
        with ppl.handlers.scale(scale=2.5):
            ppl.sample("y", dist.Normal(x, 1.0), obs=0.5)
        with ppl.handlers.mask(mask=False):
            ppl.sample("z", dist.Normal(x, 1.0), obs=3.0)

    ld = ppl.logdensity(model)
    theta = jnp.array([0.3])
    expected = dist.Normal(0.0, 1.0).log_prob(0.3) + 2.5 * dist.Normal(0.3, 1.0).log_prob(0.5)
    _assert_values_close(ld(theta), expected, "plain call")
    try:
        jitted = jax.jit(ld)(theta)
    except jax.errors.TracerBoolConversionError as err:
        pytest.fail(
            "jax.jit(ld) fails for a model using ppl.handlers.scale(scale=2.5): "
            "scale.__init__ validates a constant scale with jnp operations, which are "
            f"traced under jit, then calls bool() on the result ({err.__class__.__name__})"
        )
    _assert_values_close(jitted, expected, "jit(ld)")
