"""Two-component normal mixture (posteriordb ``low_dim_gauss_mix-low_dim_gauss_mix``).

N = 1000 simulated values from a mixture of two normals with weight ``theta`` on the first
component, ordered means ``mu`` (mu_1 < mu_2, which identifies the components) and sds
``sigma``. Priors as in posteriordb's ``low_dim_gauss_mix.stan``: mu ~ normal(0, 2) on the
ordered pair, sigma ~ half-normal(0, 2), theta ~ beta(5, 5). The likelihood is
``MixtureSameFamily`` (the same density as Stan's ``log_mix``).
"""

import jax.numpy as jnp

import ppl
import ppl.distributions as dist
from models._posteriordb import read_data
from ppl.distributions import constraints

description = __doc__.split("\n\n")[1].replace("\n", " ")

dims = {"mu": ["component"], "sigma": ["component"], "y": ["obs"]}
coords = {"component": [1, 2]}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: y (N,)."""
    return {"y": jnp.asarray(read_data("low_dim_gauss_mix")["y"], dtype=float)}


def model(y):
    """y_n ~ theta normal(mu_1, sigma_1) + (1 - theta) normal(mu_2, sigma_2)."""
    mu = ppl.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
    ppl.factor("mu_prior", dist.Normal(0.0, 2.0).log_prob(mu).sum())
    sigma = ppl.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
    theta = ppl.sample("theta", dist.Beta(5.0, 5.0))
    weights = dist.Categorical(probs=jnp.stack([theta, 1.0 - theta]))
    with ppl.plate("obs", y.shape[0]):
        ppl.sample("y", dist.MixtureSameFamily(weights, dist.Normal(mu, sigma)), obs=y)
