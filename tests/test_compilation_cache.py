"""JAX's persistent compilation cache is on by default (ppl.compilation_cache): a second
process finds the compiled sampler on disk; concurrent processes and a folder that cannot be
written are safe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, warnings
    warnings.simplefilter("error")  # a cache error would be a warning: make it fail
    import jax
    events = []
    jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
    import jax.numpy as jnp
    import ppl, ppl.distributions as dist
    from ppl.infer import MCMC, NUTS

    if os.environ.get("PPL_TEST_IMPORT_ONLY"):
        folder = ppl.compilation_cache.cache_dir()
        jax.jit(lambda x: x * 2.0)(1.0)
        print(json.dumps({"folder": None if folder is None else str(folder), "hits": 0}))
        sys.exit(0)

    def model(y):
        mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
        sigma = ppl.sample("sigma", dist.HalfNormal(2.0))
        with ppl.plate("n", y.shape[0]):
            ppl.sample("y", dist.Normal(mu, sigma), obs=y)

    mcmc = MCMC(NUTS(model), num_warmup=50, num_samples=50, num_chains=2, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), jnp.linspace(-1.0, 2.0, 20))
    folder = ppl.compilation_cache.cache_dir()
    print(json.dumps({
        "folder": None if folder is None else str(folder),
        "hits": events.count("/jax/compilation_cache/cache_hits"),
        "misses": events.count("/jax/compilation_cache/cache_misses"),
        "mu": float(mcmc.get_samples()["mu"].mean()),
    }))
    """
)


def _run(env_value: str | None, extra_env: dict | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.pop("PPL_COMPILATION_CACHE", None)
    if env_value is not None:
        env["PPL_COMPILATION_CACHE"] = env_value
    env.update(extra_env or {})
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_second_process_loads_the_compiled_program(tmp_path):
    folder = tmp_path / "cache"
    # two processes at once on an empty folder: both succeed, no cache warning (errors)
    first = [_run(str(folder)), _run(str(folder))]
    results = [_result(p) for p in first]
    assert all(r["folder"] == str(folder) for r in results)
    assert results[0]["mu"] == results[1]["mu"]
    assert any(folder.glob("*-cache"))
    second = _result(_run(str(folder)))
    assert second["hits"] >= 1, second
    assert second["mu"] == results[0]["mu"]  # the cached program gives the same draws


QUICK = {"PPL_TEST_IMPORT_ONLY": "1"}


def test_off_and_unwritable_folders_leave_the_cache_off(tmp_path):
    off = _result(_run("off", QUICK))
    assert off["folder"] is None and off["hits"] == 0
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    unwritable = _result(_run(str(blocker / "cache"), QUICK))  # cannot be created: no warnings
    assert unwritable["folder"] is None
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "read-only"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            assert _result(_run(str(locked), QUICK))["folder"] is None
        finally:
            locked.chmod(0o700)


def test_default_folder_and_users_own_setting(tmp_path):
    default = _result(_run(None, {"XDG_CACHE_HOME": str(tmp_path), **QUICK}))
    assert default["folder"] == str(tmp_path / "ppl" / "jax")
    mine = tmp_path / "mine"
    own = _result(_run(None, {"JAX_COMPILATION_CACHE_DIR": str(mine), **QUICK}))
    assert own["folder"] == str(mine)  # JAX's own setting stands


def test_bad_size_limit_is_a_clear_error(monkeypatch):
    from ppl import compilation_cache

    monkeypatch.setenv(compilation_cache.MAX_BYTES_ENV, "lots")
    with pytest.raises(ValueError, match="PPL_COMPILATION_CACHE_MAX_BYTES"):
        compilation_cache._max_bytes()
