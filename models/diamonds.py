"""Diamond prices: linear regression with 24 correlated predictors (posteriordb
``diamonds-diamonds``).

The log price of 5000 diamonds regressed on a brms-generated design matrix of 24 terms
(polynomials of carat and contrasts of cut, colour and clarity), centred as brms does:
coefficients ``b`` ~ normal(0, 1), the intercept of the centred predictors ``Intercept`` ~
Student-t(3, 8, 10), residual sd ``sigma`` ~ half-Student-t(3, 0, 10). The predictors are
strongly correlated, which makes this posterior hard for a diagonal mass matrix (long
trajectories).
"""

import jax.numpy as jnp

import ppl
import ppl.distributions as dist
from models._posteriordb import read_data

description = __doc__.split("\n\n")[1].replace("\n", " ")

dims = {"b": ["term"], "Y": ["diamond"]}
coords = {}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: X (N, K) with the intercept column first, Y (N,)."""
    raw = read_data("diamonds")
    return {"X": jnp.asarray(raw["X"], dtype=float), "Y": jnp.asarray(raw["Y"], dtype=float)}


def model(X, Y=None):
    """brms's normal regression on the centred design matrix X[:, 1:] of shape (N, K - 1)."""
    n = X.shape[0]
    Xc = X[:, 1:] - X[:, 1:].mean(axis=0)
    b = ppl.sample("b", dist.Normal(0.0, 1.0).expand([Xc.shape[1]]).to_event(1))
    intercept = ppl.sample("Intercept", dist.StudentT(3.0, 8.0, 10.0))
    # student_t_lpdf(sigma | 3, 0, 10) - student_t_lccdf(0 | 3, 0, 10) on sigma > 0
    sigma = ppl.sample("sigma", dist.FoldedDistribution(dist.StudentT(3.0, 0.0, 10.0)))
    with ppl.plate("diamond", n):
        ppl.sample("Y", dist.Normal(intercept + Xc @ b, sigma), obs=Y)
