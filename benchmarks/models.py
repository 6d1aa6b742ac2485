"""The benchmark suite: each model written once, as a function of a PPL module ``P``.

``ppl`` and ``numpyro`` both provide ``sample``, ``plate`` and ``deterministic``
with the same signatures, and ppl's distributions *are* numpyro's, so
``spec.build(ppl)`` and ``spec.build(numpyro)`` are the same model for the two
libraries. Data are generated on the fly from fixed numpy seeds (nothing large
is stored in git); only eight schools reads its data from ``models/data``.

A model is chosen by name with optional size parameters, ``name:key=value:...``,
for example ``gaussian:dim=10`` or ``radon:counties=20:houses=200``.

``benchmarks/pymc_models.py`` has the same models once more in PyMC (for nutpie).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

__all__ = ["MODELS", "BenchModel", "ModelChoice", "parse_model", "format_model"]

REPO_ROOT = Path(__file__).resolve().parents[1]
EIGHT_SCHOOLS_JSON = REPO_ROOT / "models" / "data" / "eight_schools.json"


@dataclass(frozen=True)
class BenchModel:
    """One model of the suite.

    Attributes:
        name: registry key.
        description: one line for the table header.
        build: ``P -> model function`` for a PPL module P (ppl or numpyro).
        data: ``(**params) -> dict`` of keyword arguments of the model function.
        defaults: size parameters of the full benchmark.
        quick: size parameters used by ``--quick``.
    """

    name: str
    description: str
    build: Callable[[ModuleType], Callable[..., Any]]
    data: Callable[..., dict[str, Any]]
    defaults: dict[str, int] = field(default_factory=dict)
    quick: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelChoice:
    """A model with its resolved size parameters."""

    model: BenchModel
    params: dict[str, int]

    @property
    def key(self) -> str:
        return format_model(self.model.name, self.params)

    def build(self, P: ModuleType) -> Callable[..., Any]:
        return self.model.build(P)

    def data(self) -> dict[str, Any]:
        return self.model.data(**self.params)


# ---------------------------------------------------------------------- eight schools


def eight_schools(P: ModuleType) -> Callable[..., None]:
    """Non-centered eight schools: theta = mu + tau * theta_tilde."""

    def eight_schools_model(sigma, y=None):
        mu = P.sample("mu", dist.Normal(0.0, 5.0))
        tau = P.sample("tau", dist.HalfCauchy(5.0))
        with P.plate("school", sigma.shape[0]):
            theta_tilde = P.sample("theta_tilde", dist.Normal(0.0, 1.0))
            theta = P.deterministic("theta", mu + tau * theta_tilde)
            P.sample("y", dist.Normal(theta, sigma), obs=y)

    return eight_schools_model


def eight_schools_data() -> dict[str, Any]:
    raw = json.loads(EIGHT_SCHOOLS_JSON.read_text())
    return {
        "sigma": jnp.asarray(raw["sigma"], dtype=jnp.float32),
        "y": jnp.asarray(raw["y"], dtype=jnp.float32),
    }


# ---------------------------------------------------------------------- logistic regression


def logistic_regression(P: ModuleType) -> Callable[..., None]:
    """Bernoulli-logit regression with an intercept and one coefficient per predictor."""

    def logistic_regression_model(X, y=None):
        n, k = X.shape
        alpha = P.sample("alpha", dist.Normal(0.0, 2.5))
        with P.plate("predictor", k):
            beta = P.sample("beta", dist.Normal(0.0, 1.0))
        with P.plate("row", n):
            P.sample("y", dist.Bernoulli(logits=alpha + X @ beta), obs=y)

    return logistic_regression_model


def logistic_regression_data(rows: int = 5000, cols: int = 25, seed: int = 1) -> dict[str, Any]:
    """Standardised correlated predictors, true coefficients ~ N(0, 0.5), intercept -0.3."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(cols, cols)) / np.sqrt(cols) + np.eye(cols)
    raw = rng.normal(size=(rows, cols)) @ mixing + rng.normal(0.0, 3.0, size=cols)
    X = (raw - raw.mean(axis=0)) / raw.std(axis=0)
    beta = rng.normal(0.0, 0.5, size=cols)
    logits = -0.3 + X @ beta
    y = rng.random(rows) < 1.0 / (1.0 + np.exp(-logits))
    return {"X": jnp.asarray(X, dtype=jnp.float32), "y": jnp.asarray(y, dtype=jnp.int32)}


# ---------------------------------------------------------------------- ill-conditioned Gaussian


def gaussian(P: ModuleType) -> Callable[..., None]:
    """Independent normals with scales from 0.01 to 100: a stress test of mass-matrix adaptation."""

    def gaussian_model(scales):
        with P.plate("dim", scales.shape[0]):
            P.sample("x", dist.Normal(0.0, scales))

    return gaussian_model


def gaussian_data(dim: int = 100) -> dict[str, Any]:
    return {"scales": jnp.asarray(np.logspace(-2.0, 2.0, dim), dtype=jnp.float32)}


# ---------------------------------------------------------------------- radon


def radon(P: ModuleType) -> Callable[..., None]:
    """Varying intercepts by county (centered) and a common floor slope, as in Gelman & Hill."""

    def radon_model(county, floor, n_counties, log_radon=None):
        mu_a = P.sample("mu_a", dist.Normal(0.0, 10.0))
        sigma_a = P.sample("sigma_a", dist.HalfNormal(5.0))
        with P.plate("county", n_counties):
            a = P.sample("a", dist.Normal(mu_a, sigma_a))
        b = P.sample("b", dist.Normal(0.0, 10.0))
        sigma_y = P.sample("sigma_y", dist.HalfNormal(5.0))
        with P.plate("house", county.shape[0]):
            P.sample("log_radon", dist.Normal(a[county] + b * floor, sigma_y), obs=log_radon)

    return radon_model


def radon_data(counties: int = 85, houses: int = 919, seed: int = 2) -> dict[str, Any]:
    """Simulated Minnesota-like radon data: skewed county sizes (at least one house each),
    about 17% of measurements on the first floor, intercepts ~ N(1.5, 0.35), floor
    slope -0.65, residual sd 0.75."""
    if houses < counties:
        raise ValueError(f"radon needs houses >= counties, got {houses} < {counties}")
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 1.2, size=counties)
    sizes = 1 + rng.multinomial(houses - counties, weights / weights.sum())
    county = np.repeat(np.arange(counties), sizes)
    floor = (rng.random(houses) < 0.17).astype(np.float32)
    a = rng.normal(1.5, 0.35, size=counties)
    log_radon = a[county] - 0.65 * floor + rng.normal(0.0, 0.75, size=houses)
    return {
        "county": jnp.asarray(county, dtype=jnp.int32),
        "floor": jnp.asarray(floor, dtype=jnp.float32),
        "n_counties": int(counties),
        "log_radon": jnp.asarray(log_radon, dtype=jnp.float32),
    }


# ---------------------------------------------------------------------- correlated Gaussian


def correlated_gaussian(P: ModuleType) -> Callable[..., None]:
    """A zero-mean multivariate normal with AR(1) correlation: a test of adaptation to
    correlations (a diagonal mass matrix cannot remove them)."""

    def correlated_gaussian_model(scale_tril):
        P.sample(
            "x", dist.MultivariateNormal(jnp.zeros(scale_tril.shape[0]), scale_tril=scale_tril)
        )

    return correlated_gaussian_model


def ar1_correlation(dim: int, rho: float = 0.9) -> np.ndarray:
    """The AR(1) correlation matrix ``rho ** |i - j|``, shape (dim, dim), float64.

    Its eigenvalues lie in ((1 - rho) / (1 + rho), (1 + rho) / (1 - rho)), so it is
    positive definite for |rho| < 1 (unlike the tridiagonal matrix with rho off the
    diagonal, which is not for rho > 1 / (2 cos(pi / (dim + 1))), about 0.5)."""
    index = np.arange(dim)
    return rho ** np.abs(index[:, None] - index[None, :])


def correlated_gaussian_data(dim: int = 50) -> dict[str, Any]:
    """Unit variances, correlation 0.9 between neighbours (0.9^|i-j| in general): the
    lower Cholesky factor of the covariance, float32, shape (dim, dim)."""
    return {"scale_tril": jnp.asarray(np.linalg.cholesky(ar1_correlation(dim)), jnp.float32)}


# ---------------------------------------------------------------------- stochastic volatility


SV_TRUTH = {"mu": -1.0, "phi": 0.95, "sigma": 0.25}


def stochastic_volatility(P: ModuleType) -> Callable[..., None]:
    """Stan's stochastic-volatility model (Stan User's Guide, "Stochastic volatility
    models", non-centered version), with a Beta prior on (phi + 1) / 2 as there.

    Latent sites: ``mu`` ~ Cauchy(0, 10) (mean log volatility), ``phi_beta`` =
    (phi + 1) / 2 ~ Beta(20, 1.5) (so phi, the persistence, is in (-1, 1)),
    ``sigma`` ~ HalfCauchy(5) (volatility of the log volatility), and
    ``h_std[T]`` ~ N(0, 1). The log volatility is h_t = mu + g_t with
    g_1 = sigma h_std_1 / sqrt(1 - phi^2) and g_t = phi g_{t-1} + sigma h_std_t,
    and the returns are y_t ~ N(0, exp(h_t / 2)). ``phi`` is a deterministic site.
    """

    def stochastic_volatility_model(y):
        mu = P.sample("mu", dist.Cauchy(0.0, 10.0))
        phi_beta = P.sample("phi_beta", dist.Beta(20.0, 1.5))
        phi = P.deterministic("phi", 2.0 * phi_beta - 1.0)
        sigma = P.sample("sigma", dist.HalfCauchy(5.0))
        with P.plate("time", y.shape[0]):
            h_std = P.sample("h_std", dist.Normal(0.0, 1.0))
            h = mu + sv_log_volatility_offsets(h_std, phi, sigma)
            # Prior draws of mu ~ Cauchy(0, 10) (as in ppl's or numpyro's model-tracing run)
            # can put exp(h / 2) outside float32's range, which numpyro's argument check
            # rejects; the log density itself does not need the check.
            volatility = jnp.exp(h / 2.0)
            P.sample("y", dist.Normal(0.0, volatility, validate_args=False), obs=y)

    return stochastic_volatility_model


def sv_log_volatility_offsets(h_std: jax.Array, phi: jax.Array, sigma: jax.Array) -> jax.Array:
    """g (T,) with g_1 = sigma h_std_1 / sqrt(1 - phi^2), g_t = phi g_{t-1} + sigma h_std_t
    (a ``lax.scan``): the stationary AR(1) deviations of the log volatility from mu."""
    innovations = sigma * h_std
    first = innovations[0] / jnp.sqrt(1.0 - phi**2)

    def step(previous, innovation):
        current = phi * previous + innovation
        return current, current

    _, rest = jax.lax.scan(step, first, innovations[1:])
    return jnp.concatenate([first[None], rest])


def stochastic_volatility_data(T: int = 500, seed: int = 3) -> dict[str, Any]:
    """Returns simulated from the model with mu = -1, phi = 0.95, sigma = 0.25 (daily-like
    returns with a volatility of about exp(-1 / 2) = 0.6), T of them, float32."""
    if T < 2:
        raise ValueError(f"stochastic_volatility needs T >= 2, got {T}")
    rng = np.random.default_rng(seed)
    mu, phi, sigma = SV_TRUTH["mu"], SV_TRUTH["phi"], SV_TRUTH["sigma"]
    h = np.empty(T)
    h[0] = mu + sigma / np.sqrt(1.0 - phi**2) * rng.normal()
    for t in range(1, T):
        h[t] = mu + phi * (h[t - 1] - mu) + sigma * rng.normal()
    y = np.exp(h / 2.0) * rng.normal(size=T)
    return {"y": jnp.asarray(y, dtype=jnp.float32)}


# ---------------------------------------------------------------------- registry


MODELS: dict[str, BenchModel] = {
    m.name: m
    for m in (
        BenchModel(
            "eight_schools",
            "eight schools, non-centered (10 parameters)",
            eight_schools,
            eight_schools_data,
        ),
        BenchModel(
            "logistic",
            "logistic regression, standardised predictors",
            logistic_regression,
            logistic_regression_data,
            defaults={"rows": 5000, "cols": 25},
            quick={"rows": 500, "cols": 5},
        ),
        BenchModel(
            "gaussian",
            "diagonal Gaussian, scales log-spaced 0.01..100",
            gaussian,
            gaussian_data,
            defaults={"dim": 100},
            quick={"dim": 10},
        ),
        BenchModel(
            "radon",
            "radon-like varying intercepts by county (centered), floor slope",
            radon,
            radon_data,
            defaults={"counties": 85, "houses": 919},
            quick={"counties": 20, "houses": 200},
        ),
        BenchModel(
            "correlated_gaussian",
            "Gaussian with AR(1) correlation 0.9^|i-j|, unit variances",
            correlated_gaussian,
            correlated_gaussian_data,
            defaults={"dim": 50},
            quick={"dim": 10},
        ),
        BenchModel(
            "stochastic_volatility",
            "stochastic volatility (Stan's, non-centered), simulated returns",
            stochastic_volatility,
            stochastic_volatility_data,
            defaults={"T": 500},
            quick={"T": 100},
        ),
    )
}


def format_model(name: str, params: dict[str, int]) -> str:
    """``name:key=value:...`` (keys sorted): the model's key in results and on command lines."""
    return ":".join([name, *(f"{k}={v}" for k, v in sorted(params.items()))])


def parse_model(text: str, *, quick: bool = False) -> ModelChoice:
    """``"gaussian:dim=10"`` -> ModelChoice; sizes not given come from defaults (or quick)."""
    return parse_choice(text, MODELS, quick=quick)


def parse_choice(
    text: str, registry: dict[str, Any], *, quick: bool = False, kind: str = "model"
) -> ModelChoice:
    """``"name:key=value..."`` -> ModelChoice of a suite's ``registry`` (the benchmark suite's,
    the structured one's, the hard one's); sizes are positive ints, those not given come
    from the model's defaults (or its quick sizes)."""
    name, *assignments = text.strip().split(":")
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; choose from {sorted(registry)}")
    model = registry[name]
    params = dict(model.defaults)
    if quick:
        params.update(getattr(model, "quick", {}))
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or key not in model.defaults:
            allowed = ", ".join(f"{k}=<int>" for k in model.defaults) or "none"
            raise ValueError(
                f"bad model parameter {assignment!r} for {name!r} (parameters: {allowed})"
            )
        try:
            params[key] = int(value)
        except ValueError:
            raise ValueError(f"model parameter {key} of {name!r} must be an int") from None
        if params[key] < 1:
            raise ValueError(f"model parameter {key} of {name!r} must be positive")
    return ModelChoice(model, params)
