"""`ppl sample` interrupted by a signal saves its draws, and `--resume` finishes the run so that it
equals, draw for draw, the uninterrupted run with the same seed."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ppl.runs import load_run, state_path

REPO = Path(__file__).resolve().parents[1]
# radon (varying intercepts and slopes, 919 rows): sampling lasts several progress chunks
# (about 0.5 s each) even on a fast machine, so the signal lands mid-sampling
MODEL = "radon"
DRAWS = 4000
SETTINGS = ["--chains", "2", "--warmup", "100", "--draws", str(DRAWS), "--seed", "3"]


def _ppl(*args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "ppl", *args], cwd=REPO, env=env, text=True, **kwargs
    )


def _interrupt_once_sampling(proc, sig, timeout=300.0):
    """Send ``sig`` once the progress bar reports the sampling phase; the stderr text."""
    chunks: list[str] = []
    reader = threading.Thread(
        target=lambda: chunks.extend(iter(lambda: proc.stderr.read(64), "")), daemon=True
    )
    reader.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if "sampling" in "".join(chunks):
            proc.send_signal(sig)
            break
        time.sleep(0.05)
    proc.wait(timeout=timeout)
    reader.join(timeout=10)
    return "".join(chunks)


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)]
)
def test_interrupted_run_resumes_to_the_uninterrupted_draws(tmp_path, sig):
    run = tmp_path / "run.nc"
    proc = _ppl("sample", MODEL, *SETTINGS, "--out", str(run), stderr=subprocess.PIPE)
    stderr = _interrupt_once_sampling(proc, sig)
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr and "incomplete" in stderr
    partial = load_run(run)
    assert int(partial.attrs["ppl_complete"]) == 0
    kept = partial["posterior"].sizes["draw"]
    assert 0 < kept < DRAWS
    assert state_path(run).exists()

    summary = subprocess.run(
        [sys.executable, "-m", "ppl", "summary", str(run)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert summary.returncode == 0 and "incomplete" in summary.stdout.lower()

    resumed = _ppl("sample", MODEL, "--resume", str(run), "--no-progress")
    assert resumed.wait(timeout=600) == 0
    assert not state_path(run).exists()

    reference = tmp_path / "reference.nc"
    full = _ppl("sample", MODEL, *SETTINGS, "--out", str(reference), "--no-progress")
    assert full.wait(timeout=600) == 0

    a, b = load_run(run), load_run(reference)
    assert int(a.attrs["ppl_complete"]) == 1
    for name, var in b["posterior"].data_vars.items():
        np.testing.assert_array_equal(a["posterior"][name].values, var.values)
    for name, var in partial["posterior"].data_vars.items():
        np.testing.assert_array_equal(a["posterior"][name].values[:, :kept], var.values)
    np.testing.assert_array_equal(
        a["sample_stats"]["diverging"].values, b["sample_stats"]["diverging"].values
    )

    # a complete run has nothing to resume: one line, exit 2
    again = _ppl("sample", MODEL, "--resume", str(run), stderr=subprocess.PIPE)
    err = again.communicate(timeout=300)[1]
    assert again.returncode == 2
    assert "complete run" in err and len(err.strip().splitlines()) == 1


# a model that compiles in seconds but whose every gradient takes milliseconds, so that a
# run without a progress bar lasts long after the signal
SLOW_MODEL = '''\
"""A standard normal whose log density loops, to make sampling slow."""
import jax
import jax.numpy as jnp

import ppl
import ppl.distributions as dist

description = "slow standard normal"
data = {}


def model():
    x = ppl.sample("x", dist.Normal(0.0, 1.0))
    busy = jax.lax.fori_loop(0, 20000, lambda i, s: jnp.sin(s + x) * 0.5, x)
    ppl.factor("busy", 0.0 * busy)
'''


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)]
)
def test_a_signal_stops_a_run_without_progress_bar_within_a_chunk(tmp_path, sig):
    model = tmp_path / "slow.py"
    model.write_text(SLOW_MODEL)
    run = tmp_path / "run.nc"
    proc = _ppl(
        "sample", str(model), "--chains", "2", "--warmup", "50", "--draws", "100000",
        "--seed", "1", "--no-progress", "--out", str(run), stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(8.0)  # import, compile, warmup: sampling has begun
    assert proc.poll() is None, proc.stderr.read()
    sent = time.monotonic()
    proc.send_signal(sig)
    stderr = proc.communicate(timeout=120)[1]
    waited = time.monotonic() - sent
    assert proc.returncode == 130, stderr
    # chunks take about a second without the progress bar; before, the signal waited for
    # the whole phase (100000 draws here)
    assert waited < 6.0, (waited, stderr)
    assert "incomplete" in stderr and "--resume" in stderr
    assert int(load_run(run).attrs["ppl_complete"]) == 0
