"""Two-state hidden Markov model with normal emissions (posteriordb
``hmm_example-hmm_example``).

N = 100 observations switch between two hidden states, each emitting normal(mu_k, 1). The
rows of the transition matrix, ``theta1`` and ``theta2``, are simplexes with flat priors and
the emission means ``mu`` are positive and ordered (mu_1 < mu_2, which identifies the
states) with normal(3, 1) and normal(10, 1) priors. The hidden states are summed out with
the forward algorithm, as in posteriordb's ``hmm_example.stan`` (no initial-state term).
"""

import jax
import jax.numpy as jnp

import ppl
import ppl.distributions as dist
from models._posteriordb import read_data
from ppl.distributions import constraints

description = __doc__.split("\n\n")[1].replace("\n", " ")

dims = {"theta1": ["state"], "theta2": ["state"], "mu": ["state"]}
coords = {"state": [1, 2]}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: y (N,)."""
    raw = read_data("hmm_example")
    return {"y": jnp.asarray(raw["y"], dtype=float)}


def forward_log_likelihood(log_trans, log_emit):
    """log p(y) of an HMM by the forward algorithm.

    Args:
        log_trans: (K, K) log transition probabilities, row = from-state.
        log_emit: (N, K) log emission densities of each observation in each state.

    Returns:
        scalar log marginal likelihood, with a flat (unnormalised) initial state as in
        posteriordb's Stan code.
    """

    def step(alpha, emit):
        alpha = jax.nn.logsumexp(alpha[:, None] + log_trans, axis=0) + emit
        return alpha, None

    alpha, _ = jax.lax.scan(step, log_emit[0], log_emit[1:])
    return jax.nn.logsumexp(alpha)


def model(y):
    """HMM with 2 states; the states are marginalised, so y enters through a factor."""
    theta1 = ppl.sample("theta1", dist.Dirichlet(jnp.ones(2)))
    theta2 = ppl.sample("theta2", dist.Dirichlet(jnp.ones(2)))
    mu = ppl.sample("mu", dist.ImproperUniform(constraints.positive_ordered_vector, (), (2,)))
    prior = dist.Normal(jnp.array([3.0, 10.0]), 1.0).log_prob(mu).sum()
    ppl.factor("mu_prior", prior)
    log_trans = jnp.log(jnp.stack([theta1, theta2]))
    log_emit = dist.Normal(mu, 1.0).log_prob(y[:, None])
    ppl.factor("y", forward_log_likelihood(log_trans, log_emit))
