"""Gaussian-process regression with a squared-exponential kernel (simulated data).

N = 40 noisy observations of a smooth function on [0, 10] modelled as f ~ GP(0, k) with
k(x, x') = alpha^2 exp(-(x - x')^2 / (2 rho^2)) plus normal noise of sd ``sigma``; f is
integrated out, so y ~ multivariate normal(0, K + sigma^2 I). Priors: length scale
``rho`` ~ inverse-gamma(5, 5) (keeps it between the data spacing and the data range),
marginal sd ``alpha`` ~ half-normal(0, 2), ``sigma`` ~ half-normal(0, 1). The data are
sin(x) plus a slow trend and noise of sd 0.3, simulated by :func:`simulate` with seed 14
and shipped in ``data/gp_regression.json``.
"""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import ppl
import ppl.distributions as dist

description = __doc__.split("\n\n")[1].replace("\n", " ")

DATA_FILE = Path(__file__).parent / "data" / "gp_regression.json"
SEED = 14
JITTER = 1e-6
dims = {}
coords = {}


def simulate(seed: int = SEED, n: int = 40) -> dict:
    """Simulate the data set: x (n,) sorted in [0, 10], y (n,), as lists."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0.0, 10.0, size=n))
    y = np.sin(x) + 0.1 * x + 0.3 * rng.normal(size=n)
    return {"x": np.round(x, 6).tolist(), "y": np.round(y, 6).tolist()}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: x (N,), y (N,)."""
    raw = json.loads(DATA_FILE.read_text())
    return {"x": jnp.asarray(raw["x"], dtype=float), "y": jnp.asarray(raw["y"], dtype=float)}


def model(x, y=None):
    """y (N,) ~ multivariate normal(0, K(x; alpha, rho) + sigma^2 I)."""
    n = x.shape[0]
    rho = ppl.sample("rho", dist.InverseGamma(5.0, 5.0))
    alpha = ppl.sample("alpha", dist.HalfNormal(2.0))
    sigma = ppl.sample("sigma", dist.HalfNormal(1.0))
    sq_dist = (x[:, None] - x[None, :]) ** 2
    cov = alpha**2 * jnp.exp(-0.5 * sq_dist / rho**2) + (sigma**2 + JITTER) * jnp.eye(n)
    ppl.sample(
        "y", dist.MultivariateNormal(jnp.zeros(n), scale_tril=jnp.linalg.cholesky(cov)), obs=y
    )
