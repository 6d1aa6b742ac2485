"""Every model of the zoo builds, has a finite log density and gradient, is labelled
consistently for ArviZ, and samples with a short NUTS run.

The short NUTS run (1 chain, 20 draws without warmup: a smoke test, not a check of
the posterior) is skipped for the models that are sampled in the default run anyway (the
default subset of ``tests/test_posteriordb.py``, ``eight_schools``, checked against
posteriordb in ``tests/infer/driver/test_mcmc.py``, and the models with enumerated discrete
sites or ``ppl.scan``, short-run in ``tests/test_zoo_structured.py``) and marked slow for the
other posteriordb
models, which ``pytest -m slow`` samples in full against their references. Compilation
dominates the cost, so each model's LogDensity and initial point are built once and the
compiled initialisation is shared with the NUTS run.
"""

import functools
import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
from models import _posteriordb
from ppl import zoo
from ppl.infer import MCMC, NUTS

NAMES = zoo.names()
# test_posteriordb.DEFAULT plus eight_schools (tests/infer/driver/test_mcmc.py), and the
# models with enumerated discrete sites or ppl.scan, short-run in tests/test_zoo_structured.py
SAMPLED_ELSEWHERE = {
    "eight_schools",
    "gp_regr",
    "kidscore_momhsiq",
    "ar_state_space",
    "cjs",
    "coal_mining",
    "dawid_skene",
    "gaussian_mixture",
}
SIMULATED = (
    "ar_state_space",
    "cjs",
    "dawid_skene",
    "gaussian_mixture",
    "gp_regression",
    "irt_2pl",
    "logistic_horseshoe",
    "negbin_glm",
    "stochastic_volatility",
)


@functools.cache
def _built(name):
    """(module, data, LogDensity, initial theta) of a zoo model, built once per session."""
    module = zoo.load(name)
    data = module.load_data()
    ld = ppl.logdensity(module.model, **data)
    theta = ld.init(jax.random.PRNGKey(0))
    return module, data, ld, theta


def test_zoo_has_at_least_twenty_models_with_twelve_from_posteriordb():
    assert len(NAMES) >= 20, NAMES
    assert set(_posteriordb.POSTERIORS) <= set(NAMES)
    assert not any(n.startswith("_") for n in NAMES)


def test_zoo_listing_prints_one_line_per_model(capsys):
    assert zoo.main([]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == NAMES


def test_zoo_load_unknown_model_names_the_available_ones():
    with pytest.raises(KeyError, match="eight_schools"):
        zoo.load("no_such_model")


def test_zoo_info():
    meta = zoo.info("garch11")
    assert meta.num_latent == 4
    assert meta.latent_sites == ("mu", "alpha0", "alpha1", "beta1")
    assert meta.posteriordb == "garch-garch11" and meta.has_reference
    assert meta.stan_file.endswith("garch11.stan")
    other = zoo.info("coal_mining")
    assert other.posteriordb is None and not other.has_reference and other.stan_file is None
    assert other.num_latent == 2


@pytest.mark.parametrize("name", NAMES)
def test_module_interface(name):
    module = zoo.load(name)
    assert callable(module.model)
    assert isinstance(module.description, str) and len(module.description) > 80
    assert "\n" not in module.description
    assert isinstance(module.dims, dict) and isinstance(module.coords, dict)
    data = module.load_data()
    assert isinstance(data, dict) and data
    for key, value in data.items():
        if isinstance(value, jax.Array):
            assert bool(jnp.all(jnp.isfinite(value))), f"{name}: data {key} is not finite"


@pytest.mark.parametrize("name", NAMES)
def test_log_density_and_gradient_finite_at_initial_point(name):
    _, _, ld, theta = _built(name)  # ld.init raises if no finite point is found
    assert ld.dim > 0 and theta.shape == (ld.dim,)
    # the batched value-and-gradient that ld.init compiled (shared, so no new compile)
    batch = ld.shared_jit(
        "value_and_grad", lambda ld, thetas: jax.vmap(jax.value_and_grad(ld))(thetas)
    )
    value, grad = batch(theta[None])
    assert np.isfinite(float(value[0])), f"{name}: log density {value} at the initial point"
    assert np.all(np.isfinite(np.asarray(grad))), f"{name}: gradient {grad}"
    # the flat vector round-trips through constrained values
    values = ld.constrain(theta)
    np.testing.assert_allclose(
        ld.unconstrain({k: values[k] for k in ld.latent_names}), theta, rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("name", NAMES)
def test_dims_and_coords_match_the_sites(name):
    module, _, ld, _ = _built(name)
    for site, site_dims in module.dims.items():
        assert site in ld.sites, f"{name}: dims name site {site!r}, not in {list(ld.sites)}"
        shape = ld.sites[site].shape
        assert len(site_dims) == len(shape), f"{name}: dims {site_dims} for {site} {shape}"
        for dim, size in zip(site_dims, shape, strict=True):
            if dim in module.coords:
                assert len(module.coords[dim]) == size, f"{name}: coords {dim} vs {site}"
    used = {d for site_dims in module.dims.values() for d in site_dims}
    plates = {d for info in ld.sites.values() for d in info.dims if d is not None}
    assert set(module.coords) <= used | plates, f"{name}: unused coords"


def _short_run_cases():
    # posteriordb models outside the default subset get full NUTS runs in the slow
    # validation; their short runs are slow-marked too, to keep the default run short
    for name in NAMES:
        if name in SAMPLED_ELSEWHERE:
            continue
        slow = name in _posteriordb.POSTERIORS
        yield pytest.param(name, marks=(pytest.mark.slow,) if slow else (), id=name)


@pytest.mark.parametrize("name", list(_short_run_cases()))
def test_short_nuts_run(name):
    module, data, ld, _ = _built(name)
    # no warmup: compiling the adaptation would double the cost, and it is model-independent
    # (tests/infer); a small fixed step size and a depth cap keep the 20 transitions cheap
    kernel = NUTS(module.model, step_size=0.02, max_tree_depth=6)
    mcmc = MCMC(kernel, num_warmup=0, num_samples=20, num_chains=1, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), **data)
    stats = mcmc.get_sample_stats()
    assert stats["acceptance_rate"].mean() > 0.1, f"{name}: the chain hardly moved"
    samples = mcmc.get_samples()
    for site in ld.latent_names:
        value = np.asarray(samples[site])
        assert value.shape == (20, *ld.sites[site].shape), (site, value.shape)
        assert np.all(np.isfinite(value)), f"{name}: non-finite draws of {site}"
    # a finite log density at every draw: each draw lies in its (possibly dependent) support
    assert np.all(np.isfinite(stats["lp"])), f"{name}: non-finite lp"


@pytest.mark.parametrize("name", SIMULATED)
def test_simulated_data_file_is_reproducible(name):
    module = importlib.import_module(f"models.{name}")
    shipped = json.loads(module.DATA_FILE.read_text())
    fresh = module.simulate()
    assert shipped.keys() == fresh.keys()
    for key in shipped:
        np.testing.assert_allclose(np.asarray(shipped[key]), np.asarray(fresh[key]), rtol=1e-12)


def test_stan_columns_renames_and_uses_one_based_names():
    samples = {"theta_tilde": np.zeros((2, 3, 8)), "mu": np.ones((2, 3))}
    cols = _posteriordb.stan_columns(samples, "eight_schools", sample_ndim=2)
    assert "theta_trans[1]" in cols and "theta_trans[8]" in cols and "mu" in cols
    assert cols["theta_trans[8]"].shape == (2, 3)
    assert _posteriordb.stan_names("b", (2, 3))[3] == "b[2,1]"
