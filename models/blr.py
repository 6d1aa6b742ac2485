"""Bayesian linear regression on simulated data (posteriordb ``sblrc-blr``).

A linear regression of N = 100 simulated responses on D = 5 predictors, with coefficients
``beta`` ~ normal(0, 10) and noise sd ``sigma`` ~ half-normal(0, 10) as in posteriordb's
``blr.stan``. The data were simulated with little noise, so the posterior is very
concentrated (sd of beta about 0.001) and a test of precise moments.
"""

import jax.numpy as jnp

import ppl
import ppl.distributions as dist
from models._posteriordb import read_data

description = __doc__.split("\n\n")[1].replace("\n", " ")

dims = {"beta": ["predictor"], "y": ["obs"]}
coords = {"predictor": [1, 2, 3, 4, 5]}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: X (N, D), y (N,)."""
    raw = read_data("blr")
    return {"X": jnp.asarray(raw["X"], dtype=float), "y": jnp.asarray(raw["y"], dtype=float)}


def model(X, y=None):
    """y ~ normal(X @ beta, sigma) with X of shape (N, D)."""
    n, d = X.shape
    beta = ppl.sample("beta", dist.Normal(0.0, 10.0).expand([d]).to_event(1))
    sigma = ppl.sample("sigma", dist.HalfNormal(10.0))
    with ppl.plate("obs", n):
        ppl.sample("y", dist.Normal(X @ beta, sigma), obs=y)
