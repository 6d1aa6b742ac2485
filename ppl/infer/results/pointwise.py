"""The pointwise groups (log_likelihood, posterior_predictive) in blocks of draws, and their
size limit.

These groups hold a value per draw *and* per observation: 4 chains x 1000 draws of a
model with 10^6 observations make 4e9 values each (16 GB in float32). Here they are
computed a block of draws at a time (one compiled program, reused for every block; each
block's output at most :data:`BLOCK_VALUES` values) into one pre-allocated NumPy array, so
the memory beyond the result stays bounded, and a :class:`PointwisePolicy` decides whether
a group is computed at all:

- :func:`pointwise_log_likelihood` and :func:`pointwise_posterior_predictive` compute them;
- :func:`pointwise_policy` (a context manager) sets the policy for the DataTree builders
  (:mod:`ppl.infer.results.datatree`) and the command line's runs (:mod:`ppl.runs`); outside
  it every group is computed, in the model's precision (the library's behaviour);
- :func:`skip_reason` says why a group is left out under the current policy, and
  :func:`record_skip` notes it in the DataTree's root attribute :data:`SKIPPED_ATTR`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from ppl.handlers import seed, substitute, trace
from ppl.infer.keys import check_key
from ppl.infer.results.predictive import _batch_size as _batch_shape
from ppl.infer.results.predictive import _unobserved, log_likelihood

__all__ = [
    "BLOCK_VALUES",
    "POINTWISE_MAX_VALUES",
    "POINTWISE_MODES",
    "SKIPPED_ATTR",
    "PointwisePolicy",
    "current_policy",
    "num_pointwise_values",
    "pointwise_log_likelihood",
    "pointwise_policy",
    "pointwise_posterior_predictive",
    "record_skip",
    "skip_reason",
    "skipped_groups",
]

POINTWISE_MAX_VALUES = 10**8
"""The most values (draws x observed values) of one pointwise group under ``mode="auto"``.

10^8 float32 values are 400 MB in memory and on disk per group, 800 MB for both: a run
stays well inside a laptop's memory, and ``ppl summary``'s PSIS-LOO (one Pareto fit per
observation, about 1 ms each at 4000 draws) stays within about 30 s. It keeps both groups
of every run up to 25,000 observations at the defaults (4 chains x 1000 draws)."""

BLOCK_VALUES = 1 << 23
"""Values per block of draws (8M: 32 MB in float32); a block holds at least one draw."""

POINTWISE_MODES = ("auto", "always", "never")
SKIPPED_ATTR = "ppl_pointwise_skipped"
"""Root attribute: JSON ``{group: {"reason", "draws", "observed_values", "values",
"limit"}}`` for each pointwise group left out."""

GROUPS = ("log_likelihood", "posterior_predictive")


@dataclasses.dataclass(frozen=True)
class PointwisePolicy:
    """How the pointwise groups are built.

    Attributes:
        mode: "always" (every group), "never" (none) or "auto" (a group of at most
            ``max_values`` values).
        max_values: the limit of "auto", draws x observed values per group.
        dtype: the dtype of floating results (e.g. ``np.float32``), or None for the model's.
        block_values: values per block of draws (:data:`BLOCK_VALUES`).
    """

    mode: str = "always"
    max_values: int = POINTWISE_MAX_VALUES
    dtype: Any = None
    block_values: int = BLOCK_VALUES

    def __post_init__(self):
        if self.mode not in POINTWISE_MODES:
            raise ValueError(
                f"pointwise mode must be one of {', '.join(POINTWISE_MODES)}, got {self.mode!r}"
            )


_DEFAULT = PointwisePolicy()
_POLICY: contextvars.ContextVar[PointwisePolicy | None] = contextvars.ContextVar(
    "ppl_pointwise_policy", default=None
)


def current_policy() -> PointwisePolicy:
    """The policy in force (the innermost :func:`pointwise_policy`, else the default)."""
    return _POLICY.get() or _DEFAULT


@contextlib.contextmanager
def pointwise_policy(
    mode: str = "auto",
    max_values: int | None = None,
    dtype: Any = np.float32,
    block_values: int = BLOCK_VALUES,
) -> Iterator[PointwisePolicy]:
    """Build the pointwise groups under this policy inside the ``with`` block
    (``max_values`` defaults to :data:`POINTWISE_MAX_VALUES`, read at the call).

    Example:
        >>> with pointwise_policy("never"):
        ...     current_policy().mode
        'never'
    """
    limit = POINTWISE_MAX_VALUES if max_values is None else int(max_values)
    token = _POLICY.set(PointwisePolicy(mode, limit, dtype, int(block_values)))
    try:
        yield current_policy()
    finally:
        _POLICY.reset(token)


def num_pointwise_values(ld, group: str) -> int:
    """Values per draw of ``group`` for the observed sites of ``ld``: the observations
    (the sites' batch shapes) for log_likelihood, every value for posterior_predictive."""
    total = 0
    for info in ld.sites.values():
        if info.kind != "observed":
            continue
        shape = tuple(info.shape)
        if group == "log_likelihood" and info.event_shape:
            shape = shape[: len(shape) - len(info.event_shape)]
        total += math.prod(shape)
    return total


def skip_reason(ld, group: str, num_draws: int) -> dict | None:
    """Why ``group`` is left out under the current policy (a JSON-able dict), or None."""
    policy = current_policy()
    per_draw = num_pointwise_values(ld, group)
    values = int(num_draws) * per_draw
    sizes = {"draws": int(num_draws), "observed_values": per_draw, "values": values}
    if policy.mode == "never":
        return {"reason": "--pointwise never", **sizes, "limit": 0}
    if policy.mode == "auto" and values > policy.max_values:
        return {
            "reason": f"{values:.3g} values (draws x observed values) exceed the limit "
            f"{policy.max_values:.3g}",
            **sizes,
            "limit": policy.max_values,
        }
    return None


def skipped_groups(tree) -> dict:
    """The pointwise groups a run left out, ``group -> reason dict`` (empty when none)."""
    text = tree.attrs.get(SKIPPED_ATTR)
    if not text:
        return {}
    try:
        out = json.loads(str(text))
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def record_skip(tree, group: str, reason: dict) -> None:
    """Note in ``tree``'s root attribute :data:`SKIPPED_ATTR` that ``group`` was left out."""
    skipped = skipped_groups(tree)
    skipped[group] = reason
    tree.attrs[SKIPPED_ATTR] = json.dumps(skipped, sort_keys=True)


def _in_blocks(
    ld,
    block_fn: Callable,
    draws: dict,
    batch_ndims: int,
    per_draw: int,
    extra: Any = None,
) -> dict[str, np.ndarray]:
    """Run ``block_fn(ld, block_draws, block_extra)`` over blocks of the flattened draws.

    ``block_fn`` maps a block (leading dim B) to ``site -> (B, ...)``; it is compiled once
    with the model's array data as traced inputs (:meth:`ppl.LogDensity.data_tree`), and
    the last block is padded to the same size. Results go into pre-allocated arrays of
    the policy's dtype (floats) with the batch shape prepended.
    """
    policy = current_policy()
    batch_shape = _batch_shape(draws, batch_ndims)
    n = math.prod(batch_shape)
    flat = {k: np.reshape(np.asarray(v), (n, *np.shape(v)[batch_ndims:])) for k, v in draws.items()}
    size = max(1, min(n, policy.block_values // max(per_draw, 1)))
    jitted = jax.jit(lambda data, block, more: block_fn(ld.with_data_tree(data), block, more))
    data = ld.data_tree()
    out: dict[str, np.ndarray] = {}
    for start in range(0, n, size):
        stop = min(start + size, n)
        index = np.minimum(np.arange(start, start + size), n - 1)  # pad with the last draw
        block = {k: v[index] for k, v in flat.items()}
        more = None if extra is None else extra[index]
        values = jitted(data, block, more)
        for name, value in values.items():
            value = np.asarray(value)[: stop - start]
            if name not in out:
                dtype = value.dtype
                if policy.dtype is not None and np.issubdtype(dtype, np.floating):
                    dtype = np.dtype(policy.dtype)
                out[name] = np.empty((n, *value.shape[1:]), dtype)
            out[name][start:stop] = value
    return {k: v.reshape(batch_shape + v.shape[1:]) for k, v in out.items()}


def pointwise_log_likelihood(ld, latent: dict, batch_ndims: int = 2) -> dict[str, np.ndarray]:
    """Each observed site's pointwise log-likelihood at every draw, a block of draws at a
    time (see :func:`ppl.infer.results.predictive.log_likelihood`, whose values it equals).

    Args:
        ld: the model with its data (:class:`ppl.LogDensity`).
        latent: ``latent site -> (*batch, *site shape)`` constrained draws.
        batch_ndims: leading batch dims of the draws (2: chain, draw).

    Returns:
        ``observed site -> (*batch, *site batch shape)`` NumPy arrays (the current policy's
        dtype).
    """

    def block_fn(ld_, block, _):
        return log_likelihood(ld_.model, block, *ld_.args, batch_ndims=1, **ld_.kwargs)

    per_draw = num_pointwise_values(ld, "log_likelihood")
    return _in_blocks(ld, block_fn, latent, batch_ndims, per_draw)


def pointwise_posterior_predictive(
    ld, latent: dict, observed_names: list[str], key: Any, batch_ndims: int = 2
) -> dict[str, np.ndarray]:
    """Replicated data of ``observed_names`` at every draw, a block of draws at a time.

    Equal to :func:`ppl.infer.results.predictive.posterior_predictive` with the same key
    (draw ``i`` uses the ``i``-th of ``jax.random.split(key, num_draws)``).

    Returns:
        ``site -> (*batch, *site shape)`` NumPy arrays.
    """
    names = list(observed_names)
    n = math.prod(_batch_shape(latent, batch_ndims))
    keys = jax.random.split(check_key(key), n)

    def block_fn(ld_, block, block_keys):
        model = _unobserved(ld_.model, set(names))

        def one(k, draw):
            tr = trace(substitute(seed(model, rng_seed=k), data=draw)).get_trace(
                *ld_.args, **ld_.kwargs
            )
            return {name: tr[name]["value"] for name in names}

        return jax.vmap(one)(block_keys, block)

    per_draw = num_pointwise_values(ld, "posterior_predictive")
    return _in_blocks(ld, block_fn, latent, batch_ndims, per_draw, extra=keys)
