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

SHARED = Path(__file__).resolve().parents[3] / "shared" / "posteriordb"


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
    scales = jnp.array([1.0, 3.0])
    runs = {}
    for method in ("vectorized", "sequential"):
        mcmc = MCMC(
            NUTS(gaussian(scales)),
            num_warmup=50,
            num_samples=20,
            num_chains=2,
            chain_method=method,
        )
        mcmc.run(jax.random.PRNGKey(4))
        runs[method] = np.asarray(mcmc.get_samples()["x"])
    np.testing.assert_allclose(runs["vectorized"], runs["sequential"], rtol=1e-4, atol=1e-5)


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
        MCMC(NUTS(model), chain_method="threads")
    with pytest.raises(TypeError, match="kernel must be"):
        MCMC(model)
    with pytest.raises(RuntimeError, match="before asking"):
        MCMC(NUTS(model)).get_samples()
    with pytest.raises(ValueError, match="exactly one of num_steps or trajectory_length"):
        HMC(model)
