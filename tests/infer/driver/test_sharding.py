"""Chains and data sharded over a device mesh give the single-device draws.

The multi-device checks run in one subprocess with four CPU devices
(``--xla_force_host_platform_device_count=4``), since this process already started JAX
with one; the argument checks that need no devices run here.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

import ppl
import ppl.distributions as dist
from ppl.infer import MCMC, NUTS, make_mesh

ROOT = Path(__file__).resolve().parents[3]
# unoptimised XLA compiles the samplers several times faster; results equal up to rounding
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def model(x, y):
    beta = ppl.sample("beta", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    with ppl.plate("obs", x.shape[0]):
        ppl.sample("y", dist.Bernoulli(logits=x @ beta), obs=y)


def test_make_mesh_shapes_and_errors():
    mesh = make_mesh()
    assert mesh.axis_names == ("chain",) and mesh.shape["chain"] == len(jax.devices())
    with pytest.raises(ValueError, match=r"needs 8 devices.*device_count=8"):
        make_mesh(chains=4, data=2)
    with pytest.raises(ValueError, match="data must be a positive int"):
        make_mesh(data=0)


def test_mesh_arguments_are_checked():
    kernel = NUTS(model)
    with pytest.raises(TypeError, match=r"jax\.sharding\.Mesh"):
        MCMC(kernel, mesh="chain")
    with pytest.raises(ValueError, match=r"axis names \('rows',\)"):
        MCMC(kernel, mesh=Mesh(np.array(jax.devices()[:1]), ("rows",)))
    with pytest.raises(ValueError, match="not 'sequential'"):
        MCMC(kernel, mesh=make_mesh(chains=1), chain_method="sequential")
    with pytest.raises(ValueError, match="needs a mesh with a 'data' axis"):
        MCMC(kernel, shard_data=("x",))
    with pytest.raises(ValueError, match="needs a mesh with a 'data' axis"):
        MCMC(kernel, mesh=make_mesh(chains=1), shard_data="x")


def test_shard_data_names_must_be_model_arguments(x64):
    mcmc = MCMC(
        NUTS(model), mesh=make_mesh(chains=1, data=1), shard_data=("x", "rows"), progress_bar=False
    )
    with pytest.raises(ValueError, match=r"'rows', which is not an argument.*\['x', 'y'\]"):
        mcmc.run(jax.random.key(0), jnp.zeros((4, 2)), y=jnp.zeros(4))


SCRIPT = textwrap.dedent(
    """
    import warnings
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import ppl, ppl.distributions as dist
    from ppl.infer import MCMC, NUTS, make_mesh
    from ppl.infer.base import Kernel, Warmup
    from ppl.infer.driver import progress, sharding
    assert len(jax.devices()) == 4, jax.devices()

    def model(x, y):
        beta = ppl.sample("beta", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
        with ppl.plate("obs", x.shape[0]):
            ppl.sample("y", dist.Bernoulli(logits=x @ beta), obs=y)

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 3)))
    y = jnp.asarray((rng.random(64) < 0.5).astype(np.float64))
    SETTINGS = dict(num_warmup=30, num_samples=20, num_chains=4, progress_bar=False)
    # Sharding changes only the order of floating-point sums (partial sums per device, and
    # XLA's blocking of the per-device batch): the log density differs by ~1e-13 (checked
    # below), and the chaotic leapfrog dynamics amplify that to ~1e-11 over 50 iterations.
    ATOL = 1e-10

    def draws(kernel, **kwargs):
        mcmc = MCMC(kernel, **SETTINGS, **kwargs)
        mcmc.run(jax.random.key(5), x, y)
        return mcmc, np.asarray(mcmc.get_samples(group_by_chain=True)["beta"])

    # 1. the log density and gradient of sharded data equal the unsharded ones
    ld = ppl.logdensity(model, x, y)
    theta = jax.random.normal(jax.random.key(1), (4, 3))
    value, grad = jax.jit(jax.vmap(jax.value_and_grad(ld)))(theta)
    mesh = make_mesh(chains=2, data=2)
    data = sharding.place(
        ld.data_tree(), sharding.data_shardings(ld, ld.data_tree(), ("x", "y"), mesh)
    )
    assert data["args"][0].sharding.spec == jax.sharding.PartitionSpec("data")
    fn = jax.jit(lambda d, t: jax.vmap(jax.value_and_grad(ld.with_data_tree(d)))(t))
    value2, grad2 = fn(data, sharding.place(theta, sharding.chain_sharding(mesh)))
    np.testing.assert_allclose(value2, value, rtol=1e-13)
    np.testing.assert_allclose(grad2, grad, rtol=1e-12, atol=1e-12)

    # 2. chains alone, data alone: the draws of the single-device run. The reference runs
    # the chains vectorized, as each device of a mesh runs its own: a looped or threaded
    # run fuses the same arithmetic differently, and 50 iterations of chaotic dynamics
    # amplify those roundings to ~2e-10 (measured), above ATOL.
    _, reference = draws(NUTS(model), chain_method="vectorized")
    for name, kwargs in {
        "chains": dict(mesh=make_mesh(chains=4)),
        "data": dict(mesh=make_mesh(chains=1, data=4), shard_data=("x", "y")),
    }.items():
        mcmc, out = draws(NUTS(model), **kwargs)
        np.testing.assert_allclose(out, reference, rtol=0, atol=ATOL, err_msg=name)
        position = mcmc.last_state.state.position
        assert len(position.sharding.device_set) == 4, (name, position.sharding)
        if name == "chains":
            # each device runs its own chains: no collective at all (a vmapped while loop
            # left to XLA's partitioner would all-reduce its predicate every iteration)
            assert "all-reduce" not in mcmc.compiled_hlo(), "chains run in lockstep"
        if name == "data":
            # the likelihood is partitioned: each device holds 16 of the 64 rows, the
            # partial sums are all-reduced, and no device holds all rows
            hlo = mcmc.compiled_hlo()
            assert "f64[16,3]" in hlo and "f64[64,3]" not in hlo, "x not split over 'data'"
            assert "all-reduce" in hlo, "no cross-device reduction"

    # 3. an ensemble kernel (one program over all chains, with a cross-chain reduction)
    class Ensemble(ppl.infer.HMC):
        chains_batched = True

        def build(self, dim, num_warmup, num_iterations, num_chains):
            kernel, warmup = super().build(dim, num_warmup, num_iterations, num_chains)

            def init(positions, ld):
                return jax.vmap(lambda p: kernel.init(p, ld))(positions)

            def step(keys, state, ld, parameters):
                one = jax.vmap(lambda k, s, p: kernel.step(k, s, ld, p))
                state, info = one(keys, state, parameters)
                # a cross-chain mean, written back into every chain's statistics
                shared = jnp.mean(state.log_density, axis=0)
                return state, info._replace(energy=info.energy - shared)

            batched = Warmup(
                warmup.schedule,
                lambda st, ld, imm: jax.vmap(lambda s: warmup.init(s, ld, imm))(st),
                lambda k, w, st, i, f, ld: jax.vmap(
                    lambda k, w, s: warmup.before(k, w, s, i, f, ld)
                )(k, w, st),
                lambda w, i, in_warmup: jax.vmap(lambda w: warmup.parameters(w, i, in_warmup))(w),
                lambda w, prev, st, info, i, f: jax.vmap(
                    lambda w, p, s, inf: warmup.after(w, p, s, inf, i, f)
                )(w, prev, st, info),
                jax.vmap(warmup.final),
            )
            return Kernel(init, step), batched

    def energies(**kwargs):
        mcmc = MCMC(Ensemble(model, num_steps=3, adaptation="stan"), **SETTINGS, **kwargs)
        mcmc.run(jax.random.key(5), x, y)
        return mcmc.get_sample_stats()["energy"]

    np.testing.assert_allclose(
        energies(mesh=make_mesh(chains=2, data=2), shard_data=("x", "y")),
        energies(),
        rtol=ATOL,  # energies are sums of ~100: their rounding is relative
    )

    # 4. chains and data both sharded, interrupted; the state saved (gathered to host) and
    # resumed from (as another process would) gives the draws of the single-device run
    calls = {"n": 0}
    original = progress.Progress.update

    def update(self, n, phase, num_divergent):
        calls["n"] += 1
        if calls["n"] == 4:  # in the sampling phase
            raise KeyboardInterrupt
        return original(self, n, phase, num_divergent)

    progress.Progress.update = update
    mesh = make_mesh(chains=2, data=2)
    settings = {**SETTINGS, "progress_bar": True, "chunk_size": 10}
    both = MCMC(NUTS(model), mesh=mesh, shard_data=("x", "y"), **settings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        both.run(jax.random.key(5), x, y)
    progress.Progress.update = original
    assert not both.complete and any("interrupted" in str(w.message) for w in caught)
    state = both.sampler_state()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    both.resume_from(state, x, y)  # (the same program: no second compilation)
    assert both.complete
    out = np.asarray(both.get_samples(group_by_chain=True)["beta"])
    np.testing.assert_allclose(out, reference, rtol=0, atol=ATOL)
    position = both.last_state.state.position
    assert position.sharding.spec == jax.sharding.PartitionSpec("chain"), position.sharding
    assert len(position.sharding.device_set) == 4
    hlo = both.compiled_hlo()
    assert "f64[32,3]" in hlo and "f64[64,3]" not in hlo, "x not split over 'data'"
    assert "all-reduce" in hlo, "no cross-device reduction"

    # 5. arguments that do not fit the mesh are refused with the reason
    def refused(match, **kwargs):
        try:
            MCMC(NUTS(model), **SETTINGS, **kwargs).run(jax.random.key(0), x[:63], y[:63])
        except ValueError as err:
            assert all(m in str(err) for m in match), str(err)
        else:
            raise AssertionError(f"no error for {kwargs}")

    refused(["'x' has 63 rows", "'data' axis of size 2"],
            mesh=make_mesh(chains=2, data=2), shard_data=("x", "y"))
    try:
        MCMC(NUTS(model), mesh=make_mesh(chains=4), num_chains=6)
    except ValueError as err:
        assert "num_chains=6" in str(err) and "size 4" in str(err), str(err)
    else:
        raise AssertionError("num_chains=6 on a chain axis of 4 was accepted")
    print("ok")
    """
)


def test_sharded_runs_match_single_device():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4 " + FAST_XLA,
        "PYTHONPATH": str(ROOT),
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-5000:]
