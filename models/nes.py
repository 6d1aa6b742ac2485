"""Party identification in the 1972 National Election Study (posteriordb ``nes1972-nes``).

Seven-point party identification of 1330 respondents regressed on political ideology, race,
age group (30-44, 45-64, 65+ against under 30), education, gender and income. As in
posteriordb's ``nes.stan``, the coefficients ``beta`` (9) and the residual sd ``sigma``
have flat priors.
"""

import jax.numpy as jnp

import ppl
import ppl.distributions as dist
from models._posteriordb import read_data
from ppl.distributions import constraints

description = __doc__.split("\n\n")[1].replace("\n", " ")

COLUMNS = ("real_ideo", "race_adj", "age_discrete", "educ1", "gender", "income", "partyid7")
dims = {"beta": ["coef"], "partyid7": ["respondent"]}
coords = {
    "coef": [
        "intercept",
        "real_ideo",
        "race_adj",
        "age30_44",
        "age45_64",
        "age65up",
        "educ1",
        "gender",
        "income",
    ]
}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: the columns, each (N,); age_discrete in 1..4."""
    raw = read_data("nes")
    return {k: jnp.asarray(raw[k], dtype=float) for k in COLUMNS}


def model(real_ideo, race_adj, age_discrete, educ1, gender, income, partyid7=None):
    """partyid7 ~ normal(beta . predictors, sigma), with age as three indicators."""
    beta = ppl.sample("beta", dist.ImproperUniform(constraints.real_vector, (), (9,)))
    sigma = ppl.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    predictors = jnp.stack(
        [
            jnp.ones_like(real_ideo),
            real_ideo,
            race_adj,
            (age_discrete == 2).astype(real_ideo.dtype),
            (age_discrete == 3).astype(real_ideo.dtype),
            (age_discrete == 4).astype(real_ideo.dtype),
            educ1,
            gender,
            income,
        ],
        axis=-1,
    )
    with ppl.plate("respondent", real_ideo.shape[0]):
        ppl.sample("partyid7", dist.Normal(predictors @ beta, sigma), obs=partyid7)
