"""One runner per sampler: the same model, settings and initialisation for each.

Every runner samples with NUTS, a diagonal mass matrix adapted by a windowed
warmup, target acceptance 0.8, maximum tree depth 10, all chains in one program
(vmapped for NumPyro and BlackJAX; ppl with its default ``chain_method="auto"``, which
on a CPU loops over the chains inside the program, in one thread per core for equal
groups of chains, and vmaps them on an accelerator; ``ppl:chain_method=looped`` uses one
thread, ``ppl:chain_method=vectorized`` vmaps them everywhere), starting points uniform in
(-2, 2) on the unconstrained scale. A runner's :meth:`run` is the timed unit: from the
call to the sampler to the constrained draws of every site as blocked device arrays.

- ``ppl``: ``ppl.infer.MCMC(ppl.infer.NUTS(model))`` on the ppl version of the model.
- ``numpyro``: ``numpyro.infer.MCMC(numpyro.infer.NUTS(model))`` on the numpyro version.
- ``blackjax``: ``blackjax.window_adaptation(blackjax.nuts, logdensity)`` then
  ``blackjax.nuts`` with the adapted parameters, where ``logdensity`` is minus
  numpyro's potential function of the numpyro version; warmup and sampling of all
  chains are one jitted, vmapped function, built once and reused by later runs.
- ``nutpie``: the PyMC version of the model (:mod:`benchmarks.pymc_models`) compiled
  with ``nutpie.compile_pymc_model`` (numba backend) and sampled with ``nutpie.sample``
  and its own (gradient-based) warmup; nutpie runs the chains on threads, in parallel
  over the usable cores, where the JAX samplers vectorize them.

A sampler may be given options, ``name:key=value:...`` (:func:`parse_sampler`): for
``ppl`` they are keyword arguments of ``ppl.infer.NUTS`` (``ppl:adaptation=stan``), for
``nutpie`` of ``nutpie.sample`` (``nutpie:adaptation=low_rank``), so that variants of
one sampler can be compared side by side.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from benchmarks.models import ModelChoice

__all__ = [
    "RUNNERS",
    "SAMPLERS",
    "CompileClock",
    "RunResult",
    "SamplerSpec",
    "Settings",
    "format_sampler",
    "parse_sampler",
    "time_gradient",
]

SAMPLERS = ("ppl", "numpyro", "blackjax", "nutpie")
# The Python modules each sampler needs; a sampler with a module missing is skipped.
SAMPLER_MODULES = {
    "ppl": ("ppl",),
    "numpyro": ("numpyro",),
    "blackjax": ("blackjax",),
    "nutpie": ("pymc", "nutpie"),
}
# Samplers that take options (``name:key=value``), and what the options are passed to.
SAMPLER_OPTIONS = {"ppl": "ppl.infer.NUTS", "nutpie": "nutpie.sample"}

TARGET_ACCEPT = 0.8
MAX_TREE_DEPTH = 10
INIT_RADIUS = 2.0


@dataclass(frozen=True)
class Settings:
    chains: int
    warmup: int
    draws: int


# ---------------------------------------------------------------------- sampler specs


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler and its options, e.g. ``ppl:adaptation=stan`` (see :func:`parse_sampler`).

    Attributes:
        name: the sampler, one of :data:`SAMPLERS`.
        options: keyword arguments for the sampler (``{}`` for the plain sampler).
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The spec as text: the sampler's key in results and on command lines."""
        return format_sampler(self.name, self.options)


def _parse_value(text: str) -> Any:
    """``"true"``/``"false"`` -> bool, else int, else float, else the string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def format_sampler(name: str, options: dict[str, Any]) -> str:
    """``name:key=value:...`` in the given option order (the inverse of parse_sampler)."""
    parts = [name]
    for key, value in options.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        parts.append(f"{key}={text}")
    return ":".join(parts)


def parse_sampler(text: str) -> SamplerSpec:
    """``"ppl:adaptation=stan:max_tree_depth=8"`` -> SamplerSpec("ppl", {...}).

    Values are read as bool (``true``/``false``), int, float or else string. Only
    the samplers in ``SAMPLER_OPTIONS`` take options; whether the library accepts
    an option is checked when the sampler is built (in the worker).

    Raises:
        ValueError: unknown sampler, malformed or repeated option, or options given to
            a sampler that takes none.
    """
    name, *assignments = text.strip().split(":")
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {list(SAMPLERS)}")
    if assignments and name not in SAMPLER_OPTIONS:
        raise ValueError(
            f"sampler {name!r} takes no options (got {text!r}); options are for "
            + ", ".join(f"{k} ({v})" for k, v in SAMPLER_OPTIONS.items())
        )
    options: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key.isidentifier() or not value:
            raise ValueError(f"bad sampler option {assignment!r} in {text!r}: use key=value")
        if key in options:
            raise ValueError(f"sampler option {key!r} given twice in {text!r}")
        options[key] = _parse_value(value)
    return SamplerSpec(name, options)


# ---------------------------------------------------------------------- results


@dataclass
class RunResult:
    """What one timed run produced.

    Attributes:
        samples: constrained draws of every latent and deterministic site, numpy,
            shape (chains, draws, ...).
        n_grad: leapfrog steps (gradient evaluations) of the sampling phase, all chains.
        divergences: divergent transitions in the sampling phase, all chains.
        wall_s: wall time of the run.
        compile_s: time spent tracing, lowering and compiling JAX programs during the run.
        step_size: adapted step size per chain.
        n_grad_warmup: gradient evaluations of the warmup (and of an initialisation such as
            Pathfinder), all chains, where the sampler reports them (ppl); else None.
    """

    samples: dict[str, np.ndarray]
    n_grad: int
    divergences: int
    wall_s: float
    compile_s: float
    step_size: list[float] = field(default_factory=list)
    n_grad_warmup: int | None = None


# ---------------------------------------------------------------------- compile time


_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


class CompileClock:
    """Seconds JAX spends tracing, lowering and compiling, from ``jax.monitoring`` events.

    Nested events (a jit traced inside another's trace) are merged as a union of time
    spans, so nothing is counted twice. One listener per process.
    """

    _spans: ClassVar[list[tuple[float, float]]] = []
    _installed: ClassVar[bool] = False

    @classmethod
    def install(cls) -> None:
        if cls._installed:
            return

        def listener(event: str, start: float, end: float, **_: Any) -> None:
            if event in _COMPILE_EVENTS:
                cls._spans.append((start, end))

        jax.monitoring.register_event_time_span_listener(listener)
        cls._installed = True

    @classmethod
    def mark(cls) -> int:
        cls.install()
        return len(cls._spans)

    @classmethod
    def seconds_since(cls, mark: int) -> float:
        spans = sorted(cls._spans[mark:])
        total, current_start, current_end = 0.0, None, None
        for start, end in spans:
            if current_end is None or start > current_end:
                if current_end is not None:
                    total += current_end - current_start
                current_start, current_end = start, end
            else:
                current_end = max(current_end, end)
        if current_end is not None:
            total += current_end - current_start
        return total


# ---------------------------------------------------------------------- gradient timing


def time_calls(
    call: Callable[[], Any],
    *,
    blocks: int = 5,
    block_calls: int = 40,
    block_seconds: float = 0.05,
) -> float:
    """Microseconds per ``call()`` (which must block until its result is ready).

    The median over a block of calls (at least ``block_calls`` of them and
    ``block_seconds`` long), in ``blocks`` separate blocks, the smallest median kept so
    that a burst of load from other processes does not count; after 10 warm-up calls.
    """
    for _ in range(10):
        call()
    medians = []
    for _ in range(blocks):
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < block_calls or time.perf_counter() - start < block_seconds:
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        medians.append(float(np.median(times)))
    return min(medians) * 1e6


def time_loop(
    run_loop: Callable[[int], Any], *, blocks: int = 5, loop_seconds: float = 0.05
) -> float:
    """Microseconds per iteration of ``run_loop(n)`` (a compiled loop of ``n`` dependent
    evaluations that blocks until done): ``n`` grows until a loop takes about
    ``loop_seconds``, then the best of ``blocks`` repeats, divided by ``n``."""

    def elapsed(n: int) -> float:
        t0 = time.perf_counter()
        run_loop(n)
        return time.perf_counter() - t0

    n = 100
    seconds = elapsed(n)  # compiles
    seconds = elapsed(n)
    while seconds < loop_seconds / 4 and n < 10**7:
        n *= 10
        seconds = elapsed(n)
    n = max(n, int(n * loop_seconds / max(seconds, 1e-9)))
    return min(elapsed(n) for _ in range(blocks)) / n * 1e6


def time_gradient(
    value_and_grad: Callable[[Any], Any],
    point: Any,
    *,
    blocks: int = 5,
    block_calls: int = 40,
    block_seconds: float = 0.05,
    loop_seconds: float = 0.05,
) -> dict[str, float]:
    """Microseconds per gradient of a (not yet jitted) JAX ``value_and_grad`` function.

    Returns:
        ``us_per_grad``: median wall time of one jitted call at ``point`` with
        ``block_until_ready`` (includes the dispatch overhead of a jitted call), see
        :func:`time_calls`; ``us_per_grad_loop``: time per evaluation inside one
        compiled loop of many evaluations (each step depends on the last, so none can
        be skipped), closer to the cost inside a sampler's while loop, see
        :func:`time_loop`.
    """
    single = jax.jit(value_and_grad)
    us_single = time_calls(
        lambda: jax.block_until_ready(single(point)),
        blocks=blocks,
        block_calls=block_calls,
        block_seconds=block_seconds,
    )

    @jax.jit
    def loop(x, n):
        def body(_, carry):
            x, acc = carry
            value, grad = value_and_grad(x)
            x = jax.tree.map(lambda a, g: a + 1e-9 * g.astype(a.dtype), x, grad)
            return x, acc + value

        return jax.lax.fori_loop(0, n, body, (x, jnp.zeros((), jnp.float32)))

    # n is traced: one program for every n
    us_loop = time_loop(
        lambda n: jax.block_until_ready(loop(point, n)), blocks=blocks, loop_seconds=loop_seconds
    )
    return {"us_per_grad": us_single, "us_per_grad_loop": us_loop}


# ---------------------------------------------------------------------- runners


def _init_parameters(callable_cls: type) -> set[str]:
    """Names of the keyword parameters of the ``__init__`` of a class and its bases (a
    subclass may forward ``**settings`` to its base)."""
    names: set[str] = set()
    for klass in inspect.getmro(callable_cls):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                names.add(p.name)
    return names


def _accepted(callable_cls: type, wanted: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``wanted`` that ``callable_cls(...)`` takes as named parameters."""
    names = _init_parameters(callable_cls)
    return {k: v for k, v in wanted.items() if k in names}


def source_digest(package: ModuleType) -> str:
    """Short sha256 of a package's .py files (names and contents): which code was measured,
    also when the working tree differs from the last commit."""
    root = Path(package.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _numpy_samples(samples: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in samples.items()}


class Runner:
    """Base class: ``run(seed)`` is timed; the rest is introspection done afterwards.

    Args:
        choice: the model and its sizes.
        data: the model's keyword arguments (from ``choice.data()``).
        settings: chains, warmup and draws.
        options: the spec's options (``ppl:adaptation=stan`` -> ``{"adaptation": "stan"}``);
            only samplers in ``SAMPLER_OPTIONS`` take any.
        ppl_adaptation: ``--ppl-adaptation``: the ``adaptation`` of ppl's NUTS where it
            takes one and the options do not set it; ignored by the other samplers.
    """

    name = ""

    def __init__(
        self,
        choice: ModelChoice,
        data: dict[str, Any],
        settings: Settings,
        options: dict[str, Any] | None = None,
        ppl_adaptation: str | None = None,
    ):
        self.choice = choice
        self.data = data
        self.settings = settings
        self.spec_options = dict(options or {})
        if self.spec_options and self.name not in SAMPLER_OPTIONS:
            raise ValueError(f"sampler {self.name!r} takes no options, got {self.spec_options}")
        self.ppl_adaptation = ppl_adaptation
        # What was passed to the library, recorded in the JSON.
        self.options: dict[str, Any] = {}

    def run(self, seed: int) -> RunResult:
        raise NotImplementedError

    def latent_sites(self) -> list[str]:
        """Names of the latent (sampled, unobserved) sites."""
        raise NotImplementedError

    def gradient(self, seed: int) -> tuple[Callable[[Any], Any], Any]:
        """``(value_and_grad of the log density or potential, a point)`` to time; the point
        is a uniform initial point on the unconstrained scale (flat or a dict of sites)."""
        raise NotImplementedError

    def measure_gradient(self, seed: int) -> dict[str, Any]:
        """``us_per_grad``, ``us_per_grad_loop`` (see :func:`time_gradient`) and ``dim``,
        the number of unconstrained parameters."""
        value_and_grad, point = self.gradient(seed)
        return {
            **time_gradient(value_and_grad, point),
            "dim": int(ravel_pytree(point)[0].shape[0]),
        }

    def versions(self) -> dict[str, str]:
        return {}


class PplRunner(Runner):
    name = "ppl"

    def __init__(self, choice, data, settings, options=None, ppl_adaptation=None):
        super().__init__(choice, data, settings, options, ppl_adaptation)
        import ppl

        self.ppl = ppl
        self.model = choice.build(ppl)
        self.mcmc = None
        self._ld = None

    def _make_mcmc(self):
        infer = self.ppl.infer
        nuts_kwargs = {"dense_mass": False, "target_accept_prob": TARGET_ACCEPT}
        nuts_kwargs.update(
            _accepted(infer.NUTS, {"max_tree_depth": MAX_TREE_DEPTH, "init_strategy": "uniform"})
        )
        ignored = []
        if self.ppl_adaptation is not None and "adaptation" not in self.spec_options:
            passed = _accepted(infer.NUTS, {"adaptation": self.ppl_adaptation})
            nuts_kwargs.update(passed)
            if not passed:
                ignored.append(f"adaptation={self.ppl_adaptation} (NUTS takes no adaptation)")
        # options MCMC takes and NUTS does not (e.g. init=pathfinder) go to MCMC
        for_nuts = _accepted(infer.NUTS, self.spec_options)
        for_mcmc = {
            k: v for k, v in _accepted(infer.MCMC, self.spec_options).items() if k not in for_nuts
        }
        unknown = sorted(set(self.spec_options) - set(for_nuts) - set(for_mcmc))
        if unknown:
            raise ValueError(
                f"ppl.infer.NUTS takes no option(s) {unknown} (from the sampler spec "
                f"{format_sampler(self.name, self.spec_options)!r}); it takes "
                f"{sorted(_init_parameters(infer.NUTS))}"
            )
        nuts_kwargs.update(for_nuts)
        mcmc_kwargs = {
            "num_warmup": self.settings.warmup,
            "num_samples": self.settings.draws,
            "num_chains": self.settings.chains,
            **for_mcmc,
        }
        mcmc_kwargs.update(_accepted(infer.MCMC, {"progress_bar": False}))
        kernel = infer.NUTS(self.model, **nuts_kwargs)
        self.options = {"NUTS": nuts_kwargs, "MCMC": mcmc_kwargs}
        # the kernel's resulting settings, defaults included (those it has)
        self.options["NUTS_settings"] = {
            name: str(getattr(kernel, name))
            for name in ("adaptation", "metric", "max_tree_depth", "target_accept_prob")
            if hasattr(kernel, name)
        }
        if ignored:
            self.options["ignored"] = ignored
        return infer.MCMC(kernel, **mcmc_kwargs)

    def run(self, seed):
        key = jax.random.PRNGKey(seed)
        mark = CompileClock.mark()
        t0 = time.perf_counter()
        if self.mcmc is None:
            self.mcmc = self._make_mcmc()
        self.mcmc.run(key, **self.data)
        samples = jax.block_until_ready(self.mcmc.get_samples(group_by_chain=True))
        wall = time.perf_counter() - t0
        compile_s = CompileClock.seconds_since(mark)
        stats = self.mcmc.get_sample_stats()
        step_size = stats.get("step_size")
        warmup_grads = getattr(self.mcmc.last_state, "num_steps_warmup", None)
        if warmup_grads is not None:
            warmup_grads = int(np.sum(warmup_grads))
            pathfinder = getattr(self.mcmc, "pathfinder_", None)
            if pathfinder is not None:
                warmup_grads += int(pathfinder.num_gradient_evals)
        return RunResult(
            samples=_numpy_samples(samples),
            n_grad=int(np.sum(stats["n_steps"])),
            divergences=int(np.sum(stats["diverging"])),
            wall_s=wall,
            compile_s=compile_s,
            step_size=[] if step_size is None else np.asarray(step_size)[:, 0].tolist(),
            n_grad_warmup=warmup_grads,
        )

    def _logdensity(self):
        if self._ld is None:
            self._ld = self.ppl.logdensity(self.model, **self.data)
        return self._ld

    def latent_sites(self):
        return [n for n, s in self._logdensity().sites.items() if s.kind == "latent"]

    def gradient(self, seed):
        ld = self._logdensity()
        return jax.value_and_grad(ld), ld.init(jax.random.PRNGKey(seed))

    def versions(self):
        return {
            "ppl": getattr(self.ppl, "__version__", "?"),
            "ppl_source_sha256": source_digest(self.ppl),
        }


class _NumPyroModel(Runner):
    """Shared by the numpyro and blackjax runners: the numpyro model and its potential."""

    def __init__(self, choice, data, settings, options=None, ppl_adaptation=None):
        super().__init__(choice, data, settings, options, ppl_adaptation)
        import numpyro
        from numpyro.infer import init_to_uniform
        from numpyro.infer.util import initialize_model

        self.numpyro = numpyro
        self.model = choice.build(numpyro)
        self._initialize_model = initialize_model
        self._init_strategy = init_to_uniform(radius=INIT_RADIUS)

    def _initialize(self, key):
        """numpyro's ModelInfo: init params (batched over ``key``'s leading axes), potential_fn,
        postprocess_fn."""
        return self._initialize_model(
            key,
            self.model,
            init_strategy=self._init_strategy,
            model_kwargs=self.data,
            dynamic_args=False,
        )

    def latent_sites(self):
        from numpyro import handlers

        tr = handlers.trace(handlers.seed(self.model, rng_seed=0)).get_trace(**self.data)
        return [
            name
            for name, site in tr.items()
            if site["type"] == "sample" and not site.get("is_observed", False)
        ]

    def gradient(self, seed):
        info = self._initialize(jax.random.PRNGKey(seed))
        potential = info.potential_fn

        def logdensity(z):
            return -potential(z)

        return jax.value_and_grad(logdensity), info.param_info.z

    def versions(self):
        return {"numpyro": self.numpyro.__version__}


class NumPyroRunner(_NumPyroModel):
    name = "numpyro"

    def __init__(self, choice, data, settings, options=None, ppl_adaptation=None):
        super().__init__(choice, data, settings, options, ppl_adaptation)
        self.mcmc = None

    def _make_mcmc(self):
        from numpyro.infer import MCMC, NUTS

        nuts_kwargs = {
            "dense_mass": False,
            "target_accept_prob": TARGET_ACCEPT,
            "max_tree_depth": MAX_TREE_DEPTH,
            "init_strategy": self._init_strategy,
        }
        mcmc_kwargs = {
            "num_warmup": self.settings.warmup,
            "num_samples": self.settings.draws,
            "num_chains": self.settings.chains,
            "chain_method": "vectorized",
            "progress_bar": False,
        }
        self.options = {
            "NUTS": {**nuts_kwargs, "init_strategy": f"init_to_uniform(radius={INIT_RADIUS})"},
            "MCMC": mcmc_kwargs,
        }
        return MCMC(NUTS(self.model, **nuts_kwargs), **mcmc_kwargs)

    def run(self, seed):
        key = jax.random.PRNGKey(seed)
        mark = CompileClock.mark()
        t0 = time.perf_counter()
        if self.mcmc is None:
            self.mcmc = self._make_mcmc()
        self.mcmc.run(
            key,
            extra_fields=("num_steps", "diverging", "adapt_state.step_size"),
            **self.data,
        )
        samples = jax.block_until_ready(self.mcmc.get_samples(group_by_chain=True))
        wall = time.perf_counter() - t0
        compile_s = CompileClock.seconds_since(mark)
        extra = self.mcmc.get_extra_fields(group_by_chain=True)
        return RunResult(
            samples=_numpy_samples(samples),
            n_grad=int(np.sum(extra["num_steps"])),
            divergences=int(np.sum(extra["diverging"])),
            wall_s=wall,
            compile_s=compile_s,
            step_size=np.asarray(extra["adapt_state.step_size"])[:, -1].tolist(),
        )


class BlackJAXRunner(_NumPyroModel):
    name = "blackjax"

    def __init__(self, choice, data, settings, options=None, ppl_adaptation=None):
        super().__init__(choice, data, settings, options, ppl_adaptation)
        import blackjax

        self.blackjax = blackjax
        self._sample = None
        self._postprocess = None

    def _build(self, potential_fn, postprocess_fn):
        """One jitted function: window adaptation then NUTS sampling, vmapped over chains."""
        blackjax = self.blackjax
        from blackjax.adaptation.base import get_filter_adapt_info_fn

        warmup, draws = self.settings.warmup, self.settings.draws

        def logdensity(z):
            return -potential_fn(z)

        adaptation = blackjax.window_adaptation(
            blackjax.nuts,
            logdensity,
            is_mass_matrix_diagonal=True,
            target_acceptance_rate=TARGET_ACCEPT,
            adaptation_info_fn=get_filter_adapt_info_fn(),
            max_num_doublings=MAX_TREE_DEPTH,
        )
        self.options = {
            "window_adaptation": {
                "is_mass_matrix_diagonal": True,
                "target_acceptance_rate": TARGET_ACCEPT,
                "num_steps": warmup,
            },
            "nuts": {"max_num_doublings": MAX_TREE_DEPTH},
            "init": f"numpyro init_to_uniform(radius={INIT_RADIUS})",
        }

        def one_chain(key, position):
            key_warmup, key_sample = jax.random.split(key)
            if warmup > 0:
                (state, params), _ = adaptation.run(key_warmup, position, num_steps=warmup)
            else:
                size = ravel_pytree(position)[0].shape[0]
                params = {"step_size": jnp.asarray(1.0), "inverse_mass_matrix": jnp.ones(size)}
                state = blackjax.nuts.init(position, logdensity)
            kernel = blackjax.nuts(logdensity, **{**params, "max_num_doublings": MAX_TREE_DEPTH})

            def body(state, key):
                state, info = kernel.step(key, state)
                return state, (state.position, info.num_integration_steps, info.is_divergent)

            keys = jax.random.split(key_sample, draws)
            _, (positions, steps, divergent) = jax.lax.scan(body, state, keys)
            return positions, steps, divergent, params["step_size"]

        self._sample = jax.jit(jax.vmap(one_chain))
        self._postprocess = jax.jit(jax.vmap(jax.vmap(postprocess_fn)))

    def run(self, seed):
        key = jax.random.PRNGKey(seed)
        mark = CompileClock.mark()
        t0 = time.perf_counter()
        key_init, key_chains = jax.random.split(key)
        info = self._initialize(jax.random.split(key_init, self.settings.chains))
        if self._sample is None:
            self._build(info.potential_fn, info.postprocess_fn)
        chain_keys = jax.random.split(key_chains, self.settings.chains)
        positions, steps, divergent, step_size = self._sample(chain_keys, info.param_info.z)
        samples = jax.block_until_ready(self._postprocess(positions))
        wall = time.perf_counter() - t0
        compile_s = CompileClock.seconds_since(mark)
        return RunResult(
            samples=_numpy_samples(samples),
            n_grad=int(np.sum(steps)),
            divergences=int(np.sum(divergent)),
            wall_s=wall,
            compile_s=compile_s,
            step_size=np.asarray(step_size).tolist(),
        )

    def versions(self):
        return {**super().versions(), "blackjax": self.blackjax.__version__}


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# nutpie.sample arguments fixed by the harness (the same settings as every sampler).
_NUTPIE_FIXED = ("draws", "tune", "chains", "cores", "seed", "target_accept", "maxdepth")


class NutpieRunner(Runner):
    """nutpie on the PyMC version of the model (numba backend), chains on threads.

    The cold run includes building the PyMC model and ``nutpie.compile_pymc_model``
    (its time is ``compile_s``: PyTensor graph rewrites and numba compilation); the
    warm run reuses the compiled model. Chains start uniform in (-2, 2) on the
    unconstrained scale, like the other samplers (nutpie's own default is PyMC's
    support point with jitter). Options of the spec (``nutpie:adaptation=low_rank``)
    are passed to ``nutpie.sample``.
    """

    name = "nutpie"

    def __init__(self, choice, data, settings, options=None, ppl_adaptation=None):
        super().__init__(choice, data, settings, options, ppl_adaptation)
        import nutpie
        import pymc

        from benchmarks.pymc_models import PYMC_MODELS

        clash = sorted(set(self.spec_options) & set(_NUTPIE_FIXED))
        if clash:
            raise ValueError(
                f"nutpie option(s) {clash} are set by the harness (from --chains, --warmup, "
                "--draws, --seed and the common NUTS settings); remove them from the spec"
            )
        if choice.model.name not in PYMC_MODELS:
            raise ValueError(f"no PyMC version of model {choice.model.name!r}")
        self.nutpie = nutpie
        self.pymc = pymc
        self.pm_model = None
        self.compiled = None
        self.cores = min(settings.chains, usable_cores())

    def _initial_point(self, seed: Any) -> np.ndarray:
        """Uniform in (-INIT_RADIUS, INIT_RADIUS), float64, shape (dim,); nutpie calls this
        once per chain (and again on a failed start) with its own seed."""
        rng = np.random.default_rng(int(seed) if seed is not None else None)
        return rng.uniform(-INIT_RADIUS, INIT_RADIUS, size=self.compiled.n_dim)

    def _compile(self) -> None:
        from benchmarks.pymc_models import build_pymc_model

        self.pm_model = build_pymc_model(self.choice.model.name, self.data)
        compiled = self.nutpie.compile_pymc_model(self.pm_model, backend="numba")
        self.compiled = dataclasses.replace(compiled, initial_point_func=self._initial_point)

    def run(self, seed):
        t0 = time.perf_counter()
        compile_s = 0.0
        if self.compiled is None:
            self._compile()
            compile_s = time.perf_counter() - t0
        kwargs = {
            "draws": self.settings.draws,
            "tune": self.settings.warmup,
            "chains": self.settings.chains,
            "cores": self.cores,
            "seed": seed,
            "target_accept": TARGET_ACCEPT,
            "maxdepth": MAX_TREE_DEPTH,
            "progress_bar": False,
            "save_warmup": False,
            **self.spec_options,
        }
        trace = self.nutpie.sample(self.compiled, **kwargs)
        posterior = trace["posterior"]
        samples = {name: np.asarray(posterior[name].values) for name in posterior.data_vars}
        wall = time.perf_counter() - t0
        stats = trace["sample_stats"]
        self.options = {
            "compile_pymc_model": {"backend": "numba"},
            "sample": {k: v for k, v in kwargs.items() if k != "seed"},
            "init": f"uniform(-{INIT_RADIUS}, {INIT_RADIUS}) on the unconstrained scale",
            "float": "float64 (PyMC default)",
        }
        return RunResult(
            samples=samples,
            n_grad=int(np.sum(stats["n_steps"].values)),
            divergences=int(np.sum(stats["diverging"].values)),
            wall_s=wall,
            compile_s=compile_s,
            step_size=np.asarray(stats["step_size"].values)[:, -1].tolist(),
        )

    def latent_sites(self):
        if self.pm_model is None:
            self._compile()
        return [rv.name for rv in self.pm_model.free_RVs]

    def measure_gradient(self, seed):
        """``us_per_grad``: one call of the compiled (numba-mode) PyTensor function that
        returns the log density and its gradient, from Python; ``us_per_grad_loop``: per
        evaluation in a numba loop calling the C callback that nutpie's sampler calls."""
        if self.compiled is None:
            self._compile()
        point = self._initial_point(seed)
        function = self.compiled.logp_func
        result: dict[str, Any] = {
            "us_per_grad": time_calls(lambda: function(point)),
            "us_per_grad_loop": None,
            "dim": int(self.compiled.n_dim),
        }
        try:
            result["us_per_grad_loop"] = time_loop(_numba_gradient_loop(self.compiled, point))
        except Exception as exc:  # the callback and its user data are not public API
            result["us_per_grad_loop_error"] = f"{type(exc).__name__}: {exc}"
        return result

    def versions(self):
        import numba
        import pytensor

        return {
            "nutpie": self.nutpie.__version__,
            "pymc": self.pymc.__version__,
            "pytensor": pytensor.__version__,
            "numba": numba.__version__,
        }


def _numba_gradient_loop(compiled: Any, point: np.ndarray) -> Callable[[int], float]:
    """``run(n)``: n dependent evaluations, inside one ``numba.njit`` loop, of the C
    callback nutpie's sampler calls for the log density and its gradient
    (``compiled.compiled_logp_func``, with the compiled model's user data)."""
    import numba
    from nutpie.compile_pymc import address_as_void_pointer

    callback = compiled.compiled_logp_func
    dim = np.uint64(compiled.n_dim)
    user_data = compiled.user_data  # kept alive by the closure below

    @numba.njit
    def loop(x, n, user_data_address):
        user_data_pointer = address_as_void_pointer(user_data_address)
        grad = np.empty_like(x)
        logp = np.empty(())
        total = 0.0
        for _ in range(n):
            status = callback(dim, x.ctypes, grad.ctypes, logp.ctypes, user_data_pointer)
            if status != 0:
                raise RuntimeError("nutpie's log density callback failed")
            x = x + 1e-9 * grad
            total += logp[()]
        return total

    return lambda n: loop(point.copy(), n, user_data.ctypes.data)


RUNNERS: dict[str, type[Runner]] = {
    "ppl": PplRunner,
    "numpyro": NumPyroRunner,
    "blackjax": BlackJAXRunner,
    "nutpie": NutpieRunner,
}
