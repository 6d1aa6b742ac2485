"""The run file on disk: a run's DataTree as one netCDF file, and an interrupted run's state.

:func:`save_run` writes what :func:`ppl.runs.pipelines.sample_run` returns (netCDF4/HDF5
via h5netcdf) and :func:`load_run` reads it back; an interrupted run's sampler state is
kept beside it (:func:`state_path`). Every read and write of a run file is here; it
raises :class:`~ppl.runs.errors.UsageError` and :class:`~ppl.runs.errors.RunError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ppl.runs.errors import RunError, UsageError

__all__ = [
    "RUN_ATTRS",
    "RUN_FORMAT",
    "incomplete_draws",
    "load_run",
    "load_sampler_state",
    "run_attrs",
    "save_run",
    "state_path",
]

RUN_FORMAT = "ppl-run-1"
"""Value of the root attribute ``ppl_format`` of every saved run."""

RUN_ATTRS = (
    "ppl_format",
    "ppl_settings",
    "ppl_seed",
    "ppl_method",
    "ppl_max_tree_depth",
    "ppl_model",
    "ppl_model_file",
    "ppl_model_source",
    "ppl_data_source",
    "ppl_versions",
    "ppl_timing",
    "ppl_complete",
    "ppl_command",
    "ppl_created",
)
"""Root attributes of a saved run (all str or int, as netCDF stores them)."""


_INCOMPLETE = "_ppl_incomplete"  # in-memory attribute of an interrupted run (not saved)


def run_attrs(tree) -> dict[str, Any]:
    """The run's attributes with the JSON ones decoded (settings, versions, timing)."""
    attrs = dict(tree.attrs)
    for name in ("ppl_settings", "ppl_versions", "ppl_timing"):
        if isinstance(attrs.get(name), str):
            try:
                attrs[name] = json.loads(attrs[name])
            except json.JSONDecodeError:
                pass
    return attrs


def _netcdf_attr(value: Any) -> Any:
    """An attribute netCDF can store: bools as ints, dicts as JSON, sequences as arrays."""
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    if isinstance(value, list | tuple) and value:
        arr = np.asarray(value)
        if arr.dtype == bool:
            return arr.astype(int)
        if arr.dtype.kind in "iuf":
            return arr
        return [str(v) for v in value]
    return value


def state_path(run_path: str | Path) -> Path:
    """Where the sampler state of an interrupted run is kept: ``RUN.state.npz`` beside it."""
    run_path = Path(run_path)
    return run_path.with_name(run_path.name + ".state.npz")


def incomplete_draws(tree) -> int | None:
    """Draws per chain kept by an interrupted run (``None`` for a complete one)."""
    incomplete = tree.attrs.get(_INCOMPLETE)
    return None if incomplete is None else int(incomplete["kept"])


def save_run(tree, path: str | Path) -> Path:
    """Write the run to ``path`` (netCDF4/HDF5 via h5netcdf, one group per DataTree node).

    An interrupted run's sampler state goes to :func:`state_path` beside it (for
    ``ppl sample ... --resume RUN``); saving a complete run removes a stale one.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise UsageError(f"cannot write {path}: folder {path.parent} does not exist")
    tmp = path.with_name(path.name + ".partial")
    tree = tree.copy()
    incomplete = tree.attrs.pop(_INCOMPLETE, None)
    for node in tree.subtree:
        node.attrs = {k: _netcdf_attr(v) for k, v in node.attrs.items() if v is not None}
    tree.to_netcdf(tmp, engine="h5netcdf")
    state_file = state_path(path)
    if incomplete is not None:
        state_tmp = state_file.with_name(state_file.name + ".partial.npz")
        np.savez(state_tmp, **incomplete["state"])
        state_tmp.replace(state_file)
    elif state_file.exists():
        state_file.unlink()
    tmp.replace(path)
    return path


def load_sampler_state(run_path: str | Path) -> dict:
    """The sampler state saved beside an interrupted run.

    Raises:
        RunError: there is none, or it cannot be read.
    """
    file = state_path(run_path)
    if not file.exists():
        raise RunError(
            f"no sampler state {file} beside {run_path}: only an interrupted nuts/hmc run "
            "saved with it can be resumed"
        )
    try:
        with np.load(file) as opened:
            return {k: opened[k] for k in opened.files}
    except Exception as err:
        raise RunError(f"sampler state {file} could not be read ({type(err).__name__})") from None


def load_run(path: str | Path):
    """Read a run written by :func:`save_run` (fully into memory; the file is closed).

    Raises:
        RunError: the file is missing, not netCDF, or not a ppl run.
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise RunError(f"run file {path} does not exist")
    if path.is_dir():
        raise RunError(f"run file {path} is a folder, not a run file")
    try:
        with xr.open_datatree(path, engine="h5netcdf") as opened:
            tree = opened.load().copy()
    except Exception as err:  # h5py/h5netcdf raise OSError, ValueError, KeyError...
        raise RunError(
            f"run file {path} could not be read as a netCDF run ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}); it may be corrupt or "
            "truncated: sample again"
        ) from None
    if tree.attrs.get("ppl_format") != RUN_FORMAT or "posterior" not in tree.children:
        raise RunError(
            f"run file {path} is netCDF but not a ppl run (no ppl_format attribute or no "
            "posterior group)"
        )
    return tree
