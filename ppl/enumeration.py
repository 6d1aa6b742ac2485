"""Enumeration of discrete latent sites: each takes all its values at once, along its own dim.

A sample site marked ``infer={"enumerate": "parallel"}`` (or every discrete site of a model
wrapped in :func:`config_enumerate`) is not a coordinate of the flat vector: while
:class:`ppl.LogDensity` runs the model, :class:`Enumerate` sets the site's value to its
whole support, shaped ``(K, 1, ..., 1)`` so that the support runs along a dim of its own
to the left of every plate dim. Everything downstream broadcasts along it, and the
log-probabilities of the sites it touches carry that dim; :mod:`ppl.contraction` then
sums the dims out exactly.

Dims are allocated from ``-(max_plate_nesting + 1)`` leftwards, one per enumerated site.
Inside a ``ppl.scan`` body a site gets ``history + 1``: one for its value at the current
step and one for each of the ``history`` steps before, and the carry is moved one step
back after each step (:meth:`Enumerate.end_step`), so that a hidden Markov model costs
O(T K^2) (O(T K^(h+1)) with ``history=h``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from ppl.handlers import Messenger, at_step
from ppl.sites import check_enumerable

__all__ = ["Enumerate", "config_enumerate", "is_enumerated"]


def is_enumerated(msg: dict) -> bool:
    """Whether ``msg`` is a latent sample site marked for parallel enumeration."""
    return (
        msg["type"] == "sample"
        and not msg["is_observed"]
        and msg["infer"].get("enumerate") == "parallel"
    )


class _ConfigEnumerate(Messenger):
    def process_message(self, msg: dict) -> None:
        if msg["type"] != "sample" or msg["is_observed"]:
            return
        fn = msg["fn"]
        if fn.support.is_discrete and fn.has_enumerate_support:
            msg["infer"].setdefault("enumerate", "parallel")

    def scan_handler(self, length: int):
        return lambda step: self


def config_enumerate(model: Callable | None = None, default: str = "parallel") -> Callable:
    """Mark every latent discrete site with finite support of ``model`` for enumeration.

    Sites that already say ``infer={"enumerate": ...}`` keep their setting. Usable as a
    decorator (``@config_enumerate``) or a function (``config_enumerate(model)``).

    Example:
        >>> import jax.numpy as jnp
        >>> import ppl, ppl.distributions as dist
        >>> @ppl.infer.config_enumerate
        ... def mixture(y):
        ...     mu = ppl.sample("mu", dist.Normal(jnp.zeros(2), 5.0).to_event(1))
        ...     with ppl.plate("obs", y.shape[0]):
        ...         z = ppl.sample("z", dist.Categorical(jnp.array([0.5, 0.5])))
        ...         ppl.sample("y", dist.Normal(mu[z], 1.0), obs=y)
        >>> ld = ppl.logdensity(mixture, jnp.array([-1.0, 0.5, 2.0]))
        >>> ld.sites["z"].kind, ld.dim
        ('enumerated', 2)
    """
    if default != "parallel":
        raise ValueError(
            f"config_enumerate: only 'parallel' enumeration is supported, got {default!r}"
        )
    if model is None:
        return config_enumerate

    def enumerated_model(*args: Any, **kwargs: Any):
        with _ConfigEnumerate():
            return model(*args, **kwargs)

    enumerated_model.__name__ = getattr(model, "__name__", "model")
    enumerated_model.__doc__ = getattr(model, "__doc__", None)
    enumerated_model.__wrapped__ = model
    return enumerated_model


class _ScanRecord:
    """The enumeration dims of the sites of one ``ppl.scan`` body."""

    def __init__(self, history: int, reverse: bool):
        self.history = history
        self.reverse = reverse
        # per site: its dims at the current step and at each of the `history` steps before
        self.dims: dict[str, list[int]] = {}
        self.carried: set[str] = set()
        self.batch_ndim: int | None = None


class Enumerate(Messenger):
    """Give enumerated sites their whole support as value, each along a dim of its own.

    Args:
        first_dim: the first dim to allocate, ``-(max_plate_nesting + 1)``.
        fixed: ``{site: value}`` for enumerated sites to hold at a given value instead
            (``infer_discrete`` conditions on the sites it has drawn); a value for a site
            inside a ``ppl.scan`` body is its whole sequence.

    After a run, :attr:`dims` maps each enumerated site outside scans to its dim and
    :attr:`scans` holds each scan's record; :meth:`dim_sites` names the site of a dim.
    """

    enumerates = True

    def __init__(self, first_dim: int, fixed: dict[str, Any] | None = None):
        if first_dim >= 0:
            raise ValueError(f"first_dim must be negative, got {first_dim}")
        self.first_dim = first_dim
        self.next_dim = first_dim
        self.fixed = dict(fixed or {})
        self.dims: dict[str, int] = {}
        self.sizes: dict[int, int] = {}
        self.site_of: dict[int, str] = {}
        self.scans: dict[int, _ScanRecord] = {}
        self._open: list[tuple[int, _ScanRecord]] = []
        super().__init__()

    def rank(self) -> int:
        """Number of batch dims the enumeration and plate dims allocated so far take."""
        return -self.next_dim - 1

    def _allocate(self, name: str, size: int) -> int:
        dim = self.next_dim
        self.next_dim -= 1
        self.sizes[dim] = size
        self.site_of[dim] = name
        return dim

    def process_message(self, msg: dict) -> None:
        if not is_enumerated(msg):
            return
        name = msg["name"]
        if name in self.fixed:
            msg["value"] = self.fixed[name]
            return
        fn = msg["fn"]
        check_enumerable(name, fn)
        if name not in self.dims:
            self.dims[name] = self._allocate(name, _support_size(fn))
        msg["value"] = _support_along(fn, self.dims[name])
        msg["infer"]["enum_dim"] = self.dims[name]

    # ------------------------------------------------------------------ ppl.scan
    def begin_scan(self, info, history: int, reverse: bool) -> None:
        """Called by ``ppl.scan`` before its body runs."""
        self._open.append((info.id, _ScanRecord(history, reverse)))

    def scan_handler(self, length: int):
        scan_id, record = self._open[-1]
        self.scans[scan_id] = record
        return lambda step: _EnumerateStep(self, record, step, length)

    def end_step(self, info, carry: Any) -> Any:
        """Move the carry's values one step back in time (called by ``ppl.scan`` at the end
        of each step): a carried site's values go from its dim at the current step to its
        dim one step before, those one step before to two steps before, and so on."""
        import jax

        record = self.scans[info.id]

        def move(leaf):
            leaf = jnp.asarray(leaf)
            for name, dims in record.dims.items():
                used = [k for k, d in enumerate(dims) if leaf.ndim >= -d and leaf.shape[d] > 1]
                if not used:
                    continue
                if record.history == 0:
                    raise ValueError(
                        f"ppl.scan with history=0: the carry depends on the enumerated site "
                        f"'{name}'; use history=1 for a Markov chain"
                    )
                if used[-1] == len(dims) - 1:
                    raise NotImplementedError(
                        f"ppl.scan(history={record.history}): the carry depends on the "
                        f"enumerated site '{name}' {record.history} step(s) back, so the next "
                        f"step would depend on it {record.history + 1} steps back; raise "
                        "history"
                    )
                record.carried.add(name)
                leaf = jnp.reshape(leaf, (1,) * max(0, -dims[-1] - leaf.ndim) + leaf.shape)
                for k in range(len(dims) - 2, -1, -1):  # oldest first: k -> k + 1
                    leaf = jnp.swapaxes(leaf, dims[k], dims[k + 1])
            return leaf

        return jax.tree_util.tree_map(move, carry)

    def end_scan(self, info):
        """The scan's :class:`~ppl.control_flow.ScanInfo` with its enumeration dims; one
        more dim is reserved for the time axis of its stacked log-probabilities."""
        _, record = self._open.pop()
        if record.carried and record.reverse:
            raise NotImplementedError(
                "ppl.scan(reverse=True) with enumerated sites carried from step to step is "
                "not supported; reverse the inputs instead"
            )
        batch_ndim = self.rank()
        self.next_dim -= 1  # the time axis of the stacked sites
        markov = tuple(tuple(record.dims[n]) for n in sorted(record.carried))
        local = tuple(dims[0] for n, dims in record.dims.items() if n not in record.carried)
        return info._replace(batch_ndim=batch_ndim, markov=markov, local=local)


class _EnumerateStep(Messenger):
    """Enumerate's view inside one step of a ``ppl.scan`` body."""

    def __init__(self, parent: Enumerate, record: _ScanRecord, step: Any, length: int):
        self.parent = parent
        self.record = record
        self.step = step
        self.length = length
        super().__init__()

    def process_message(self, msg: dict) -> None:
        if not is_enumerated(msg):
            return
        name = msg["name"]
        parent, record = self.parent, self.record
        if name in parent.fixed:
            msg["value"] = at_step(parent.fixed[name], msg, self.step, self.length)
            return
        fn = msg["fn"]
        check_enumerable(name, fn)
        if name not in record.dims:
            size = _support_size(fn)
            record.dims[name] = [parent._allocate(name, size)] + [
                parent._allocate(f"{name} ({lag} step{'s' if lag > 1 else ''} before)", size)
                for lag in range(1, max(record.history, 1) + 1)
            ]
        msg["value"] = _support_along(fn, record.dims[name][0])
        msg["infer"]["enum_dim"] = record.dims[name][0]


def _support_size(fn) -> int:
    return int(fn.enumerate_support(expand=False).shape[0])


def _support_along(fn, dim: int):
    """``fn``'s support, shape ``(K, 1, ..., 1, *event_shape)`` with K at batch dim ``dim``."""
    support = fn.enumerate_support(expand=False)
    event_shape = tuple(fn.event_shape)
    size = support.shape[0]
    return jnp.reshape(support, (size,) + (1,) * (-dim - 1) + event_shape)
