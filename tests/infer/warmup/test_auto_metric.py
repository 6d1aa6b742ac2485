"""metric="auto": the diagonal metric until warmup finds linear correlations worth the
low-rank one, then the low-rank metric (ppl.infer.warmup.nutpie, ppl.infer.driver.chains)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.infer import MCMC, NUTS
from ppl.infer.core.metrics import LowRankInverseMass
from ppl.infer.warmup.auto_metric import correlation_excess

RHO = 0.95
DIM = 12
COV = RHO ** np.abs(np.subtract.outer(np.arange(DIM), np.arange(DIM)))
PREC = jnp.asarray(np.linalg.inv(COV))
SCALES = jnp.geomspace(0.1, 10.0, DIM)


def correlated(x):
    return -0.5 * x @ PREC @ x


def independent(x):
    return -0.5 * jnp.sum((x / SCALES) ** 2)


def test_correlation_excess_tells_correlation_from_noise():
    rng = np.random.default_rng(0)
    white = rng.normal(size=(200, DIM))
    ones = np.ones(200)
    assert correlation_excess(white, ones) < 1.5
    chol = np.linalg.cholesky(COV)
    assert correlation_excess(white @ chol.T, ones) > 4.0
    # rows with weight 0 do not count
    mixed = np.concatenate([white @ chol.T, rng.normal(size=(100, DIM)) * 100.0])
    weights = np.concatenate([ones, np.zeros(100)])
    assert correlation_excess(mixed, weights) > 4.0


def _run(logdensity_fn, metric, **kwargs):
    mcmc = MCMC(
        NUTS(logdensity_fn=logdensity_fn, metric=metric),
        num_warmup=500,
        num_samples=300,
        num_chains=2,
        progress_bar=False,
        **kwargs,
    )
    mcmc.run(jax.random.PRNGKey(0), init_params=jnp.zeros((2, DIM)))
    return mcmc


def test_correlated_target_switches_to_low_rank_and_samples_it_right():
    mcmc = _run(correlated, "auto")
    assert mcmc.metric_switched is not None and mcmc.metric_switched < 500
    assert isinstance(mcmc.inverse_mass_matrix, LowRankInverseMass)
    draws = np.asarray(mcmc.get_samples()["theta"])
    np.testing.assert_allclose(np.cov(draws.T), COV, atol=0.35)
    tree = mcmc.to_datatree()
    assert tree["sample_stats"].attrs["ppl_metric"].startswith("low_rank (from warmup")
    diag = _run(correlated, "diag")
    stats = (mcmc.get_sample_stats(), diag.get_sample_stats())
    # the low-rank metric needs far fewer leapfrog steps per draw on this target
    assert stats[0]["n_steps"].mean() < 0.6 * stats[1]["n_steps"].mean()


def test_independent_target_keeps_the_diagonal_and_the_draws_of_diag():
    auto = _run(independent, "auto")
    assert auto.metric_switched is None
    assert auto.to_datatree()["sample_stats"].attrs["ppl_metric"] == "diag"
    diag = _run(independent, "diag")
    np.testing.assert_array_equal(np.asarray(auto.inverse_mass_matrix), diag.inverse_mass_matrix)
    np.testing.assert_array_equal(
        np.asarray(auto.get_samples()["theta"]), np.asarray(diag.get_samples()["theta"])
    )


def test_a_switched_run_resumes_in_another_process(monkeypatch):
    from ppl.infer.driver import progress

    reference = _run(correlated, "auto", chunk_size=50)
    calls = {"n": 0}
    original = progress.Progress.update

    def update(self, n, phase, num_divergent):
        calls["n"] += 1
        if calls["n"] == 12:  # well after the switch
            raise KeyboardInterrupt
        return original(self, n, phase, num_divergent)

    monkeypatch.setattr(progress.Progress, "update", update)
    mcmc = MCMC(
        NUTS(logdensity_fn=correlated), num_warmup=500, num_samples=300, num_chains=2,
        progress_bar=True, chunk_size=50,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="interrupted"):
        mcmc.run(jax.random.PRNGKey(0), init_params=jnp.zeros((2, DIM)))
    monkeypatch.setattr(progress.Progress, "update", original)
    assert not mcmc.complete and mcmc.metric_switched == reference.metric_switched
    state = {k: np.array(v) for k, v in mcmc.sampler_state().items()}
    other = MCMC(
        NUTS(logdensity_fn=correlated), num_warmup=500, num_samples=300, num_chains=2,
        progress_bar=False, chunk_size=50,
    )  # fmt: skip
    other.resume_from(state, init_params=jnp.zeros((2, DIM)))
    assert other.metric_switched == reference.metric_switched
    np.testing.assert_array_equal(
        np.asarray(other.get_samples()["theta"]), np.asarray(reference.get_samples()["theta"])
    )
