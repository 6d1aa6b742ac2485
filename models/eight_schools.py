"""Eight schools (Rubin 1981), non-centered.

Effects of a coaching programme on SAT scores in eight schools, each with its
estimated effect ``y`` and standard error ``sigma``. A hierarchical normal
model partially pools the school effects ``theta`` toward a common mean ``mu``
with spread ``tau``; the non-centered form samples standardized effects
``theta_tilde`` so that NUTS does not struggle with the funnel at small ``tau``.
"""

import json
from pathlib import Path

import jax.numpy as jnp

import ppl
import ppl.distributions as dist

description = __doc__.split("\n\n")[1].replace("\n", " ")

SCHOOLS = ["A", "B", "C", "D", "E", "F", "G", "H"]
dims = {"theta": ["school"], "theta_tilde": ["school"], "y": ["school"]}
coords = {"school": SCHOOLS}


def load_data() -> dict:
    """The data as keyword arguments of :func:`model`: J, sigma (J,), y (J,)."""
    raw = json.loads((Path(__file__).parent / "data" / "eight_schools.json").read_text())
    return {
        "J": int(raw["J"]),
        "sigma": jnp.asarray(raw["sigma"], dtype=float),
        "y": jnp.asarray(raw["y"], dtype=float),
    }


def model(J, sigma, y=None):
    """Non-centered eight schools: theta = mu + tau * theta_tilde."""
    mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
    tau = ppl.sample("tau", dist.HalfCauchy(5.0))
    with ppl.plate("school", J):
        theta_tilde = ppl.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = ppl.deterministic("theta", mu + tau * theta_tilde)
        ppl.sample("y", dist.Normal(theta, sigma), obs=y)
