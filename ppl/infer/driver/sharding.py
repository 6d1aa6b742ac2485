"""Device meshes for MCMC: chains over a "chain" axis, per-row data over a "data" axis.

A run on several devices (or processes) is the single-device program with its inputs
placed on a :class:`jax.sharding.Mesh`: chain-batched arrays (keys, positions, sampler
state, draw buffers) are split along their first axis over the mesh's ``"chain"`` axis,
and the model arguments named in ``MCMC(..., shard_data=...)`` along their rows over its
``"data"`` axis. XLA partitions the compiled program accordingly: each device evaluates the
log-likelihood of its rows for its chains and the partial sums (and gradients) are
all-reduced across the ``"data"`` axis. Nothing else changes, so the draws equal the
single-device draws up to the order of floating-point sums.

Several processes (``jax.distributed.initialize``) form one global mesh the same way;
:func:`to_host` gathers results onto every process and :func:`broadcast_int` keeps host-side
decisions (progress-bar chunk sizes) identical across processes, as the collectives need.
:mod:`ppl.infer.driver.chains` places the chains with these helpers and ``MCMC``
(:mod:`ppl.infer.driver.mcmc`) checks the mesh and places the data.

Example:
    >>> mesh = make_mesh(chains=1)
    >>> dict(mesh.shape)
    {'chain': 1}
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["AXES", "make_mesh", "multiprocess", "spans_processes", "to_host"]

AXES = ("chain", "data")  # the axis names MCMC understands


def multiprocess() -> bool:
    """True in a multi-process (``jax.distributed``) run."""
    return jax.process_count() > 1


def spans_processes(mesh: Mesh | None) -> bool:
    """True when ``mesh`` holds devices of other processes (its runs are collective)."""
    if mesh is None or not multiprocess():
        return False
    me = jax.process_index()
    return any(d.process_index != me for d in mesh.devices.flat)


def make_mesh(
    chains: int | None = None,
    data: int | None = None,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A mesh with a ``"chain"`` axis and, when ``data`` is given, a ``"data"`` axis.

    Args:
        chains: devices along the chain axis (default: all devices left after ``data``).
        data: devices along the data axis (default: no data axis).
        devices: the devices to use, in order (default ``jax.devices()``, all processes'
            devices in a ``jax.distributed`` run). The first ``chains * data`` are used; the
            data axis varies fastest, so a data group stays on neighbouring devices (one
            host, when each host holds ``data`` or a multiple of it).

    Returns:
        A :class:`jax.sharding.Mesh` of shape ``(chains,)`` or ``(chains, data)`` with axis
        names ``("chain",)`` or ``("chain", "data")``.

    Example:
        >>> make_mesh(chains=1, data=1).axis_names
        ('chain', 'data')
    """
    devices = list(jax.devices() if devices is None else devices)
    with_data = data is not None
    data = 1 if data is None else data
    if not isinstance(data, int) or isinstance(data, bool) or data < 1:
        raise ValueError(f"data must be a positive int, got {data!r}")
    if chains is None:
        chains = len(devices) // data
        if chains < 1:
            raise ValueError(
                f"a data axis of size {data} needs {data} devices; {len(devices)} seen"
            )
    if not isinstance(chains, int) or isinstance(chains, bool) or chains < 1:
        raise ValueError(f"chains must be a positive int, got {chains!r}")
    if chains * data > len(devices):
        raise ValueError(
            f"a mesh of {chains} (chain) x {data} (data) devices needs {chains * data} devices, "
            f"but only {len(devices)} are available ({devices[0].platform}); on CPU, set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={chains * data} before JAX starts"
        )
    grid = np.array(devices[: chains * data], dtype=object)
    if not with_data:
        return Mesh(grid, ("chain",))
    return Mesh(grid.reshape(chains, data), ("chain", "data"))


def check_mesh(mesh: Any, num_chains: int) -> Mesh:
    """Validate a user's mesh for ``num_chains`` chains; returns it."""
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"mesh must be a jax.sharding.Mesh (e.g. ppl.infer.make_mesh(chains=4)), got {mesh!r}"
        )
    names = tuple(mesh.axis_names)
    unknown = [n for n in names if n not in AXES]
    if unknown or not names:
        raise ValueError(
            f"mesh axes must be named from {AXES} (chains over 'chain', per-row data over "
            f"'data'); got axis names {names}"
        )
    chains = mesh.shape.get("chain", 1)
    if num_chains % chains:
        raise ValueError(
            f"num_chains={num_chains} cannot be split over the mesh's 'chain' axis of size "
            f"{chains}: use a multiple of {chains} chains or a smaller chain axis"
        )
    return mesh


def chain_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (chain) axis split over ``"chain"``, replicated over ``"data"``."""
    return NamedSharding(mesh, PartitionSpec("chain" if "chain" in mesh.axis_names else None))


def replicated(mesh: Mesh) -> NamedSharding:
    """A copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def place(tree: Any, sharding: NamedSharding | Any) -> Any:
    """Put every array of ``tree`` on ``sharding`` (one sharding, or a matching tree of them).

    Works across processes: each process gives the same (host) values, and gets the global
    array. PRNG key arrays keep their key type.
    """
    if isinstance(sharding, NamedSharding):
        shardings = jax.tree.map(lambda _: sharding, tree)
    else:
        shardings = sharding
    return jax.tree.map(_place_one, tree, shardings)


def _place_one(x: Any, sharding: NamedSharding) -> Any:
    if x is None:
        return None
    typed = isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    if not multiprocess() or (isinstance(x, jax.Array) and not x.is_fully_addressable):
        return jax.device_put(x, sharding)  # (a global array: resharded by a collective)
    # across processes device_put takes host values (the same on every process)
    if typed:
        data = jax.device_put(np.asarray(jax.random.key_data(x)), sharding)
        impl = jax.random.key_impl(x)
        return jax.jit(lambda d: jax.random.wrap_key_data(d, impl=impl))(data)
    return jax.device_put(np.asarray(x), sharding)


def to_host(tree: Any) -> Any:
    """Every array of ``tree`` as a numpy array holding all of it (gathered across processes).

    A collective in a multi-process run: every process must call it. PRNG key arrays become
    their key data.
    """

    def one(x):
        if x is None or not isinstance(x, jax.Array):
            return x if x is None else np.asarray(x)
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        if x.is_fully_addressable:
            return np.asarray(x)
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)


def to_local(tree: Any) -> Any:
    """Arrays that span several processes gathered onto this process's default device (a
    collective: every process must call it); arrays this process holds whole are unchanged."""

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(x)
            return jax.random.wrap_key_data(jax.numpy.asarray(to_host(x)), impl=impl)
        return jax.numpy.asarray(to_host(x))

    return jax.tree.map(one, tree)


def broadcast_int(value: int, mesh: Mesh | None) -> int:
    """Process 0's ``value`` on every process (a collective) when ``mesh`` spans processes;
    else ``value``."""
    if not spans_processes(mesh):
        return int(value)
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def broadcast(tree: Any, mesh: Mesh | None) -> Any:
    """Process 0's arrays on every process (as local arrays) when ``mesh`` spans processes,
    so that host-computed inputs (initial points) agree exactly; else unchanged."""
    if not spans_processes(mesh):
        return tree
    from jax.experimental import multihost_utils

    def one(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(x)
            data = multihost_utils.broadcast_one_to_all(np.asarray(jax.random.key_data(x)))
            return jax.random.wrap_key_data(jax.numpy.asarray(data), impl=impl)
        return jax.numpy.asarray(multihost_utils.broadcast_one_to_all(np.asarray(x)))

    return jax.tree.map(one, tree)


# ---------------------------------------------------------------------- data


def data_shardings(
    ld: Any, data_tree: dict, shard_data: Sequence[str], mesh: Mesh | None
) -> dict | None:
    """Shardings (a tree like ``ld.data_tree()``) for a model's data on ``mesh``.

    The array leaves of the arguments named in ``shard_data`` are split along their first
    axis (rows) over ``"data"``; everything else is replicated.

    Raises:
        ValueError naming the argument when a name is not an argument of the model, when an
        array has no rows, or when its rows do not divide the data axis.
    """
    if mesh is None:
        return None
    rep = replicated(mesh)
    if not shard_data:
        return jax.tree.map(lambda _: rep, data_tree)
    rows = NamedSharding(mesh, PartitionSpec("data"))
    data_size = mesh.shape.get("data", 1)
    model = getattr(ld, "model", None)
    if model is None:
        raise ValueError(
            "shard_data= names model arguments, but this kernel has a plain log-density "
            "function without data"
        )
    bound = _bind(model, ld.args, ld.kwargs, shard_data)
    leaves = jax.tree.leaves((ld.args, ld.kwargs))
    marks = _marks_by_path(ld.args, ld.kwargs, bound)  # a name or None per leaf
    shardings = []
    concrete = set(ld._concrete_leaves())
    for i, (leaf, name) in enumerate(zip(leaves, marks, strict=True)):
        if i in concrete and name is not None:
            raise ValueError(
                f"shard_data: the model needs the values of argument '{name}' while it is "
                "compiled (e.g. np.unique or int() on it), so they are compiled in and "
                "cannot be split over devices; compute what the model needs from it outside "
                "and pass that as an argument instead"
            )
        if not isinstance(leaf, (jax.Array, np.ndarray)) or i in concrete:
            continue  # static: not part of the data tree
        if name is None:
            shardings.append(rep)
            continue
        shape = np.shape(leaf)
        if not shape:
            raise ValueError(
                f"shard_data: argument '{name}' holds a scalar array, which has no rows to split"
            )
        if shape[0] % data_size:
            raise ValueError(
                f"shard_data: argument '{name}' has {shape[0]} rows (shape {shape}), which the "
                f"mesh's 'data' axis of size {data_size} does not divide; drop or add rows "
                f"(with a mask in the model) to a multiple of {data_size}, or change the axis size"
            )
        shardings.append(rows)
    if len(shardings) != len(data_tree["args"]):  # pragma: no cover - split_data invariant
        raise RuntimeError("internal error: data leaves and shardings do not match")
    return {"args": shardings, "fixed": jax.tree.map(lambda _: rep, data_tree["fixed"])}


def _bind(model, args, kwargs, names) -> dict:
    """``{("arg", i) or ("kw", key): name}`` for the named arguments."""
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    fn = getattr(model, "__wrapped__", model)
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    where: dict = {}
    for i in range(len(args)):
        if i < len(positional):
            where[positional[i]] = ("arg", i)
    for key in kwargs:
        where[key] = ("kw", key)
    out = {}
    for name in names:
        if name not in where:
            given = sorted(where)
            raise ValueError(
                f"shard_data names '{name}', which is not an argument given to the model "
                f"(arguments given: {given})"
            )
        out[where[name]] = name
    return out


def _marks_by_path(args, kwargs, bound) -> list:
    leaves_with_path, _ = jax.tree_util.tree_flatten_with_path((args, kwargs))
    marks = []
    for path, _ in leaves_with_path:
        top, index = path[0].idx, path[1]
        key = ("arg", index.idx) if top == 0 else ("kw", index.key)
        marks.append(bound.get(key))
    return marks
