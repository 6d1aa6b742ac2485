"""Chain rescue during warmup and the end-of-run chain-disagreement warning
(ppl.infer.driver.rescue)."""

from __future__ import annotations

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
import ppl.distributions as dist
from ppl.infer import MCMC, NUTS
from ppl.infer.driver.rescue import (
    ChainWarning,
    RescueSettings,
    WindowStats,
    chain_disagreement,
    check_iterations,
    find_lost_chains,
)
from ppl.report.checks import assess


def _window(lp_mean, lp_sd=1.0, steps=7.0, step_size=1.0, count=100.0):
    lp_mean = np.asarray(lp_mean, float)
    n = np.full_like(lp_mean, count)
    sd = np.broadcast_to(np.asarray(lp_sd, float), lp_mean.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_step = np.broadcast_to(np.log(np.asarray(step_size, float)), lp_mean.shape)
    return WindowStats(
        n,
        lp_mean * n,
        (sd**2 + lp_mean**2) * n,
        np.broadcast_to(steps, lp_mean.shape) * n,
        log_step * n,
    )


# ---------------------------------------------------------------------- detection rules


def test_healthy_chains_are_left_alone():
    step = np.array([0.5, 0.45, 0.6, 0.55])
    window = _window([-10.0, -11.0, -9.5, -10.4], lp_sd=2.0, step_size=step)
    assert find_lost_chains(window) == []


def test_collapsed_step_size_is_found_and_gets_a_healthy_donor():
    step = np.array([0.5, 0.45, 1e-4, 0.55])
    lost = find_lost_chains(_window([-10.0, -11.0, -10.5, -10.4], step_size=step))
    assert [(c, d) for c, d, _ in lost] == [(2, 3)]  # donor: log density nearest the median
    assert "step size" in lost[0][2] and "collapsed" in lost[0][2]


def test_log_density_far_below_scaled_by_the_spread():
    lost = find_lost_chains(_window([-10.0, -11.0, -60.0, -10.4]))
    assert [c for c, _, _ in lost] == [2] and "below the median" in lost[0][2]
    # a posterior whose log density swings by 20 within a chain needs a wider gap than 50
    assert find_lost_chains(_window([-10.0, -11.0, -60.0, -10.4], lp_sd=20.0)) == []


def test_saturated_trees_and_non_finite_values():
    window = _window([-10.0, -10.0, -10.0, -10.0], steps=np.array([7.0, 7.0, 1023.0, 7.0]))
    assert [c for c, _, _ in find_lost_chains(window)] == [2]
    # a chain nutpie's warmup reset during the window (its hold: big trees by design) is not
    # judged by tree size, only by the other rules
    recovering = np.array([False, False, True, False])
    assert find_lost_chains(window, recovering=recovering) == []
    slow = _window([-10.0, -10.0, -10.0, -10.0], steps=np.array([7.0, 7.0, 1023.0, 7.0]),
                   step_size=np.array([0.5, 0.5, 1e-5, 0.5]))  # fmt: skip
    assert [c for c, _, _ in find_lost_chains(slow, recovering=recovering)] == [2]
    window = _window([-10.0, np.nan, -10.0, -10.0])
    assert [c for c, _, _ in find_lost_chains(window)] == [1]
    window = _window([0.0] * 4, step_size=np.array([1, np.inf, 1, 1.0]))
    assert [c for c, _, _ in find_lost_chains(window)] == [1]


def test_never_the_majority_and_not_one_chain():
    # the median chain defines "normal": a collapsed majority leaves nothing to compare with
    collapsed = np.array([1e-5, 1e-5, 1e-5, 1.0, 1.0])
    assert find_lost_chains(_window([-10.0] * 5, step_size=collapsed)) == []
    lost = find_lost_chains(_window([np.nan, np.nan, np.nan, -10.0]))
    assert len(lost) == 2 and all(d == 3 for _, d, _ in lost)
    assert find_lost_chains(_window([-10.0])) == []


def test_checkpoints():
    assert check_iterations(1000, RescueSettings()) == (200, 400, 600, 800)
    assert check_iterations(50, RescueSettings()) == ()


# ---------------------------------------------------------------------- in a run


def _trap_logp(x):
    """A standard normal, and 50 sds away a narrow trap holding 1e-30 of the mass: a chain
    started in the trap never leaves it, with a log density ~60 below the others'."""
    main = jnp.log1p(-1e-30) - 0.5 * jnp.sum(x**2)
    trap = jnp.log(1e-30) - 0.5 * jnp.sum(((x - 50.0) / 0.01) ** 2) - 2 * jnp.log(0.01)
    return jnp.logaddexp(main, trap)


TRAP_START = jnp.array([[0.1, 0.2], [-0.3, 0.5], [50.001, 49.999], [0.4, -0.1]])


def _run(rescue, chain_method="threaded", **kwargs):
    mcmc = MCMC(
        NUTS(logdensity_fn=_trap_logp),
        num_warmup=300,
        num_samples=200,
        num_chains=4,
        progress_bar=False,
        chain_method=chain_method,
        rescue=rescue,
        **kwargs,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc.run(jax.random.PRNGKey(1), init_params=TRAP_START)
    messages = [str(w.message) for w in caught if issubclass(w.category, ChainWarning)]
    return mcmc, np.asarray(mcmc.get_samples(group_by_chain=True)["theta"]), messages


@pytest.mark.parametrize("chain_method", ["threaded", "vectorized"])
def test_a_trapped_chain_is_restarted_and_the_others_are_unchanged(chain_method):
    x64 = jax.config.jax_enable_x64
    rescued, draws, messages = _run(True, chain_method)
    (record,) = rescued.rescues
    assert (record.chain, record.iteration) == (2, 60)  # the first checkpoint, 20% of 300
    assert record.donor in (0, 1, 3) and "below the median" in record.reason
    assert any("chain 2 was restarted from chain" in m for m in messages)
    assert not any("disagree" in m for m in messages)
    assert np.abs(draws[2].mean(axis=0)).max() < 1.0  # it left the trap

    plain, plain_draws, plain_messages = _run(False, chain_method)
    assert plain.rescues == []
    np.testing.assert_array_equal(draws[[0, 1, 3]], plain_draws[[0, 1, 3]])
    assert np.abs(plain_draws[2].mean(axis=0) - 50.0).max() < 0.1  # still trapped
    assert any("disagree" in m and "'theta'" in m for m in plain_messages)

    tree = rescued.to_datatree()
    records = json.loads(tree["sample_stats"].attrs["ppl_rescues"])
    assert records == [record.as_dict()]
    finding = [f for f in assess(tree).findings if f.check == "chain rescue"]
    assert finding[0].level == "warn" and "chain 2 from chain" in finding[0].message
    assert jax.config.jax_enable_x64 == x64


def _eight_schools(y, sigma):
    mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
    tau = ppl.sample("tau", dist.HalfCauchy(5.0))
    with ppl.plate("J", y.shape[0]):
        eta = ppl.sample("eta", dist.Normal(0.0, 1.0))
        ppl.sample("y", dist.Normal(mu + tau * eta, sigma), obs=y)


def test_healthy_run_gives_the_draws_of_a_run_without_rescue():
    y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    out = []
    for rescue in (True, False):
        mcmc = MCMC(
            NUTS(_eight_schools),
            num_warmup=200,
            num_samples=100,
            progress_bar=False,
            rescue=rescue,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error", ChainWarning)
            mcmc.run(jax.random.PRNGKey(3), y, sigma)
        assert mcmc.rescues == []
        out.append(mcmc.get_samples())
    for name in out[0]:
        np.testing.assert_array_equal(out[0][name], out[1][name])
    assert assess(mcmc.to_datatree()).summary is not None


# ---------------------------------------------------------------------- disagreement


def _two_modes():
    a = ppl.sample("a", dist.Normal(0.0, 1.0))
    b = ppl.sample("b", dist.Normal(0.0, 30.0))
    ppl.factor("modes", jnp.logaddexp(-0.5 * (b - 20.0) ** 2, -0.5 * (b + 20.0) ** 2))
    return a


def test_chains_in_two_modes_are_named_at_the_end_of_run():
    start = {"a": 0.0}
    mcmc = MCMC(NUTS(_two_modes), num_warmup=200, num_samples=200, progress_bar=False)
    ld = ppl.logdensity(_two_modes)
    theta = jnp.stack(
        [
            ld.unconstrain({"a": jnp.zeros(()), "b": jnp.asarray(v)})
            for v in (20.0, -20.0, 20.0, -20.0)
        ]
    )
    with pytest.warns(ChainWarning, match=r"disagree: they sit in different regions for 'b'"):
        mcmc.run(jax.random.PRNGKey(0), init_params=theta)
    assert mcmc.rescues == []  # the modes are equally good: nothing to rescue
    del start


def test_chain_disagreement_unit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 100, 3))
    lp = rng.normal(size=(4, 100))
    assert chain_disagreement(x, lp, ["a", "b", "b"]) is None
    x[1, :, 2] += 10.0
    message = chain_disagreement(x, lp, ["a", "b", "b"])
    assert message.startswith("the chains disagree") and "'b'" in message and "'a'" not in message


def test_rescues_survive_an_interrupt_and_a_resume_in_another_process(monkeypatch):
    from ppl.infer.driver import chains as chains_module
    from ppl.infer.driver import progress

    monkeypatch.setattr(chains_module, "usable_cores", lambda: 2)
    _, reference, _ = _run(True, "threaded", chunk_size=50)
    calls = {"n": 0}
    original = progress.Progress.update

    def update(self, n, phase, num_divergent):
        calls["n"] += 1
        if calls["n"] == 4:  # after the checkpoint at iteration 60
            raise KeyboardInterrupt
        return original(self, n, phase, num_divergent)

    monkeypatch.setattr(progress.Progress, "update", update)
    mcmc = MCMC(
        NUTS(logdensity_fn=_trap_logp),
        num_warmup=300,
        num_samples=200,
        num_chains=4,
        progress_bar=True,
        chunk_size=50,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc.run(jax.random.PRNGKey(1), init_params=TRAP_START)
    monkeypatch.setattr(progress.Progress, "update", original)
    assert not mcmc.complete and [r.chain for r in mcmc.rescues] == [2]
    assert any("chain 2 was restarted" in str(w.message) for w in caught)
    state = {k: np.array(v) for k, v in mcmc.sampler_state().items()}
    other = MCMC(
        NUTS(logdensity_fn=_trap_logp),
        num_warmup=300,
        num_samples=200,
        num_chains=4,
        progress_bar=False,
        chunk_size=50,
    )
    other.resume_from(state, init_params=TRAP_START)
    assert other.complete and [r.chain for r in other.rescues] == [2]
    np.testing.assert_array_equal(
        np.asarray(other.get_samples(group_by_chain=True)["theta"]), reference
    )


def test_bad_rescue_setting_is_a_clear_error():
    with pytest.raises(TypeError, match="rescue must be True, False or a RescueSettings"):
        MCMC(NUTS(logdensity_fn=_trap_logp), rescue="yes")


def test_a_chain_in_nutpies_reset_hold_is_not_restarted_for_its_tree_size():
    """On an ill-scaled Gaussian (seed 0) chain 2 has a saturated transition at warmup
    iteration ~196: nutpie resets its metric and holds it on the identity for 50 iterations
    (trees of ~77 steps against 3). That is the warmup's own recovery, not a lost chain: no
    restart, no warning, and the moments come out right."""
    scales = jnp.array([0.1, 1.0, 10.0])

    def model():
        ppl.sample("x", dist.Normal(jnp.zeros(3), scales).to_event(1))

    mcmc = MCMC(NUTS(model), num_warmup=400, num_samples=500, num_chains=4, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChainWarning)
        mcmc.run(jax.random.PRNGKey(0))
    assert mcmc.rescues == []
    resets = np.concatenate([np.asarray(s.carry.warmup.resets) for s in mcmc._run.segments])
    assert resets.sum() >= 1  # the reset this test is about did happen
    draws = np.asarray(mcmc.get_samples()["x"])
    np.testing.assert_allclose(draws.std(0), np.asarray(scales), rtol=0.15)
