"""A model's data: which of its arguments are traced inputs of the compiled functions.

A :class:`ppl.LogDensity` passes the array leaves of the model's arguments as traced
inputs of its compiled functions, so that models of the same layout share them
(:func:`split_data` / :func:`join_data`). A model that needs the values of some of them
while it is traced (``np.unique(dept)``, ``int(np.max(x))``) gets those compiled in
instead (:func:`find_concrete_leaves`, one abstract trace for a model that needs none).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "argument_names",
    "array_arguments",
    "rectangular_array",
    "find_concrete_leaves",
    "join_data",
    "model_function",
    "split_data",
]


def _plain_numbers(value: Any) -> bool:
    """A (nested) list or tuple whose every leaf is a Python number or bool."""
    if isinstance(value, list | tuple):
        return all(_plain_numbers(v) for v in value)
    return isinstance(value, bool | int | float) and not isinstance(value, np.generic)


def _ragged_detail(value: list) -> str:
    """Where a nested list stops being rectangular, e.g. "rows of lengths 2, 3"."""
    lengths = [len(v) if isinstance(v, list | tuple) else None for v in value]
    if any(n is None for n in lengths) and any(n is not None for n in lengths):
        return "numbers and lists mixed at the top level"
    shown = sorted({n for n in lengths if n is not None})
    if len(shown) > 1:
        return "rows of lengths " + ", ".join(str(n) for n in shown[:5])
    for v in value:  # the rows agree; look one level down
        if isinstance(v, list | tuple):
            return "in a row: " + _ragged_detail(v)
    return "not an array of numbers"


def rectangular_array(value: list) -> np.ndarray:
    """``np.asarray`` of a nested list of numbers.

    Raises:
        ValueError: the list is ragged; the message says where ("rows of lengths 2, 3").
    """
    try:
        out = np.asarray(value)
    except ValueError:  # NumPy refuses ragged nested lists
        out = None
    if out is None or out.dtype == object:
        raise ValueError(_ragged_detail(value))
    return out


def array_arguments(model: Callable, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The model's arguments with each top-level list of plain numbers as a JAX array (of
    JAX's default dtypes), as a data file's lists become: models index and broadcast data
    (``y.shape``, ``y - mu``), which a Python list does not support. Lists holding arrays
    stay pytrees.

    Raises:
        TypeError: a ragged list of numbers, naming the argument and its row lengths.
    """

    def convert(name: str, value: Any) -> Any:
        if not isinstance(value, list) or not value or not _plain_numbers(value):
            return value
        try:
            out = rectangular_array(value)
        except ValueError as err:
            raise TypeError(
                f"model argument {name!r} is a ragged list ({err}): pass a rectangular "
                "array (numpy or jax.numpy), or a list of arrays"
            ) from None
        return jnp.asarray(out)  # JAX's default dtypes, as a data file's lists get

    leaves = [
        ((jax.tree_util.SequenceKey(0), jax.tree_util.SequenceKey(i)), a)
        for i, a in enumerate(args)
    ]
    names = argument_names(model, leaves) if args else []
    new_args = tuple(convert(n, a) for n, a in zip(names, args, strict=True))
    new_kwargs = {k: convert(k, v) for k, v in kwargs.items()}
    return new_args, new_kwargs


def split_data(args: tuple, kwargs: dict, concrete: tuple[int, ...] = ()) -> tuple[list, tuple]:
    """Split model arguments into arrays (traced inputs) and a hashable static rest.

    Args:
        args, kwargs: the model's arguments.
        concrete: indices of array leaves to keep in the static rest (a model that needs
            their values, see :attr:`ppl.LogDensity.concrete_arguments`).

    Returns:
        ``(arrays, structure)``: the array leaves (with strong dtypes, so that
        ``jnp.full(5, 1.0)`` and ``jnp.zeros(5)`` share compiled code) and a
        hashable description of everything else, for :func:`join_data`.
    """
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
    is_array = tuple(
        isinstance(x, (jax.Array, np.ndarray)) and i not in concrete for i, x in enumerate(leaves)
    )
    arrays = [jnp.asarray(x, dtype=x.dtype) for x, a in zip(leaves, is_array, strict=True) if a]
    static = tuple(None if a else x for x, a in zip(leaves, is_array, strict=True))
    return arrays, (treedef, is_array, static)


def join_data(arrays: list, structure: tuple) -> tuple[tuple, dict]:
    """Inverse of :func:`split_data`: ``(args, kwargs)``."""
    treedef, is_array, static = structure
    it = iter(arrays)
    leaves = [next(it) if a else x for a, x in zip(is_array, static, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


# errors of a model that needs a concrete value where JAX traces it
CONCRETE_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.NonConcreteBooleanIndexError,
)


def find_concrete_leaves(ld: Any) -> tuple[int, ...]:
    """Indices of the array argument leaves that the model needs as concrete values.

    One abstract trace of the log density with every array argument traced; only if it
    fails for want of a concrete value, one with all of them concrete and then one per
    array leaf, to keep traced those that can be.

    Raises:
        TypeError when even concrete arguments do not help: the model then needs a
        concrete value of something that depends on the latent sites.
    """
    leaves = jax.tree_util.tree_leaves((ld.args, ld.kwargs))
    candidates = [i for i, x in enumerate(leaves) if isinstance(x, (jax.Array, np.ndarray))]
    if not candidates:
        return ()
    theta = jax.ShapeDtypeStruct((ld.dim,), jnp.result_type(float))

    def failure(concrete: tuple[int, ...]) -> Exception | None:
        arrays, structure = split_data(ld.args, ld.kwargs, concrete)

        def log_density(arrays, fixed, theta):
            args, kwargs = join_data(arrays, structure)
            return ld.with_data(args, kwargs, fixed)(theta)

        try:
            jax.eval_shape(log_density, arrays, ld._fixed, theta)
        except CONCRETE_ERRORS as err:
            return err
        return None

    if failure(()) is None:
        return ()
    err = failure(tuple(candidates))
    if err is not None:
        summary = str(err).strip().splitlines()[0]
        raise TypeError(
            "the model needs a concrete value where ppl compiles it, even with its array "
            f"arguments held fixed ({type(err).__name__}: {summary}). A value that depends "
            "on the latent sites is abstract inside the compiled log density: use jax.numpy "
            "(jnp.where, jax.lax.cond) on it instead of NumPy, int(), float(), bool() or a "
            "Python `if`"
        ) from err
    # keep traced every argument that can be; one traced argument may need another one
    # traced too (numpyro checks a concrete observation against a traced bound with NumPy)
    concrete, changed = tuple(candidates), True
    while changed:
        changed = False
        for i in concrete:
            trial = tuple(j for j in concrete if j != i)
            if failure(trial) is None:
                concrete, changed = trial, True
    return concrete


def model_function(model: Callable | None) -> Any:
    """The function a model is: unwrapped from decorators and from handlers (ppl's or
    NumPyro's) used as decorators."""
    model = inspect.unwrap(model)
    while not inspect.isfunction(model) and callable(getattr(model, "fn", None)):
        model = inspect.unwrap(model.fn)
    return model


def argument_names(model: Callable | None, leaves: list) -> list[str]:
    """A readable name per ``(path, leaf)`` of ``tree_flatten_with_path((args, kwargs))``:
    the model's parameter name (from its signature), and the path inside the argument."""
    model = model_function(model)
    try:
        params = [
            p.name
            for p in inspect.signature(model).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    names = []
    for path, _ in leaves:
        group, first, rest = path[0].idx, path[1], path[2:]
        if group == 1:
            base = str(first.key)
        elif first.idx < len(params):
            base = params[first.idx]
        else:
            base = f"argument {first.idx}"
        names.append(base + jax.tree_util.keystr(rest))
    return names
