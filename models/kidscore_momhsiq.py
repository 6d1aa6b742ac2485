"""Child test scores on mother's high-school completion and IQ (posteriordb
``kidiq-kidscore_momhsiq``).

Cognitive test scores of 434 three- and four-year-olds regressed on whether the mother
finished high school and on her IQ (Gelman and Hill's kidiq data). As in posteriordb's
``kidscore_momhsiq.stan``, the coefficients ``beta`` (3) have a flat prior and the residual
sd ``sigma`` a half-Cauchy(0, 2.5) prior.
"""

import jax.numpy as jnp

import ppl
import ppl.distributions as dist
from models._posteriordb import read_data
from ppl.distributions import constraints

description = __doc__.split("\n\n")[1].replace("\n", " ")

dims = {"beta": ["coef"], "kid_score": ["child"]}
coords = {"coef": ["intercept", "mom_hs", "mom_iq"]}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: mom_hs, mom_iq, kid_score, each (N,)."""
    raw = read_data("kidscore_momhsiq")
    return {k: jnp.asarray(raw[k], dtype=float) for k in ("mom_hs", "mom_iq", "kid_score")}


def model(mom_hs, mom_iq, kid_score=None):
    """kid_score ~ normal(beta[0] + beta[1] mom_hs + beta[2] mom_iq, sigma)."""
    beta = ppl.sample("beta", dist.ImproperUniform(constraints.real_vector, (), (3,)))
    sigma = ppl.sample("sigma", dist.HalfCauchy(2.5))
    with ppl.plate("child", mom_hs.shape[0]):
        mu = beta[0] + beta[1] * mom_hs + beta[2] * mom_iq
        ppl.sample("kid_score", dist.Normal(mu, sigma), obs=kid_score)
