"""One runner per sampler: the same model, settings and initialisation for each.

Every runner samples with NUTS, a diagonal mass matrix adapted by a windowed
warmup, target acceptance 0.8, maximum tree depth 10, all chains vectorized with
``vmap`` in one program, starting points uniform in (-2, 2) on the unconstrained
scale. A runner's :meth:`run` is the timed unit: from the call to the sampler
to the constrained draws of every site as blocked device arrays.

- ``ppl``: ``ppl.infer.MCMC(ppl.infer.NUTS(model))`` on the ppl version of the model.
- ``numpyro``: ``numpyro.infer.MCMC(numpyro.infer.NUTS(model))`` on the numpyro version.
- ``blackjax``: ``blackjax.window_adaptation(blackjax.nuts, logdensity)`` then
  ``blackjax.nuts`` with the adapted parameters, where ``logdensity`` is minus
  numpyro's potential function of the numpyro version; warmup and sampling of all
  chains are one jitted, vmapped function, built once and reused by later runs.
"""

from __future__ import annotations

import hashlib
import inspect
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
    "Settings",
    "time_gradient",
]

SAMPLERS = ("ppl", "numpyro", "blackjax")
# The Python module each sampler needs; a sampler whose module is missing is skipped.
SAMPLER_MODULES = {"ppl": "ppl", "numpyro": "numpyro", "blackjax": "blackjax"}

TARGET_ACCEPT = 0.8
MAX_TREE_DEPTH = 10
INIT_RADIUS = 2.0


@dataclass(frozen=True)
class Settings:
    chains: int
    warmup: int
    draws: int


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
    """

    samples: dict[str, np.ndarray]
    n_grad: int
    divergences: int
    wall_s: float
    compile_s: float
    step_size: list[float] = field(default_factory=list)


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


def time_gradient(
    value_and_grad: Callable[[Any], Any],
    point: Any,
    *,
    blocks: int = 5,
    block_calls: int = 40,
    block_seconds: float = 0.05,
    loop_seconds: float = 0.05,
) -> dict[str, float]:
    """Microseconds per gradient of a (not yet jitted) ``value_and_grad`` function.

    Returns:
        ``us_per_grad``: median wall time of one jitted call at ``point`` with
        ``block_until_ready`` (includes the dispatch overhead of a jitted call),
        taken in ``blocks`` separate blocks of calls, the smallest block median kept
        so that a burst of load from other processes does not count;
        ``us_per_grad_loop``: time per evaluation inside one compiled loop of many
        evaluations (each step depends on the last, so none can be skipped), closer
        to the cost inside a sampler's while loop; the best of ``blocks`` repeats.
    """
    single = jax.jit(value_and_grad)
    for _ in range(10):
        jax.block_until_ready(single(point))
    medians = []
    for _ in range(blocks):
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < block_calls or time.perf_counter() - start < block_seconds:
            t0 = time.perf_counter()
            jax.block_until_ready(single(point))
            times.append(time.perf_counter() - t0)
        medians.append(float(np.median(times)))
    us_single = min(medians) * 1e6

    @jax.jit
    def loop(x, n):
        def body(_, carry):
            x, acc = carry
            value, grad = value_and_grad(x)
            x = jax.tree.map(lambda a, g: a + 1e-9 * g.astype(a.dtype), x, grad)
            return x, acc + value

        return jax.lax.fori_loop(0, n, body, (x, jnp.zeros((), jnp.float32)))

    def run_loop(n: int) -> float:
        t0 = time.perf_counter()
        jax.block_until_ready(loop(point, n))
        return time.perf_counter() - t0

    n = 100
    elapsed = run_loop(n)  # compiles (n is traced: one program for every n)
    elapsed = run_loop(n)
    while elapsed < loop_seconds / 4 and n < 10**7:
        n *= 10
        elapsed = run_loop(n)
    n = max(n, int(n * loop_seconds / max(elapsed, 1e-9)))
    best = min(run_loop(n) for _ in range(blocks))
    return {"us_per_grad": us_single, "us_per_grad_loop": best / n * 1e6}


# ---------------------------------------------------------------------- runners


def _accepted(callable_cls: type, wanted: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``wanted`` that ``callable_cls(...)`` takes as named parameters.

    Looks through the ``__init__`` of the class and its bases, since a subclass may
    forward ``**settings`` to its base.
    """
    names: set[str] = set()
    for klass in inspect.getmro(callable_cls):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                names.add(p.name)
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
    """Base class: ``run(seed)`` is timed; the rest is introspection done afterwards."""

    name = ""

    def __init__(self, choice: ModelChoice, data: dict[str, Any], settings: Settings):
        self.choice = choice
        self.data = data
        self.settings = settings
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

    def versions(self) -> dict[str, str]:
        return {}


class PplRunner(Runner):
    name = "ppl"

    def __init__(self, choice, data, settings):
        super().__init__(choice, data, settings)
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
        mcmc_kwargs = {
            "num_warmup": self.settings.warmup,
            "num_samples": self.settings.draws,
            "num_chains": self.settings.chains,
            "chain_method": "vectorized",
        }
        mcmc_kwargs.update(_accepted(infer.MCMC, {"progress_bar": False}))
        self.options = {"NUTS": nuts_kwargs, "MCMC": mcmc_kwargs}
        return infer.MCMC(infer.NUTS(self.model, **nuts_kwargs), **mcmc_kwargs)

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
        return RunResult(
            samples=_numpy_samples(samples),
            n_grad=int(np.sum(stats["n_steps"])),
            divergences=int(np.sum(stats["diverging"])),
            wall_s=wall,
            compile_s=compile_s,
            step_size=[] if step_size is None else np.asarray(step_size)[:, 0].tolist(),
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

    def __init__(self, choice, data, settings):
        super().__init__(choice, data, settings)
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

    def __init__(self, choice, data, settings):
        super().__init__(choice, data, settings)
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

    def __init__(self, choice, data, settings):
        super().__init__(choice, data, settings)
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


RUNNERS: dict[str, type[Runner]] = {
    "ppl": PplRunner,
    "numpyro": NumPyroRunner,
    "blackjax": BlackJAXRunner,
}
