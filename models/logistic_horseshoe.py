"""Sparse logistic regression with a regularised horseshoe prior (simulated data).

A binary outcome of N = 100 cases on D = 25 standardised predictors, of which only three
matter. The coefficients get the regularised horseshoe prior of Piironen and Vehtari
(2017): beta_j = z_j tau lambda~_j with a half-Cauchy global scale tau (scale tau0 = p0 /
(D - p0) * 2 / sqrt(N) for p0 = 3 expected relevant predictors, 2 being the logistic
pseudo-sd), half-Cauchy(0, 1) local scales lambda, and a slab that caps large coefficients
at about c (c^2 ~ inverse-gamma(2, 8), i.e. slab scale 2 with 4 degrees of freedom), in the
non-centered parameterisation. The intercept has a normal(0, 5) prior. The data are
simulated by :func:`simulate` with seed 12 and shipped in ``data/logistic_horseshoe.json``.
"""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import ppl
import ppl.distributions as dist

description = __doc__.split("\n\n")[1].replace("\n", " ")

DATA_FILE = Path(__file__).parent / "data" / "logistic_horseshoe.json"
SEED = 12
EXPECTED_RELEVANT = 3
SLAB_SCALE = 2.0
SLAB_DF = 4.0
dims = {
    "beta": ["predictor"],
    "z": ["predictor"],
    "lambda": ["predictor"],
    "y": ["case"],
}
coords = {"predictor": list(range(1, 26))}


def simulate(seed: int = SEED, n: int = 100, d: int = 25) -> dict:
    """Simulate the data set: X (n, d) standardised, y (n,) in {0, 1}, as lists."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    beta = np.zeros(d)
    beta[:EXPECTED_RELEVANT] = [2.0, -1.5, 1.0]
    p = 1.0 / (1.0 + np.exp(-(0.3 + X @ beta)))
    y = (rng.uniform(size=n) < p).astype(int)
    return {"X": np.round(X, 6).tolist(), "y": y.tolist()}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: X (N, D), y (N,)."""
    raw = json.loads(DATA_FILE.read_text())
    return {"X": jnp.asarray(raw["X"], dtype=float), "y": jnp.asarray(raw["y"], dtype=float)}


def model(X, y=None):
    """Bernoulli-logit regression of y on X (N, D) with a regularised horseshoe on beta."""
    n, d = X.shape
    tau0 = EXPECTED_RELEVANT / (d - EXPECTED_RELEVANT) * 2.0 / jnp.sqrt(n)
    intercept = ppl.sample("intercept", dist.Normal(0.0, 5.0))
    tau = ppl.sample("tau", dist.HalfCauchy(tau0))
    c2 = ppl.sample("c2", dist.InverseGamma(0.5 * SLAB_DF, 0.5 * SLAB_DF * SLAB_SCALE**2))
    with ppl.plate("predictor", d):
        lam = ppl.sample("lambda", dist.HalfCauchy(1.0))
        z = ppl.sample("z", dist.Normal(0.0, 1.0))
    lam_tilde = jnp.sqrt(c2 * lam**2 / (c2 + tau**2 * lam**2))
    beta = ppl.deterministic("beta", z * tau * lam_tilde)
    with ppl.plate("case", n):
        ppl.sample("y", dist.Bernoulli(logits=intercept + X @ beta), obs=y)
