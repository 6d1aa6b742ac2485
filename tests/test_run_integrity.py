"""Run files that never lie (issue 17): checksums of every variable and every group's
attributes are stored with the run and verified on read, so a damaged file is an error that
names the group, never a silently different number."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ppl.runs import RunError, load_run, save_run
from ppl.runs.files import CHECKSUMS, checksums

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    run = tmp_path_factory.mktemp("integrity") / "run.nc"
    out = subprocess.run(
        [sys.executable, "-m", "ppl", "sample", "eight_schools", "--chains", "2", "--warmup",
         "100", "--draws", "100", "--no-progress", "--out", str(run)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return run


def test_a_run_round_trips_with_its_checksums(run_file, tmp_path):
    tree = load_run(run_file)
    stored = json.loads(tree.attrs[CHECKSUMS])
    assert "/posterior/mu" in stored and "/sample_stats/diverging" in stored
    assert "@attrs" in next(iter(k for k in stored if k.startswith("/posterior@")))
    assert stored == checksums(tree)
    copy = tmp_path / "copy.nc"
    save_run(tree, copy)
    assert checksums(load_run(copy)) == stored


def test_a_changed_value_names_the_group_and_variable(run_file, tmp_path):
    import xarray as xr

    tree = load_run(run_file)
    tree["posterior"]["mu"].values[0, 0] += 1.0  # the stored checksum is now stale
    bad = tmp_path / "bad.nc"
    tree.to_netcdf(bad, engine="h5netcdf")  # written without ppl's save_run
    with pytest.raises(RunError, match=r"damaged: group 'posterior', variable 'mu' does not match"):
        load_run(bad)
    del xr


FLIPS = r"""
import json, sys, numpy as np
from pathlib import Path
from ppl.runs import RunError, load_run
from ppl.runs.files import checksums
source = Path(sys.argv[1]); work = Path(sys.argv[2]); trials = int(sys.argv[3])
original = source.read_bytes()
reference = checksums(load_run(source))
rng = np.random.default_rng(17)
counts = {"error": 0, "unchanged": 0, "changed": 0}
for trial in range(trials):
    data = bytearray(original)
    for offset in rng.integers(0, len(data), size=8):
        data[offset] ^= 1 << int(rng.integers(0, 8))
    path = work / f"flip{trial}.nc"
    path.write_bytes(bytes(data))
    try:
        tree = load_run(path)
    except RunError:
        counts["error"] += 1
        continue
    counts["unchanged" if checksums(tree) == reference else "changed"] += 1
print(json.dumps(counts))
"""


def test_flipped_bytes_are_an_error_or_change_nothing(run_file, tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", FLIPS, str(run_file), str(tmp_path), "150"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["changed"] == 0, counts
    assert counts["error"] > 0 and counts["error"] + counts["unchanged"] == 150, counts
    values = load_run(run_file)["posterior"]["mu"].values
    assert np.isfinite(values).all()


def test_a_damaged_sampler_state_is_an_error(tmp_path):
    """The state an interrupted or killed run is resumed from (a .npz: a zip whose members
    carry CRC-32s) never loads with changed values: 60 flipped bytes, 60 errors."""
    from ppl.runs import load_sampler_state, state_path

    run = tmp_path / "run.nc"
    values = {"a": np.arange(20000.0), "b": np.ones(10, np.float32)}
    np.savez(tmp_path / "good.npz", **values)
    good = (tmp_path / "good.npz").read_bytes()
    rng = np.random.default_rng(0)
    for offset in rng.choice(len(good), size=60, replace=False):
        damaged = bytearray(good)
        damaged[offset] ^= 0xFF
        state_path(run).write_bytes(bytes(damaged))
        with pytest.raises(RunError, match="could not be read"):
            load_sampler_state(run)


def test_a_run_read_while_a_writer_replaces_it_is_one_whole_version(run_file, tmp_path):
    """``ppl sample`` replaces its run file by renaming a new one over it while others read
    it (``ppl summary`` on a run in progress): each read is one complete version, verified,
    never the size of one file and the bytes of the next ("damaged")."""
    import shutil
    import threading

    tree = load_run(run_file)
    shorter = tree.copy()
    shorter["posterior"] = tree["posterior"].to_dataset().isel(draw=slice(0, 37))
    versions = [tmp_path / "a.nc", tmp_path / "b.nc"]
    save_run(tree, versions[0])
    save_run(shorter, versions[1])
    path = tmp_path / "run.nc"
    shutil.copy(versions[0], path)
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            staged = tmp_path / f"staged{i % 2}.nc"
            shutil.copy(versions[i % 2], staged)
            staged.replace(path)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = {load_run(path, groups=("posterior",))["posterior"].sizes["draw"] for _ in range(60)}
    finally:
        stop.set()
        thread.join()
    assert seen <= {100, 37} and seen
