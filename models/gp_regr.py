"""Gaussian-process regression with 11 points (posteriordb ``gp_pois_regr-gp_regr``).

Eleven observations y at x = -10, -8, ..., 10 modelled as a zero-mean Gaussian process with
a squared-exponential kernel of marginal sd ``alpha`` and length scale ``rho``, plus
``sigma`` added to the diagonal of the covariance (posteriordb's ``gp_regr.stan`` adds
sigma itself, not its square). Priors: rho ~ gamma(25, 4), alpha ~ half-normal(0, 2),
sigma ~ half-normal(0, 1).
"""

import jax.numpy as jnp

import ppl
import ppl.distributions as dist
from models._posteriordb import read_data

description = __doc__.split("\n\n")[1].replace("\n", " ")

dims = {}
coords = {}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: x (N,), y (N,)."""
    raw = read_data("gp_regr")
    return {"x": jnp.asarray(raw["x"], dtype=float), "y": jnp.asarray(raw["y"], dtype=float)}


def model(x, y=None):
    """y ~ multivariate normal(0, K(x; alpha, rho) + sigma I)."""
    rho = ppl.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = ppl.sample("alpha", dist.HalfNormal(2.0))
    sigma = ppl.sample("sigma", dist.HalfNormal(1.0))
    sq_dist = (x[:, None] - x[None, :]) ** 2
    cov = alpha**2 * jnp.exp(-0.5 * sq_dist / rho**2) + sigma * jnp.eye(x.shape[0])
    ppl.sample(
        "y",
        dist.MultivariateNormal(jnp.zeros(x.shape[0]), scale_tril=jnp.linalg.cholesky(cov)),
        obs=y,
    )
