"""The run file on disk: a run's DataTree as one netCDF file, and an interrupted run's state.

:func:`save_run` writes what :func:`ppl.runs.pipelines.sample_run` returns (netCDF4/HDF5
via h5netcdf) and :func:`load_run` reads it back; an interrupted run's sampler state is
kept beside it (:func:`state_path`). Every read and write of a run file is here; it
raises :class:`~ppl.runs.errors.UsageError` and :class:`~ppl.runs.errors.RunError`.
"""

from __future__ import annotations

import hashlib
import json
import os
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
    "verify_checksums",
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
    "ppl_model_sha256",
    "ppl_data_source",
    "ppl_data_sha256",
    "ppl_resume_overrides",
    "ppl_versions",
    "ppl_timing",
    "ppl_complete",
    "ppl_command",
    "ppl_created",
    "ppl_pointwise_skipped",
    "ppl_checksums",
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
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")  # never shared by two writers
    tree = tree.copy()
    incomplete = tree.attrs.pop(_INCOMPLETE, None)
    for node in tree.subtree:
        node.attrs = {k: _netcdf_attr(v) for k, v in node.attrs.items() if v is not None}
    tree.attrs[CHECKSUMS] = json.dumps(checksums(tree), sort_keys=True)
    state_file = state_path(path)
    state_tmp = state_file.with_name(f"{state_file.name}.{os.getpid()}.partial.npz")
    try:
        tree.to_netcdf(tmp, engine="h5netcdf")
        _append_digest(tmp)
        # each file is written whole under a temporary name, flushed to disk, then renamed
        # over the old one: a kill at any moment leaves the old file or the new one, never a
        # mix; the state goes first (it alone is resumed from: never older than the run)
        if incomplete is not None:
            np.savez(state_tmp, **incomplete["state"])
            _fsync(state_tmp)
            state_tmp.replace(state_file)
        _fsync(tmp)
        tmp.replace(path)
    finally:  # an error or an interrupt while writing leaves no temporary file
        tmp.unlink(missing_ok=True)
        state_tmp.unlink(missing_ok=True)
    if incomplete is None and state_file.exists():  # after the complete run is in place
        state_file.unlink()
    return path


def _fsync(path: Path) -> None:
    """Flush a written file to the disk (so that a renamed file survives a power cut)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


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


def load_run(path: str | Path, groups: tuple[str, ...] | None = None):
    """Read a run written by :func:`save_run` (fully into memory; the file is closed).

    ``groups`` (e.g. ``("posterior", "sample_stats")``) reads only those groups (the others
    are not read; absent ones are left out); the byte digest still covers the whole file.

    Raises:
        RunError: the file is missing, not netCDF, or not a ppl run.
    """
    path = Path(path)
    if not path.exists():
        raise RunError(f"run file {path} does not exist")
    if path.is_dir():
        raise RunError(f"run file {path} is a folder, not a run file")
    # a writer replaces the file by renaming a new one over it: the bytes verified and the
    # bytes HDF5 reads are those of the one file held open here
    with open(path, "rb") as held:
        # before HDF5 parses it: a damaged file can make HDF5 hang
        bytes_verified = _check_digest(held, path)
        held.seek(0)
        tree = _read_tree(held, path, groups)
    if tree.attrs.get("ppl_format") != RUN_FORMAT or "posterior" not in tree.children:
        raise RunError(
            f"run file {path} is netCDF but not a ppl run (no ppl_format attribute or no "
            "posterior group)"
        )
    if not bytes_verified:  # unchanged bytes decode to unchanged values: no second hash
        verify_checksums(tree, path, groups)
    return tree


def _read_tree(held, path: Path, groups: tuple[str, ...] | None):
    """The run in the open binary file ``held`` (named ``path`` in errors), read whole."""
    import xarray as xr

    try:
        with xr.open_datatree(held, engine="h5netcdf") as opened:
            tree = opened.copy()
            for name in [n for n in tree.children if groups is not None and n not in groups]:
                del tree[name]
            return tree.load().copy()
    except Exception as err:  # h5py/h5netcdf raise OSError, ValueError, KeyError...
        raise RunError(
            f"run file {path} could not be read as a netCDF run ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}); it may be corrupt or "
            "truncated: sample again"
        ) from None


_TRAILER_MAGIC = b"\nPPL-SHA256:"
_TRAILER_SIZE = len(_TRAILER_MAGIC) + 64 + 1  # magic, hex digest, newline


def _file_digest(f, size: int) -> str:
    """SHA-256 (hex) of the first ``size`` bytes of the open binary file ``f``."""
    digest = hashlib.sha256()
    f.seek(0)
    left = size
    while left > 0:
        block = f.read(min(1 << 20, left))
        if not block:
            break
        digest.update(block)
        left -= len(block)
    return digest.hexdigest()


def _append_digest(path: Path) -> None:
    """Append ``\nPPL-SHA256:<hex>\n``, the SHA-256 of the file's bytes before it. HDF5
    ignores bytes after the end of its data; :func:`_check_digest` verifies them first."""
    with open(path, "a+b") as f:  # reads from anywhere, writes at the end
        digest = _file_digest(f, os.fstat(f.fileno()).st_size)
        f.write(_TRAILER_MAGIC + digest.encode() + b"\n")


def _check_digest(f, path: Path) -> bool:
    """Verify the trailer that :func:`save_run` appended: ``True`` when the bytes match,
    ``False`` when there is no trailer (older runs, or a file rewritten by other tools:
    their per-variable checksums are checked after reading).

    Raises:
        RunError: the bytes do not match, or the trailer is damaged.
    """
    size = os.fstat(f.fileno()).st_size
    f.seek(max(0, size - 256))
    tail = f.read()
    at = tail.rfind(_TRAILER_MAGIC)
    if at < 0:
        return False
    trailer = tail[at:]
    stored = trailer[len(_TRAILER_MAGIC) : len(_TRAILER_MAGIC) + 64]
    well_formed = len(trailer) == _TRAILER_SIZE and trailer.endswith(b"\n")
    if not well_formed or not all(c in b"0123456789abcdef" for c in stored):
        raise RunError(f"run file {path} is damaged: its checksum trailer is not readable")
    if _file_digest(f, size - _TRAILER_SIZE) != stored.decode():
        raise RunError(
            f"run file {path} is damaged: its bytes do not match the SHA-256 written with "
            "it (the file changed after ppl wrote it); sample again or restore a copy"
        )
    return True


def _group_of(key: str) -> str:
    """The top-level group of a :func:`checksums` key ("" for the root)."""
    path = key.partition("@")[0] if "@" in key else key.rpartition("/")[0]
    return path.strip("/").split("/")[0]


CHECKSUMS = "ppl_checksums"
"""Root attribute: JSON ``{"/group/variable": sha256, "/group@attrs": sha256, ...}``."""


def _canonical_attrs(attrs: dict) -> str:
    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, np.generic):
            return value.item()
        return value

    return json.dumps({str(k): plain(v) for k, v in attrs.items()}, sort_keys=True, default=str)


def _variable_digest(variable) -> str:
    values = np.asarray(variable.values)
    digest = hashlib.sha256()
    digest.update(f"{values.dtype.kind}{values.dtype.itemsize} {values.shape} ".encode())
    digest.update(" ".join(map(str, variable.dims)).encode())
    if values.dtype.kind in "biufc":
        digest.update(np.ascontiguousarray(values).tobytes())
    else:  # strings: their text, not the object pointers
        digest.update("\x00".join(map(str, values.ravel())).encode())
    digest.update(_canonical_attrs(variable.attrs).encode())
    return digest.hexdigest()


def checksums(tree) -> dict[str, str]:
    """SHA-256 of every variable (values, dims, attributes) and of every group's attributes
    (the root's without :data:`CHECKSUMS` itself), keyed by path."""
    out = {}
    for node in tree.subtree:
        base = node.path.rstrip("/")
        dataset = node.to_dataset(inherit=False)
        for name, variable in dataset.variables.items():
            out[f"{base}/{name}"] = _variable_digest(variable)
        attrs = {k: v for k, v in node.attrs.items() if k != CHECKSUMS}
        out[f"{base}@attrs"] = hashlib.sha256(_canonical_attrs(attrs).encode()).hexdigest()
    return out


def verify_checksums(
    tree, path: str | Path = "the run", groups: tuple[str, ...] | None = None
) -> None:
    """Check a loaded run against its stored checksums (runs saved without them pass).

    Raises:
        RunError: naming the group and the variable (or the attributes) that changed.
    """
    stored = tree.attrs.get(CHECKSUMS)
    if stored is None:
        return
    try:
        expected = json.loads(str(stored))
    except ValueError:
        raise RunError(f"run file {path} is damaged: its checksums cannot be read") from None
    actual = checksums(tree)
    if groups is not None:  # a partial read: only the groups read (and the root's attrs)
        loaded = set(tree.children)
        expected = {k: v for k, v in expected.items() if _group_of(k) in loaded | {""}}
    for key in sorted(set(expected) | set(actual)):
        if expected.get(key) == actual.get(key):
            continue
        group, _, rest = key.rpartition("@") if "@" in key else key.rpartition("/")
        what = "attributes" if "@" in key else f"variable {rest!r}"
        where = f"group {group.lstrip('/') or '(root)'!r}"
        change = (
            "is missing"
            if key not in actual
            else "is not in the checksums"
            if key not in expected
            else "does not match its checksum"
        )
        raise RunError(
            f"run file {path} is damaged: {where}, {what} {change} (the file changed after "
            "ppl wrote it); sample again or restore a copy"
        )
