"""Sum enumerated discrete sites out of a model's log density: log-space variable elimination.

The input is a model's trace run under :class:`ppl.enumeration.Enumerate`: every sample
site's log-probability is a tensor whose dims are plate dims (rightmost) and enumeration
dims (left of them, one per enumerated site). The log marginal density is

    log sum_{enumerated values} exp(sum of all the sites' log-probabilities),

where the product over a plate's elements (a sum of logs along its dim) may be taken only
once no enumerated site inside that plate is left. :func:`log_marginal` does it plate by
plate, innermost plate set first (a site enumerated inside a plate of N costs O(N K), not
K^N), and within one plate set eliminates one dim at a time, choosing the dim whose
elimination builds the smallest tensor (greedy variable elimination). Sites stacked by a
``ppl.scan`` whose enumerated values are carried over time form a chain, summed by a
backward recursion over the steps (O(T K^2) for a hidden Markov model, not K^T).

The same pass with ``max`` in place of ``logsumexp`` gives max-marginals for MAP values;
:mod:`ppl.infer.discrete` uses it to draw the enumerated sites.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ppl.sites import site_log_prob_tensor

__all__ = [
    "MAX_TENSOR_SIZE",
    "Factor",
    "factors",
    "log_marginal",
    "pointwise_log_marginal",
    "sum_product",
]

#: Largest intermediate tensor (number of elements) an enumeration may build; above it,
#: compiling the log density raises an error naming the sites and the shape.
MAX_TENSOR_SIZE = 2**26


class Factor(NamedTuple):
    """A log-probability tensor with the plates it lies in.

    Attributes:
        tensor: the log values; enumeration and plate dims are negative dims.
        plates: the ``(name, dim, size)`` frames of the plates it lies in.
        sites: names of the sites it came from (for error messages).
    """

    tensor: jax.Array
    plates: frozenset
    sites: tuple[str, ...]


def _reduce(op: str) -> Callable:
    if op == "logsumexp":
        return lambda x, axis: jax.nn.logsumexp(x, axis=axis, keepdims=True)
    if op == "max":
        return lambda x, axis: jnp.max(x, axis=axis, keepdims=True)
    raise ValueError(f"unknown reduction {op!r}")


def has_dim(tensor: jax.Array, dim: int) -> bool:
    """Whether ``tensor`` varies along negative ``dim`` (has it, with size above 1)."""
    return jnp.ndim(tensor) >= -dim and jnp.shape(tensor)[dim] > 1


def _check_size(shape: tuple, factors_: list[Factor], site_of: dict) -> None:
    size = math.prod(shape)
    if size > MAX_TENSOR_SIZE:
        sites = sorted({s for f in factors_ for s in f.sites})
        dims = {d: site_of[d] for d in site_of if -d <= len(shape) and shape[d] > 1}
        raise MemoryError(
            f"summing out the enumerated sites {sorted(set(dims.values()))} needs a tensor "
            f"of shape {shape} ({size:,} elements, over the limit "
            f"ppl.contraction.MAX_TENSOR_SIZE = {MAX_TENSOR_SIZE:,}), joining the "
            f"log-probabilities of the sites {sites}. Put the enumerated sites in plates, "
            "make fewer of them depend on each other, or marginalize some by hand"
        )


def _combine(group: list[Factor], site_of: dict) -> Factor:
    shape = jnp.broadcast_shapes(*(jnp.shape(f.tensor) for f in group))
    _check_size(shape, group, site_of)
    total = group[0].tensor
    for f in group[1:]:
        total = total + f.tensor
    return Factor(total, group[0].plates, tuple(s for f in group for s in f.sites))


def _sum_plates(tensor: jax.Array, frames) -> jax.Array:
    for frame in frames:
        _, dim, size = frame
        if jnp.ndim(tensor) >= -dim and jnp.shape(tensor)[dim] == size:
            tensor = jnp.sum(tensor, axis=dim, keepdims=True)
        else:  # does not vary along the plate: the product repeats it size times
            tensor = tensor * size
    return tensor


def sum_product(
    factors_: list[Factor],
    eliminate: set[int],
    var_plates: dict[int, frozenset],
    site_of: dict[int, str],
    op: str = "logsumexp",
) -> list[Factor]:
    """Eliminate the enumeration dims ``eliminate`` and the plates they leave behind.

    Args:
        factors_: the log factors.
        eliminate: enumeration dims to sum (or max) out.
        var_plates: for each enumeration dim, the plate frames its site lies in.
        site_of: site name of each enumeration dim (for error messages).
        op: "logsumexp" (marginal) or "max" (max-marginal).

    Returns:
        The remaining factors: each depends only on dims not eliminated and lies in the
        plates of those (a factor that depends on none is summed to a scalar).
    """
    reduce = _reduce(op)
    pending: dict[frozenset, list[Factor]] = {}
    for f in factors_:
        pending.setdefault(f.plates, []).append(f)
    done: list[Factor] = []
    while pending:
        plates = max(pending, key=len)
        group = pending.pop(plates)
        local = [d for d in eliminate if var_plates[d] == plates and _any_has(group, d)]
        while local:
            dim = min(local, key=lambda d: _elimination_size(group, d))
            local.remove(dim)
            touching = [f for f in group if has_dim(f.tensor, dim)]
            rest = [f for f in group if not has_dim(f.tensor, dim)]
            joined = _combine(touching, site_of)
            group = [*rest, joined._replace(tensor=reduce(joined.tensor, dim))]
        for f in group:
            kept = [d for d in site_of if has_dim(f.tensor, d)]
            left = [d for d in kept if not var_plates[d] <= plates]
            if left:
                raise ValueError(
                    f"cannot sum out the enumerated site '{site_of[left[0]]}': a factor of "
                    f"sites {sorted(set(f.sites))} in plates "
                    f"{sorted(p[0] for p in f.plates)} depends on it outside the plates it "
                    f"lies in ({sorted(p[0] for p in var_plates[left[0]])})"
                )
            parent = frozenset().union(*(var_plates[d] for d in kept)) & plates
            tensor = _sum_plates(f.tensor, plates - parent)
            if parent == plates:
                done.append(f._replace(tensor=tensor))
            else:
                pending.setdefault(parent, []).append(Factor(tensor, parent, f.sites))
    return done


def _any_has(group: list[Factor], dim: int) -> bool:
    return any(has_dim(f.tensor, dim) for f in group)


def _elimination_size(group: list[Factor], dim: int) -> int:
    shape = jnp.broadcast_shapes(*(jnp.shape(f.tensor) for f in group if has_dim(f.tensor, dim)))
    return math.prod(shape)


# ---------------------------------------------------------------------- from a trace


def factors(trace: dict) -> tuple[jax.Array, list[Factor], dict[int, list[Factor]]]:
    """Split a traced model's sample sites into a plain sum and enumerated factors.

    Returns:
        ``(total, outer, scanned)``: the summed log-probability of the sites that depend
        on no enumerated value; the factors outside scans that do; and, per scan id,
        the factors of that scan's stacked sites that do (time axis leading).
    """
    total = jnp.zeros(())
    outer: list[Factor] = []
    scanned: dict[int, list[Factor]] = {}
    enum_sites = {
        site["infer"]["enum_dim"]: name
        for name, site in trace.items()
        if site["type"] == "sample" and "enum_dim" in site["infer"]
    }
    for name, site in trace.items():
        if site["type"] != "sample":
            continue
        tensor = site_log_prob_tensor(site)
        if site["mask"] is not None:
            tensor = jnp.where(site["mask"], tensor, 0.0)
        if site["scale"] is not None:
            tensor = site["scale"] * tensor
        scan = site["infer"].get("scan")
        body = tensor if scan is None or scan.batch_ndim is None else tensor[0]
        if not any(has_dim(body, d) for d in enum_sites) and not (
            scan is not None and scan.batch_ndim is not None and _scan_dims(scan, body)
        ):
            total = total + jnp.sum(tensor)
            continue
        plates = frozenset(tuple(f) for f in site["cond_indep_stack"])
        factor = Factor(tensor, plates, (name,))
        if scan is None:
            outer.append(factor)
        else:
            scanned.setdefault(scan.id, []).append(factor)
    return total, outer, scanned


def _scan_dims(scan, body: jax.Array) -> bool:
    dims = [d for window in scan.markov for d in window] + list(scan.local)
    return any(has_dim(body, d) for d in dims)


def log_marginal(trace: dict, op: str = "logsumexp") -> jax.Array:
    """The model's log density with every enumerated site summed out (``op="max"``: maxed).

    Args:
        trace: a trace of the model run under :class:`ppl.enumeration.Enumerate`.
    """
    total, outer, scanned = factors(trace)
    var_plates, site_of = variable_plates(trace)
    for scan_id, group in scanned.items():
        info = _scan_info(trace, scan_id)
        outer.extend(chain_factor(group, info, var_plates, site_of, op))
    eliminate = set(site_of)
    for f in sum_product(outer, eliminate, var_plates, site_of, op):
        total = total + jnp.sum(f.tensor)
    return total


def variable_plates(trace: dict) -> tuple[dict, dict]:
    """The plate frames of each enumeration dim's site, and each dim's site name."""
    var_plates: dict[int, frozenset] = {}
    site_of: dict[int, str] = {}
    for name, site in trace.items():
        if site["type"] != "sample" or "enum_dim" not in site["infer"]:
            continue
        plates = frozenset(tuple(f) for f in site["cond_indep_stack"])
        var_plates[site["infer"]["enum_dim"]] = plates
        site_of[site["infer"]["enum_dim"]] = name
        scan = site["infer"].get("scan")
        if scan is not None:
            for window in scan.markov:
                if window[0] == site["infer"]["enum_dim"]:
                    for lag, dim in enumerate(window[1:], 1):
                        var_plates[dim] = plates
                        site_of[dim] = f"{name} ({lag} step{'s' if lag > 1 else ''} before)"
    return var_plates, site_of


def _scan_info(trace: dict, scan_id: int):
    for site in trace.values():
        scan = site["infer"].get("scan") if site["type"] == "sample" else None
        if scan is not None and scan.id == scan_id:
            return scan
    raise KeyError(scan_id)


def chain_factor(
    group: list[Factor],
    info,
    var_plates: dict,
    site_of: dict,
    op: str = "logsumexp",
    keep: tuple[int, ...] = (),
) -> list[Factor]:
    """Sum the enumerated sites of one scan out: per step, then along the chain over time.

    The factors (time axis leading, then ``info.batch_ndim`` dims) are first reduced
    within each step (the sites not carried, and inner plates), leaving one factor of the
    carried sites at the current and the previous step (:func:`step_factor`). A backward
    recursion over time then sums the chain; the first step's "previous" values are
    copies of the initial carry, so index 0 is taken there. Returns factors of the dims
    outside the scan (and of ``keep``, dims of sites not carried, left in).
    """
    time_dim = -(info.batch_ndim + 1)
    if not info.markov:
        # steps independent: the time axis is one more plate
        frame = (f"{info.dim} (scan {info.id})", time_dim, info.length)
        group = [f._replace(tensor=_pad(f.tensor, info.batch_ndim + 1)) for f in group]
        timed = [Factor(f.tensor, f.plates | {frame}, f.sites) for f in group]
        plates_of = {d: var_plates[d] | {frame} for d in info.local if d in var_plates}
        eliminate = set(info.local) - set(keep)
        return sum_product(timed, eliminate, {**var_plates, **plates_of}, site_of, op)
    if keep:
        raise NotImplementedError("keeping a dim of a scan's chain is not supported")
    out, step, plates, sites = _split_step(group, info, var_plates, site_of, op)
    if step is None:
        return out
    reduce = _reduce(op)
    now = [window[0] for window in info.markov]

    def back(beta, factor):
        return shift_back(reduce_all(factor + beta, now, reduce), info.markov), None

    beta0 = jnp.zeros(initial_beta_shape(step.shape[1:], info.markov))
    beta, _ = lax.scan(back, beta0, step, reverse=True)
    for window in info.markov:  # the copies of the initial carry
        for d in window[:-1]:
            beta = lax.index_in_dim(beta, 0, axis=beta.ndim + d, keepdims=True)
    return [*out, Factor(beta, plates, sites)]


def step_factor(group: list[Factor], info, var_plates: dict, site_of: dict, op: str):
    """One factor per step of a scan's carried sites, shape (T, ...), each carried site at
    full size at its dim of every step of its window (``info.markov``)."""
    return _split_step(group, info, var_plates, site_of, op)[1]


def _split_step(group, info, var_plates, site_of, op):
    time_dim = -(info.batch_ndim + 1)
    group = [f._replace(tensor=_pad(f.tensor, info.batch_ndim + 1)) for f in group]
    per_step = sum_product(group, set(info.local), var_plates, site_of, op)
    markov_dims = [d for window in info.markov for d in window]
    out = [  # factors of no carried site: summed over time
        f._replace(tensor=jnp.sum(f.tensor, axis=time_dim, keepdims=True))
        for f in per_step
        if not any(has_dim(f.tensor, d) for d in markov_dims)
    ]
    per_step = [f for f in per_step if any(has_dim(f.tensor, d) for d in markov_dims)]
    if not per_step:
        return out, None, frozenset(), ()
    plate_sets = {f.plates for f in per_step}
    if len(plate_sets) > 1:
        raise NotImplementedError(
            "ppl.scan with enumeration: the carried enumerated sites "
            f"{sorted({site_of[w[0]] for w in info.markov})} lie in different plates; every "
            "carried site must lie in the same plates"
        )
    joined = _combine(per_step, site_of)
    step = jnp.broadcast_to(joined.tensor, _chain_shape(joined.tensor.shape, info.markov))
    return out, step, joined.plates, joined.sites


def shift_back(x: jax.Array, markov: tuple) -> jax.Array:
    """Move each carried site's values one step later in its window: from its dim ``k + 1``
    steps before to its dim ``k`` steps before (the current step's dim must be size 1)."""
    for window in markov:
        for k in range(len(window) - 1):
            x = jnp.swapaxes(x, window[k], window[k + 1])
    return x


def initial_beta_shape(shape: tuple, markov: tuple) -> tuple:
    """Shape of the backward sums of a chain, over each carried site's window but the last."""
    shape = list(reduce_shape(shape, [window[0] for window in markov]))
    for window in markov:
        for k in range(len(window) - 1):
            shape[window[k]], shape[window[k + 1]] = shape[window[k + 1]], shape[window[k]]
    return tuple(shape)


def _pad(tensor: jax.Array, rank: int) -> jax.Array:
    return jnp.reshape(tensor, (1,) * (rank - jnp.ndim(tensor)) + jnp.shape(tensor))


def _chain_shape(shape: tuple, markov: tuple) -> tuple:
    """The step factor's shape with each carried site at full size at each dim of its window."""
    shape = list(shape)
    for window in markov:
        size = max(shape[d] for d in window)
        for d in window:
            shape[d] = size
    return tuple(shape)


def reduce_all(x: jax.Array, dims: list[int], reduce: Callable) -> jax.Array:
    for d in dims:
        x = reduce(x, d)
    return x


def reduce_shape(shape: tuple, dims: list[int]) -> tuple:
    shape = list(shape)
    for d in dims:
        shape[d] = 1
    return tuple(shape)


def pointwise_log_marginal(trace: dict, name: str) -> jax.Array:
    """Observed site ``name``'s log-likelihood per element, enumerated sites summed out.

    Each element ``i`` of the site gets ``log p(y_i | continuous sites)``, the enumerated
    sites integrated out under their distributions as if ``y_i`` were the only
    observation of the site (a mixture's ``log sum_k w_k p(y_i | k)``): the site's plates
    are kept as batch dims while everything else is summed out, with and without the
    site, and the two are subtracted. Returns an array of the site's batch shape.
    """
    site = trace[name]
    value_shape = jnp.shape(site["value"])
    batch_shape = value_shape[: len(value_shape) - site["fn"].event_dim]
    _, outer, _ = factors(trace)
    if not any(name in f.sites for f in outer):  # depends on no enumerated site
        log_prob = site_log_prob_tensor(site)
        return log_prob if site["mask"] is None else jnp.where(site["mask"], log_prob, 0.0)
    var_plates, site_of = variable_plates(trace)
    batch = frozenset(tuple(f) for f in site["cond_indep_stack"])
    local_plates = {d: p - batch for d, p in var_plates.items()}

    def marginal(group: list[Factor]) -> jax.Array:
        group = [Factor(f.tensor, f.plates - batch, f.sites) for f in group]
        total = jnp.zeros(())
        for f in sum_product(group, set(site_of), local_plates, site_of):
            total = total + f.tensor
        return total

    with_site = marginal(outer)
    without = marginal([f for f in outer if name not in f.sites])
    diff = jnp.broadcast_to(with_site - without, jnp.broadcast_shapes(jnp.shape(with_site)))
    r = len(batch_shape)
    diff = jnp.reshape(diff, (1,) * max(0, r - diff.ndim) + diff.shape)
    diff = jnp.reshape(diff, diff.shape[diff.ndim - r :]) if r else jnp.sum(diff)
    return jnp.broadcast_to(diff, batch_shape)
