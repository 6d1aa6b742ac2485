"""GARCH(1,1) volatility model (posteriordb ``garch-garch11``).

A series of T = 200 returns with mean ``mu`` and a conditional variance that follows
sigma_t^2 = alpha0 + alpha1 (y_{t-1} - mu)^2 + beta1 sigma_{t-1}^2 from a given sigma_1. As
in posteriordb's ``garch11.stan`` no parameter has a prior statement: flat priors on
mu (real), alpha0 > 0, alpha1 in (0, 1) and beta1 in (0, 1 - alpha1), the last a bound that
depends on another parameter.
"""

import jax
import jax.numpy as jnp

import ppl
import ppl.distributions as dist
from models._posteriordb import read_data
from ppl.distributions import constraints

description = __doc__.split("\n\n")[1].replace("\n", " ")

dims = {"y": ["time"]}
coords = {}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: y (T,), sigma1 (scalar, the first sd)."""
    raw = read_data("garch11")
    return {"y": jnp.asarray(raw["y"], dtype=float), "sigma1": float(raw["sigma1"])}


def model(y, sigma1):
    """GARCH(1,1) likelihood of y (T,) given its first conditional sd sigma1."""
    mu = ppl.sample("mu", dist.ImproperUniform(constraints.real, (), ()))
    alpha0 = ppl.sample("alpha0", dist.ImproperUniform(constraints.positive, (), ()))
    alpha1 = ppl.sample("alpha1", dist.ImproperUniform(constraints.unit_interval, (), ()))
    beta1 = ppl.sample(
        "beta1", dist.ImproperUniform(constraints.interval(0.0, 1.0 - alpha1), (), ())
    )

    def step(sigma_prev, y_prev):
        sigma = jnp.sqrt(alpha0 + alpha1 * (y_prev - mu) ** 2 + beta1 * sigma_prev**2)
        return sigma, sigma

    first = jnp.asarray(sigma1, dtype=jnp.result_type(float))
    _, rest = jax.lax.scan(step, first, y[:-1])
    sigma = jnp.concatenate([first[None], rest])
    with ppl.plate("time", y.shape[0]):
        ppl.sample("y", dist.Normal(mu, sigma), obs=y)
