"""Three-component Gaussian mixture with the component labels enumerated (simulated data).

N = 300 values, each drawn from one of three normals: the component label z_n ~
categorical(w) of each observation is a discrete latent site, enumerated inside the ``obs``
plate, and y_n ~ normal(mu[z_n], sigma[z_n]). The weights ``w`` are a simplex with a
Dirichlet(2, 2, 2) prior, the means are ordered (mu_1 < mu_2 < mu_3, each with a
normal(0, 5) prior) so that the components are identified and the chains do not switch
labels, and sigma ~ half-normal(0, 1). The log density sums the labels out exactly (the
same posterior as the ``MixtureSameFamily`` form), so NUTS samples w, mu and sigma, and
``ppl.infer.infer_discrete`` (or ``MCMC.to_datatree``) draws each observation's label. The
data (weights 0.3, 0.4, 0.3, means -4, 0, 4, sds 0.7) are simulated by :func:`simulate`
with seed 15 and shipped in ``data/gaussian_mixture.json``. Like most mixtures the
posterior has local modes (one component covering two clusters, log density about 90
lower): from the default initialisation about one chain in four gets trapped in one and
R-hat flags it; start the means near the clusters, e.g. ``init_params={"mu": ...}`` at
data quantiles, to avoid it.
"""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import ppl
import ppl.distributions as dist
from ppl.distributions import constraints

description = __doc__.split("\n\n")[1].replace("\n", " ")

DATA_FILE = Path(__file__).parent / "data" / "gaussian_mixture.json"
SEED = 15
K = 3
dims = {
    "w": ["component"],
    "mu": ["component"],
    "sigma": ["component"],
    "z": ["obs"],
    "y": ["obs"],
}
coords = {"component": [1, 2, 3]}


def simulate(seed: int = SEED, n: int = 300) -> dict:
    """Simulate the data set: y (n,), as a list."""
    rng = np.random.default_rng(seed)
    z = rng.choice(K, size=n, p=[0.3, 0.4, 0.3])
    y = np.array([-4.0, 0.0, 4.0])[z] + 0.7 * rng.normal(size=n)
    return {"y": np.round(y, 6).tolist()}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: y (N,)."""
    return {"y": jnp.asarray(json.loads(DATA_FILE.read_text())["y"], dtype=float)}


def model(y):
    """z_n ~ categorical(w) (enumerated), y_n ~ normal(mu[z_n], sigma[z_n]), ordered mu."""
    w = ppl.sample("w", dist.Dirichlet(jnp.full(K, 2.0)))
    mu = ppl.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (K,)))
    ppl.factor("mu_prior", dist.Normal(0.0, 5.0).log_prob(mu).sum())
    sigma = ppl.sample("sigma", dist.HalfNormal(1.0).expand([K]).to_event(1))
    with ppl.plate("obs", y.shape[0]):
        z = ppl.sample("z", dist.Categorical(probs=w), infer={"enumerate": "parallel"})
        ppl.sample("y", dist.Normal(mu[z], sigma[z]), obs=y)
