"""One MCMC job over two processes (``jax.distributed`` on localhost, CPU collectives).

Each process has two CPU devices; together they form a 2 (chain) x 2 (data) mesh, so the
chains are split across the processes and each process splits its chains' data over its two
devices. The progress bar is on with its default, timing-based chunk sizes, which would
deadlock the collectives if the processes chose different chunks. Process 1 then runs the
same job on its own devices without a mesh and compares the draws, while process 0 builds
the DataTree.
"""

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# unoptimised XLA compiles the samplers several times faster; results equal up to rounding
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"

WORKER = textwrap.dedent(
    """
    import sys
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    process_id, port = int(sys.argv[1]), sys.argv[2]
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    import jax.numpy as jnp, numpy as np
    import ppl, ppl.distributions as dist
    from ppl.infer import MCMC, NUTS
    from ppl.infer import make_mesh

    def model(x, y):
        beta = ppl.sample("beta", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
        with ppl.plate("obs", x.shape[0]):
            ppl.sample("y", dist.Bernoulli(logits=x @ beta), obs=y)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3))
    y = (rng.random(64) < 0.5).astype(np.float64)
    assert len(jax.devices()) == 4 and len(jax.local_devices()) == 2, jax.devices()
    mesh = make_mesh(chains=2, data=2)
    settings = dict(num_warmup=30, num_samples=20, num_chains=4)
    mcmc = MCMC(NUTS(model), mesh=mesh, shard_data=("x", "y"), progress_bar=True, **settings)
    mcmc.run(jax.random.key(7), x, y)
    assert mcmc.complete
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["beta"])
    if process_id == 0:  # the DataTree, from the draws gathered from both processes
        tree = mcmc.to_datatree()
        assert tree.posterior["beta"].shape == (4, 20, 3), tree.posterior["beta"].shape
    else:  # meanwhile process 1 checks the draws against a one-process run
        # vectorized, as each device runs its chains (see test_sharding.py)
        alone = MCMC(NUTS(model), progress_bar=False, chain_method="vectorized", **settings)
        alone.run(jax.random.key(7), x, y)
        reference = np.asarray(alone.get_samples(group_by_chain=True)["beta"])
        # rounding differences (partial sums over the data axis) grow along the trajectories;
        # over 50 iterations they stay near 1e-11 (see test_sharding.py)
        np.testing.assert_allclose(draws, reference, rtol=0, atol=1e-10)
    print("ok", process_id, flush=True)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one():
    port = _free_port()
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2 " + FAST_XLA,
        "PYTHONPATH": str(ROOT),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(i), str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            # a deadlock (processes running different collectives) fails here instead of hanging
            outputs.append(proc.communicate(timeout=240))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for i, (proc, (out, err)) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0 and f"ok {i}" in out, f"process {i}:\n{out}\n{err[-4000:]}"
