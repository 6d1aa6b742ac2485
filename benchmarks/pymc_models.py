"""The suite's models once more, in PyMC, for the nutpie peer.

Each builder takes the keyword arguments made by the model's data function in
:mod:`benchmarks.models` (the same data, converted to float64 numpy arrays: PyMC's
default precision, as nutpie is normally used) and returns a ``pymc.Model`` with the
same priors, likelihood, latent site names, supports and unconstrained
parameterisation (log for positive sites, logit for (0, 1)), so that its log density
on the unconstrained scale, Jacobians included, is the ppl model's
(``tests/test_benchmarks.py`` checks this at random points).

PyMC is imported lazily: importing this module does not need it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["PYMC_MODELS", "build_pymc_model", "unconstrained_names"]


def _f64(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def eight_schools(sigma, y):
    import pymc as pm

    sigma, y = _f64(sigma), _f64(y)
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 5.0)
        tau = pm.HalfCauchy("tau", beta=5.0)
        theta_tilde = pm.Normal("theta_tilde", 0.0, 1.0, shape=sigma.shape[0])
        theta = pm.Deterministic("theta", mu + tau * theta_tilde)
        pm.Normal("y", theta, sigma, observed=y)
    return model


def logistic(X, y):
    import pymc as pm

    X, y = _f64(X), np.asarray(y, dtype=np.int64)
    with pm.Model() as model:
        alpha = pm.Normal("alpha", 0.0, 2.5)
        beta = pm.Normal("beta", 0.0, 1.0, shape=X.shape[1])
        pm.Bernoulli("y", logit_p=alpha + pm.math.dot(X, beta), observed=y)
    return model


def gaussian(scales):
    import pymc as pm

    scales = _f64(scales)
    with pm.Model() as model:
        pm.Normal("x", 0.0, scales, shape=scales.shape[0])
    return model


def radon(county, floor, n_counties, log_radon):
    import pymc as pm

    county, floor, log_radon = np.asarray(county, np.int64), _f64(floor), _f64(log_radon)
    with pm.Model() as model:
        mu_a = pm.Normal("mu_a", 0.0, 10.0)
        sigma_a = pm.HalfNormal("sigma_a", 5.0)
        a = pm.Normal("a", mu_a, sigma_a, shape=int(n_counties))
        b = pm.Normal("b", 0.0, 10.0)
        sigma_y = pm.HalfNormal("sigma_y", 5.0)
        pm.Normal("log_radon", a[county] + b * floor, sigma_y, observed=log_radon)
    return model


def correlated_gaussian(scale_tril):
    import pymc as pm

    scale_tril = _f64(scale_tril)
    dim = scale_tril.shape[0]
    with pm.Model() as model:
        pm.MvNormal("x", mu=np.zeros(dim), chol=scale_tril)
    return model


def stochastic_volatility(y):
    import pymc as pm
    import pytensor
    import pytensor.tensor as pt

    y = _f64(y)
    with pm.Model() as model:
        mu = pm.Cauchy("mu", 0.0, 10.0)
        phi_beta = pm.Beta("phi_beta", 20.0, 1.5)
        phi = pm.Deterministic("phi", 2.0 * phi_beta - 1.0)
        sigma = pm.HalfCauchy("sigma", beta=5.0)
        h_std = pm.Normal("h_std", 0.0, 1.0, shape=y.shape[0])
        innovations = sigma * h_std
        first = innovations[0] / pt.sqrt(1.0 - phi**2)
        scan_kwargs = {}
        if "return_updates" in inspect.signature(pytensor.scan).parameters:
            scan_kwargs["return_updates"] = False
        rest = pytensor.scan(
            lambda innovation, previous, phi: phi * previous + innovation,
            sequences=[innovations[1:]],
            outputs_info=[first],
            non_sequences=[phi],
            **scan_kwargs,
        )
        if isinstance(rest, tuple):  # older pytensor: (outputs, updates)
            rest = rest[0]
        h = mu + pt.concatenate([first[None], rest])
        pm.Normal("y", 0.0, pt.exp(h / 2.0), observed=y)
    return model


PYMC_MODELS: dict[str, Callable[..., Any]] = {
    "eight_schools": eight_schools,
    "logistic": logistic,
    "gaussian": gaussian,
    "radon": radon,
    "correlated_gaussian": correlated_gaussian,
    "stochastic_volatility": stochastic_volatility,
}


def build_pymc_model(name: str, data: dict[str, Any]):
    """The ``pymc.Model`` of suite model ``name`` on ``data`` (from the model's data function).

    Raises:
        KeyError: no PyMC version of ``name``.
    """
    if name not in PYMC_MODELS:
        raise KeyError(f"no PyMC version of model {name!r}; have {sorted(PYMC_MODELS)}")
    return PYMC_MODELS[name](**data)


def unconstrained_names(model) -> dict[str, str]:
    """``{latent site name: name of PyMC's unconstrained value variable}``, e.g.
    ``{"tau": "tau_log__"}``, in PyMC's order of free variables."""
    return {rv.name: model.rvs_to_values[rv].name for rv in model.free_RVs}
