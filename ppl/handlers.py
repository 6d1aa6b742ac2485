"""Effect handlers: they give model statements their meaning.

Every handler is a :class:`Messenger`. It can wrap a function
(``handler(model, ...)`` returns a callable) or be used as a context manager
(``with handler(...):``); handlers compose in any order. Handlers see a site's
message innermost first.

Example:
    >>> import ppl, ppl.distributions as dist
    >>> from ppl.handlers import condition, seed, trace
    >>> def model():
    ...     return ppl.sample("x", dist.Normal(0.0, 1.0))
    >>> tr = trace(condition(seed(model, rng_seed=0), data={"x": 0.5})).get_trace()
    >>> float(tr["x"]["value"]), tr["x"]["is_observed"]
    (0.5, True)
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ppl import runtime
from ppl.runtime import apply_stack

__all__ = [
    "Messenger",
    "trace",
    "seed",
    "substitute",
    "condition",
    "block",
    "replay",
    "scale",
    "mask",
    "do",
    "reparam",
]


class Messenger:
    """Base class of handlers: override ``process_message`` / ``postprocess_message``.

    Args:
        fn: the function to wrap, or None to use the handler as a context manager or a
            decorator (calling a handler made without ``fn`` on a function returns a copy
            of the handler wrapping it: ``@reparam(config=...)``).
    """

    def __init__(self, fn: Callable | None = None):
        if fn is not None and not callable(fn):
            raise TypeError(f"{type(self).__name__} expects a callable, got {fn!r}")
        self.fn = fn

    def __enter__(self):
        runtime.handler_stack().append(self)
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        stack = runtime.handler_stack()
        in_order = bool(stack) and stack[-1] is self
        # unwind everything above and including this handler, even when a handler
        # entered inside it was never exited, so that the global stack stays clean
        if self in stack:
            del stack[stack.index(self) :]
        if exc_type is None and not in_order:
            raise RuntimeError(
                f"{type(self).__name__} exited out of order: a handler entered inside it "
                "was not exited (use handlers as `with` blocks or function wrappers)"
            )

    def process_message(self, msg: dict) -> None:
        """Inspect or change ``msg`` before its value is produced."""

    def postprocess_message(self, msg: dict) -> None:
        """Observe ``msg`` after its value is produced."""

    def scan_handler(self, length: int) -> Callable[[Any], Messenger] | None:
        """How this handler acts inside a ``ppl.scan`` body of ``length`` steps.

        Returns None (the default) when the handler only needs the scanned sites
        afterwards, stacked over time (``trace``, ``block``, ``mask``, ``scale``...), or
        a function ``step -> Messenger`` giving the handler to run inside the body at
        ``step`` (a traced int): handlers that give sites their values (``seed``,
        ``substitute``, ``condition``, ``replay``) or reshape them (``plate``). Those
        handlers then do not see the stacked sites again.
        """
        return None

    def __call__(self, *args, **kwargs):
        if self.fn is None:
            if len(args) == 1 and not kwargs and callable(args[0]):
                # used as a decorator, ``@reparam(config=...)``: a copy wraps the function
                wrapped = copy.copy(self)
                wrapped.fn = args[0]
                return wrapped
            raise TypeError(
                f"{type(self).__name__} was created without a function; use it as a "
                "context manager or decorator, or pass the model as the first argument"
            )
        with self:
            return self.fn(*args, **kwargs)


class trace(Messenger):
    """Record every site's message into an ordered dict ``name -> message``.

    Raises ValueError if two sample, param or deterministic sites share a name.
    """

    def __enter__(self):
        super().__enter__()
        self.trace: OrderedDict[str, dict] = OrderedDict()
        return self.trace

    def postprocess_message(self, msg: dict) -> None:
        if msg["type"] == "prng_key":
            return  # a key request (ppl.prng_key), not a site
        name = msg["name"]
        # a plate may be entered several times, and a param looked up without a value
        # (numpyro.module does before it initializes one) may be set; any other reuse
        # of a name is an error
        earlier = self.trace.get(name)
        if earlier is not None and not (
            msg["type"] == earlier["type"] == "plate"
            or (msg["type"] == earlier["type"] == "param" and earlier["value"] is None)
        ):
            other = earlier["type"]
            raise ValueError(
                f"duplicate site name '{name}': a {msg['type']} site reuses the name of a "
                f"{other} site; every site needs a unique name (vectorize with ppl.plate, "
                "or build names like f'x_{i}' in loops)"
            )
        self.trace[name] = msg.copy()

    def get_trace(self, *args, **kwargs) -> OrderedDict[str, dict]:
        """Run the wrapped function and return its trace."""
        self(*args, **kwargs)
        return self.trace


class seed(Messenger):
    """Provide random keys to sites that must draw a value.

    The key is reset to ``rng_seed`` every time the handler is entered, so a
    seeded model called twice with the same inputs returns the same draws.

    Args:
        fn: the function to wrap.
        rng_seed: an int or a ``jax.random`` key.
    """

    gives_keys = True  # inside a ppl.scan body its view runs innermost

    def __init__(self, fn: Callable | None = None, rng_seed: Any = None):
        if rng_seed is None:
            raise ValueError("seed needs rng_seed: an int or a jax.random key")
        if isinstance(rng_seed, int) or (
            jnp.ndim(rng_seed) == 0
            and not jnp.issubdtype(jnp.result_type(rng_seed), jax.dtypes.prng_key)
        ):
            rng_seed = jax.random.PRNGKey(rng_seed)
        self._initial_key = rng_seed
        self.rng_key = rng_seed
        super().__init__(fn)

    def __enter__(self):
        self.rng_key = self._initial_key
        return super().__enter__()

    def process_message(self, msg: dict) -> None:
        if msg["type"] not in ("sample", "plate", "param", "prng_key") or msg["value"] is not None:
            return
        if msg["kwargs"].get("rng_key") is not None or "rng_key" not in msg["kwargs"]:
            return
        self.rng_key, key = jax.random.split(self.rng_key)
        msg["kwargs"]["rng_key"] = key

    def scan_handler(self, length: int) -> Callable[[Any], Messenger]:
        self.rng_key, key = jax.random.split(self.rng_key)
        return lambda step: seed(rng_seed=jax.random.fold_in(key, step))


def at_step(value: Any, msg: dict, step: Any, length: int) -> Any:
    """One step's part of ``value``, a value given for a site inside a ``ppl.scan`` body.

    A value with one more dim than the site has per step is a whole sequence: its entry
    ``step`` is returned. A sequence shorter than the scan (e.g. posterior draws of the
    observed years when forecasting past them) gives its entries while they last and
    fresh draws after (the site needs a random key then). Other values are returned as
    they are.
    """
    if value is None or msg["type"] != "sample":
        return value
    per_step = len(msg["kwargs"].get("sample_shape", ())) + len(msg["fn"].shape())
    if jnp.ndim(value) != per_step + 1:
        return value
    n = jnp.shape(value)[0]
    if n == length:
        return value[step]
    if n > length:
        raise ValueError(
            f"site '{msg['name']}' inside ppl.scan: the given value has {n} steps along its "
            f"leading axis, more than the scan's length {length}"
        )
    key = msg["kwargs"].get("rng_key")
    if key is None:
        raise ValueError(
            f"site '{msg['name']}' inside ppl.scan: the given value has {n} steps, fewer than "
            f"the scan's {length}, and there is no random key to draw the rest: run the "
            "model inside ppl.handlers.seed"
        )
    fresh = msg["fn"](rng_key=key, sample_shape=msg["kwargs"].get("sample_shape", ()))
    return jnp.where(step < n, value[jnp.minimum(step, n - 1)], fresh)


class substitute(Messenger):
    """Give latent sample, param and plate sites fixed values.

    Substituted sites stay latent (they still count in the log density as
    latent variables); compare :class:`condition`, which makes them observed.
    Observed and deterministic sites are left alone.

    Args:
        fn: the function to wrap.
        data: dict ``name -> value``.
        substitute_fn: alternatively, a function ``msg -> value or None``.
    """

    def __init__(
        self,
        fn: Callable | None = None,
        data: dict | None = None,
        substitute_fn: Callable[[dict], Any] | None = None,
    ):
        if (data is None) == (substitute_fn is None):
            raise ValueError("substitute needs exactly one of data= or substitute_fn=")
        self.data = data
        self.substitute_fn = substitute_fn
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] not in ("sample", "param", "plate") or msg["is_observed"]:
            return
        if self.data is not None:
            value = self.data.get(msg["name"])
        else:
            value = self.substitute_fn(msg)
        if value is not None:
            msg["value"] = value

    def scan_handler(self, length: int) -> Callable[[Any], Messenger]:
        def step_view(step):
            return substitute(
                substitute_fn=lambda msg: at_step(self._given(msg), msg, step, length)
            )

        return step_view

    def _given(self, msg: dict) -> Any:
        if msg["type"] not in ("sample", "param", "plate") or msg["is_observed"]:
            return None
        if self.data is not None:
            return self.data.get(msg["name"])
        return self.substitute_fn(msg)


class condition(Messenger):
    """Observe sample sites at given values (they become likelihood terms).

    Args:
        fn: the function to wrap.
        data: dict ``name -> observed value``.
        condition_fn: alternatively, a function ``msg -> value or None``.
    """

    def __init__(
        self,
        fn: Callable | None = None,
        data: dict | None = None,
        condition_fn: Callable[[dict], Any] | None = None,
    ):
        if (data is None) == (condition_fn is None):
            raise ValueError("condition needs exactly one of data= or condition_fn=")
        self.data = data
        self.condition_fn = condition_fn
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] != "sample":
            return
        if self.data is not None:
            value = self.data.get(msg["name"])
        else:
            value = self.condition_fn(msg)
        if value is not None:
            msg["value"] = value
            msg["is_observed"] = True

    def scan_handler(self, length: int) -> Callable[[Any], Messenger]:
        def given(msg):
            if msg["type"] != "sample":
                return None
            return self.data.get(msg["name"]) if self.data is not None else self.condition_fn(msg)

        return lambda step: condition(
            condition_fn=lambda msg: at_step(given(msg), msg, step, length)
        )


class block(Messenger):
    """Hide sites from the handlers outside this one.

    Args:
        fn: the function to wrap.
        hide_fn: a function ``msg -> bool``; True hides the site.
        hide: names to hide.
        expose: names to keep visible (everything else is hidden).
        expose_types: site types to keep visible.
    With no argument every site is hidden.
    """

    def __init__(
        self,
        fn: Callable | None = None,
        hide_fn: Callable[[dict], bool] | None = None,
        hide: Iterable[str] | None = None,
        expose: Iterable[str] | None = None,
        expose_types: Iterable[str] | None = None,
    ):
        if hide_fn is not None:
            self.hide_fn = hide_fn
        elif hide is not None:
            hidden = set(hide)
            self.hide_fn = lambda msg: msg["name"] in hidden
        elif expose is not None:
            exposed = set(expose)
            self.hide_fn = lambda msg: msg["name"] not in exposed
        elif expose_types is not None:
            types = set(expose_types)
            self.hide_fn = lambda msg: msg["type"] not in types
        else:
            self.hide_fn = lambda msg: True
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        # key requests (ppl.prng_key) still reach the seed outside, as in NumPyro
        if msg["type"] != "prng_key" and self.hide_fn(msg):
            msg["stop"] = True


class replay(Messenger):
    """Reuse the values of latent sample (and plate) sites recorded in a trace.

    Args:
        fn: the function to wrap.
        trace: a trace from :class:`trace`, e.g. of a guide.
    """

    def __init__(self, fn: Callable | None = None, trace: dict | None = None):
        if trace is None:
            raise ValueError("replay needs trace=")
        self.guide_trace = trace
        self._step = None
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] not in ("sample", "plate") or msg["is_observed"]:
            return
        site = self.guide_trace.get(msg["name"])
        if site is None:
            return
        if site["type"] != msg["type"]:
            raise ValueError(
                f"replay: site '{msg['name']}' is a {msg['type']} site here but a "
                f"{site['type']} site in the replayed trace"
            )
        value = site["value"]
        if self._step is not None:
            value = at_step(value, msg, *self._step)
        msg["value"] = value

    def scan_handler(self, length: int) -> Callable[[Any], Messenger]:
        def step_view(step):
            view = replay(trace=self.guide_trace)
            view._step = (step, length)
            return view

        return step_view


class scale(Messenger):
    """Multiply the log-probability of every sample site by ``scale``.

    Args:
        fn: the function to wrap.
        scale: a positive float or an array broadcastable to the sites' batch shapes.
    """

    def __init__(self, fn: Callable | None = None, scale: Any = 1.0):
        if not isinstance(scale, jax.core.Tracer):
            arr = np.asarray(scale)
            if not np.all((arr > 0) & np.isfinite(arr)):
                raise ValueError(f"scale must be positive and finite, got {scale!r}")
        self.scale = scale
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] != "sample":
            return
        msg["scale"] = self.scale if msg["scale"] is None else self.scale * msg["scale"]


class mask(Messenger):
    """Drop log-probability terms where ``mask`` is False.

    Args:
        fn: the function to wrap.
        mask: a bool or a boolean array broadcastable to the sites' batch shapes.
    """

    def __init__(self, fn: Callable | None = None, mask: Any = True):
        dtype = jnp.result_type(mask)
        if dtype != jnp.bool_:
            raise TypeError(f"mask must be boolean, got dtype {dtype}")
        self.mask = mask
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] != "sample":
            return
        msg["mask"] = self.mask if msg["mask"] is None else (self.mask & msg["mask"])


class do(Messenger):
    """Intervene: set sample sites to fixed values, cutting their dependence on parents.

    The site is still drawn (and recorded under its own name), but the code
    downstream receives the intervention value, recorded as the observed site
    ``name + "__CF"`` that outer handlers do not see.

    Args:
        fn: the function to wrap.
        data: dict ``name -> intervention value``.
    """

    def __init__(self, fn: Callable | None = None, data: dict | None = None):
        if data is None:
            raise ValueError("do needs data=")
        self.data = data
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] != "sample" or msg["name"] not in self.data:
            return
        if msg["infer"].get("_do_id") == id(self):
            return
        msg["infer"]["_do_id"] = id(self)
        # the handlers inside this one have already processed the site: send the
        # original on to the outer handlers only
        original = msg.copy()
        original["infer"] = dict(msg["infer"])
        original["kwargs"] = dict(msg["kwargs"])
        original["cond_indep_stack"] = list(msg["cond_indep_stack"])
        apply_stack(original, outer_of=self)
        msg["name"] = msg["name"] + "__CF"
        msg["value"] = self.data[original["name"]]
        msg["is_observed"] = True
        msg["stop"] = True


class reparam(Messenger):
    """Reparameterize sample sites, e.g. non-centering (see :mod:`ppl.reparam`).

    Args:
        fn: the function to wrap.
        config: dict ``name -> reparameterizer``, or a function
            ``msg -> reparameterizer or None``.

    Example:
        >>> from ppl.reparam import LocScaleReparam
        >>> import ppl, ppl.distributions as dist
        >>> def model():
        ...     return ppl.sample("theta", dist.Normal(1.0, 2.0))
        >>> noncentered = reparam(model, config={"theta": LocScaleReparam()})
        >>> sorted(trace(seed(noncentered, rng_seed=0)).get_trace())
        ['theta', 'theta_decentered']
    """

    def __init__(self, fn: Callable | None = None, config: Any = None):
        if config is None:
            raise ValueError("reparam needs config=: a dict or a function of the site")
        self.config = config
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] != "sample":
            return
        if isinstance(self.config, dict):
            reparameterizer = self.config.get(msg["name"])
        else:
            reparameterizer = self.config(msg)
        if reparameterizer is None:
            return
        new_fn, value = reparameterizer(msg["name"], msg["fn"], msg["value"])
        if value is None:
            msg["fn"] = new_fn
            return
        if new_fn is None:
            # the site is now a deterministic function of the new auxiliary sites
            msg.update(
                type="deterministic",
                fn=None,
                value=value,
                is_observed=False,
                args=(),
                kwargs={},
            )
            return
        if msg["value"] is None:
            msg["is_observed"] = True
        msg["fn"] = new_fn
        msg["value"] = value

    def scan_handler(self, length: int) -> Callable[[Any], Messenger]:
        return lambda step: self
