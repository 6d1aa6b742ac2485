"""Negative-binomial regression of counts with an exposure offset (simulated data).

Counts of events y_i observed over different exposures (e.g. person-years) are
negative-binomial with mean exposure_i * exp(alpha + x_i . beta) and concentration
``phi`` (variance mean + mean^2 / phi): a log-linear GLM whose offset log(exposure) enters
the linear predictor with coefficient 1. Priors: alpha ~ normal(0, 2.5), beta ~ normal(0, 1),
phi ~ exponential(0.2). The data (N = 150, three standardised covariates, exposures from 0.5
to 5) are simulated by :func:`simulate` with seed 11 and shipped in
``data/negbin_glm.json``.
"""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import ppl
import ppl.distributions as dist

description = __doc__.split("\n\n")[1].replace("\n", " ")

DATA_FILE = Path(__file__).parent / "data" / "negbin_glm.json"
SEED = 11
dims = {"beta": ["covariate"], "y": ["obs"]}
coords = {"covariate": ["x1", "x2", "x3"]}


def simulate(seed: int = SEED, n: int = 150) -> dict:
    """Simulate the data set: x (n, 3), exposure (n,), y (n,) counts, as lists."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    exposure = rng.uniform(0.5, 5.0, size=n)
    alpha, beta, phi = 0.5, np.array([0.6, -0.4, 0.0]), 3.0
    mean = exposure * np.exp(alpha + x @ beta)
    y = rng.poisson(rng.gamma(phi, mean / phi))
    return {
        "x": np.round(x, 6).tolist(),
        "exposure": np.round(exposure, 6).tolist(),
        "y": y.tolist(),
    }


def load_data() -> dict:
    """Keyword arguments of :func:`model`: x (N, 3), exposure (N,), y (N,)."""
    raw = json.loads(DATA_FILE.read_text())
    return {k: jnp.asarray(raw[k], dtype=float) for k in ("x", "exposure", "y")}


def model(x, exposure, y=None):
    """y ~ NegBinomial(mean = exposure * exp(alpha + x @ beta), concentration = phi)."""
    alpha = ppl.sample("alpha", dist.Normal(0.0, 2.5))
    beta = ppl.sample("beta", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    phi = ppl.sample("phi", dist.Exponential(0.2))
    with ppl.plate("obs", x.shape[0]):
        log_mean = jnp.log(exposure) + alpha + x @ beta
        ppl.sample("y", dist.NegativeBinomial2(jnp.exp(log_mean), phi), obs=y)
