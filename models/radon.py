"""Radon in Minnesota homes: varying intercepts and slopes by county.

Log radon of 919 homes in the 85 counties of Minnesota (Gelman and Hill 2007; the EPA
survey data, text copied unchanged from ``data/radon.csv`` of the public GitHub repository
abdullahau/bayesian-analysis, keeping the county, the floor of measurement, 0 = basement,
1 = first floor, and log radon). Each county has its own intercept and floor slope, drawn
jointly from a bivariate normal with means ``mu_a``, ``mu_b``, sds ``tau`` and an LKJ(2)
correlation (Cholesky factor ``L``), non-centered through ``z``; ``sigma`` is the
within-county residual sd. Priors: mu_a, mu_b ~ normal(0, 5), tau ~ half-normal(0, 1),
sigma ~ half-normal(0, 1).
"""

import csv
from pathlib import Path

import jax.numpy as jnp

import ppl
import ppl.distributions as dist

description = __doc__.split("\n\n")[1].replace("\n", " ")

DATA_FILE = Path(__file__).parent / "data" / "radon.csv"


def _counties() -> list[str]:
    with DATA_FILE.open() as f:
        return sorted({row["county"] for row in csv.DictReader(f)})


COUNTIES = _counties()
dims = {
    "a": ["county"],
    "b": ["county"],
    "z": ["county", "effect"],
    "tau": ["effect"],
    "L": ["effect", "effect_bis"],
    "log_radon": ["home"],
}
coords = {
    "county": COUNTIES,
    "effect": ["intercept", "floor"],
    "effect_bis": ["intercept", "floor"],
}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: county (N,) index into COUNTIES, floor (N,),
    log_radon (N,), num_counties (int)."""
    with DATA_FILE.open() as f:
        rows = list(csv.DictReader(f))
    index = {name: i for i, name in enumerate(COUNTIES)}
    return {
        "county": jnp.asarray([index[r["county"]] for r in rows]),
        "floor": jnp.asarray([float(r["floor"]) for r in rows]),
        "log_radon": jnp.asarray([float(r["log_radon"]) for r in rows]),
        "num_counties": len(COUNTIES),
    }


def model(county, floor, num_counties, log_radon=None):
    """log_radon ~ normal(a[county] + b[county] floor, sigma), (a_j, b_j) bivariate normal."""
    mu_a = ppl.sample("mu_a", dist.Normal(0.0, 5.0))
    mu_b = ppl.sample("mu_b", dist.Normal(0.0, 5.0))
    tau = ppl.sample("tau", dist.HalfNormal(1.0).expand([2]).to_event(1))
    L = ppl.sample("L", dist.LKJCholesky(2, 2.0))
    sigma = ppl.sample("sigma", dist.HalfNormal(1.0))
    with ppl.plate("county", num_counties):
        z = ppl.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    effects = z @ (tau[:, None] * L).T  # (J, 2): rows ~ normal(0, diag(tau) L L^T diag(tau))
    a = ppl.deterministic("a", mu_a + effects[:, 0])
    b = ppl.deterministic("b", mu_b + effects[:, 1])
    with ppl.plate("home", floor.shape[0]):
        mu = a[county] + b[county] * floor
        ppl.sample("log_radon", dist.Normal(mu, sigma), obs=log_radon)
