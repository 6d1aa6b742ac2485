"""What ppl knows about one site of a traced model.

Holds :class:`SiteInfo` and :func:`site_infos` (the ``{name: SiteInfo}`` table,
with each latent site's slice of the flat vector), the prototype trace that
fixes a model's site layout, and the per-site transforms between the
constrained and unconstrained scales. :mod:`ppl.density` builds its
``LogDensity`` from these; :mod:`ppl.latent` uses the transforms to set latent
sites. Talks only to :mod:`ppl.handlers`, :mod:`ppl.primitives` and
:mod:`ppl.model_data`.
"""

from __future__ import annotations

import linecache
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

from ppl.handlers import Messenger, seed, trace
from ppl.model_data import model_function
from ppl.primitives import _base_dist

__all__ = [
    "SiteInfo",
    "check_enumerable",
    "is_real_support",
    "site_infos",
    "site_log_prob_tensor",
    "subsampled_plates",
]


@dataclass(frozen=True)
class SiteInfo:
    """Metadata of one model site.

    Attributes:
        name: site name.
        kind: "latent", "observed", "deterministic", "factor", "param" or
            "enumerated" (a discrete site summed out, see :mod:`ppl.enumeration`).
        shape: shape of the (constrained) value.
        dims: one entry per axis of ``shape``: the name of the plate that owns
            the axis, or None.
        event_shape: the distribution's event shape (sample sites), else ().
        support: the distribution's support (sample sites), else None.
        distribution: the distribution's class name (sample sites), else "".
        unconstrained_shape: shape on the unconstrained scale (latent sites).
        offset: start of the site's slice in the flat vector (latent sites).
        size: length of that slice (latent sites).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    dims: tuple[str | None, ...]
    event_shape: tuple[int, ...] = ()
    support: constraints.Constraint | None = None
    distribution: str = ""
    unconstrained_shape: tuple[int, ...] | None = None
    offset: int | None = None
    size: int | None = None


class _PrototypeValues(Messenger):
    """Draw latent sites from their prior; improper priors get a point in their support.

    With ``at_support_point`` continuous latent sites take that point (unconstrained
    zeros) instead of a prior draw; discrete ones are still drawn.
    """

    def __init__(self, fn: Callable | None = None, at_support_point: bool = False):
        self.at_support_point = at_support_point
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] != "sample" or msg["value"] is not None:
            return
        if msg["kwargs"].get("rng_key") is None:
            return  # no seed: the default behaviour raises a clear error
        if self.at_support_point and not msg["fn"].support.is_discrete:
            msg["value"] = _support_point(msg)
            return
        try:
            msg["value"] = msg["fn"](**msg["kwargs"])
        except NotImplementedError:
            msg["value"] = _support_point(msg)

    def scan_handler(self, length: int):
        return lambda step: self


def _support_point(msg: dict) -> jax.Array:
    """The image of unconstrained zeros: a valid point for distributions that cannot sample."""
    shape = tuple(msg["kwargs"].get("sample_shape", ())) + tuple(msg["fn"].shape())
    transform = biject_to(msg["fn"].support)
    return transform(jnp.zeros(transform.inverse_shape(shape)))


def _prototype_trace(model: Callable, args: tuple, kwargs: dict, rng_seed: int) -> dict:
    """Trace the model once, latent sites drawn from their prior, to learn its layout.

    An unlucky prior draw can make a distribution further down invalid (a tiny length
    scale overflowing a parameter to NaN, which numpyro's argument validation refuses
    with a ValueError): the model is then traced once more with its continuous latent
    sites at the point of unconstrained zeros (e.g. 1 for a positive site). An error
    raised inside the model gets a note naming the last site.
    """
    try:
        return _traced_once(model, args, kwargs, rng_seed, at_support_point=False)
    except ValueError as err:
        try:
            return _traced_once(model, args, kwargs, rng_seed, at_support_point=True)
        except Exception as retry:
            err.add_note(
                "(ppl traced the model again with its continuous latent sites at the point "
                f"of unconstrained zeros, which failed too: {type(retry).__name__}: {retry})"
            )
            raise err from err.__cause__


def _traced_once(
    model: Callable, args: tuple, kwargs: dict, rng_seed: int, at_support_point: bool
) -> dict:
    tracer = trace(_PrototypeValues(seed(model, rng_seed=rng_seed), at_support_point))
    try:
        return tracer.get_trace(*args, **kwargs)
    except Exception as err:
        recorded = [n for n, s in getattr(tracer, "trace", {}).items() if s["type"] != "plate"]
        where = f"after site '{recorded[-1]}'" if recorded else "before its first site"
        line = model_line(err, model)
        err.add_note(f"(raised while ppl traced the model, {where}{line})")
        raise


def model_line(err: BaseException, model: Callable) -> str:
    """``", at FILE:LINE: SOURCE"``, the last line of the model's own file in the error's
    traceback (where a distribution's bad parameter stands, with the site being built),
    or ``""`` when the traceback does not pass through it."""
    code = getattr(model_function(model), "__code__", None)
    if code is None:
        return ""
    found = None
    for frame, lineno in traceback.walk_tb(err.__traceback__):
        if frame.f_code.co_filename == code.co_filename:
            found = (frame.f_code.co_filename, lineno)
    if found is None:
        return ""
    source = linecache.getline(*found).strip()
    return f", at {Path(found[0]).name}:{found[1]}" + (f": {source}" if source else "")


def is_real_support(support) -> bool:
    """Whether ``support`` is the real line (possibly with event dims): no transform needed."""
    return support is constraints.real or (
        isinstance(support, constraints.independent) and support.base_constraint is constraints.real
    )


def _to_unconstrained(site: dict) -> jax.Array:
    support = site["fn"].support
    if is_real_support(support):
        return jnp.asarray(site["value"])
    return biject_to(support).inv(site["value"])


def site_log_prob_tensor(site: dict) -> jax.Array:
    """A sample site's log-probability before mask and scale, not summed: the Jacobian is
    added; a site stacked by ``ppl.scan`` brings its per-step values (``scan_log_prob``)."""
    if "scan_log_prob" in site:
        return site["scan_log_prob"]
    log_prob = site["fn"].log_prob(site["value"])
    if "log_det" in site:
        log_prob = log_prob + site["log_det"]
    return log_prob


def _site_log_prob(site: dict) -> jax.Array:
    """Sum of a sample site's log-probability with mask, scale and log-Jacobian applied."""
    log_prob = site_log_prob_tensor(site)
    if site["mask"] is not None:
        log_prob = jnp.where(site["mask"], log_prob, 0.0)
    if site["scale"] is not None:
        log_prob = site["scale"] * log_prob
    return jnp.sum(log_prob)


def _site_dims(site: dict, shape: tuple[int, ...], event_dim: int) -> tuple[str | None, ...]:
    dims: list[str | None] = [None] * len(shape)
    scan = site["infer"].get("scan")
    if scan is not None and shape and shape[0] == scan.length:
        dims[0] = scan.dim
    for frame in site["cond_indep_stack"]:
        axis = len(shape) - event_dim + frame.dim
        if 0 <= axis < len(shape) - event_dim and shape[axis] == frame.size:
            dims[axis] = frame.name
    return tuple(dims)


def _is_array(value) -> bool:
    leaves = jax.tree.leaves(value)
    return len(leaves) == 1 and leaves[0] is value


def site_infos(prototype: dict) -> dict[str, SiteInfo]:
    """The ``{name: SiteInfo}`` table of a prototype trace; latent sites get their flat slice."""
    infos: dict[str, SiteInfo] = {}
    offset = 0
    for name, site in prototype.items():
        kind = site["type"]
        if kind == "plate":
            continue
        if kind == "param" and not _is_array(site["value"]):
            # a pytree of arrays, e.g. a neural network's weights from numpyro.module
            infos[name] = SiteInfo(name, kind, (), ())
            continue
        shape = tuple(jnp.shape(site["value"]))
        if kind != "sample":
            infos[name] = SiteInfo(name, kind, shape, _site_dims(site, shape, 0))
            continue
        fn = site["fn"]
        event_shape = tuple(fn.event_shape)
        common = dict(
            shape=shape,
            dims=_site_dims(site, shape, len(event_shape)),
            event_shape=event_shape,
            support=fn.support,
            distribution=type(_base_dist(fn)).__name__,
        )
        if site["infer"].get("is_factor"):
            infos[name] = SiteInfo(name, "factor", **common)
        elif site["is_observed"]:
            infos[name] = SiteInfo(name, "observed", **common)
        elif site["infer"].get("enumerate") == "parallel":
            check_enumerable(name, fn)
            infos[name] = SiteInfo(name, "enumerated", **common)
        else:
            if fn.support.is_discrete:
                raise TypeError(
                    f"latent site '{name}' has a discrete distribution "
                    f"({type(fn).__name__}); gradient-based inference needs continuous "
                    "latent variables: mark it infer={'enumerate': 'parallel'} (or wrap "
                    "the model in ppl.infer.config_enumerate) to sum it out exactly, "
                    "marginalize it out by hand, or observe it"
                )
            try:
                transform = biject_to(fn.support)
            except NotImplementedError as err:
                raise TypeError(
                    f"latent site '{name}': no bijection to the real line is known for its "
                    f"support {fn.support!r}"
                ) from err
            ushape = tuple(transform.inverse_shape(shape))
            size = math.prod(ushape)
            infos[name] = SiteInfo(
                name, "latent", **common, unconstrained_shape=ushape, offset=offset, size=size
            )
            offset += size
    return infos


def check_enumerable(name: str, fn) -> None:
    """Raise a TypeError naming the site when ``fn`` cannot be enumerated (summed out)."""
    base = type(_base_dist(fn)).__name__
    if not fn.support.is_discrete:
        raise TypeError(
            f"site '{name}' is marked for enumeration but its distribution ({base}) is "
            "continuous: only discrete sites with finite support can be summed out"
        )
    if not fn.has_enumerate_support:
        raise TypeError(
            f"site '{name}' is marked for enumeration but its distribution ({base}) has "
            "infinite or unknown support, which cannot be summed out exactly: truncate it "
            "(e.g. a Categorical over 0..K-1) or marginalize it by hand"
        )


def subsampled_plates(prototype: dict) -> set[str]:
    """Names of the plates of a traced model that subsample their dimension
    (``ppl.plate(name, size, subsample_size=...)`` with fewer indices than ``size``)."""
    return {
        name
        for name, site in prototype.items()
        if site["type"] == "plate" and site["args"][1] != site["args"][0]
    }
