"""Compile a model and its data into a :class:`LogDensity` over a flat unconstrained vector.

This is the contract between the model layer and every engine::

    ld = ppl.logdensity(model, *args, **kwargs)
    ld.dim                  # size of the flat unconstrained vector
    ld(theta)               # log joint density at theta, Jacobians included (pure, jittable)
    ld.constrain(theta)     # {site: constrained value} for latent and deterministic sites
    ld.unconstrain(values)  # flat theta from {site: constrained value}
    ld.init(key, "uniform") # a valid starting theta, or an error naming the site at fault
    ld.sites                # {site: SiteInfo} metadata

Each latent site is mapped to the real line with ``biject_to(site.support)``
(numpyro's transforms) and its log-abs-det-Jacobian is added to the density,
scaled and masked like the site itself. Plates with subsampling keep the
indices drawn when the model was first traced, so the density is a
deterministic function of theta (use SVI for stochastic minibatches).

Per-site metadata and transforms come from :mod:`ppl.sites`, the handlers that set
latent sites and the init strategies from :mod:`ppl.latent`.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints

from ppl import contraction
from ppl.enumeration import Enumerate
from ppl.handlers import Messenger, trace
from ppl.latent import INIT_STRATEGIES as INIT_STRATEGIES
from ppl.latent import _SetLatent, _strategy, _Unconstrain
from ppl.model_data import (
    argument_names,
    array_arguments,
    find_concrete_leaves,
    join_data,
    split_data,
)
from ppl.sites import SiteInfo, _prototype_trace, _site_log_prob, _to_unconstrained, site_infos

__all__ = ["FunctionLogDensity", "InitializationError", "LogDensity", "SiteInfo", "logdensity"]

# compiled functions shared by LogDensity objects of the same model layout (see shared_jit)
_SHARED_JIT: dict = {}
_SHARED_JIT_SIZE = 256


class InitializationError(RuntimeError):
    """No starting point with a finite log density and gradient was found."""


def logdensity(model: Callable, *args: Any, **kwargs: Any) -> LogDensity:
    """Compile ``model(*args, **kwargs)`` into a :class:`LogDensity`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import ppl, ppl.distributions as dist
        >>> def model(y):
        ...     sigma = ppl.sample("sigma", dist.HalfNormal(1.0))
        ...     with ppl.plate("obs", y.shape[0]):
        ...         ppl.sample("y", dist.Normal(0.0, sigma), obs=y)
        >>> ld = ppl.logdensity(model, jnp.array([0.1, -0.3]))
        >>> ld.dim
        1
        >>> theta = ld.init(jax.random.PRNGKey(0))
        >>> bool(jnp.isfinite(ld(theta)))
        True
    """
    return LogDensity(model, args, kwargs)


class LogDensity:
    """A model with its data, as a log density over one flat unconstrained vector.

    Args:
        model: the model function.
        args, kwargs: the model's arguments (data).
        rng_seed: seed of the one prototype run that fixes the site layout
            (and the indices of subsampled plates).
    """

    def __init__(
        self,
        model: Callable,
        args: tuple = (),
        kwargs: dict | None = None,
        *,
        rng_seed: int = 0,
    ):
        if not callable(model):
            raise TypeError(f"model must be callable, got {model!r}")
        self.model = model
        self.args, self.kwargs = array_arguments(model, tuple(args), dict(kwargs or {}))
        prototype = _prototype_trace(model, self.args, self.kwargs, rng_seed)
        self.prototype_trace = prototype
        # arrays (a param may be a Python float): they are inputs of the compiled functions
        self._fixed = {
            name: jax.tree.map(jnp.asarray, site["value"])
            for name, site in prototype.items()
            if site["type"] in ("plate", "param")
        }
        self.sites = site_infos(prototype)
        self.latent_names = tuple(n for n, s in self.sites.items() if s.kind == "latent")
        self.enumerated_names = tuple(n for n, s in self.sites.items() if s.kind == "enumerated")
        nesting = max(
            (-f.dim for site in prototype.values() for f in site["cond_indep_stack"]),
            default=0,
        )
        self.max_plate_nesting = nesting
        self.dim = sum(self.sites[n].size for n in self.latent_names)

    # ------------------------------------------------------------------ compiled helpers
    def layout_key(self) -> tuple | None:
        """Hashable identity of (model, static data, site layout), or None if not hashable.

        Two LogDensity objects with the same key differ only in their array data, so
        they can share compiled functions that take the data as inputs.
        """
        _, structure = self._split_data()
        layout = tuple((n, s.kind, s.shape) for n, s in self.sites.items())
        key = (self.model, structure, layout)
        try:
            hash(key)
        except TypeError:
            return None
        return key

    def data_tree(self) -> dict:
        """The array data (model arguments, fixed plate indices and params) as a pytree."""
        dynamic, _ = self._split_data()
        return {"args": dynamic, "fixed": self._fixed}

    def with_data_tree(self, data: dict) -> LogDensity:
        """This layout with the array data of :meth:`data_tree` (e.g. traced in ``jit``)."""
        _, structure = self._split_data()
        args, kwargs = join_data(data["args"], structure)
        return self.with_data(args, kwargs, data["fixed"])

    @property
    def concrete_arguments(self) -> tuple[str, ...]:
        """The array arguments the model needs as concrete values, e.g. ``"dept"`` for a
        model calling ``np.unique(dept)`` or ``int(np.max(dept))``.

        The array data are normally traced inputs of the compiled functions (so that models
        of the same layout share them); these are compiled in as constants instead. Found,
        on first use, by tracing the log density abstractly.
        """
        leaves = jax.tree_util.tree_flatten_with_path((self.args, self.kwargs))[0]
        names = argument_names(self.model, leaves)
        return tuple(names[i] for i in self._concrete_leaves())

    def _concrete_leaves(self) -> tuple[int, ...]:
        """Indices of the argument leaves held concrete (see :attr:`concrete_arguments`)."""
        found = self.__dict__.get("_concrete")
        if found is None:
            found = self._concrete = find_concrete_leaves(self)
        return found

    def _split_data(self) -> tuple[list, tuple]:
        return split_data(self.args, self.kwargs, self._concrete_leaves())

    def shared_jit(self, name: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``jit(lambda *rest: fn(self, *rest))``, compiled once for every LogDensity of the
        same :meth:`layout_key` (the array data are passed as traced inputs)."""
        key = self.layout_key()
        if key is None:
            return jax.jit(lambda *rest: fn(self, *rest))
        full_key = (key, name)
        jitted = _SHARED_JIT.get(full_key)
        if jitted is None:
            template = self

            def with_data(data, *rest):
                return fn(template.with_data_tree(data), *rest)

            jitted = jax.jit(with_data)
            if len(_SHARED_JIT) >= _SHARED_JIT_SIZE:
                _SHARED_JIT.pop(next(iter(_SHARED_JIT)))
            _SHARED_JIT[full_key] = jitted
        data = self.data_tree()
        return lambda *rest: jitted(data, *rest)

    def _batch_value_and_grad(self) -> Callable:
        return self.shared_jit(
            "value_and_grad", lambda ld, thetas: jax.vmap(jax.value_and_grad(ld))(thetas)
        )

    @property
    def fixed_values(self) -> dict[str, Any]:
        """Values held fixed from the prototype run: plate (subsample) indices and params."""
        return dict(self._fixed)

    def with_data(self, args: tuple, kwargs: dict, fixed: dict | None = None) -> LogDensity:
        """The same layout with other data of the same shapes (e.g. traced inside ``jit``).

        No new prototype run is made: the sites, their shapes and the flat layout
        are this LogDensity's.
        """
        clone = copy.copy(self)
        clone.args = tuple(args)
        clone.kwargs = dict(kwargs)
        if fixed is not None:
            clone._fixed = dict(fixed)
        return clone

    # ------------------------------------------------------------------ layout
    def __repr__(self) -> str:
        model = getattr(self.model, "__name__", type(self.model).__name__)
        return f"LogDensity(model={model}, dim={self.dim}, latent={list(self.latent_names)})"

    def unflatten(self, theta: jax.Array) -> dict[str, jax.Array]:
        """Split a flat unconstrained vector (dim,) into ``{site: unconstrained value}``."""
        theta = jnp.asarray(theta)
        if theta.shape != (self.dim,):
            raise ValueError(
                f"expected a flat unconstrained vector of shape ({self.dim},), got shape "
                f"{theta.shape}; use jax.vmap for batches of points"
            )
        out = {}
        for name in self.latent_names:
            info = self.sites[name]
            out[name] = theta[info.offset : info.offset + info.size].reshape(
                info.unconstrained_shape
            )
        return out

    def flatten(self, unconstrained: dict[str, jax.Array]) -> jax.Array:
        """Inverse of :meth:`unflatten`."""
        missing = [n for n in self.latent_names if n not in unconstrained]
        if missing:
            raise KeyError(f"missing values for latent site(s) {missing}")
        parts = []
        for name in self.latent_names:
            info = self.sites[name]
            value = jnp.asarray(unconstrained[name])
            if value.shape != info.unconstrained_shape:
                raise ValueError(
                    f"site '{name}': unconstrained value has shape {value.shape}, expected "
                    f"{info.unconstrained_shape}"
                )
            parts.append(value.reshape(-1))
        if not parts:
            return jnp.zeros((0,))
        return jnp.concatenate([jnp.asarray(p, dtype=jnp.result_type(*parts)) for p in parts])

    # ------------------------------------------------------------------ evaluation
    def _run(
        self, handler: Messenger, enumerate_sites: bool = False, fixed: dict | None = None
    ) -> dict:
        """Trace the model under ``handler``. Enumerated sites take all their values
        (``enumerate_sites``; ``fixed`` holds some at given values), else their values
        from the prototype run."""
        if not self.enumerated_names:
            with trace() as tr, handler:
                self.model(*self.args, **self.kwargs)
            return tr
        if not enumerate_sites:
            fixed = {n: self.prototype_trace[n]["value"] for n in self.enumerated_names}
        enumerator = Enumerate(-(self.max_plate_nesting + 1), fixed)
        with trace() as tr, handler, enumerator:
            self.model(*self.args, **self.kwargs)
        return tr

    def trace_at(self, theta: jax.Array, fixed: dict | None = None) -> dict:
        """The model's trace with latent sites set from flat unconstrained ``theta``.

        Enumerated discrete sites take all their values at once (see
        :mod:`ppl.enumeration`), except those given in ``fixed``.
        """
        setter = _Unconstrain(self.unflatten(theta), self._fixed, self.sites)
        return self._run(setter, enumerate_sites=True, fixed=fixed)

    def log_density_terms(self, theta: jax.Array) -> dict[str, jax.Array]:
        """Each sample site's log-probability sum (Jacobian included) at ``theta``.

        With enumerated sites, the sites that depend on them give one term, named after
        the enumerated sites, their log-probability with the enumerated sites summed out.
        """
        tr = self.trace_at(theta)
        if not self.enumerated_names:
            return {
                name: _site_log_prob(site) for name, site in tr.items() if site["type"] == "sample"
            }
        _, outer, scanned = contraction.factors(tr)
        involved = {s for f in outer for s in f.sites}
        involved |= {s for group in scanned.values() for f in group for s in f.sites}
        terms = {
            name: _site_log_prob(site)
            for name, site in tr.items()
            if site["type"] == "sample" and name not in involved
        }
        label = "sum over " + ", ".join(self.enumerated_names)
        terms[label] = contraction.log_marginal(tr) - sum(terms.values())
        return terms

    def __call__(self, theta: jax.Array) -> jax.Array:
        """Log joint density at flat unconstrained ``theta`` of shape (dim,)."""
        if self.enumerated_names:
            total = contraction.log_marginal(self.trace_at(theta))
            return jnp.asarray(total, dtype=jnp.result_type(float))
        terms = self.log_density_terms(theta)
        total = jnp.zeros((), dtype=jnp.result_type(float))
        for value in terms.values():
            total = total + value
        return total

    log_density = __call__

    def constrain(self, theta: jax.Array, fixed: dict | None = None) -> dict[str, jax.Array]:
        """``{site: constrained value}`` for latent and deterministic sites at ``theta``.

        With enumerated sites, a deterministic site that depends on them is left out
        unless ``fixed`` gives their values (e.g. draws of ``ppl.infer.infer_discrete``).
        """
        tr = self.trace_at(theta, fixed=fixed)
        out = {}
        for name, site in tr.items():
            info = self.sites.get(name)
            if info is None or info.kind not in ("latent", "deterministic"):
                continue
            if jnp.shape(site["value"]) != info.shape:
                continue  # depends on the enumerated sites' values
            out[name] = site["value"]
        return out

    def unconstrain(self, values: dict[str, Any]) -> jax.Array:
        """Flat unconstrained vector (dim,) from ``{latent site: constrained value}``."""
        missing = [n for n in self.latent_names if n not in values]
        if missing:
            raise KeyError(f"unconstrain: no value given for latent site(s) {missing}")
        for name in self.latent_names:
            expected = self.sites[name].shape
            got = jnp.shape(values[name])
            if got != expected:
                raise ValueError(f"unconstrain: site '{name}' has shape {got}, expected {expected}")
        tr = self._run(_SetLatent(lambda msg: values[msg["name"]], self._fixed, self.sites))
        return self.flatten({name: _to_unconstrained(tr[name]) for name in self.latent_names})

    # ------------------------------------------------------------------ initialisation
    def init(
        self,
        key: jax.Array,
        strategy: str | dict[str, Any] = "uniform",
        *,
        num_chains: int | None = None,
        radius: float = 2.0,
        max_tries: int = 100,
    ) -> jax.Array:
        """A starting point with finite log density and gradient.

        Args:
            key: a ``jax.random`` key.
            strategy: "uniform" (each coordinate uniform in (-radius, radius) on the
                unconstrained scale, as Stan does), "median" (median of prior
                draws of each site), "prior" (a draw from the prior), or a dict of
                constrained values for some latent sites (the rest uniform).
            num_chains: None for one point of shape (dim,), else that many
                independent points, shape (num_chains, dim).
            radius: half-width of the uniform strategy.
            max_tries: draws to try per point before giving up.

        Returns:
            theta of shape (dim,) or (num_chains, dim).

        Raises:
            InitializationError naming the site(s) whose log-probability or
            gradient was not finite.
        """
        draw = self._init_sampler(strategy, radius)
        check = self._batch_value_and_grad()
        n = 1 if num_chains is None else int(num_chains)
        if n < 1:
            raise ValueError(f"num_chains must be positive, got {num_chains}")
        result = None
        valid = np.zeros(n, dtype=bool)
        for _ in range(max_tries):
            key, sub = jax.random.split(key)
            candidates = draw(jax.random.split(sub, n))
            value, grad = check(candidates)
            ok = np.asarray(jnp.isfinite(value) & jnp.all(jnp.isfinite(grad), axis=-1))
            if result is None:
                result = candidates
            take = ok & ~valid
            result = jnp.where(take[:, None], candidates, result)
            valid |= ok
            if valid.all():
                break
        if not valid.all():
            message = self._init_failure_message(strategy, key, draw, max_tries)
            raise InitializationError(message)
        return result[0] if num_chains is None else result

    def _init_sampler(self, strategy, radius: float) -> Callable[[jax.Array], jax.Array]:
        """A jitted function from keys (n, ...) to candidate points (n, dim)."""
        site_value = _strategy(strategy, self.latent_names, radius)

        def draw(ld, keys):
            def draw_one(key):
                tr = ld._run(_SetLatent(site_value, ld._fixed, ld.sites, rng_key=key))
                return ld.flatten({name: _to_unconstrained(tr[name]) for name in ld.latent_names})

            return jax.vmap(draw_one)(keys)

        if isinstance(strategy, str):
            return self.shared_jit(("init", strategy, radius), draw)
        return jax.jit(lambda keys: draw(self, keys))

    def _init_failure_message(self, strategy, key, draw, tries) -> str:
        bad_value: Counter[str] = Counter()
        bad_grad: Counter[str] = Counter()
        candidates = draw(jax.random.split(key, tries))
        terms = jax.jit(jax.vmap(self.log_density_terms))(candidates)
        _, grads = self._batch_value_and_grad()(candidates)
        for name, value in terms.items():
            bad_value[name] = int((~np.isfinite(np.asarray(value))).sum())
        for name in self.latent_names:
            info = self.sites[name]
            g = np.asarray(grads[:, info.offset : info.offset + info.size])
            bad_grad[name] = int((~np.isfinite(g).all(axis=1)).sum())
        label = strategy if isinstance(strategy, str) else "given values"
        parts = [
            f"site '{name}' log-probability not finite in {count} of {tries} tries"
            for name, count in bad_value.most_common()
            if count
        ]
        parts += [
            f"gradient with respect to site '{name}' not finite in {count} of {tries} tries"
            for name, count in bad_grad.most_common()
            if count
        ]
        detail = "; ".join(parts) or "the log density was not finite"
        return (
            f"could not initialize the model with strategy '{label}': no point with a finite "
            f"log density and gradient in {tries} tries ({detail}). Check that the data lie in "
            "the support of their distributions and that parameters cannot reach invalid "
            "values, or pass initial values as a dict"
        )


class FunctionLogDensity(LogDensity):
    """The LogDensity contract for a plain function ``theta (dim,) -> log density``.

    The single latent "site" is ``theta`` itself (already unconstrained).

    Args:
        fn: a pure JAX function of a flat vector of shape (dim,).
        dim: the vector's size.
        name: the site name used for draws.
    """

    def __init__(self, fn: Callable[[jax.Array], jax.Array], dim: int, name: str = "theta"):
        if not callable(fn):
            raise TypeError(f"expected a callable log density, got {fn!r}")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.fn = fn
        self.model = None
        self.args, self.kwargs = (), {}
        self.prototype_trace = {}
        self._fixed = {}
        self.dim = dim
        self.name = name
        self.sites = {
            name: SiteInfo(
                name,
                "latent",
                (dim,),
                (None,),
                event_shape=(dim,),
                support=constraints.real_vector,
                distribution="",
                unconstrained_shape=(dim,),
                offset=0,
                size=dim,
            )
        }
        self.latent_names = (name,)

    def layout_key(self) -> tuple | None:
        try:
            return hash(self.fn) and ("function", self.fn, self.dim, self.name)
        except TypeError:
            return None

    def __repr__(self) -> str:
        return f"FunctionLogDensity({getattr(self.fn, '__name__', self.fn)!r}, dim={self.dim})"

    def __call__(self, theta: jax.Array) -> jax.Array:
        theta = jnp.asarray(theta)
        if theta.shape != (self.dim,):
            raise ValueError(f"expected theta of shape ({self.dim},), got {theta.shape}")
        return self.fn(theta)

    log_density = __call__

    def log_density_terms(self, theta: jax.Array) -> dict[str, jax.Array]:
        return {self.name: self(theta)}

    def constrain(self, theta: jax.Array) -> dict[str, jax.Array]:
        return {self.name: jnp.asarray(theta)}

    def unconstrain(self, values: dict[str, Any]) -> jax.Array:
        return jnp.asarray(values[self.name]).reshape(self.dim)

    def _init_sampler(self, strategy, radius: float) -> Callable[[jax.Array], jax.Array]:
        if strategy != "uniform":
            raise ValueError(
                f"a plain log-density function has no prior: init strategy {strategy!r} is "
                "not available (use 'uniform' or give initial positions)"
            )

        def draw_one(key):
            return jax.random.uniform(key, (self.dim,), minval=-radius, maxval=radius)

        return jax.jit(jax.vmap(draw_one))
