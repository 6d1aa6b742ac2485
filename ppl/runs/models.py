"""Models: a zoo name or the path of a Python file in, a :class:`ModelSpec` out.

:func:`resolve_model` imports the model (from :mod:`ppl.zoo`, or from the file) and
collects its function, data, dims, coords, description and source; what such a file
defines is described in :mod:`ppl.runs`. It raises :class:`~ppl.runs.errors.UsageError`;
:mod:`ppl.runs.pipelines` runs the spec it returns.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ppl.runs.errors import UsageError

__all__ = ["ModelSpec", "resolve_model"]


@dataclasses.dataclass
class ModelSpec:
    """A model ready to run: the function, its data and how to label its dimensions.

    Attributes:
        name: zoo name or file stem.
        model: the model function.
        data: keyword arguments of ``model`` (the model's own data; may be empty).
        dims, coords: ArviZ dims (``site -> [dim names]``) and coords (``dim -> labels``).
        description: one line.
        source: the model module's source code.
        file: path of the module's file ("" if unknown).
        data_source: where ``data`` came from, in words.
    """

    name: str
    model: Callable
    data: dict
    dims: dict
    coords: dict
    description: str
    source: str
    file: str
    data_source: str


def _module_spec(module: Any, name: str, origin: str) -> ModelSpec:
    model = getattr(module, "model", None)
    if not callable(model):
        raise UsageError(f"{origin} defines no function named 'model'")
    if callable(getattr(module, "load_data", None)):
        try:
            data = module.load_data()
        except Exception as err:
            raise UsageError(f"{origin}: load_data() failed: {type(err).__name__}: {err}") from err
        data_source = f"{name}.load_data()"
    elif isinstance(getattr(module, "data", None), dict):
        data = module.data
        data_source = f"{name}.data"
    else:
        data, data_source = {}, "none"
    if not isinstance(data, dict):
        raise UsageError(
            f"{origin}: load_data() must return a dict of keyword arguments, "
            f"got {type(data).__name__}"
        )
    file = getattr(module, "__file__", None) or ""
    try:
        source = Path(file).read_text() if file else inspect.getsource(module)
    except (OSError, TypeError):
        source = ""
    description = getattr(module, "description", None) or (module.__doc__ or "").strip()
    return ModelSpec(
        name=name,
        model=model,
        data=dict(data),
        dims=dict(getattr(module, "dims", None) or {}),
        coords=dict(getattr(module, "coords", None) or {}),
        description=description.split("\n")[0],
        source=source,
        file=str(file),
        data_source=data_source,
    )


def resolve_model(spec: str) -> ModelSpec:
    """The model named ``spec``: a zoo name, or the path of a Python file (see :mod:`ppl.runs`).

    Raises:
        UsageError: no such zoo model or file, or the file does not define ``model``.
    """
    from ppl import zoo

    path = Path(spec)
    if spec.endswith(".py") or path.is_file() or "/" in spec:
        if not path.is_file():
            raise UsageError(f"model file {spec} does not exist")
        mod_name = f"_ppl_user_model_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise UsageError(f"cannot import {spec} as a Python module")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[mod_name]
            raise UsageError(
                f"importing model file {spec} failed: {type(err).__name__}: {err}"
            ) from err
        return _module_spec(module, path.stem, f"model file {spec}")
    try:
        module = zoo.load(spec)
    except KeyError as err:
        raise UsageError(err.args[0]) from None
    return _module_spec(module, spec, f"zoo model {spec}")
