"""Stochastic volatility of returns (simulated data).

T = 200 daily returns y_t ~ normal(0, exp(h_t / 2)) whose log-variance h_t follows a
stationary AR(1) process around ``mu`` with persistence ``phi`` and innovation sd
``sigma`` (the Stan User's Guide model): h_1 ~ normal(mu, sigma / sqrt(1 - phi^2)),
h_t ~ normal(mu + phi (h_{t-1} - mu), sigma). The log-volatilities are non-centered
(standard-normal ``h_std``, a scan builds h). Priors (Kim, Shephard and Chib 1998 in
spirit): mu ~ normal(0, 5), (phi + 1) / 2 ~ beta(20, 1.5), sigma ~ half-normal(0, 0.5).
The returns are simulated by :func:`simulate` with seed 13 (mu = -1, phi = 0.95,
sigma = 0.25) and shipped in ``data/stochastic_volatility.json``.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import ppl
import ppl.distributions as dist

description = __doc__.split("\n\n")[1].replace("\n", " ")

DATA_FILE = Path(__file__).parent / "data" / "stochastic_volatility.json"
SEED = 13
dims = {"h_std": ["time"], "h": ["time"], "y": ["time"]}
coords = {}


def simulate(seed: int = SEED, T: int = 200) -> dict:
    """Simulate the data set: y (T,) returns, as a list."""
    rng = np.random.default_rng(seed)
    mu, phi, sigma = -1.0, 0.95, 0.25
    h = np.empty(T)
    h[0] = mu + sigma / np.sqrt(1 - phi**2) * rng.normal()
    for t in range(1, T):
        h[t] = mu + phi * (h[t - 1] - mu) + sigma * rng.normal()
    y = np.exp(h / 2) * rng.normal(size=T)
    return {"y": np.round(y, 6).tolist()}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: y (T,)."""
    return {"y": jnp.asarray(json.loads(DATA_FILE.read_text())["y"], dtype=float)}


def model(y):
    """AR(1) log-volatility h (T,), non-centered; y_t ~ normal(0, exp(h_t / 2))."""
    T = y.shape[0]
    mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
    # persistence in (-1, 1), mostly near 1: phi = 2 u - 1 with u ~ beta(20, 1.5)
    phi = ppl.sample(
        "phi",
        dist.TransformedDistribution(
            dist.Beta(20.0, 1.5),
            # domain= makes the support (-1, 1): without it the codomain, and so the
            # unconstrained space, would be the whole real line, with NaN beyond |phi| = 1
            dist.transforms.AffineTransform(-1.0, 2.0, domain=dist.constraints.unit_interval),
        ),
    )
    sigma = ppl.sample("sigma", dist.HalfNormal(0.5))
    with ppl.plate("time", T):
        h_std = ppl.sample("h_std", dist.Normal(0.0, 1.0))

    def step(h_prev, eps):
        h = mu + phi * (h_prev - mu) + sigma * eps
        return h, h

    h_first = mu + sigma / jnp.sqrt(1.0 - phi**2) * h_std[0]
    _, h_rest = jax.lax.scan(step, h_first, h_std[1:])
    h = ppl.deterministic("h", jnp.concatenate([h_first[None], h_rest]))
    with ppl.plate("time", T):
        ppl.sample("y", dist.Normal(0.0, jnp.exp(h / 2)), obs=y)
