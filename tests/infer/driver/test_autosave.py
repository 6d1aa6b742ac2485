"""Saves of a run in progress (``MCMC(autosave=...)``): every saved state resumes, in a fresh
``MCMC`` (another process), to exactly the draws of the uninterrupted run."""

import time

import jax
import numpy as np
import pytest

from ppl.infer import MCMC, NUTS
from ppl.infer.driver import autosave as autosave_module
from ppl.infer.driver import chains as chains_module
from ppl.infer.driver import threads
from ppl.infer.driver.autosave import Autosave
from ppl.infer.driver.progress import SharedProgress
from tests.infer.driver.test_mcmc_resume import Y, model
from tests.infer.driver.test_mcmc_resume import _mcmc as resume_mcmc


def _mcmc(chain_method, autosave=None):
    return resume_mcmc(chain_method, num_warmup=100, num_chains=4, autosave=autosave)


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(chains_module, "usable_cores", lambda: 2)


@pytest.mark.parametrize("method", ["vectorized", "threaded", "sequential"])
def test_every_saved_state_resumes_to_the_uninterrupted_draws(monkeypatch, two_cores, method):
    reference = _mcmc(method)
    reference.run(jax.random.key(5), Y)
    expected = reference.get_samples(group_by_chain=True)

    saved = []  # (draws kept, state, samples so far)

    def save(mcmc):
        assert not mcmc.complete
        state = {k: np.array(v) for k, v in mcmc.sampler_state().items()}
        so_far = mcmc.get_samples(group_by_chain=True) if mcmc.num_completed_samples else None
        saved.append((mcmc.num_completed_samples, state, so_far))

    monkeypatch.setattr(Autosave, "due", lambda self: True)  # after every chunk
    if method == "threaded":  # slow chunks, quick polls: the groups pause within a round
        monkeypatch.setattr(threads, "POLL_SECONDS", 0.005)
        reporter = SharedProgress.reporter

        def slow_reporter(self, group):
            report = reporter(self, group)
            return lambda *a: (time.sleep(0.03), report(*a))

        monkeypatch.setattr(SharedProgress, "reporter", slow_reporter)
    mcmc = _mcmc(method, autosave=save)
    mcmc.run(jax.random.key(5), Y)
    assert mcmc.complete
    for name in expected:  # saving changes nothing
        np.testing.assert_array_equal(np.asarray(mcmc.get_samples(True)[name]), expected[name])
    kept = [k for k, _, _ in saved]
    assert len(saved) >= 5 and 0 in kept and any(0 < k < 40 for k in kept)
    # states taken right at a rescue checkpoint (20, 40, 60, 80 of 100), before its work
    at_stop = [s for _, s, _ in saved if int(s["s0_next"]) in (20, 40)]
    assert method != "vectorized" or any(int(s["checked"]) < int(s["s0_next"]) for s in at_stop)
    monkeypatch.undo()
    monkeypatch.setattr(chains_module, "usable_cores", lambda: 2)
    for kept_draws, state, so_far in [*saved[:: max(1, len(saved) // 6)], saved[-1]]:
        if so_far is not None:  # the draws so far are those of the full run
            for name in expected:
                np.testing.assert_array_equal(
                    np.asarray(so_far[name]), np.asarray(expected[name])[:, :kept_draws]
                )
        other = _mcmc(method)
        other.resume_from(state, Y)
        assert other.complete
        for name in expected:
            np.testing.assert_array_equal(
                np.asarray(other.get_samples(group_by_chain=True)[name]),
                np.asarray(expected[name]),
            )


def test_saves_come_by_time_and_cost(monkeypatch):
    clock = {"t": 100.0}
    monkeypatch.setattr(autosave_module.time, "monotonic", lambda: clock["t"])

    def slow_save():
        clock["t"] += 2.0  # a save that takes 2 s

    saver = Autosave(slow_save, every=5.0, cost_ratio=20.0, last=clock["t"])
    assert not saver.due()
    clock["t"] += 5.0
    assert saver.due()
    saver()  # the first save's length (one-time costs) does not space the saves
    assert saver.count == 1 and saver.seconds == 2.0 and saver.pace == 0.0
    clock["t"] += 5.0
    assert saver.due()
    saver()
    assert saver.count == 2 and saver.pace == 2.0
    clock["t"] += 5.0  # 5 s after: not yet, a 2 s save comes at most every 40 s
    assert not saver.due()
    clock["t"] += 35.0
    assert saver.due()
    with pytest.raises(ValueError, match="> 0"):
        Autosave(slow_save, every=0)
    with pytest.raises(ValueError, match="autosave_seconds"):
        MCMC(NUTS(model), autosave=print, autosave_seconds=0)


def test_autosave_without_progress_bar_runs_by_time(monkeypatch):
    """Without a bar, chunks last about a second; a short interval still saves between them."""
    calls = []
    mcmc = MCMC(
        NUTS(model),
        num_warmup=200,
        num_samples=200,
        num_chains=2,
        progress_bar=False,
        autosave=lambda m: calls.append(m.num_completed_samples),
        autosave_seconds=1e-6,
    )
    mcmc.run(jax.random.key(0), Y)
    assert mcmc.complete and calls  # the first chunk is 100 iterations: saves in warmup
