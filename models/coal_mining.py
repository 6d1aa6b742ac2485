"""Coal-mining disasters: a Poisson change-point model with the switch year enumerated.

Annual counts of coal-mining disasters in Britain, 1851-1961 (Jarrett 1979; the series used
in the PyMC tutorials, here complete without the two years PyMC masks), modelled as
Poisson with an ``early_rate`` before an unknown ``switchpoint`` year and a ``late_rate``
from it on, each rate with an exponential(1) prior. The switch year is a discrete latent
site, uniform over the 111 years (discrete-uniform(1851, 1961)) and enumerated: the log
density sums it out exactly, so NUTS samples only the two rates, and
``ppl.infer.infer_discrete`` (or ``MCMC.to_datatree``) draws the switch year from its
exact conditional posterior given each draw of the rates.
"""

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
dims = {"disasters": ["year"]}
coords = {"year": YEARS}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: disasters (T,) counts per year from 1851."""
    return {"disasters": jnp.asarray(DISASTERS, dtype=float)}


def model(disasters):
    """Counts (T,) Poisson(early_rate) before the switch year, Poisson(late_rate) from it."""
    T = disasters.shape[0]
    years = FIRST_YEAR + jnp.arange(T)
    early = ppl.sample("early_rate", dist.Exponential(1.0))
    late = ppl.sample("late_rate", dist.Exponential(1.0))
    switchpoint = ppl.sample(
        "switchpoint",
        dist.DiscreteUniform(FIRST_YEAR, FIRST_YEAR + T - 1),
        infer={"enumerate": "parallel"},
    )
    with ppl.plate("year", T):
        rate = jnp.where(years < switchpoint, early, late)
        ppl.sample("disasters", dist.Poisson(rate), obs=disasters)
