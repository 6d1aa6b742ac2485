"""ppl's NUTS against NumPyro's NUTS on the same models: posteriors agree within MCSE."""

import functools

import arviz_stats
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpyro.infer import MCMC as NumPyroMCMC
from numpyro.infer import NUTS as NumPyroNUTS

import ppl
import ppl.distributions as dist
from ppl.infer import MCMC, NUTS


def eight_schools(P, J, sigma, y=None):
    mu = P.sample("mu", dist.Normal(0.0, 5.0))
    tau = P.sample("tau", dist.HalfCauchy(5.0))
    with P.plate("school", J):
        eta = P.sample("eta", dist.Normal(0.0, 1.0))
        P.sample("y", dist.Normal(mu + tau * eta, sigma), obs=y)


def logistic(P, x, y):
    alpha = P.sample("alpha", dist.Normal(0.0, 2.0))
    beta = P.sample("beta", dist.Normal(jnp.zeros(x.shape[1]), 1.0).to_event(1))
    with P.plate("rows", x.shape[0]):
        P.sample("y", dist.Bernoulli(logits=alpha + x @ beta), obs=y)


def _logistic_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    logits = 0.5 + x @ np.array([1.0, -0.5, 0.0])
    y = (rng.uniform(size=300) < 1 / (1 + np.exp(-logits))).astype(np.int32)
    return (jnp.asarray(x), jnp.asarray(y)), {}


CASES = {
    "eight_schools": (
        eight_schools,
        lambda: (
            (),
            {
                "J": 8,
                "sigma": jnp.array([15.0, 10, 16, 11, 9, 11, 10, 18]),
                "y": jnp.array([28.0, 8, -3, 7, -1, 1, 18, 12]),
            },
        ),
    ),
    "logistic": (logistic, _logistic_data),
}


def _flat(samples: dict) -> dict[str, np.ndarray]:
    """site -> (chains, draws, k) with every element of the site as a column."""
    out = {}
    for name, value in samples.items():
        v = np.asarray(value)
        out[name] = v.reshape(v.shape[0], v.shape[1], -1)
    return out


def _estimates(draws: np.ndarray):
    """Mean and sd per column, with their Monte Carlo standard errors (arviz-stats)."""
    mean, sd = draws.mean(axis=(0, 1)), draws.std(axis=(0, 1))
    mcse_mean = np.asarray(arviz_stats.mcse(draws, method="mean")).reshape(-1)
    mcse_sd = np.asarray(arviz_stats.mcse(draws, method="sd")).reshape(-1)
    return mean, mcse_mean, sd, mcse_sd


@pytest.mark.parametrize("case", sorted(CASES))
def test_nuts_agrees_with_numpyro(case):
    model, data = CASES[case]
    args, kwargs = data()
    chains, warmup, draws = 4, 500, 1000
    ours = MCMC(
        NUTS(functools.partial(model, ppl)),
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        progress_bar=False,
    )
    ours.run(jax.random.PRNGKey(0), *args, **kwargs)
    theirs = NumPyroMCMC(
        NumPyroNUTS(functools.partial(model, numpyro)),
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    theirs.run(jax.random.PRNGKey(1), *args, **kwargs)
    a = _flat(ours.get_samples(group_by_chain=True))
    b = _flat(theirs.get_samples(group_by_chain=True))
    assert set(a) == set(b)
    for name in a:
        mean_a, mcse_mean_a, sd_a, mcse_sd_a = _estimates(a[name])
        mean_b, mcse_mean_b, sd_b, mcse_sd_b = _estimates(b[name])
        # two independent estimates: their difference has sd sqrt(mcse_a^2 + mcse_b^2);
        # 4 of those is exceeded by chance with probability ~6e-5 per column
        tol_mean = 4.0 * np.hypot(mcse_mean_a, mcse_mean_b)
        assert np.all(np.abs(mean_a - mean_b) < tol_mean), (name, mean_a, mean_b, tol_mean)
        tol_sd = 4.0 * np.hypot(mcse_sd_a, mcse_sd_b)
        assert np.all(np.abs(sd_a - sd_b) < tol_sd), (name, sd_a, sd_b, tol_sd)
