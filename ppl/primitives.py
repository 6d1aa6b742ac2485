"""Modelling primitives: ``sample``, ``param``, ``deterministic``, ``factor`` and ``plate``.

Each primitive only builds a message and sends it through the handler stack
(:mod:`ppl.runtime`); what the statement *means* (draw, condition, score,
substitute...) is decided by the handlers that are active when it runs.

Example:
    >>> import jax.numpy as jnp
    >>> import ppl
    >>> import ppl.distributions as dist
    >>> def model(y):
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 10.0))
    ...     with ppl.plate("data", y.shape[0]):
    ...         ppl.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> tr = ppl.handlers.trace(ppl.handlers.seed(model, rng_seed=0)).get_trace(jnp.zeros(3))
    >>> sorted(tr)
    ['data', 'mu', 'y']
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpyro.distributions import Distribution, constraints
from numpyro.distributions.distribution import Unit

from ppl.handlers import Messenger
from ppl.runtime import CondIndepStackFrame, MissingSeedError, apply_stack, new_message

__all__ = ["sample", "param", "deterministic", "factor", "plate", "prng_key"]


def sample(
    name: str,
    fn: Distribution,
    obs: Any = None,
    *,
    sample_shape: tuple[int, ...] = (),
    infer: dict | None = None,
) -> jax.Array:
    """A random variable ``name`` with distribution ``fn``.

    Args:
        name: unique site name.
        fn: a ``ppl.distributions`` (numpyro) distribution.
        obs: observed value; the site is then a likelihood term and ``obs`` is
            returned. Its shape must broadcast with ``fn``'s shape under the
            enclosing plates, and it must lie in ``fn.support``.
        sample_shape: extra leading draw dimensions; not allowed inside plates
            (use one plate per batch dimension there).
        infer: inference hints stored on the message.

    Returns:
        The site's value: ``obs``, a value given by a handler, or a fresh draw
        (which needs an enclosing :class:`ppl.handlers.seed`).
    """
    if not isinstance(name, str):
        raise TypeError(f"site name must be a str, got {type(name).__name__}: {name!r}")
    if not isinstance(fn, Distribution):
        raise TypeError(
            f"site '{name}': expected a ppl.distributions distribution, got {type(fn).__name__}"
        )
    msg = new_message(
        "sample",
        name,
        fn=fn,
        kwargs={"rng_key": None, "sample_shape": tuple(sample_shape)},
        value=obs,
        is_observed=obs is not None,
        infer=dict(infer or {}),
    )
    apply_stack(msg)
    if msg["type"] == "sample" and msg["is_observed"] and not msg["infer"].get("is_factor"):
        validate_observed(msg)
    return msg["value"]


def _param_init(
    init_value: Any,
    rng_key: jax.Array | None = None,
    constraint: constraints.Constraint | None = None,
    event_dim: int | None = None,
) -> jax.Array:
    if callable(init_value):
        if rng_key is None:
            raise MissingSeedError(
                "a param with a callable init_value needs a random key: run the model "
                "inside ppl.handlers.seed"
            )
        return init_value(rng_key)
    return init_value


def param(
    name: str,
    init_value: Any = None,
    *,
    constraint: constraints.Constraint = constraints.real,
    event_dim: int | None = None,
) -> jax.Array:
    """A learnable parameter (used by variational guides; fixed during MCMC).

    Args:
        name: unique site name.
        init_value: initial value (array), or a function ``rng_key -> array``.
        constraint: the parameter's support; optimisers work on the
            unconstrained scale.
        event_dim: number of rightmost dims that are not batch dims.

    Returns:
        The parameter's current value (its init value unless a handler
        substitutes one).
    """
    msg_value = None if callable(init_value) else init_value
    msg = new_message(
        "param",
        name,
        fn=_param_init,
        args=(init_value,),
        kwargs={"rng_key": None, "constraint": constraint, "event_dim": event_dim},
        value=msg_value,
    )
    apply_stack(msg)
    if msg["value"] is None:
        raise ValueError(f"param site '{name}' has no init_value and no substituted value")
    return msg["value"]


def deterministic(name: str, value: Any) -> Any:
    """Record ``value`` as a named deterministic site and return it.

    Deterministic sites appear in traces, in ``LogDensity.constrain`` and in
    the posterior; they add nothing to the log density.
    """
    msg = new_message("deterministic", name, value=value)
    apply_stack(msg)
    return msg["value"]


def _given_key(rng_key: jax.Array | None = None) -> jax.Array | None:
    return rng_key


def prng_key() -> jax.Array:
    """A ``jax.random`` key for randomness of the model's own (dropout, a helper's draws).

    Under :class:`ppl.handlers.seed` every call gets a fresh key split from the seed's
    (a :class:`ppl.handlers.block` does not hide the request, as in NumPyro). Without a
    seed, e.g. while a compiled ``LogDensity`` evaluates the model, the key is the fixed
    ``jax.random.PRNGKey(0)``, so that the log density stays a deterministic function of
    the latent values; every call then returns that same key (split it if you need
    several).

    Example:
        >>> import ppl
        >>> def model():
        ...     return ppl.prng_key()
        >>> ppl.handlers.seed(model, rng_seed=1)().shape
        (2,)
    """
    key = request_key()
    return jax.random.PRNGKey(0) if key is None else key


def request_key() -> jax.Array | None:
    """The key a ``prng_key`` message gets from the handler stack, or None without a seed."""
    msg = new_message("prng_key", None, fn=_given_key, kwargs={"rng_key": None})
    apply_stack(msg)
    return msg["value"]


def factor(name: str, log_factor: Any) -> None:
    """Add ``log_factor`` (scalar or batch array) to the model's log density.

    Inside plates the factor is broadcast and scaled like a sample site.
    """
    log_factor = jnp.asarray(log_factor)
    unit = Unit(log_factor)
    sample(name, unit, obs=jnp.zeros((*jnp.shape(log_factor), 0)), infer={"is_factor": True})


def _subsample_indices(size: int, subsample_size: int, rng_key: jax.Array | None = None):
    """A uniform random subset of ``range(size)`` without replacement, in random order.

    The indices of the ``subsample_size`` largest of ``size`` uniforms: one pass, about ten
    times faster than a full permutation for a large ``size``.
    """
    uniforms = jax.random.uniform(rng_key, (size,))
    return jax.lax.top_k(uniforms, subsample_size)[1]


class plate(Messenger):
    """A context of conditionally independent draws along one batch dimension.

    Sample sites inside are broadcast so that their batch shape has ``size``
    (or ``subsample_size``) along ``dim``. With ``subsample_size`` the plate
    draws random indices (returned by ``with``) and scales log-probabilities
    by ``size / subsample_size``.

    Args:
        name: plate name (used as the ArviZ dimension name).
        size: full size of the dimension.
        subsample_size: minibatch size, or None for no subsampling.
        dim: negative batch dim to use; by default the rightmost one not taken
            by an enclosing plate.

    Example:
        >>> import ppl, ppl.distributions as dist
        >>> def model():
        ...     with ppl.plate("groups", 3):
        ...         return ppl.sample("z", dist.Normal(0.0, 1.0))
        >>> ppl.handlers.seed(model, rng_seed=0)().shape
        (3,)
    """

    def __init__(
        self, name: str, size: int, subsample_size: int | None = None, dim: int | None = None
    ):
        if not isinstance(name, str):
            raise TypeError(f"plate name must be a str, got {name!r}")
        size = _as_size(size, f"plate '{name}': size")
        if subsample_size is not None:
            subsample_size = _as_size(subsample_size, f"plate '{name}': subsample_size")
            if subsample_size > size:
                raise ValueError(
                    f"plate '{name}': subsample_size {subsample_size} exceeds size {size}"
                )
        if dim is not None and (not isinstance(dim, int) or dim >= 0):
            raise ValueError(f"plate '{name}': dim must be a negative int, got {dim!r}")
        self.name = name
        self.size = size
        subsampled = subsample_size is not None and subsample_size != size
        msg = new_message(
            "plate",
            name,
            fn=_subsample_indices,
            args=(size, subsample_size if subsampled else size),
            kwargs={"rng_key": None},
            value=None if subsampled else jnp.arange(size),
        )
        apply_stack(msg)
        indices = jnp.asarray(msg["value"])
        occupied = {f.dim: f.name for f in msg["cond_indep_stack"]}
        if dim is None:
            dim = -1
            while dim in occupied:
                dim -= 1
        elif dim in occupied:
            raise ValueError(
                f"plate '{name}': dim {dim} is already used by the enclosing plate "
                f"'{occupied[dim]}'"
            )
        self.dim = dim
        self.indices = indices
        self.subsample_size = int(indices.shape[0])
        super().__init__()

    def __enter__(self) -> jax.Array:
        super().__enter__()
        return self.indices

    def scan_handler(self, length: int):
        """Inside a ``ppl.scan`` body the plate broadcasts each step's sites."""
        return lambda step: self

    def _frame(self) -> CondIndepStackFrame:
        return CondIndepStackFrame(self.name, self.dim, self.subsample_size)

    def process_message(self, msg: dict) -> None:
        if msg["type"] not in ("sample", "param", "deterministic", "plate"):
            return
        stack = msg["cond_indep_stack"]
        if any(f.name == self.name for f in stack):
            raise ValueError(f"plate '{self.name}' is nested inside itself at site '{msg['name']}'")
        stack.append(self._frame())
        if msg["type"] != "sample":
            return
        fn = msg["fn"]
        if msg["kwargs"].get("sample_shape"):
            raise ValueError(
                f"site '{msg['name']}' inside plate '{self.name}' has sample_shape="
                f"{msg['kwargs']['sample_shape']}: sample_shape cannot be combined with "
                "plates; use a plate for each extra batch dimension"
            )
        batch_shape = tuple(fn.batch_shape)
        if len(batch_shape) >= -self.dim and batch_shape[self.dim] not in (1, self.subsample_size):
            raise ValueError(
                f"site '{msg['name']}' inside plate '{self.name}' (size {self.subsample_size}, "
                f"dim {self.dim}): its distribution has batch shape {batch_shape}, which is "
                f"{batch_shape[self.dim]} along dim {self.dim}; expected {self.subsample_size} "
                "or 1"
            )
        expected = _plates_batch_shape(stack)
        overlap = max(len(expected) - len(batch_shape), 0)
        try:
            new_shape = expected[:overlap] + lax.broadcast_shapes(expected[overlap:], batch_shape)
        except ValueError as err:
            raise ValueError(
                f"site '{msg['name']}': distribution batch shape {batch_shape} does not "
                f"broadcast with the enclosing plates' shape {expected} "
                f"({', '.join(f'{f.name}: size {f.size} at dim {f.dim}' for f in stack)})"
            ) from err
        if new_shape != tuple(fn.batch_shape):
            msg["fn"] = fn.expand(new_shape)
        if self.subsample_size != self.size:
            scale = 1.0 if msg["scale"] is None else msg["scale"]
            msg["scale"] = scale * (self.size / self.subsample_size)


def _plates_batch_shape(stack: list[CondIndepStackFrame]) -> tuple[int, ...]:
    n = max(-f.dim for f in stack)
    shape = [1] * n
    for f in stack:
        shape[f.dim] = f.size
    return tuple(shape)


def _as_size(value: Any, what: str) -> int:
    try:
        size = int(value)
    except (TypeError, jax.errors.ConcretizationTypeError) as err:
        raise TypeError(f"{what} must be a concrete positive int, got {value!r}") from err
    if size != value or size <= 0:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return size


def validate_observed(msg: dict) -> None:
    """Check an observed sample site's value against its distribution and plates.

    Raises ValueError naming the site when the value's shape does not broadcast
    with the distribution's shape, disagrees with an enclosing plate's size, or
    (for concrete values) lies outside the distribution's support.
    """
    name, fn, value = msg["name"], msg["fn"], msg["value"]
    shape = jnp.shape(value)
    event_dim = len(fn.event_shape)
    for frame in msg["cond_indep_stack"]:
        axis = frame.dim - event_dim
        if len(shape) >= -axis and shape[axis] not in (1, frame.size):
            raise ValueError(
                f"plate '{frame.name}' has size {frame.size} but the observed value of site "
                f"'{name}' has shape {shape}, i.e. {shape[axis]} along the plate's dim "
                f"{frame.dim}: the plate size disagrees with the data it wraps"
            )
    dist_shape = tuple(fn.batch_shape) + tuple(fn.event_shape)
    try:
        jnp.broadcast_shapes(shape, dist_shape)
    except ValueError as err:
        raise ValueError(
            f"observed value of site '{name}' has shape {shape}, which does not broadcast "
            f"with the distribution's shape {dist_shape} (batch {tuple(fn.batch_shape)}, "
            f"event {tuple(fn.event_shape)})"
        ) from err
    if shape[len(shape) - event_dim :] != tuple(fn.event_shape) and event_dim:
        raise ValueError(
            f"observed value of site '{name}' has shape {shape}, whose rightmost {event_dim} "
            f"dims should equal the distribution's event shape {tuple(fn.event_shape)}"
        )
    if isinstance(value, jax.core.Tracer):
        return
    arr = np.asarray(value)
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise ValueError(
            f"observed value of site '{name}' contains NaN at {int(np.isnan(arr).sum())} "
            "position(s); drop the missing values, or impute them and mask the imputed "
            "entries with ppl.handlers.mask"
        )
    ok = fn.support(jnp.asarray(value))
    if isinstance(ok, jax.core.Tracer):
        return
    ok = np.asarray(ok)
    if not ok.all():
        first = tuple(int(i) for i in np.argwhere(~ok)[0]) if ok.ndim else ()
        example = arr[first] if arr.shape[: ok.ndim] == ok.shape else arr
        raise ValueError(
            f"observed value of site '{name}' is outside the support of "
            f"{type(_base_dist(fn)).__name__} ({_describe(fn.support)}): "
            f"{int((~ok).sum())} value(s) out of support, the first at index {first}: "
            f"{example}"
        )


def _base_dist(fn: Distribution) -> Distribution:
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def _describe(constraint: constraints.Constraint) -> str:
    text = repr(constraint)
    return text.split(" object at")[0].replace("<", "").replace(">", "")
