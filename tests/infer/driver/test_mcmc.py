"""The MCMC driver: draws, statistics, DataTree output, chain methods, errors."""

import json
from pathlib import Path

import arviz_stats
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
import ppl.distributions as dist
from ppl.infer import HMC, MCMC, NUTS
from ppl.infer.driver import chains as mcmc_module

SHARED = Path(__file__).resolve().parents[4] / "shared" / "posteriordb"


def gaussian(scales):
    def model():
        ppl.sample("x", dist.Normal(jnp.zeros(scales.shape[0]), scales).to_event(1))

    return model


def _check_moments(draws, mean, sd, num_chains):
    """|mean - truth| < 5 MCSE and |sd - truth| < 5 MCSE(sd), MCSE from arviz-stats ESS."""
    ess = np.asarray(arviz_stats.ess(draws.reshape(num_chains, -1, draws.shape[-1])))
    ess = np.asarray(ess).reshape(-1)
    est_mean = draws.mean(0)
    est_sd = draws.std(0)
    mcse_mean = sd / np.sqrt(ess)
    # for a normal variable Var(sd estimate) ~ sd^2 / (2 ESS)
    mcse_sd = sd / np.sqrt(2 * ess)
    assert np.all(np.abs(est_mean - mean) < 5 * mcse_mean), (est_mean, mean, mcse_mean)
    assert np.all(np.abs(est_sd - sd) < 5 * mcse_sd), (est_sd, sd, mcse_sd)


def test_nuts_recovers_ill_scaled_gaussian():
    scales = jnp.array([0.1, 1.0, 10.0])
    mcmc = MCMC(NUTS(gaussian(scales)), num_warmup=400, num_samples=500, num_chains=4)
    mcmc.run(jax.random.PRNGKey(0))
    draws = np.asarray(mcmc.get_samples()["x"])
    assert draws.shape == (2000, 3)
    _check_moments(draws, np.zeros(3), np.asarray(scales), 4)
    # the adapted diagonal inverse mass matrix tracks the variances
    imm = np.asarray(mcmc.inverse_mass_matrix).mean(0)
    np.testing.assert_allclose(imm, np.asarray(scales) ** 2, rtol=0.5)


def test_step_size_jitter_keeps_the_posterior():
    """Each iteration's step size drawn uniformly within +-30% of the adapted one: other
    draws, the same posterior (moments within 5 MCSE)."""
    scales = jnp.array([0.1, 1.0, 10.0])
    runs = {}
    for jitter in (0.0, 0.3):
        mcmc = MCMC(NUTS(gaussian(scales), step_size_jitter=jitter), num_warmup=400,
                    num_samples=500, num_chains=4, progress_bar=False)  # fmt: skip
        mcmc.run(jax.random.PRNGKey(0))
        runs[jitter] = np.asarray(mcmc.get_samples()["x"])
    assert not np.array_equal(runs[0.0], runs[0.3])
    _check_moments(runs[0.3], np.zeros(3), np.asarray(scales), 4)
    with pytest.raises(ValueError, match="step_size_jitter"):
        NUTS(gaussian(scales), step_size_jitter=1.0)


def test_hmc_kernel_runs_and_is_correct():
    scales = jnp.array([0.5, 2.0])
    mcmc = MCMC(
        HMC(gaussian(scales), trajectory_length=2.0, jitter=True),
        num_warmup=300,
        num_samples=600,
        num_chains=4,
    )
    mcmc.run(jax.random.PRNGKey(1))
    _check_moments(np.asarray(mcmc.get_samples()["x"]), np.zeros(2), np.asarray(scales), 4)
    assert "tree_depth" not in mcmc.get_sample_stats()


def test_eight_schools_matches_posteriordb_reference():
    from models import eight_schools

    ref_path = SHARED / "eight_schools-eight_schools_noncentered" / "reference.json"
    if not ref_path.exists():
        pytest.skip(f"posteriordb reference not found at {ref_path}")
    ref = json.loads(ref_path.read_text())["params"]
    mcmc = MCMC(NUTS(eight_schools.model), num_warmup=500, num_samples=1000, num_chains=4)
    mcmc.run(jax.random.PRNGKey(2), **eight_schools.load_data())
    tree = mcmc.to_datatree(dims=eight_schools.dims, coords=eight_schools.coords)
    summary = arviz_stats.summary(tree, var_names=["mu", "tau", "theta"], round_to="none")
    for name, row in summary.iterrows():
        if name in ("mu", "tau"):
            key = name
        else:
            school = eight_schools.SCHOOLS.index(name.split("[")[1].rstrip("]"))
            key = f"theta[{school + 1}]"
        r = ref[key]
        # mean within 4 MCSE + 2% of the reference sd; sd within 10% (posteriordb README)
        assert abs(row["mean"] - r["mean"]) < 4 * row["mcse_mean"] + 0.02 * r["sd"], (name, row)
        assert abs(row["sd"] - r["sd"]) < 0.1 * r["sd"], (name, row)
    assert int(mcmc.get_sample_stats()["diverging"].sum()) < 20


def test_datatree_groups_dims_and_stats():
    from models import eight_schools

    mcmc = MCMC(NUTS(eight_schools.model), num_warmup=100, num_samples=50, num_chains=2)
    mcmc.run(jax.random.PRNGKey(3), **eight_schools.load_data())
    tree = mcmc.to_datatree(coords=eight_schools.coords)
    for group in ("posterior", "sample_stats", "log_likelihood", "observed_data"):
        assert group in tree.children, group
    post = tree["posterior"]
    assert post["theta"].dims == ("chain", "draw", "school")
    assert list(post["theta"].coords["school"].values) == eight_schools.SCHOOLS
    stats = tree["sample_stats"]
    for name in ("lp", "acceptance_rate", "step_size", "tree_depth", "n_steps", "diverging"):
        assert stats[name].shape == (2, 50), name
    assert tree["log_likelihood"]["y"].dims == ("chain", "draw", "school")
    samples = mcmc.get_samples(group_by_chain=True)
    assert samples["theta"].shape == (2, 50, 8)
    # deterministic sites agree with their definition draw by draw
    np.testing.assert_allclose(
        samples["theta"],
        samples["mu"][..., None] + samples["tau"][..., None] * samples["theta_tilde"],
        rtol=1e-5,
        atol=1e-5,
    )


def test_sequential_equals_vectorized():
    # float64: in float32 the last-bit differences between batched and unbatched arithmetic
    # can flip a discrete choice of the step-size heuristic and the chains drift apart
    scales = jnp.array([1.0, 3.0])
    runs = {}
    with jax.enable_x64(True):
        for method in ("vectorized", "looped", "sequential"):
            mcmc = MCMC(
                NUTS(gaussian(scales)),
                num_warmup=50,
                num_samples=20,
                num_chains=2,
                chain_method=method,
                progress_bar=False,
            )
            mcmc.run(jax.random.PRNGKey(4))
            runs[method] = np.asarray(mcmc.get_samples()["x"])
    np.testing.assert_allclose(runs["vectorized"], runs["sequential"], rtol=1e-6, atol=1e-8)
    # looped and sequential run the same per-chain program: identical draws
    np.testing.assert_array_equal(runs["looped"], runs["sequential"])


def test_auto_chain_method_on_cpu_uses_the_cores(monkeypatch):
    assert jax.default_backend() == "cpu"
    model = gaussian(jnp.ones(2))
    for cores, chains, method, groups in (
        (1, 4, "looped", 1),
        (2, 4, "threaded", 2),
        (3, 4, "threaded", 2),  # equal groups: the largest divisor of 4 up to 3
        (16, 4, "threaded", 4),
        (2, 3, "looped", 1),  # 3 chains do not split into 2 equal groups
    ):
        monkeypatch.setattr(mcmc_module, "usable_cores", lambda cores=cores: cores)
        mcmc = MCMC(NUTS(model), num_chains=chains)
        assert (mcmc.chain_method, mcmc.num_groups) == (method, groups), (cores, chains)
    assert MCMC(NUTS(model), chain_method="vectorized").chain_method == "vectorized"


@pytest.mark.parametrize("progress_bar", [False, True])
def test_threaded_chain_groups_give_the_looped_draws(monkeypatch, progress_bar):
    """Groups of chains in threads run the looped program on their chains: the same draws,
    statistics and adapted metric, whatever the grouping (and with one progress bar)."""
    scales = jnp.array([1.0, 3.0])

    def run(method, cores):
        monkeypatch.setattr(mcmc_module, "usable_cores", lambda: cores)
        mcmc = MCMC(
            NUTS(gaussian(scales)),
            num_warmup=50,
            num_samples=20,
            num_chains=4,
            chain_method=method,
            progress_bar=progress_bar,
            chunk_size=7 if progress_bar else None,
        )
        mcmc.run(jax.random.PRNGKey(4))
        return mcmc

    looped = run("looped", 1)
    for cores, groups in ((2, 2), (8, 4)):
        threaded = run("threaded", cores)
        assert threaded.num_groups == groups
        np.testing.assert_array_equal(
            threaded.get_samples(group_by_chain=True)["x"],
            looped.get_samples(group_by_chain=True)["x"],
        )
        for name, value in looped.get_sample_stats().items():
            np.testing.assert_array_equal(threaded.get_sample_stats()[name], value, err_msg=name)
        np.testing.assert_array_equal(threaded.inverse_mass_matrix, looped.inverse_mass_matrix)


def test_threaded_chains_keep_the_callers_jax_settings(monkeypatch):
    """JAX's configuration is thread-local: the threads run the program compiled with the
    caller's (here float64), not their own defaults."""
    monkeypatch.setattr(mcmc_module, "usable_cores", lambda: 2)
    runs = {}
    with jax.enable_x64(True):
        for method in ("looped", "threaded"):
            mcmc = MCMC(
                NUTS(gaussian(jnp.array([1.0, 3.0]))),
                num_warmup=30,
                num_samples=10,
                num_chains=2,
                chain_method=method,
                progress_bar=False,
            )
            mcmc.run(jax.random.PRNGKey(2))
            runs[method] = mcmc.get_samples()["x"]
    assert runs["threaded"].dtype == jnp.float64
    np.testing.assert_array_equal(runs["threaded"], runs["looped"])


def test_an_error_in_one_chain_group_stops_the_run(monkeypatch):
    """An exception in one group's thread reaches the caller, and the other groups stop."""
    monkeypatch.setattr(mcmc_module, "usable_cores", lambda: 2)
    original = mcmc_module.ChainRun.run_segment
    calls = []

    def failing(self, segment, report, stop=None, advance=None, until=None):
        calls.append(segment)
        if len(calls) == 1:
            raise FloatingPointError("boom in group 1")
        return original(self, segment, report, stop, advance, until)

    monkeypatch.setattr(mcmc_module.ChainRun, "run_segment", failing)
    mcmc = MCMC(
        NUTS(gaussian(jnp.ones(2))),
        num_warmup=20,
        num_samples=10,
        num_chains=2,
        chain_method="threaded",
        progress_bar=False,
    )
    with pytest.raises(FloatingPointError, match="boom in group 1"):
        mcmc.run(jax.random.PRNGKey(0))
    assert not mcmc.complete


def test_chunking_does_not_change_draws():
    scales = jnp.array([1.0, 3.0])
    runs = []
    for progress_bar, chunk_size in ((False, None), (True, 7)):
        mcmc = MCMC(
            NUTS(gaussian(scales)),
            num_warmup=30,
            num_samples=20,
            num_chains=2,
            progress_bar=progress_bar,
            chunk_size=chunk_size,
        )
        mcmc.run(jax.random.PRNGKey(6))
        runs.append(np.asarray(mcmc.get_samples()["x"]))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_thinning_and_logdensity_input():
    ld = ppl.logdensity(gaussian(jnp.ones(2)))
    mcmc = MCMC(NUTS(ld), num_warmup=50, num_samples=30, num_chains=1, thinning=3)
    mcmc.run(jax.random.PRNGKey(5))
    assert mcmc.get_samples()["x"].shape == (30, 2)
    with pytest.raises(ValueError, match="already holds its data"):
        mcmc.run(jax.random.PRNGKey(5), 1.0)


def test_driver_errors():
    model = gaussian(jnp.ones(2))
    with pytest.raises(ValueError, match="num_samples must be an int >= 1"):
        MCMC(NUTS(model), num_samples=0)
    with pytest.raises(ValueError, match="chain_method"):
        MCMC(NUTS(model), chain_method="multithreaded")
    with pytest.raises(TypeError, match="kernel must be"):
        MCMC(model)
    with pytest.raises(RuntimeError, match="before asking"):
        MCMC(NUTS(model)).get_samples()
    with pytest.raises(ValueError, match="exactly one of num_steps or trajectory_length"):
        HMC(model)


def normal_mean(y):
    mu = ppl.sample("mu", dist.Normal(0.0, 10.0))
    with ppl.plate("obs", y.shape[0]):
        ppl.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_second_run_with_new_data_reuses_the_compiled_program():
    from ppl.infer.driver import chains as mcmc_module

    cache = mcmc_module.PROGRAM_CACHE
    cache.clear()
    mcmc = MCMC(NUTS(normal_mean), num_warmup=50, num_samples=50, num_chains=2, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), jnp.zeros(5))
    first = float(mcmc.get_samples()["mu"].mean())
    mcmc.run(jax.random.PRNGKey(0), jnp.full(5, 10.0))
    second = float(mcmc.get_samples()["mu"].mean())
    assert len(cache) == 1
    _, fns = next(iter(cache.values()))

    def compiled_advance():  # chain groups in threads share an ahead-of-time compiled one
        if mcmc.chain_method == "threaded":
            return len(fns["compiled_advance"])
        return fns["advance"]._cache_size()

    for name in ("init", "empty_draws", "finish"):
        assert fns[name]._cache_size() == 1, name
    assert compiled_advance() == 1
    # the new data were used: the posterior mean moved from ~0 to ~10 (sd 1/sqrt(5))
    assert abs(first) < 2.0 and abs(second - 10.0) < 2.0
    # a fresh MCMC with the same settings shares the program; another setting does not
    again = MCMC(NUTS(normal_mean), num_warmup=50, num_samples=50, num_chains=2, progress_bar=False)
    again.run(jax.random.PRNGKey(1), jnp.zeros(5))
    assert len(cache) == 1 and compiled_advance() == 1
    other = MCMC(NUTS(normal_mean), num_warmup=60, num_samples=50, num_chains=2, progress_bar=False)
    other.run(jax.random.PRNGKey(1), jnp.zeros(5))
    assert len(cache) == 2
    # other shapes compile a new program
    mcmc.run(jax.random.PRNGKey(0), jnp.zeros(7))
    assert len(cache) == 3


def test_plain_logdensity_function_with_init_params():
    def logdensity_fn(theta):
        return -0.5 * jnp.sum((theta - jnp.array([1.0, -1.0])) ** 2)

    mcmc = MCMC(
        NUTS(logdensity_fn=logdensity_fn),
        num_warmup=200,
        num_samples=400,
        num_chains=2,
        progress_bar=False,
    )
    with pytest.raises(ValueError, match="init_params"):
        mcmc.run(jax.random.PRNGKey(0))
    mcmc.run(jax.random.PRNGKey(0), init_params=jnp.zeros(2))
    draws = np.asarray(mcmc.get_samples()["theta"])
    assert draws.shape == (800, 2)
    _check_moments(draws, np.array([1.0, -1.0]), np.ones(2), 2)
    tree = mcmc.to_datatree()
    assert "posterior" in tree.children and "log_likelihood" not in tree.children


def test_progress_bar_shows_phases_and_divergences(capsys):
    mcmc = MCMC(NUTS(normal_mean), num_warmup=100, num_samples=100, num_chains=2, chunk_size=50)
    mcmc.run(jax.random.PRNGKey(0), jnp.zeros(3))
    err = capsys.readouterr().err
    assert "warmup" in err and "sampling" in err and "divergences=" in err and "draws/s=" in err


def test_arviz_functions_work_on_the_datatree():
    import arviz
    import matplotlib

    matplotlib.use("Agg")
    from models import eight_schools

    mcmc = MCMC(
        NUTS(eight_schools.model), num_warmup=200, num_samples=200, num_chains=2, progress_bar=False
    )
    mcmc.run(jax.random.PRNGKey(1), **eight_schools.load_data())
    tree = mcmc.to_datatree(dims=eight_schools.dims, coords=eight_schools.coords)
    summary = arviz.summary(tree)
    assert "theta[A]" in summary.index
    loo = arviz.loo(tree)
    assert np.isfinite(float(loo.elpd))
    arviz.plot_trace(tree, var_names=["mu", "tau"])
    matplotlib.pyplot.close("all")


def test_parallel_chains_on_two_devices_match_vectorized():
    import subprocess
    import sys

    code = """
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import ppl, ppl.distributions as dist
from ppl.infer import MCMC, NUTS
assert len(jax.devices()) == 2, jax.devices()
def model(y):
    mu = ppl.sample("mu", dist.Normal(0.0, 10.0))
    with ppl.plate("obs", y.shape[0]):
        ppl.sample("y", dist.Normal(mu, 1.0), obs=y)
out = {}
for method in ("vectorized", "parallel"):
    m = MCMC(NUTS(model), num_warmup=50, num_samples=30, num_chains=4, chain_method=method,
             progress_bar=False)
    m.run(jax.random.PRNGKey(0), jnp.arange(4.0))
    out[method] = np.asarray(m.get_samples()["mu"])
    if method == "parallel":
        shards = m.last_state.state.position.sharding.device_set
        assert len(shards) == 2, shards
np.testing.assert_allclose(out["vectorized"], out["parallel"], rtol=1e-10)
print("ok")
"""
    env = {**__import__("os").environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


def test_dense_mass_recovers_correlated_gaussian():
    cov = jnp.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.5], [0.0, 0.5, 2.0]])

    def model():
        ppl.sample("x", dist.MultivariateNormal(jnp.zeros(3), cov))

    mcmc = MCMC(
        NUTS(model, dense_mass=True),
        num_warmup=500,
        num_samples=500,
        num_chains=4,
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(7))
    draws = np.asarray(mcmc.get_samples()["x"])
    _check_moments(draws, np.zeros(3), np.sqrt(np.diag(np.asarray(cov))), 4)
    # the adapted dense metric approximates the covariance (Stan's shrinkage included)
    imm = np.asarray(mcmc.inverse_mass_matrix)
    assert imm.shape == (4, 3, 3)
    np.testing.assert_allclose(imm.mean(0), np.asarray(cov), atol=0.35)
