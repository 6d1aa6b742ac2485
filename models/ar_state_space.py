"""AR(1) state-space model: a latent autoregressive level seen through noise (simulated
data).

T = 200 noisy observations y_t ~ normal(x_t, tau) of a latent state x_t that follows a
stationary AR(1) process around ``mu`` with persistence ``phi`` and innovation sd
``sigma``: x_t ~ normal(mu + phi (x_{t-1} - mu), sigma), from a state ``x_init`` before
the first observation drawn from the stationary distribution normal(mu, sigma / sqrt(1 -
phi^2)). The states are continuous latent sites in a ``ppl.scan`` over time (``x`` has
shape (T,)), sampled by NUTS with the parameters; a longer ``T`` with ``y=None`` in
``ppl.infer.Predictive`` continues the chain past the data (a forecast). The measurement
noise sd tau = 0.4 is known (``noise_sd``, the instrument's), as in many state-space
applications: estimated too, it trades off against sigma (both roughen the series) and
NUTS mixes along that ridge slowly (bulk ESS of 20 to 100 in 4000 draws). Priors: mu ~
normal(0, 5), phi ~ uniform(-1, 1), sigma ~ half-normal(0, 1). The data are simulated by
:func:`simulate` with seed 23 (mu = 1, phi = 0.8, sigma = 0.6, tau = 0.4) and shipped in
``data/ar_state_space.json``.
"""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import ppl
import ppl.distributions as dist

description = __doc__.split("\n\n")[1].replace("\n", " ")

DATA_FILE = Path(__file__).parent / "data" / "ar_state_space.json"
SEED = 23
NOISE_SD = 0.4
dims = {"x": ["time"], "y": ["time"]}
coords = {}


def simulate(seed: int = SEED, T: int = 200) -> dict:
    """Simulate the data set: y (T,) observations, as a list."""
    rng = np.random.default_rng(seed)
    mu, phi, sigma, tau = 1.0, 0.8, 0.6, NOISE_SD
    x = mu + sigma / np.sqrt(1 - phi**2) * rng.normal()
    y = np.empty(T)
    for t in range(T):
        x = mu + phi * (x - mu) + sigma * rng.normal()
        y[t] = x + tau * rng.normal()
    return {"y": np.round(y, 6).tolist()}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: y (T,)."""
    return {"y": jnp.asarray(json.loads(DATA_FILE.read_text())["y"], dtype=float)}


def model(y=None, T=None, noise_sd=NOISE_SD):
    """x_t ~ normal(mu + phi (x_{t-1} - mu), sigma), y_t ~ normal(x_t, noise_sd), t = 1..T.

    Args:
        y: the observations (T,), or None to draw them (prior or posterior predictive).
        T: the number of steps when ``y`` is None (e.g. the data's length plus a horizon).
        noise_sd: the known sd of the measurement noise.
    """
    if y is None and T is None:
        raise ValueError("ar_state_space.model: give the observations y or a length T")
    mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
    phi = ppl.sample("phi", dist.Uniform(-1.0, 1.0))
    sigma = ppl.sample("sigma", dist.HalfNormal(1.0))
    x_init = ppl.sample("x_init", dist.Normal(mu, sigma / jnp.sqrt(1.0 - phi**2)))

    def step(x_prev, y_t):
        x = ppl.sample("x", dist.Normal(mu + phi * (x_prev - mu), sigma))
        ppl.sample("y", dist.Normal(x, noise_sd), obs=y_t)
        return x, None

    ppl.scan(step, x_init, y, length=T)
