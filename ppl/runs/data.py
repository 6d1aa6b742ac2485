"""Data: a JSON or ``.npz`` data file in, the model's keyword arguments out.

:func:`load_data_file` reads a data file (see :mod:`ppl.runs` for how its values are
converted) and :func:`check_data` checks keyword arguments against the model's
signature. Both raise :class:`~ppl.runs.errors.UsageError`; :mod:`ppl.runs.pipelines`
checks the data of every run with :func:`check_data`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ppl.runs.errors import UsageError

__all__ = ["check_data", "load_data_file"]


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        arr = np.asarray(value)
        if arr.dtype == object:
            raise UsageError("data file: nested lists must be rectangular arrays of numbers")
        return arr
    return value


def load_data_file(path: str | Path) -> dict:
    """The keyword arguments stored in a JSON (object) or ``.npz`` file.

    JSON lists become JAX arrays (integers stay integers; 32-bit unless x64 is enabled),
    scalars stay Python scalars; in ``.npz`` files 0-d arrays become Python scalars.

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
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: (npz[k].item() if npz[k].ndim == 0 else npz[k]) for k in npz.files}
        except (OSError, ValueError) as err:
            raise UsageError(f"data file {path} is not a readable .npz file: {err}") from None
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"data file {path} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise UsageError(
            f"data file {path} must hold a JSON object mapping the model's arguments to "
            f"values, got a {type(raw).__name__}"
        )
    try:
        return {k: _from_json(v) for k, v in raw.items()}
    except UsageError as err:
        raise UsageError(f"data file {path}: {err}") from None


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
