"""Cormack-Jolly-Seber capture-recapture model with the alive state enumerated (simulated
data).

Capture histories of N = 100 marked animals over T = 7 occasions (1 = seen), as in
NumPyro's capture-recapture example (after Kery and Schaub 2011, chapter 7). Each animal
enters the study when it is first captured; after that, at each occasion it survives with
probability ``phi`` (one for females, one for males: ``phi[sex]``) and, if alive, is
recaptured with probability ``rho``; both have uniform(0, 1) priors. Whether an animal is
alive, z_t, is a hidden Markov chain (dead is absorbing): a discrete latent site in a
``ppl.scan`` over the occasions, inside the ``animals`` plate, enumerated, so the log
density sums every animal's chain out exactly and NUTS samples only phi and rho. Occasions
up to and including the first capture are masked out (the model conditions on first
capture). The histories are simulated by :func:`simulate` with seed 21 (phi 0.75 for
females, 0.6 for males, rho 0.7, first captures spread over the first six occasions) and
shipped in ``data/cjs.json``.
"""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from numpyro.distributions.util import clamp_probs

import ppl
import ppl.distributions as dist

description = __doc__.split("\n\n")[1].replace("\n", " ")

DATA_FILE = Path(__file__).parent / "data" / "cjs.json"
SEED = 21
dims = {"phi": ["sex"], "z": ["occasion", "animals"], "y": ["occasion", "animals"]}
coords = {"sex": ["female", "male"], "occasion": list(range(2, 8))}


def simulate(seed: int = SEED, n: int = 100, t: int = 7) -> dict:
    """Simulate the data set: capture_history (n, t) of 0/1 and sex (n,) (0 female, 1
    male), as lists."""
    rng = np.random.default_rng(seed)
    phi, rho = np.array([0.75, 0.6]), 0.7
    sex = rng.integers(0, 2, size=n)
    first = rng.integers(0, t - 1, size=n)
    history = np.zeros((n, t), dtype=int)
    for i in range(n):
        history[i, first[i]] = 1
        alive = True
        for occasion in range(first[i] + 1, t):
            alive = alive and rng.uniform() < phi[sex[i]]
            history[i, occasion] = int(alive and rng.uniform() < rho)
    return {"capture_history": history.tolist(), "sex": sex.tolist()}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: capture_history (N, T) and sex (N,), integers."""
    raw = json.loads(DATA_FILE.read_text())
    return {
        "capture_history": jnp.asarray(raw["capture_history"], dtype=jnp.int32),
        "sex": jnp.asarray(raw["sex"], dtype=jnp.int32),
    }


def model(capture_history, sex):
    """z_t ~ bernoulli(phi[sex] z_{t-1}) (enumerated), y_t ~ bernoulli(rho z_t), after the
    first capture."""
    N, _ = capture_history.shape
    phi = ppl.sample("phi", dist.Uniform(0.0, 1.0).expand([2]).to_event(1))
    rho = ppl.sample("rho", dist.Uniform(0.0, 1.0))
    survival = phi[sex]  # (N,)

    def step(carry, y):
        seen, z = carry  # seen: captured before this occasion; z: alive at the last one
        with ppl.plate("animals", N):
            # up to its first capture an animal is alive for sure; z is not masked there
            # (a masked z would count the paths where it is dead at its first capture)
            p_alive = jnp.where(seen, survival * z, 1.0)
            z = ppl.sample(
                "z", dist.Bernoulli(clamp_probs(p_alive)), infer={"enumerate": "parallel"}
            )
            with ppl.handlers.mask(mask=seen):
                ppl.sample("y", dist.Bernoulli(clamp_probs(rho * z)), obs=y)
        return (seen | y.astype(bool), z), None

    seen = capture_history[:, 0].astype(bool)
    ppl.scan(step, (seen, jnp.ones(N, dtype=jnp.int32)), capture_history[:, 1:].T, dim="occasion")
