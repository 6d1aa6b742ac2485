"""Coal-mining disasters: a Poisson change-point model with the change point summed out.

Annual counts of coal-mining disasters in Britain, 1851-1961 (Jarrett 1979; the series used
in the PyMC tutorials, here complete without the two years PyMC masks), modelled as
Poisson with an ``early_rate`` before an unknown switch year and a ``late_rate`` from it
on, each with an exponential(1) prior. The switch year has a uniform prior over the 111
years; being discrete it is marginalised out exactly (a log-sum-exp over the years), so
NUTS samples only the two rates, and ``switchpoint_prob`` gives its posterior probabilities
per draw.
"""

import jax
import jax.numpy as jnp

import ppl
import ppl.distributions as dist

description = __doc__.split("\n\n")[1].replace("\n", " ")

FIRST_YEAR = 1851
# fmt: off
DISASTERS = [
    4, 5, 4, 0, 1, 4, 3, 4, 0, 6, 3, 3, 4, 0, 2, 6, 3, 3, 5, 4, 5, 3, 1, 4, 4, 1, 5, 5, 3, 4,
    2, 5, 2, 2, 3, 4, 2, 1, 3, 2, 2, 1, 1, 1, 1, 3, 0, 0, 1, 0, 1, 1, 0, 0, 3, 1, 0, 3, 2, 2,
    0, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 2, 1, 0, 0, 0, 1, 1, 0, 2, 3, 3, 1, 1, 2, 1, 1, 1, 1, 2,
    4, 2, 0, 0, 1, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 1,
]
# fmt: on
YEARS = list(range(FIRST_YEAR, FIRST_YEAR + len(DISASTERS)))
dims = {"switchpoint_prob": ["year"]}
coords = {"year": YEARS}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: disasters (T,) counts per year from 1851."""
    return {"disasters": jnp.asarray(DISASTERS, dtype=float)}


def model(disasters):
    """Counts (T,) Poisson(early_rate) before the switch year, Poisson(late_rate) from it."""
    T = disasters.shape[0]
    early = ppl.sample("early_rate", dist.Exponential(1.0))
    late = ppl.sample("late_rate", dist.Exponential(1.0))
    log_early = dist.Poisson(early).log_prob(disasters)
    log_late = dist.Poisson(late).log_prob(disasters)
    # switch at s (0..T-1): years t < s early, t >= s late
    before = jnp.concatenate([jnp.zeros(1), jnp.cumsum(log_early)[:-1]])
    after = jnp.cumsum(log_late[::-1])[::-1]
    log_joint = before + after - jnp.log(T)
    ppl.factor("disasters", jax.nn.logsumexp(log_joint))
    ppl.deterministic("switchpoint_prob", jax.nn.softmax(log_joint))
