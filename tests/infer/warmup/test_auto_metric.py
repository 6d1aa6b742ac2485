"""metric="auto": the diagonal metric until warmup finds linear correlations worth the
low-rank one, then the low-rank metric (ppl.infer.warmup.nutpie, ppl.infer.driver.chains)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.infer import MCMC, NUTS
from ppl.infer.core.metrics import LowRankInverseMass
from ppl.infer.warmup.auto_metric import (
    AUTO_MIN_DRAWS,
    auto_wants_low_rank,
    correlation_excess,
    judge_iterations,
)
from ppl.infer.warmup.nutpie import nutpie_warmup

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


def test_correlation_excess_sees_anti_correlated_pairs_and_skips_bad_rows():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 2))
    pair = np.stack([x[:, 0], -x[:, 0] + 0.05 * x[:, 1]], axis=1)
    # the leading eigenvector (1, -1)/sqrt(2) is orthogonal to the all-ones vector
    assert correlation_excess(pair, np.ones(300)) > 1.5
    bad = pair.copy()
    bad[:5] = np.nan
    np.testing.assert_allclose(
        correlation_excess(bad, np.ones(300)),
        correlation_excess(pair[5:], np.ones(295)),
        rtol=1e-6,
    )
    assert correlation_excess(pair[:2], np.ones(2)) == 0.0  # too few rows


def test_auto_wants_low_rank_counts_only_recent_usable_rows():
    rng = np.random.default_rng(2)
    draws = rng.normal(size=(200, DIM)) @ np.linalg.cholesky(COV).T
    stamp = np.arange(200)
    weight = np.ones(200)
    assert bool(auto_wants_low_rank(draws, stamp, weight, since=0))
    # fewer than AUTO_MIN_DRAWS rows since `since`
    assert not bool(auto_wants_low_rank(draws, stamp, weight, since=200 - AUTO_MIN_DRAWS + 1))
    weight[:] = 0.0
    assert not bool(auto_wants_low_rank(draws, stamp, weight, since=0))


def test_judgements_fall_on_rescue_checkpoints_with_enough_draws():
    from ppl.infer.driver.rescue import RescueSettings, check_iterations

    assert judge_iterations(1000, 300) == (399, 599, 799)
    stops = check_iterations(1000, RescueSettings())
    assert all(i + 1 in stops for i in judge_iterations(1000, 300))
    assert judge_iterations(100, 30) == (79,)  # 40 and 60 come too early after 30
    assert judge_iterations(50, 15) == ()


def test_the_diagonal_view_judges_at_chunk_ends_only_and_keeps_its_scratch_row_empty():
    warmup = nutpie_warmup(1000, DIM, metric="auto")
    assert warmup.chunk_end is not None
    assert nutpie_warmup(1000, DIM, metric="diag").chunk_end is None
    reference = _run(correlated, "auto")
    # with a progress bar, chunks of 97 end off the judgement points as well as on them
    mcmc = MCMC(
        NUTS(logdensity_fn=correlated), num_warmup=500, num_samples=300, num_chains=2,
        progress_bar=True, chunk_size=97,
    )  # fmt: skip
    mcmc.run(jax.random.PRNGKey(0), init_params=jnp.zeros((2, DIM)))
    assert mcmc.metric_switched == reference.metric_switched
    np.testing.assert_array_equal(
        np.asarray(mcmc.get_samples()["theta"]), np.asarray(reference.get_samples()["theta"])
    )
    buffer = mcmc._run.segments[0].carry.warmup.buffer
    assert np.all(np.asarray(buffer.stamp)[..., -1] == -2)
    assert np.all(np.asarray(buffer.weight)[..., -1] == 0)


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
