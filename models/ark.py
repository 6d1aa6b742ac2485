"""AR(K): autoregressive model of order 5 (posteriordb ``arK-arK``).

A simulated time series of length T = 200 is modelled as an autoregression of order K = 5:
each value is normal around an intercept ``alpha`` plus a weighted sum of the K previous
values with coefficients ``beta``, with noise sd ``sigma``. Priors as in posteriordb's
``arK.stan``: alpha, beta ~ normal(0, 10), sigma ~ half-Cauchy(0, 2.5); the first K values
only condition the rest.
"""

import jax.numpy as jnp

import ppl
import ppl.distributions as dist
from models._posteriordb import read_data

description = __doc__.split("\n\n")[1].replace("\n", " ")

dims = {"beta": ["lag"]}
coords = {"lag": [1, 2, 3, 4, 5]}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: K (int), y (T,)."""
    raw = read_data("ark")
    return {"K": int(raw["K"]), "y": jnp.asarray(raw["y"], dtype=float)}


def model(K, y):
    """AR(K) with y of shape (T,); the likelihood covers y[K:]."""
    T = y.shape[0]
    alpha = ppl.sample("alpha", dist.Normal(0.0, 10.0))
    beta = ppl.sample("beta", dist.Normal(0.0, 10.0).expand([K]).to_event(1))
    sigma = ppl.sample("sigma", dist.HalfCauchy(2.5))
    # lags[t, k] = y[K + t - (k + 1)]: the k+1-th previous value of y[K + t]
    lags = y[jnp.arange(K, T)[:, None] - jnp.arange(1, K + 1)[None, :]]
    with ppl.plate("time", T - K):
        ppl.sample("y", dist.Normal(alpha + lags @ beta, sigma), obs=y[K:])
