"""Data: a JSON, ``.npz`` or ``.csv`` data file in, the model's keyword arguments out.

:func:`load_data_file` reads a data file (see :mod:`ppl.runs` for how its values are
converted) and :func:`check_data` checks keyword arguments against the model's
signature. Both raise :class:`~ppl.runs.errors.UsageError`; :mod:`ppl.runs.pipelines`
checks the data of every run with :func:`check_data`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ppl.model_data import rectangular_array
from ppl.runs.errors import UsageError

__all__ = ["check_data", "data_fingerprint", "load_data_file"]


def _from_json(key: str, value: Any) -> Any:
    if isinstance(value, list):
        try:
            return rectangular_array(value)
        except ValueError as err:
            raise UsageError(
                f"key {key!r} is a ragged list ({err}): nested lists must be rectangular "
                "arrays of numbers"
            ) from None
    return value


def load_data_file(path: str | Path) -> dict:
    """The keyword arguments stored in a JSON (object), ``.npz`` or ``.csv`` file.

    JSON lists become JAX arrays (integers stay integers; 32-bit unless x64 is enabled),
    scalars stay Python scalars; in ``.npz`` files 0-d arrays become Python scalars; a CSV
    file (with a header row) gives one array per column, named by its header.

    Raises:
        UsageError: missing, unreadable or malformed file.
    """
    return {k: _jax_array(v) for k, v in _read_data_file(Path(path)).items()}


def _jax_array(value: Any) -> Any:
    """NumPy arrays as JAX arrays of JAX's default dtypes (int32/float32 unless x64 is on)."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        import jax.numpy as jnp

        return jnp.asarray(value)
    return value


def _read_data_file(path: Path) -> dict:
    if not path.is_file():
        raise UsageError(f"data file {path} does not exist")
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: (npz[k].item() if npz[k].ndim == 0 else npz[k]) for k in npz.files}
        except (OSError, ValueError) as err:
            raise UsageError(f"data file {path} is not a readable .npz file: {err}") from None
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(
            f"data file {path} is not valid JSON: {err} (data files are JSON objects, .npz "
            "archives or .csv tables with a header row, told apart by their suffix)"
        ) from None
    if not isinstance(raw, dict):
        raise UsageError(
            f"data file {path} must hold a JSON object mapping the model's arguments to "
            f"values, got a {type(raw).__name__}"
        )
    try:
        return {k: _from_json(k, v) for k, v in raw.items()}
    except UsageError as err:
        raise UsageError(f"data file {path}: {err}") from None


def _read_csv(path: Path) -> dict:
    """A CSV file with a header row: one array per column, named by the header."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"data file {path} is not a readable CSV file: {first}") from None
    if frame.shape[1] == 0:
        raise UsageError(f"data file {path}: no columns (a CSV data file needs a header row)")
    out = {}
    for name in frame.columns:
        column = frame[name]
        if column.isna().any():
            rows = [int(i) + 2 for i in np.flatnonzero(column.isna().to_numpy())[:3]]
            raise UsageError(
                f"data file {path}: column {name!r} has empty or missing values (line(s) "
                f"{', '.join(map(str, rows))})"
            )
        if column.dtype.kind not in "biuf":
            raise UsageError(
                f"data file {path}: column {name!r} is not numeric (e.g. {column.iloc[0]!r}); "
                "code categories as integers 0, 1, ..."
            )
        out[str(name).strip()] = column.to_numpy()
    return out


def check_data(model: Callable, data: dict, origin: str) -> None:
    """Check that ``data`` are keyword arguments ``model`` accepts and that none is missing.

    Raises:
        UsageError: naming the keys that match no argument (and the arguments there
            are), or the required arguments that ``data`` lacks.
    """
    try:
        signature = inspect.signature(model)
    except (TypeError, ValueError):
        return
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = []
    else:
        keyword_ok = {
            n
            for n, p in params.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        }
        unknown = sorted(set(data) - keyword_ok)
    arguments = ", ".join(params) or "no arguments"
    if unknown:
        raise UsageError(
            f"{origin}: key(s) {', '.join(unknown)} match no argument of the model "
            f"(its arguments: {arguments})"
        )
    missing = [
        n
        for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and n not in data
    ]
    if missing:
        raise UsageError(
            f"{origin}: the model's argument(s) {', '.join(missing)} have no value "
            f"(its arguments: {arguments})"
        )


def data_fingerprint(data: dict) -> dict[str, str]:
    """A SHA-256 per data key of its type, dtype, shape and values (arrays) or its ``repr``
    (everything else): what ``--resume`` compares to refuse other data."""
    out = {}
    for key in sorted(data):
        value = data[key]
        digest = hashlib.sha256()
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            array = np.ascontiguousarray(np.asarray(value))
            digest.update(f"array {array.dtype.str} {array.shape}".encode())
            digest.update(array.tobytes())
        else:
            digest.update(f"{type(value).__name__} {value!r}".encode())
        out[str(key)] = digest.hexdigest()
    return out
