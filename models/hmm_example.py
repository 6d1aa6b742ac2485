"""Two-state hidden Markov model with normal emissions (posteriordb
``hmm_example-hmm_example``).

N = 100 observations switch between two hidden states, each emitting normal(mu_k, 1). The
rows of the transition matrix, ``theta1`` and ``theta2``, are simplexes with flat priors and
the emission means ``mu`` are positive and ordered (mu_1 < mu_2, which identifies the
states) with normal(3, 1) and normal(10, 1) priors. The hidden state z_t is a discrete
latent site in a ``ppl.scan`` over time, enumerated: the log density sums the chain out
exactly (the forward algorithm, O(N K^2)), so NUTS samples theta1, theta2 and mu, and
``ppl.infer.infer_discrete`` draws the state path (``temperature=0``: the Viterbi path).
posteriordb's ``hmm_example.stan`` has no initial-state term (every first state has weight
one); here the first state is uniform and a constant factor log K restores Stan's log
density exactly.
"""

import jax.numpy as jnp

import ppl
import ppl.distributions as dist
from models._posteriordb import read_data
from ppl.distributions import constraints

description = __doc__.split("\n\n")[1].replace("\n", " ")

K = 2
dims = {"theta1": ["state"], "theta2": ["state"], "mu": ["state"], "z": ["time"], "y": ["time"]}
coords = {"state": [1, 2]}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: y (N,)."""
    raw = read_data("hmm_example")
    return {"y": jnp.asarray(raw["y"], dtype=float)}


def model(y):
    """HMM with 2 states: z_t ~ categorical(theta[z_{t-1}]) enumerated, y_t ~ normal(mu[z_t], 1)."""
    theta1 = ppl.sample("theta1", dist.Dirichlet(jnp.ones(K)))
    theta2 = ppl.sample("theta2", dist.Dirichlet(jnp.ones(K)))
    mu = ppl.sample("mu", dist.ImproperUniform(constraints.positive_ordered_vector, (), (K,)))
    ppl.factor("mu_prior", dist.Normal(jnp.array([3.0, 10.0]), 1.0).log_prob(mu).sum())
    # rows 0..K-1: the transition matrix; row K: the first state's distribution (uniform),
    # reached from the initial carry K
    trans = jnp.stack([theta1, theta2, jnp.full(K, 1.0 / K)])

    def step(z_prev, y_t):
        z = ppl.sample("z", dist.Categorical(trans[z_prev]), infer={"enumerate": "parallel"})
        ppl.sample("y", dist.Normal(mu[z], 1.0), obs=y_t)
        return z, None

    ppl.scan(step, K, y)
    # Stan's flat initial state: weight 1 per first state instead of the uniform 1 / K
    ppl.factor("flat_initial", jnp.log(K))
