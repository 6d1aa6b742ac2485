"""`ppl sample` interrupted by a signal saves its draws, and `--resume` finishes the run so that it
equals, draw for draw, the uninterrupted run with the same seed."""

import json
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
data = {"scale": 1.0}


def model(scale):
    x = ppl.sample("x", dist.Normal(0.0, scale))
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
        "--seed", "1", "--no-progress", "--save-every", "1", "--out", str(run),
        stderr=subprocess.PIPE,
    )  # fmt: skip
    _wait_for_saved_draws(run, proc)  # import, compile, warmup: sampling has begun
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


def _wait_until(condition, proc, timeout=240.0) -> None:
    """Wait until ``condition()`` holds while ``proc`` runs (polled every 0.1 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            return
        time.sleep(0.1)
    stderr = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
    raise AssertionError(f"condition not reached (exit {proc.poll()}): {stderr}")


def _wait_for_saved_draws(run: Path, proc) -> None:
    """Wait until ``ppl sample`` saved a run with draws while it runs (saves replace the file
    whole: every read sees a complete, checksummed file)."""
    _wait_until(lambda: run.exists() and load_run(run)["posterior"].sizes.get("draw", 0) > 0, proc)


def _start_slow(tmp_path, run, *extra):
    model = tmp_path / "slow.py"
    if not model.exists():
        model.write_text(SLOW_MODEL)
    return _ppl(
        "sample", str(model), "--chains", "2", "--warmup", "50", "--draws", "100000",
        "--seed", "1", "--no-progress", "--save-every", "1", "--out", str(run), *extra,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def test_a_second_writer_is_refused_at_once_and_the_first_run_is_intact(tmp_path):
    run = tmp_path / "run.nc"
    first = _start_slow(tmp_path, run)
    _wait_for_saved_draws(run, first)
    began = time.monotonic()
    second = _start_slow(tmp_path, run, "--force")
    stderr = second.communicate(timeout=120)[1]
    assert second.returncode == 2, stderr
    assert "is being written by another ppl process (pid" in stderr, stderr
    assert time.monotonic() - began < 30  # refused before sampling, not after
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=120)
    assert first.returncode == 130
    tree = load_run(run)  # the first writer's draws, not a mixture or zeros
    draws = tree["posterior"]["x"].values
    assert draws.shape[1] > 0 and np.std(draws) > 0.5


def test_resume_refuses_other_data_or_an_edited_model_unless_allowed(tmp_path):
    run = tmp_path / "run.nc"
    proc = _start_slow(tmp_path, run)
    _wait_for_saved_draws(run, proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    model = tmp_path / "slow.py"
    other = tmp_path / "other.json"
    other.write_text('{"scale": 2.0}')

    def resume(*extra):
        return subprocess.run(
            [sys.executable, "-m", "ppl", "sample", str(model), "--resume", str(run),
             "--no-progress", *extra],
            cwd=REPO, capture_output=True, text=True, timeout=300,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )  # fmt: skip

    out = resume("--data", str(other))
    assert out.returncode == 2, out.stderr
    assert "other data (key(s) scale differ)" in out.stderr and "--allow-changes" in out.stderr
    model.write_text(SLOW_MODEL + "\n# edited\n")
    out = resume()
    assert out.returncode == 2, out.stderr
    assert "other model source" in out.stderr and "slow.py was edited" in out.stderr
    # allowed: it resumes, and the run records what changed
    allowed = _ppl(
        "sample", str(model), "--resume", str(run), "--no-progress", "--allow-changes",
        stderr=subprocess.PIPE,
    )  # fmt: skip
    _wait_until(lambda: "edited" in str(load_run(run).attrs["ppl_resume_overrides"]), allowed)
    allowed.send_signal(signal.SIGINT)
    allowed.communicate(timeout=120)
    assert allowed.returncode == 130
    overrides = json.loads(str(load_run(run).attrs["ppl_resume_overrides"]))
    assert overrides == ["model source (" + str(model) + " was edited)"], overrides


def test_a_killed_run_resumes_from_disk_to_the_uninterrupted_draws(tmp_path):
    """kill -9 mid-sampling: the run saved while it ran is read by summary, and --resume
    finishes it to exactly the draws of a run that was never stopped."""
    settings = ["--chains", "2", "--warmup", "50", "--draws", "15000", "--seed", "4"]
    model = tmp_path / "slow.py"
    model.write_text(SLOW_MODEL)
    run = tmp_path / "run.nc"
    proc = _ppl(
        "sample", str(model), *settings, "--no-progress", "--save-every", "0.5",
        "--out", str(run), stderr=subprocess.PIPE,
    )  # fmt: skip
    _wait_for_saved_draws(run, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    partial = load_run(run)  # the last save: whole, checksummed, incomplete
    assert int(partial.attrs["ppl_complete"]) == 0
    kept = partial["posterior"].sizes["draw"]
    assert 0 < kept < 15000 and state_path(run).exists()
    assert not list(tmp_path.glob("*.partial*"))  # no temporary file was left complete

    summary = subprocess.run(
        [sys.executable, "-m", "ppl", "summary", str(run)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    assert summary.returncode == 0, summary.stderr
    assert "(INCOMPLETE)" in summary.stdout

    resumed = _ppl("sample", str(model), "--resume", str(run), "--no-progress")
    assert resumed.wait(timeout=600) == 0
    assert not state_path(run).exists()
    reference = tmp_path / "reference.nc"
    full = _ppl(
        "sample", str(model), *settings, "--no-progress", "--save-every", "0",
        "--out", str(reference),
    )  # fmt: skip
    assert full.wait(timeout=600) == 0
    a, b = load_run(run), load_run(reference)
    assert int(a.attrs["ppl_complete"]) == 1
    np.testing.assert_array_equal(a["posterior"]["x"].values, b["posterior"]["x"].values)
    np.testing.assert_array_equal(a["posterior"]["x"].values[:, :kept], partial["posterior"]["x"])
    for name in ("lp", "diverging", "n_steps"):
        np.testing.assert_array_equal(a["sample_stats"][name], b["sample_stats"][name])


def test_a_run_killed_in_warmup_says_it_has_no_draws_yet(tmp_path):
    model = tmp_path / "slow.py"
    model.write_text(SLOW_MODEL)
    run = tmp_path / "run.nc"
    proc = _ppl(
        "sample", str(model), "--chains", "2", "--warmup", "100000", "--draws", "10",
        "--no-progress", "--save-every", "0.5", "--out", str(run), stderr=subprocess.PIPE,
    )  # fmt: skip
    # a save writes the state, then the run: both are there once the run is
    _wait_until(lambda: run.exists(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert state_path(run).exists() and int(load_run(run).attrs["ppl_complete"]) == 0

    def ppl(*args):
        return subprocess.run(
            [sys.executable, "-m", "ppl", *args], cwd=REPO, capture_output=True, text=True,
            timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)),
        )  # fmt: skip

    for command in (["summary", str(run)], ["report", str(run), "-o", str(tmp_path / "r.html")]):
        out = ppl(*command)
        assert out.returncode == 2, out.stderr
        assert "holds no draws yet: the run stopped during warmup" in out.stderr
        assert f"--resume {run}" in out.stderr
    # resuming a run that is not there: a clear error, and no lock file left behind
    missing = tmp_path / "missing.nc"
    out = ppl("sample", str(model), "--resume", str(missing))
    assert out.returncode == 2 and "does not exist: there is nothing to resume" in out.stderr
    assert not list(tmp_path.glob("missing*"))
    out = ppl("sample", str(model), "--out", str(tmp_path / "x.nc"), "--save-every", "-1")
    assert out.returncode == 2 and "--save-every" in out.stderr
