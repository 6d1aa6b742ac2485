"""Log weight of mesquite bushes on log size measurements (posteriordb
``mesquite-logmesquite``).

The log leaf weight of 46 mesquite bushes regressed on the logs of two canopy diameters,
canopy height, total height and planting density, and on a group indicator (Gelman and
Hill's mesquite data). As in posteriordb's ``logmesquite.stan``, the coefficients ``beta``
(7) and the residual sd ``sigma`` have flat priors.
"""

import jax.numpy as jnp

import ppl
import ppl.distributions as dist
from models._posteriordb import read_data
from ppl.distributions import constraints

description = __doc__.split("\n\n")[1].replace("\n", " ")

COLUMNS = ("diam1", "diam2", "canopy_height", "total_height", "density", "group", "weight")
dims = {"beta": ["coef"], "log_weight": ["bush"]}
coords = {
    "coef": [
        "intercept",
        "log_diam1",
        "log_diam2",
        "log_canopy_height",
        "log_total_height",
        "log_density",
        "group",
    ]
}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: the raw columns, each (N,)."""
    raw = read_data("logmesquite")
    return {k: jnp.asarray(raw[k], dtype=float) for k in COLUMNS}


def model(diam1, diam2, canopy_height, total_height, density, group, weight):
    """log(weight) ~ normal(beta . [1, log sizes..., group], sigma)."""
    beta = ppl.sample("beta", dist.ImproperUniform(constraints.real_vector, (), (7,)))
    sigma = ppl.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    predictors = jnp.stack(
        [
            jnp.ones_like(diam1),
            jnp.log(diam1),
            jnp.log(diam2),
            jnp.log(canopy_height),
            jnp.log(total_height),
            jnp.log(density),
            group,
        ],
        axis=-1,
    )
    with ppl.plate("bush", weight.shape[0]):
        ppl.sample("log_weight", dist.Normal(predictors @ beta, sigma), obs=jnp.log(weight))
