"""``ppl.scan``: a model body run over time with ``lax.scan``.

``carry, ys = ppl.scan(f, init, xs)`` runs ``f(carry, x) -> (carry, y)`` once per step, as
``jax.lax.scan`` does, so the compiled size does not grow with the sequence length. The
sites ``f`` samples get a leading time axis: a site ``"x"`` of shape ``s`` per step is one
site of shape ``(length, *s)`` in traces, in :class:`ppl.LogDensity` and in the draws.

How handlers see the body. The body runs under its own handler stack (see
:func:`ppl.runtime.use_stack`): for each handler active outside, its
:meth:`~ppl.handlers.Messenger.scan_handler` gives the handler that acts inside at each
step (``seed`` folds the step into its key, ``substitute``/``condition`` give step ``t``'s
part of a whole-sequence value, ``plate`` broadcasts, the log-density compiler sets latent
values). After the scan every site is sent once, stacked over time, through the handlers
outside that did not act inside (``trace``, ``block``, ``mask``, ``scale``...).

Each stacked sample site carries ``scan_log_prob``: its log-probability per step (with the
Jacobian, mask and scale of the handlers inside), shape ``(length, *batch)``. With
enumerated discrete sites in the body (:mod:`ppl.enumeration`), the carry is kept over
fixed enumeration dims from step to step, and ``msg["infer"]["scan"]`` (a
:class:`ScanInfo`) tells :mod:`ppl.contraction` which dims are a Markov chain over time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from numpyro.distributions.batch_util import promote_batch_shape

from ppl import runtime
from ppl.handlers import Messenger
from ppl.primitives import validate_observed
from ppl.runtime import apply_stack, new_message

__all__ = ["ScanInfo", "scan"]

_SCAN_IDS = itertools.count()


class ScanInfo(NamedTuple):
    """What a site recorded inside a ``ppl.scan`` body knows about its scan.

    Attributes:
        id: the scan's identity within one run of the model.
        length: number of steps.
        dim: name of the time dimension (for ``SiteInfo.dims`` and ArviZ).
        batch_ndim: number of dims after the time axis in ``scan_log_prob`` (with
            enumeration: the enumeration and plate dims, padded to one rank).
        markov: ``((dim_now, dim_before), ...)``: for each enumerated site whose value
            is carried to the next step, its enumeration dim at the current and the
            previous step.
        local: enumeration dims of body sites not carried (summed out within a step).
    """

    id: int
    length: int
    dim: str
    batch_ndim: int | None = None
    markov: tuple = ()
    local: tuple = ()


class _Collector(Messenger):
    """Records the sample and deterministic sites of one step of a scan body."""

    def __init__(self):
        self.sites: dict[str, dict] = {}
        super().__init__()

    def postprocess_message(self, msg: dict) -> None:
        if msg["type"] not in ("sample", "deterministic"):
            return
        if msg["name"] in self.sites:
            raise ValueError(
                f"duplicate site name '{msg['name']}' inside one step of a ppl.scan body"
            )
        self.sites[msg["name"]] = msg.copy()


def scan(
    f: Callable[[Any, Any], tuple[Any, Any]],
    init: Any,
    xs: Any,
    length: int | None = None,
    reverse: bool = False,
    history: int = 1,
    *,
    dim: str = "time",
) -> tuple[Any, Any]:
    """Run a model body ``f(carry, x) -> (carry, y)`` over time, like ``jax.lax.scan``.

    Args:
        f: the body; it may call ``ppl.sample``, ``ppl.deterministic``, ``ppl.plate``...
        init: the initial carry (a pytree).
        xs: per-step inputs, a pytree of arrays with a leading time axis (or None).
        length: the number of steps (needed when ``xs`` is None).
        reverse: run from the last step to the first (sites are still stacked in the
            order of ``xs``).
        history: how many previous steps the carry depends on (NumPyro's argument):
            enumerated discrete sites in the body may be carried with ``history=1``;
            ``history=0`` means the steps are independent, like a plate.
        dim: the name of the time dimension of the sites in the body.

    Returns:
        ``(carry, ys)``: the last carry and the stacked outputs ``y``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import ppl, ppl.distributions as dist
        >>> def random_walk(T):
        ...     def step(x_prev, _):
        ...         x = ppl.sample("x", dist.Normal(x_prev, 1.0))
        ...         return x, x
        ...     return ppl.scan(step, 0.0, None, length=T)
        >>> tr = ppl.handlers.trace(ppl.handlers.seed(random_walk, 0)).get_trace(5)
        >>> tr["x"]["value"].shape, ppl.logdensity(random_walk, 5).sites["x"].dims
        ((5,), ('time',))
    """
    length = _scan_length(xs, length)
    if not isinstance(history, int) or history < 0:
        raise ValueError(f"ppl.scan: history must be a non-negative int, got {history!r}")
    outer = list(runtime.handler_stack())
    if not outer:
        init = _checked_carry(lambda c, x: f(c, x)[0], init, xs, reverse)
        return lax.scan(f, init, xs, length=length, reverse=reverse)
    enumerator = next((h for h in reversed(outer) if getattr(h, "enumerates", False)), None)
    info = ScanInfo(next(_SCAN_IDS), length, dim)
    if enumerator is not None:
        enumerator.begin_scan(info, history, reverse)
    views = [(h, view) for h in outer if (view := h.scan_handler(length)) is not None]
    # keys first: a seed's view runs innermost, so that a value given for only part of the
    # sequence (forecasting past the data) can draw the rest, whatever the handler order
    views.sort(key=lambda pair: getattr(pair[0], "gives_keys", False))
    statics: dict[str, dict] = {}

    def body(step, carry, x):
        collector = _Collector()
        with runtime.use_stack([collector] + [view(step) for _, view in views]):
            new_carry, y = f(carry, x)
        rank = None
        if enumerator is not None:
            new_carry = enumerator.end_step(info, new_carry)
            rank = enumerator.rank()
        stacked = {}
        for name, site in collector.sites.items():
            statics[name] = _static_part(site)
            stacked[name] = _dynamic_part(site, rank)
        return new_carry, y, stacked

    def scan_step(state, x):
        i, carry = state
        step = length - 1 - i if reverse else i
        new_carry, y, stacked = body(step, carry, x)
        new_carry = _fit_carry(new_carry, carry)
        return (i + 1, new_carry), (y, stacked)

    if enumerator is not None:
        init = _enumerated_carry(body, init, xs, reverse)
    else:
        init = _checked_carry(lambda c, x: body(0, c, x)[0], init, xs, reverse)
    (_, carry), (ys, stacked) = lax.scan(
        scan_step, (jnp.asarray(0), init), xs, length=length, reverse=reverse
    )
    if enumerator is not None:
        info = enumerator.end_scan(info)
    done_by = tuple(h for h, _ in views)
    for name, static in statics.items():
        _emit(name, static, stacked[name], info, done_by)
    return carry, ys


# ---------------------------------------------------------------------- the stacked sites

_STATIC_KEYS = ("type", "is_observed", "cond_indep_stack", "infer")


def _static_part(site: dict) -> dict:
    static = {key: site[key] for key in _STATIC_KEYS}
    static["sample_shape"] = tuple(site["kwargs"].get("sample_shape", ()))
    return static


def _dynamic_part(site: dict, rank: int | None) -> dict:
    """The arrays of one step's site: value, and for sample sites the distribution and the
    log-probability (Jacobian, mask and scale of the handlers inside applied)."""
    value = jnp.asarray(site["value"])
    if site["type"] != "sample":
        return {"value": value}
    fn = site["fn"]
    log_prob = fn.log_prob(value)
    if "log_det" in site:
        log_prob = log_prob + site["log_det"]
    if site["mask"] is not None:
        log_prob = jnp.where(site["mask"], log_prob, 0.0)
    if site["scale"] is not None:
        log_prob = site["scale"] * log_prob
    if rank is not None:
        if jnp.ndim(log_prob) > rank:
            raise ValueError(
                f"site '{site['name']}' inside ppl.scan: its log-probability has shape "
                f"{jnp.shape(log_prob)}, more dims than the {rank} plate and enumeration "
                "dims of the model"
            )
        log_prob = jnp.reshape(log_prob, (1,) * (rank - jnp.ndim(log_prob)) + jnp.shape(log_prob))
    return {"value": value, "fn": fn, "log_prob": log_prob}


def _emit(name: str, static: dict, stacked: dict, info: ScanInfo, done_by: tuple) -> None:
    """Send one stacked site through the handlers outside the scan."""
    msg = new_message(
        static["type"],
        name,
        value=stacked["value"],
        is_observed=static["is_observed"],
        cond_indep_stack=list(static["cond_indep_stack"]),
        infer={**static["infer"], "scan": info},
        kwargs={"rng_key": None, "sample_shape": static["sample_shape"]},
        done_by=done_by,
    )
    if static["type"] == "sample":
        fn = promote_batch_shape(stacked["fn"])
        msg["fn"] = fn
        msg["scan_log_prob"] = stacked["log_prob"]
        if info.batch_ndim is None:
            msg["value"] = _promote_value(stacked["value"], fn)
    apply_stack(msg)
    if (
        msg["type"] == "sample"
        and msg["is_observed"]
        and not msg["infer"].get("is_factor")
        and info.batch_ndim is None
    ):
        validate_observed(msg)


def _promote_value(value: jax.Array, fn) -> jax.Array:
    """Stacked values of shape (T, *s) get size-1 dims after the time axis when the
    stacked distribution has more batch dims (a value broadcast against its distribution)."""
    missing = len(fn.batch_shape) - (jnp.ndim(value) - fn.event_dim)
    if missing <= 0:
        return value
    shape = jnp.shape(value)
    return jnp.reshape(value, shape[:1] + (1,) * missing + shape[1:])


# ---------------------------------------------------------------------- the carry


def _scan_length(xs: Any, length: int | None) -> int:
    leaves = jax.tree_util.tree_leaves(xs)
    lengths = {int(jnp.shape(leaf)[0]) for leaf in leaves if jnp.ndim(leaf) > 0}
    if any(jnp.ndim(leaf) == 0 for leaf in leaves):
        raise ValueError("ppl.scan: every array in xs needs a leading time axis")
    if len(lengths) > 1:
        raise ValueError(f"ppl.scan: the arrays in xs have different lengths {sorted(lengths)}")
    if length is None:
        if not lengths:
            raise ValueError("ppl.scan: give length= when xs is None or has no arrays")
        return lengths.pop()
    length = int(length)
    if lengths and lengths != {length}:
        raise ValueError(f"ppl.scan: length={length} but xs has length {lengths.pop()}")
    if length < 1:
        raise ValueError(f"ppl.scan: length must be positive, got {length}")
    return length


def _first_x(xs: Any, reverse: bool) -> Any:
    return jax.tree_util.tree_map(lambda a: a[-1] if reverse else a[0], xs)


def _checked_carry(step: Callable, init: Any, xs: Any, reverse: bool) -> Any:
    """``init`` with Python scalars given the dtype the body returns; a carry whose
    structure, shape or dtype the body changes is an error naming the carry."""
    init = jax.tree_util.tree_map(jnp.asarray, init)
    out = jax.eval_shape(step, init, _first_x(xs, reverse))
    paths, tree = jax.tree_util.tree_flatten_with_path(init)
    out_leaves, out_tree = jax.tree_util.tree_flatten(out)
    if tree != out_tree:
        raise ValueError(
            f"ppl.scan: the body returns a carry of structure {out_tree}, but the initial "
            f"carry has structure {tree}; the carry must keep its structure"
        )
    fixed = []
    for (path, leaf), new in zip(paths, out_leaves, strict=True):
        where = "carry" + jax.tree_util.keystr(path)
        if leaf.shape != new.shape:
            raise ValueError(
                f"ppl.scan: {where} has shape {leaf.shape} initially but the body returns "
                f"shape {new.shape}; the carry must keep its shape from step to step"
            )
        if leaf.dtype != new.dtype:
            if not jnp.can_cast(leaf.dtype, new.dtype, casting="same_kind"):
                raise ValueError(
                    f"ppl.scan: {where} has dtype {leaf.dtype} initially but the body "
                    f"returns dtype {new.dtype}; the carry must keep its dtype"
                )
            leaf = leaf.astype(new.dtype)
        fixed.append(leaf)
    return jax.tree_util.tree_unflatten(tree, fixed)


def _fit_carry(new: Any, old: Any) -> Any:
    """The body's carry in the exact shape and dtype of the carry it got."""

    def fit(a, b):
        a = jnp.asarray(a)
        while a.ndim > b.ndim and a.shape[0] == 1:
            a = a[0]
        return jnp.broadcast_to(a, b.shape).astype(b.dtype)

    return jax.tree_util.tree_map(fit, new, old)


def _enumerated_carry(body: Callable, init: Any, xs: Any, reverse: bool) -> Any:
    """The initial carry broadcast to the shape the carry keeps from step to step.

    With enumeration the carry holds a site's values along its enumeration dim, so after
    the first step it has more dims than ``init``. ``init`` is broadcast to that shape
    (its copies along the enumeration dims are alike, which :mod:`ppl.contraction` uses).
    """
    carry = jax.tree_util.tree_map(jnp.asarray, init)
    x0 = _first_x(xs, reverse)
    for _ in range(4):
        out = jax.eval_shape(lambda c: body(0, c, x0)[0], carry)
        target = jax.tree_util.tree_map(
            lambda c, o: (jnp.broadcast_shapes(c.shape, _strip(o.shape, c.ndim)), o.dtype),
            carry,
            out,
        )
        same = jax.tree_util.tree_all(
            jax.tree_util.tree_map(lambda c, t: c.shape == t[0] and c.dtype == t[1], carry, target)
        )
        if same:
            return carry
        carry = jax.tree_util.tree_map(
            lambda c, t: jnp.broadcast_to(c.astype(t[1]), t[0]), carry, target
        )
    raise ValueError("ppl.scan: the carry's shape does not settle from step to step")


def _strip(shape: tuple, ndim: int) -> tuple:
    while len(shape) > ndim and shape[0] == 1:
        shape = shape[1:]
    return shape
