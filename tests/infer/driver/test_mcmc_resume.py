"""Interrupting a run (Ctrl-C) keeps the work done, and resuming gives the uninterrupted draws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
import ppl.distributions as dist
from ppl.infer import MCMC, NUTS
from ppl.infer.driver import chains as mcmc_module
from ppl.infer.driver import progress

Y = jnp.array([0.3, -1.2, 0.8, 2.1, 0.4])


def model(y):
    mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
    sigma = ppl.sample("sigma", dist.HalfNormal(2.0))
    with ppl.plate("obs", y.shape[0]):
        ppl.sample("y", dist.Normal(mu, sigma), obs=y)


def _mcmc(chain_method="vectorized", **settings):
    settings = {"num_warmup": 60, "num_samples": 40, "num_chains": 2, **settings}
    return MCMC(
        NUTS(model), chain_method=chain_method, chunk_size=20, progress_bar=True, **settings
    )


@pytest.fixture(scope="module")
def reference():
    out = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mcmc_module, "usable_cores", lambda: 2)  # two chain groups
        for method in ("vectorized", "sequential", "threaded"):
            mcmc = _mcmc(method)
            mcmc.run(jax.random.key(3), Y)
            assert mcmc.complete
            out[method] = mcmc.get_samples(group_by_chain=True)
    return out


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(mcmc_module, "usable_cores", lambda: 2)


def _interrupt_on_update(monkeypatch, call_number):
    calls = {"n": 0}
    original = progress.Progress.update

    def update(self, n, phase, num_divergent):
        calls["n"] += 1
        if calls["n"] == call_number:
            raise KeyboardInterrupt
        return original(self, n, phase, num_divergent)

    monkeypatch.setattr(progress.Progress, "update", update)
    return lambda: monkeypatch.setattr(progress.Progress, "update", original)


def _assert_same(a, b, kept=None):
    for name in a:
        x = np.asarray(b[name]) if kept is None else np.asarray(b[name])[:, :kept]
        np.testing.assert_array_equal(np.asarray(a[name]), x)


@pytest.mark.parametrize("method", ["vectorized", "sequential", "threaded"])
def test_interrupt_during_warmup_then_resume(monkeypatch, two_cores, reference, method):
    mcmc = _mcmc(method)
    assert mcmc.num_groups == (2 if method == "threaded" else 1)
    restore = _interrupt_on_update(monkeypatch, call_number=2)
    with pytest.warns(UserWarning, match="interrupted: 0 of 40 draws"):
        mcmc.run(jax.random.key(3), Y)
    restore()
    assert not mcmc.complete
    with pytest.raises(RuntimeError, match="resume"):
        mcmc.get_samples()
    mcmc.resume()
    assert mcmc.complete
    _assert_same(mcmc.get_samples(group_by_chain=True), reference[method])
    with pytest.raises(RuntimeError, match="nothing to resume"):
        mcmc.resume()


def test_interrupt_during_sampling_keeps_draws_and_resumes_elsewhere(monkeypatch, reference):
    mcmc = _mcmc()
    restore = _interrupt_on_update(monkeypatch, call_number=4)  # after 60 warmup + 20 draws
    with pytest.warns(UserWarning, match="20 of 40 draws"):
        mcmc.run(jax.random.key(3), Y)
    restore()
    assert not mcmc.complete and mcmc.num_completed_samples == 20
    partial = mcmc.get_samples(group_by_chain=True)
    _assert_same(partial, reference["vectorized"], kept=20)
    assert mcmc.get_sample_stats()["lp"].shape == (2, 20)

    # the saved state continues in a fresh MCMC object (e.g. another process)
    state = {k: np.array(v) for k, v in mcmc.sampler_state().items()}
    other = _mcmc()
    other.resume_from(state, Y)
    assert other.complete
    _assert_same(other.get_samples(group_by_chain=True), reference["vectorized"])


def test_threaded_interrupt_resumes_in_another_grouping(monkeypatch, reference):
    """An interrupt in one group's thread stops both groups; the saved state (two groups)
    resumes in a process with one core, with the saved grouping, to the same draws."""
    monkeypatch.setattr(mcmc_module, "usable_cores", lambda: 2)
    mcmc = _mcmc("threaded")
    restore = _interrupt_on_update(monkeypatch, call_number=4)  # after 60 warmup + 20 draws
    with pytest.warns(UserWarning, match="20 of 40 draws"):
        mcmc.run(jax.random.key(3), Y)
    restore()
    assert not mcmc.complete and mcmc.num_completed_samples == 20
    _assert_same(mcmc.get_samples(group_by_chain=True), reference["threaded"], kept=20)
    state = {k: np.array(v) for k, v in mcmc.sampler_state().items()}
    monkeypatch.setattr(mcmc_module, "usable_cores", lambda: 1)
    other = _mcmc("auto")
    assert other.chain_method == "looped"
    other.resume_from(state, Y)
    assert other.complete and other.num_groups == 2
    _assert_same(other.get_samples(group_by_chain=True), reference["threaded"])
    # threaded, looped and sequential run one per-chain program: the same draws
    _assert_same(reference["threaded"], reference["sequential"])


def test_resume_from_checks_settings(monkeypatch):
    mcmc = _mcmc()
    restore = _interrupt_on_update(monkeypatch, call_number=2)
    with pytest.warns(UserWarning):
        mcmc.run(jax.random.key(3), Y)
    restore()
    state = mcmc.sampler_state()
    other = MCMC(NUTS(model), num_warmup=60, num_samples=41, num_chains=2, progress_bar=False)
    with pytest.raises(ValueError, match="other settings"):
        other.resume_from(state, Y)


def test_completed_run_has_no_sampler_state():
    mcmc = MCMC(NUTS(model), num_warmup=10, num_samples=5, num_chains=1, progress_bar=False)
    mcmc.run(jax.random.key(0), Y)
    with pytest.raises(RuntimeError, match="interrupted run"):
        mcmc.sampler_state()
    assert int(mcmc.last_state.num_steps_warmup[0]) >= 10


def test_pathfinder_initialisation_starts_near_the_posterior():
    mcmc = MCMC(
        NUTS(model),
        num_warmup=100,
        num_samples=100,
        num_chains=2,
        progress_bar=False,
        init="pathfinder",
    )
    mcmc.run(jax.random.key(0), Y)
    assert mcmc.pathfinder_ is not None and mcmc.pathfinder_.num_gradient_evals > 0
    mu = np.asarray(mcmc.get_samples()["mu"])
    assert abs(mu.mean() - float(Y.mean())) < 4 * mu.std() / np.sqrt(20)
    with pytest.raises(ValueError, match="init must be"):
        MCMC(NUTS(model), init="advi")
