"""Eight schools (Rubin 1981), centered.

The eight-schools model of ``eight_schools`` written the direct way: the school effects
``theta`` are drawn from normal(mu, tau) themselves. With only eight noisy schools the
posterior has a funnel at small ``tau`` that NUTS explores poorly (divergences, a biased
``tau``), the classic reason to prefer the non-centered form; kept as a diagnostic
example. Priors: mu ~ normal(0, 5), tau ~ half-Cauchy(0, 5) (posteriordb's
``eight_schools_centered.stan``).
"""

import ppl
import ppl.distributions as dist
from models import eight_schools

description = __doc__.split("\n\n")[1].replace("\n", " ")

SCHOOLS = eight_schools.SCHOOLS
dims = {"theta": ["school"], "y": ["school"]}
coords = {"school": SCHOOLS}
load_data = eight_schools.load_data


def model(J, sigma, y=None):
    """Centered eight schools: theta ~ normal(mu, tau), y ~ normal(theta, sigma)."""
    mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
    tau = ppl.sample("tau", dist.HalfCauchy(5.0))
    with ppl.plate("school", J):
        theta = ppl.sample("theta", dist.Normal(mu, tau))
        ppl.sample("y", dist.Normal(theta, sigma), obs=y)
