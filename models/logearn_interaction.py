"""Log earnings on height, sex and their interaction (posteriordb
``earnings-logearn_interaction``).

Log annual earnings of 1192 US adults regressed on height (inches), a male indicator and
their product (Gelman and Hill's earnings data). As in posteriordb's
``logearn_interaction.stan`` the coefficients ``beta`` (4) and the residual sd ``sigma``
have no prior statement: flat priors (improper uniform on the real line and on sigma > 0).
"""

import jax.numpy as jnp

import ppl
import ppl.distributions as dist
from models._posteriordb import read_data
from ppl.distributions import constraints

description = __doc__.split("\n\n")[1].replace("\n", " ")

dims = {"beta": ["coef"], "log_earn": ["person"]}
coords = {"coef": ["intercept", "height", "male", "height:male"]}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: earn, height, male, each (N,)."""
    raw = read_data("logearn_interaction")
    return {k: jnp.asarray(raw[k], dtype=float) for k in ("earn", "height", "male")}


def model(earn, height, male):
    """log(earn) ~ normal(beta[0] + beta[1] height + beta[2] male + beta[3] height male, sigma)."""
    beta = ppl.sample("beta", dist.ImproperUniform(constraints.real_vector, (), (4,)))
    sigma = ppl.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    mu = beta[0] + beta[1] * height + beta[2] * male + beta[3] * height * male
    with ppl.plate("person", earn.shape[0]):
        ppl.sample("log_earn", dist.Normal(mu, sigma), obs=jnp.log(earn))
