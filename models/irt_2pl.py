"""Two-parameter logistic item-response model (simulated test data).

Right/wrong answers of J = 100 students to I = 20 test items: student j answers item i
correctly with probability logistic(a_i (theta_j - b_i)), with ability ``theta`` ~
normal(0, 1) (which fixes the latent scale), item discrimination ``a`` ~ lognormal(0, 0.5)
and item difficulty ``b`` ~ normal(mu_b, sigma_b) pooled across items with mu_b ~
normal(0, 2) and sigma_b ~ half-normal(0, 2). The answers are simulated by
:func:`simulate` with seed 16 and shipped in ``data/irt_2pl.json``.
"""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import ppl
import ppl.distributions as dist

description = __doc__.split("\n\n")[1].replace("\n", " ")

DATA_FILE = Path(__file__).parent / "data" / "irt_2pl.json"
SEED = 16
dims = {"theta": ["student"], "a": ["item"], "b": ["item"], "y": ["student", "item"]}
coords = {}


def simulate(seed: int = SEED, students: int = 100, items: int = 20) -> dict:
    """Simulate the data set: y (students, items) in {0, 1}, as nested lists."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=students)
    a = np.exp(0.3 * rng.normal(size=items))
    b = rng.normal(0.0, 1.0, size=items)
    p = 1.0 / (1.0 + np.exp(-a * (theta[:, None] - b)))
    return {"y": (rng.uniform(size=p.shape) < p).astype(int).tolist()}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: y (J, I) answers, 1 = correct."""
    return {"y": jnp.asarray(json.loads(DATA_FILE.read_text())["y"], dtype=float)}


def model(y):
    """y[j, i] ~ Bernoulli(logistic(a_i (theta_j - b_i))) for y of shape (J, I)."""
    students, items = y.shape
    mu_b = ppl.sample("mu_b", dist.Normal(0.0, 2.0))
    sigma_b = ppl.sample("sigma_b", dist.HalfNormal(2.0))
    with ppl.plate("item", items, dim=-1):
        a = ppl.sample("a", dist.LogNormal(0.0, 0.5))
        b = ppl.sample("b", dist.Normal(mu_b, sigma_b))
    with ppl.plate("student", students, dim=-1):
        theta = ppl.sample("theta", dist.Normal(0.0, 1.0))
    with ppl.plate("student", students, dim=-2), ppl.plate("item", items, dim=-1):
        ppl.sample("y", dist.Bernoulli(logits=a * (theta[:, None] - b)), obs=y)
