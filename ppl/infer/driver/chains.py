"""How the chains of a run are batched, compiled and advanced: the chain methods.

A :class:`~ppl.infer.driver.program.Program` runs one chain (or all chains at once, for
kernels that adapt across chains). This module turns it into compiled functions over every
chain (:func:`compile_program`, kept in a small process-wide cache) and advances them
(:class:`ChainRun`), by ``chain_method``:

* ``"vectorized"``: all chains ``vmap``-ped in one program (on a device mesh, each device
  runs its own chains with ``shard_map``; see :mod:`ppl.infer.driver.sharding`);
* ``"looped"``: the chains one after another inside one program (``lax.map``);
* ``"threaded"``: the chains in equal groups, one per usable core, each group looped, the
  groups at once in threads (XLA runs a computation on the thread that calls it);
* ``"sequential"``: one chain after another, each its own call;
* ``"parallel"``: ``"vectorized"`` on a mesh of the available devices.

:class:`ChainRun` advances the chains' *segments* (all chains, one chain, or a thread's group)
in chunks of iterations, reports to :mod:`ppl.infer.driver.progress` between chunks, and
gathers the results; :class:`ppl.infer.MCMC` (:mod:`ppl.infer.driver.mcmc`) holds one.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from ppl.infer.driver import rescue, sharding, threads
from ppl.infer.driver.autosave import Autosave
from ppl.infer.driver.program import ChainCarry, Draws, Program, SamplingState
from ppl.infer.driver.progress import Progress, next_chunk

__all__ = [
    "CHAIN_METHODS",
    "LOOPED",
    "PROGRAM_CACHE",
    "ChainRun",
    "RunSizes",
    "Segment",
    "auto_chain_method",
    "compile_program",
    "shard_chains",
    "thread_groups",
    "usable_cores",
]

CHAIN_METHODS = ("auto", "vectorized", "looped", "threaded", "parallel", "sequential")
LOOPED = ("looped", "threaded")  # chains one after another inside a compiled program
PROGRAM_CACHE: dict = {}  # (layout, settings) -> (template LogDensity, compiled functions)
PROGRAM_CACHE_SIZE = 16


# ---------------------------------------------------------------------- choosing a method


def auto_chain_method(chains_batched: bool, mesh: Mesh | None, num_chains: int) -> str:
    """``chain_method="auto"``: how to run the chains on this backend.

    On a CPU, chains one after another inside one program ("looped"): a vmapped NUTS
    transition turns its tree-building while loop into a batched one, which selects every
    element of the loop state (checkpoints included) for every chain at every leapfrog
    step and waits for the longest tree, while one chain at a time updates its state in
    place (measured with ``python -m benchmarks`` on a 2-core CPU: 2.9x the ESS per second
    of vmapped chains on eight schools and on the 100-d Gaussian, level on radon). With
    several usable cores, groups of chains run that program at once in threads
    ("threaded"): XLA runs a computation on the thread that calls it, so each group has a
    core (1.3-2.1x the ESS per second of "looped" on the six ``python -m benchmarks`` models
    on 2 cores; least on the cheapest runs, where fixed per-run costs weigh most). On
    accelerators, and for kernels that adapt across chains (ChEES, MEADS) or runs on a
    device mesh, the chains run together ("vectorized").
    """
    if chains_batched or mesh is not None or jax.default_backend() != "cpu":
        return "vectorized"
    return "threaded" if thread_groups(num_chains) > 1 else "looped"


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def thread_groups(num_chains: int) -> int:
    """Chain groups for "threaded": the largest divisor of ``num_chains`` that does not
    exceed the usable cores (equal groups share one compiled program)."""
    cores = usable_cores()
    return max(g for g in range(1, min(cores, num_chains) + 1) if num_chains % g == 0)


# ---------------------------------------------------------------------- compiling


def compile_program(
    key: tuple, template: Any, build: Callable[[], Program], chain_method: str, mesh: Mesh | None
) -> dict:
    """The compiled functions of a program for every chain, from the cache or compiled now.

    Programs are shared by every ``MCMC`` in the process (a small LRU cache keyed by the
    model layout and the settings): a second ``MCMC`` with the same model layout and
    settings, e.g. in a notebook or a test that builds a fresh one, reuses the compiled
    chains instead of compiling them again.

    Args:
        key: the cache key (hashable: layout, kernel settings, run sizes, chain method, mesh).
        template: the ``LogDensity`` the program is for (kept with the entry, so that an
            ``id()`` in the key cannot be reused by another object meanwhile).
        build: makes the :class:`~ppl.infer.driver.program.Program` (called on a miss).
        chain_method: a resolved method (not "auto").
        mesh: the run's device mesh, or None.

    Returns:
        ``{"init", "empty_draws", "advance", "finish"}`` jitted over the chains, the
        warmup's ``"warmup_stops"`` (:class:`~ppl.infer.base.Warmup`), and, once a threaded
        run made it, ``"compiled_advance"``: its ahead-of-time executables.
    """
    entry = PROGRAM_CACHE.pop(key, None)
    if entry is None:
        program = build()
        entry = (template, _jit_program(program, _batching(program, chain_method, mesh)))
    PROGRAM_CACHE[key] = entry  # most recently used last
    while len(PROGRAM_CACHE) > PROGRAM_CACHE_SIZE:
        PROGRAM_CACHE.pop(next(iter(PROGRAM_CACHE)))
    return entry[1]


def _batching(program: Program, chain_method: str, mesh: Mesh | None) -> Callable:
    """``batch(fn, axes)``: a per-chain function over all chains (``axes`` 0: chain-batched
    argument, None: shared), as ``chain_method`` runs them."""
    if program.chain_axes or chain_method == "sequential":
        return lambda fn, axes: fn
    if chain_method in LOOPED:
        return _map_over_chains
    if mesh is None or mesh.shape.get("chain", 1) == 1:
        return lambda fn, axes: jax.vmap(fn, in_axes=axes)

    # Each device runs its own chains with its own loops. Left to XLA's automatic
    # partitioning, a vmapped while loop (NUTS's tree building) stops when every chain is
    # done: its predicate is a reduction over all chains, i.e. one cross-device all-reduce
    # per iteration, which costs more than a small model's gradient. The "data" axis (if
    # any) stays automatic: XLA sums the per-device partial log-likelihoods across it.
    def batch(fn, axes):
        specs = tuple(PartitionSpec("chain") if a == 0 else PartitionSpec() for a in axes)
        return jax.shard_map(
            jax.vmap(fn, in_axes=axes),
            mesh=mesh,
            in_specs=specs,
            out_specs=PartitionSpec("chain"),
            axis_names={"chain"},
            check_vma=False,
        )

    return batch


def _jit_program(program: Program, batch: Callable) -> dict:
    return {
        "init": jax.jit(batch(program.init, (0, None, None))),
        "empty_draws": jax.jit(batch(program.empty_draws, (0,))),
        "advance": jax.jit(
            batch(program.advance, (0, 0, 0, None, None, None)), donate_argnums=(1, 2)
        ),
        "finish": jax.jit(batch(program.finish, (0,))),
        "warmup_stops": tuple(program.warmup.stops),
    }


def _map_over_chains(fn: Callable, axes: tuple) -> Callable:
    """``fn`` over a leading chain axis of the arguments whose axis is 0, one chain after
    another inside the compiled program (``lax.map``); the others are shared."""

    def mapped(*args):
        chained = [a for a, axis in zip(args, axes, strict=True) if axis == 0]

        def one(xs):
            it = iter(xs)
            return fn(*(next(it) if axis == 0 else a for a, axis in zip(args, axes, strict=True)))

        return jax.lax.map(one, chained)

    return mapped


def shard_chains(trees: tuple, mesh: Mesh | None, num_chains: int) -> tuple:
    """Place chain-batched pytrees on the mesh: arrays with a leading axis of ``num_chains``
    split over "chain", the rest (ensemble-wide state) replicated; unchanged without a mesh."""
    if mesh is None:
        return trees
    split = sharding.chain_sharding(mesh)
    whole = sharding.replicated(mesh)

    def sharding_of(x):
        batched = np.ndim(x) >= 1 and np.shape(x)[0] == num_chains
        return split if batched else whole

    return tuple(sharding.place(t, jax.tree.map(sharding_of, t)) for t in trees)


# ---------------------------------------------------------------------- running


@dataclass(frozen=True)
class RunSizes:
    """What :class:`ChainRun` needs to know of the run's settings.

    Attributes:
        chain_method: the resolved chain method.
        num_chains: chains in the run.
        num_warmup: warmup iterations per chain.
        num_samples: kept draws per chain.
        thinning: keep every ``thinning``-th sampling iteration.
        progress_bar: show a progress bar (and cut phases into chunks for it).
        chunk_size: iterations per chunk with the progress bar (None: sized on the fly).
        mesh: the device mesh, or None.
    """

    chain_method: str
    num_chains: int
    num_warmup: int
    num_samples: int
    thinning: int
    progress_bar: bool
    chunk_size: int | None
    mesh: Mesh | None

    @property
    def num_iterations(self) -> int:
        """Iterations per chain: warmup plus ``num_samples * thinning``."""
        return self.num_warmup + self.num_samples * self.thinning

    def kept(self, next_iteration: int) -> int:
        """Draws per chain kept once iterations before ``next_iteration`` have run."""
        sampled = max(next_iteration - self.num_warmup, 0)
        return min(sampled // self.thinning, self.num_samples)


@dataclass
class Segment:
    """Chains advanced together (all of them, a thread's group, or one chain) and how far."""

    keys: jax.Array
    positions: jax.Array
    label: str
    carry: ChainCarry | None = None
    draws: Draws | None = None
    next_iteration: int = 0
    seconds_per_iteration: float | None = None  # of its last chunk (sizes the next one)


@dataclass
class ChainRun:
    """A run in progress: its compiled functions, data, segments and sizes.

    Attributes:
        fns: the compiled functions (:func:`compile_program`).
        data: the model's array data (placed on the mesh).
        segments: the :class:`Segment` s, each advanced on its own.
        sizes: the :class:`RunSizes`.
        inverse_mass_diag: ``(dim,)`` initial metric (from Pathfinder), or None.
        advance_args: abstract inputs of the first chunk run (for ``MCMC.compiled_hlo``).
        rescue: when to restart a chain that fell away from the others during warmup
            (:mod:`ppl.infer.driver.rescue`), or None.
        rescues: the restarts so far (:class:`~ppl.infer.driver.rescue.Rescue`).
        switch_metric: for ``metric="auto"``, makes the compiled functions of the program
            whose warmup gives the kernel the low-rank metric (same carry layout); None
            otherwise.
        metric_switched: the warmup iteration at which the run switched to them, or None.
        autosave: saves the run between chunks when due (:mod:`ppl.infer.driver.autosave`),
            or None.
        checked: the last of :meth:`stops` whose checkpoint work is done (-1: none).
    """

    fns: dict
    data: Any
    segments: list
    sizes: RunSizes
    inverse_mass_diag: Any = None
    advance_args: Any = field(default=None, repr=False)
    rescue: rescue.RescueSettings | None = None
    rescues: list = field(default_factory=list)
    switch_metric: Callable[[], dict] | None = None
    metric_switched: int | None = None
    autosave: Autosave | None = None
    checked: int = -1

    @property
    def complete(self) -> bool:
        return all(
            s.carry is not None and s.next_iteration >= self.sizes.num_iterations
            for s in self.segments
        )

    def advance(self) -> None:
        """Advance every segment to the end of the run (an interrupt leaves each segment at
        the end of its last finished chunk).

        With chain rescue, the chains stop together at each checkpoint of warmup, where
        :meth:`rescue_lost_chains` compares them.
        """
        if self.sizes.chain_method == "threaded":
            threads.advance_threads(self)
            return
        if self.sizes.chain_method == "sequential":  # each chain to its end: none to compare
            for segment in self.segments:
                if (
                    segment.next_iteration >= self.sizes.num_iterations
                    and segment.carry is not None
                ):
                    continue
                with self._progress(segment.label, segment.next_iteration) as bar:
                    self.run_segment(segment, bar.update)
            return
        (segment,) = self.segments
        with self._progress(segment.label, segment.next_iteration) as bar:
            for stop in self.stops():
                if stop <= self.checked:
                    continue
                self.run_segment(segment, bar.update, until=stop)
                self._checkpoint(stop)

    def stops(self) -> tuple[int, ...]:
        """Iterations the chains advance to together: chain rescue's checkpoints and the
        warmup's own stops, then the end."""
        total = self.sizes.num_iterations
        if self.sizes.chain_method == "sequential":
            return (total,)
        points: set[int] = set()
        if self.rescue is not None:
            points.update(rescue.check_iterations(self.sizes.num_warmup, self.rescue))
        points.update(self.fns["warmup_stops"])  # where the warmup's chunk_end has work
        return (*sorted(points), total)

    def _checkpoint(self, stop: int) -> None:
        """The work of stop ``stop`` once every segment reached it (once per stop, saved
        states included: ``checked``)."""
        if not all(s.next_iteration == stop for s in self.segments):
            return
        if stop < self.sizes.num_warmup:
            if self.rescue is not None:
                self.rescue_lost_chains(stop)
            if self.switch_metric is not None and self.metric_switched is None:
                self.maybe_switch_metric(stop)
        self.checked = stop

    def maybe_switch_metric(self, iteration: int) -> bool:
        """``metric="auto"``: once a chain's draws since the early window show correlations
        worth it (:func:`ppl.infer.warmup.auto_metric.auto_wants_low_rank`), every chain goes
        on with the low-rank view of :func:`ppl.infer.warmup.nutpie.nutpie_warmup`."""
        # the warmup judged its draws in the program, after the iteration before this stop
        wanted = any(
            bool(np.any(sharding.to_host(s.carry.warmup.wants_low_rank))) for s in self.segments
        )
        if not wanted:
            return False
        self.fns = self.switch_metric()
        for segment in self.segments:
            carry = segment.carry
            warm = carry.warmup  # a NutpieWarmupState of metric="auto"
            # the low-rank metric starts as the diagonal the chain sampled with
            metric = warm.inverse_mass_matrix._replace(scale=jnp.sqrt(warm.diagonal))
            segment.carry = carry._replace(warmup=warm._replace(inverse_mass_matrix=metric))
        self.metric_switched = iteration
        return True

    def rescue_lost_chains(self, iteration: int) -> list:
        """Compare the chains (all at ``iteration``), restart those that fell away from a
        healthy chain's state and adaptation, and empty every chain's window statistics.

        Returns:
            The new :class:`~ppl.infer.driver.rescue.Rescue` records (also appended to
            ``rescues``).
        """
        segments = self.segments
        sizes = [int(np.shape(s.carry.num_divergent)[0]) for s in segments]
        starts = np.cumsum([0, *sizes])
        host = [sharding.to_host(s.carry.window) for s in segments]
        window = rescue.WindowStats(
            *(np.concatenate([np.asarray(h[i]).reshape(-1) for h in host]) for i in range(5))
        )
        # a chain the warmup itself reset since the last check (nutpie's saturation reset)
        # spent the window on big trees by design: not judged by its trees' size
        checks = rescue.check_iterations(self.sizes.num_warmup, self.rescue)
        since = max((c for c in checks if c < iteration), default=0)
        holds = [getattr(s.carry.warmup, "hold_until", None) for s in segments]
        recovering = None
        if all(h is not None for h in holds):
            recovering = np.concatenate(
                [np.asarray(sharding.to_host(h)).reshape(-1) > since for h in holds]
            )
        lost = rescue.find_lost_chains(window, self.rescue, recovering)

        def locate(chain: int) -> tuple[int, int]:
            g = int(np.searchsorted(starts, chain, side="right")) - 1
            return g, chain - int(starts[g])

        records = []
        for chain, donor, reason in lost:
            (gl, il), (gd, jd) = locate(chain), locate(donor)
            target, source = segments[gl].carry, segments[gd].carry
            state, warm = jax.tree.map(
                lambda x, y, il=il, jd=jd: x.at[il].set(y[jd]),
                (target.state, target.warmup),
                (source.state, source.warmup),
            )
            segments[gl].carry = target._replace(state=state, warmup=warm)
            records.append(rescue.Rescue(chain, iteration, donor, reason))
        for segment in segments:
            carry = segment.carry
            carry = carry._replace(window=_zeros(carry.window))  # one dispatch, not one per leaf
            if self.sizes.mesh is not None:
                (carry,) = shard_chains((carry,), self.sizes.mesh, self.sizes.num_chains)
            segment.carry = carry
        self.rescues.extend(records)
        return records

    def _progress(self, label: str, initial: int) -> Progress:
        sizes = self.sizes
        return Progress(
            sizes.num_iterations,
            enabled=sizes.progress_bar and jax.process_index() == 0,
            label=label,
            chains=1 if sizes.chain_method == "sequential" else sizes.num_chains,
            initial=initial,
        )

    def compiled_advance(self, segment: Segment) -> Callable:
        """``advance`` compiled ahead of time for this segment's inputs, in this thread.

        The chain groups' threads call this executable rather than the jitted function:
        JAX's configuration (``jax.enable_x64`` and the like) is thread-local, so a thread's
        call could trace the program anew with other settings; compiled here, it is
        compiled once, with the caller's settings. Kept per input signature with the
        program, so a second run with the same shapes does not compile again.
        """
        args = (segment.keys, segment.carry, segment.draws, self.data)
        leaves, treedef = jax.tree.flatten(args)
        signature = (treedef, tuple((np.shape(x), str(x.dtype)) for x in leaves))
        compiled = self.fns.setdefault("compiled_advance", {})
        if signature not in compiled:
            compiled[signature] = (
                self.fns["advance"].lower(*args, np.int32(0), np.int32(0)).compile()
            )
        return compiled[signature]

    def init_segments(self, segments: list[Segment]) -> None:
        """Initial chain states and empty draw buffers of those segments not started yet."""
        fns, data, sizes = self.fns, self.data, self.sizes
        for segment in segments:
            if segment.carry is None:
                carry = fns["init"](segment.positions, data, self.inverse_mass_diag)
                draws = fns["empty_draws"](segment.positions)
                if sizes.chain_method != "sequential":  # XLA may leave fresh buffers on one device
                    carry, draws = shard_chains((carry, draws), sizes.mesh, sizes.num_chains)
                segment.carry, segment.draws = carry, draws

    def run_segment(
        self,
        segment: Segment,
        report: Callable[[int, str, Any], None],
        stop: threading.Event | None = None,
        advance: Callable | None = None,
        until: int | None = None,
    ) -> None:
        """Advance one segment to iteration ``until`` (default: the end of the run) in
        chunks, calling ``report(n, phase, divergent)`` after each; returns early once
        ``stop`` is set. ``advance`` replaces the program's jitted ``advance`` (with a
        compiled one, in threads)."""
        sizes, data = self.sizes, self.data
        total = sizes.num_iterations if until is None else min(until, sizes.num_iterations)
        advance = advance or self.fns["advance"]
        if segment.next_iteration >= total and segment.carry is not None:
            return
        self.init_segments([segment])
        for phase, end in (("warmup", min(sizes.num_warmup, total)), ("sampling", total)):
            n, elapsed = 0, 0.0
            while segment.next_iteration < end:
                if stop is not None and stop.is_set():
                    return
                start = segment.next_iteration
                # every process must run the same chunks (the collectives pair up): in a
                # distributed run process 0's timing decides
                size = next_chunk(
                    n,
                    elapsed,
                    end - start,
                    sizes.progress_bar,
                    sizes.chunk_size,
                    segment.seconds_per_iteration,
                )
                n = sharding.broadcast_int(size, sizes.mesh)
                if self.advance_args is None:
                    self.advance_args = _abstract(
                        (segment.keys, segment.carry, segment.draws, data)
                    )
                began = time.perf_counter()
                # the results stand for the finished chunk even before they are computed,
                # so an interrupt while waiting below loses nothing
                segment.carry, segment.draws = advance(
                    segment.keys,
                    segment.carry,
                    segment.draws,
                    data,
                    np.int32(start),  # host scalars: valid inputs across processes too
                    np.int32(n),
                )
                segment.next_iteration = start + n
                carry = segment.carry
                divergent = carry.num_divergent_warmup if phase == "warmup" else carry.num_divergent
                if sizes.progress_bar:  # reading the count waits for the chunk
                    divergent = int(np.sum(sharding.to_host(divergent)))
                else:  # wait for it: an interrupt acts between chunks, and a thread holds
                    jax.block_until_ready(carry)  # its core until its chunk is done
                report(n, phase, divergent)
                elapsed = time.perf_counter() - began
                segment.seconds_per_iteration = elapsed / n
                # not in threads (the main thread pauses them for it), nor at the end; in a
                # distributed run process 0's clock decides (saving gathers, a collective)
                saving = stop is None and self.autosave is not None and not self.complete
                if saving and sharding.broadcast_int(self.autosave.due(), sizes.mesh):
                    self.autosave()

    def collect(self) -> tuple[SamplingState | None, Draws | None, int]:
        """Results from the segments' current states (all of them or those so far).

        Returns:
            ``(last, draws, kept)``: the chains' final sampler states and their draws
            (``(num_chains, kept, ...)``; numpy views of the buffers while unfinished), both
            batched over chains, and the draws per chain kept; ``None`` for both when no draw
            is kept yet.
        """
        segments, sizes = self.segments, self.sizes
        started = [s for s in segments if s.carry is not None]
        if not started or len(started) < len(segments):
            return None, None, 0
        kept = min(sizes.kept(s.next_iteration) for s in segments)
        finish = self.fns["finish"]
        if len(segments) > 1:  # one chain each ("sequential") or chain groups ("threaded")
            results = [(finish(s.carry), s.draws) for s in segments]
            last, draws = _join_segments(results, stack=sizes.chain_method == "sequential")
        else:
            last, draws = finish(segments[0].carry), segments[0].draws
        # a distributed run gathers the results onto every process (a collective)
        last, draws = sharding.to_local((last, draws))
        if kept < sizes.num_samples:  # numpy views: no copy, and no program per length
            draws = jax.tree.map(lambda x: np.asarray(x)[:, :kept], draws)
        last, draws = jax.block_until_ready((last, draws))
        return last, (draws if kept else None), kept


def pad_draws(x: Any, length: int) -> np.ndarray:
    """Draws ``(chains, kept, ...)`` padded with zeros to ``(chains, length, ...)`` (on the
    host): an unfinished run's draws at the full run's shape, for its compiled functions."""
    x = np.asarray(x)
    pad = np.zeros((x.shape[0], length - x.shape[1], *x.shape[2:]), x.dtype)
    return np.concatenate([x, pad], axis=1)


@functools.partial(jax.jit, static_argnames="stack")
def _join_segments(trees: list, stack: bool) -> Any:
    """Per-segment pytrees joined along a new (``stack``) or the leading chain axis, in one
    compiled call (a run's results, whatever their number of leaves)."""
    join = jnp.stack if stack else jnp.concatenate
    return jax.tree.map(lambda *xs: join(xs), *trees)


_zeros = jax.jit(lambda tree: jax.tree.map(jnp.zeros_like, tree))  # one dispatch for all


def _abstract(tree: Any) -> Any:
    """Shapes, dtypes and shardings of a pytree of arrays (for lowering without the data)."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)),
        tree,
    )
