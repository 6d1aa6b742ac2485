"""The MCMC driver: chains, warmup and collection compiled once, run in chunks.

``MCMC(NUTS(model), num_warmup=1000, num_samples=1000, num_chains=4)`` runs
Stan's windowed warmup then sampling for every chain. The per-chain program
(warmup iterations, the warmup-to-sampling switch, sampling iterations that
write into preallocated draw buffers) is compiled once per model layout and
settings; chains are vectorized with ``vmap`` ("vectorized"), split across
devices with ``jax.sharding`` ("parallel", or any device mesh given as
``mesh=``, optionally with the model's per-row data split over a "data" axis:
see :mod:`ppl.infer.sharding`), looped inside one program ("looped"), split into
groups that run at once on the CPU's cores, each group looped ("threaded", the
default on a CPU), or run one after another ("sequential"). The
program runs in chunks of iterations so that a progress bar can be updated
from the host between chunks at no measurable cost; the random key of
iteration ``i`` is ``fold_in(chain_key, i)``, so the draws do not depend on
the chunking. A second ``run`` with new data of the same shapes reuses the
compiled program. The API follows NumPyro's so that a NumPyro user only
changes imports.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import ppl, ppl.distributions as dist
    >>> def model(y):
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 10.0))
    ...     with ppl.plate("obs", y.shape[0]):
    ...         ppl.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> mcmc = MCMC(NUTS(model), num_warmup=200, num_samples=200, num_chains=2,
    ...             progress_bar=False)
    >>> mcmc.run(jax.random.PRNGKey(0), jnp.array([0.5, 1.5]))
    >>> mcmc.get_samples()["mu"].shape
    (400,)
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from ppl.density import FunctionLogDensity, LogDensity
from ppl.infer import hmc, nuts
from ppl.infer import sharding as _sharding
from ppl.infer.adaptation import (
    dual_averaging,
    stan_window_schedule,
    warmup_final,
    warmup_init,
    warmup_restart,
    warmup_update,
)
from ppl.infer.grad_adaptation import (
    LowRankSettings,
    buffer_size,
    grad_warmup_after,
    grad_warmup_before,
    grad_warmup_final,
    grad_warmup_init,
    grad_window_schedule,
)

__all__ = ["HMC", "MCMC", "NUTS"]

CHAIN_METHODS = ("auto", "vectorized", "looped", "threaded", "parallel", "sequential")
_LOOPED = ("looped", "threaded")  # chains one after another inside a compiled program
ADAPTATIONS = ("nutpie", "stan")
METRICS = ("diag", "low_rank", "dense")
_UPDATE_SECONDS = 0.5  # target time between progress-bar updates
_PROGRAM_CACHE: dict = {}  # (layout, settings) -> (template LogDensity, compiled functions)
_PROGRAM_CACHE_SIZE = 16


# ---------------------------------------------------------------------- kernels


class _Kernel:
    """Settings shared by the HMC-family kernels, and where their log density comes from."""

    def __init__(
        self,
        model: Callable | LogDensity | None = None,
        *,
        logdensity_fn: Callable | None = None,
        step_size: float = 1.0,
        step_size_jitter: float = 0.0,
        dense_mass: bool = False,
        metric: str | None = None,
        adaptation: str = "nutpie",
        low_rank: LowRankSettings | None = None,
        target_accept_prob: float = 0.8,
        init_strategy: str | dict = "uniform",
    ):
        if (model is None) == (logdensity_fn is None):
            raise ValueError(
                f"{type(self).__name__} needs exactly one of a model (or LogDensity) and "
                "logdensity_fn="
            )
        if logdensity_fn is not None and not callable(logdensity_fn):
            raise TypeError(f"logdensity_fn must be callable, got {logdensity_fn!r}")
        if not 0.0 < target_accept_prob < 1.0:
            raise ValueError(f"target_accept_prob must be in (0, 1), got {target_accept_prob}")
        if not 0.0 <= step_size_jitter < 1.0:
            raise ValueError(f"step_size_jitter must be in [0, 1), got {step_size_jitter!r}")
        if not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size}")
        if metric is None:
            metric = "dense" if dense_mass else "diag"
        elif dense_mass and metric != "dense":
            raise ValueError(f"dense_mass=True contradicts metric={metric!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if adaptation not in ADAPTATIONS:
            raise ValueError(f"adaptation must be one of {ADAPTATIONS}, got {adaptation!r}")
        if metric == "low_rank" and adaptation != "nutpie":
            raise ValueError(
                "metric='low_rank' is estimated from draws and gradients: it needs "
                "adaptation='nutpie'"
            )
        if low_rank is not None and metric != "low_rank":
            raise ValueError("low_rank= settings apply to metric='low_rank' only")
        if low_rank is not None and not isinstance(low_rank, LowRankSettings):
            raise TypeError(f"low_rank must be a LowRankSettings, got {low_rank!r}")
        self.model = model
        self.logdensity_fn = logdensity_fn
        self.step_size = float(step_size)
        self.step_size_jitter = float(step_size_jitter)
        self.metric = metric
        self.dense_mass = metric == "dense"
        self.adaptation = adaptation
        self.low_rank = low_rank if low_rank is not None else LowRankSettings()
        self.target_accept_prob = float(target_accept_prob)
        self.init_strategy = init_strategy

    def settings(self) -> tuple:
        """Hashable settings that change the compiled program."""
        return (
            type(self).__name__,
            self.step_size,
            self.step_size_jitter,
            self.metric,
            self.adaptation,
            self.low_rank,
            self.target_accept_prob,
        )

    def step_fn(self, logdensity_fn: Callable) -> Callable:
        """``(key, state, step_size, inverse_mass_matrix) -> (state, info)``."""
        raise NotImplementedError

    #: True for kernels whose program runs all chains at once (ensemble adaptation, e.g.
    #: ChEES): MCMC then compiles the program as it is instead of vmapping it over chains.
    chains_batched: bool = False

    def program(self, template: LogDensity, mcmc: MCMC) -> _Program:
        """The functions MCMC compiles: ``init``, ``empty_draws``, ``advance``, ``finish``.

        Per chain (vmapped by MCMC) unless :attr:`chains_batched`; see :class:`_Program`
        for their signatures. Ensemble kernels return their own program here.
        """
        return _Program(template, self, mcmc)


class NUTS(_Kernel):
    """The No-U-Turn Sampler (Stan's multinomial variant) with gradient-based warmup.

    Args:
        model: a model function or a :class:`ppl.LogDensity` (e.g. from
            :func:`ppl.from_numpyro`).
        logdensity_fn: instead of a model, a plain function ``theta (dim,) -> log
            density``; give ``init_params`` to :meth:`MCMC.run`.
        max_tree_depth: the most trajectory doublings per draw.
        step_size: initial step size (adapted during warmup).
        step_size_jitter: each iteration's step size is drawn uniformly within this fraction
            of the adapted one (nutpie's 0.1; default 0: no jitter).
        metric: "diag" (default), "low_rank" (diagonal plus a low-rank correction for
            correlated posteriors; nutpie's) or "dense".
        dense_mass: ``True`` is the same as ``metric="dense"``.
        adaptation: "nutpie" (default: the metric from draws and their gradients, see
            :mod:`ppl.infer.grad_adaptation`) or "stan" (Stan's windowed warmup, the
            metric from the draws' (co)variance). With "nutpie", "dense" is the low-rank
            estimator at full rank.
        low_rank: :class:`~ppl.infer.grad_adaptation.LowRankSettings` for
            ``metric="low_rank"`` (rank, eigenvalue cutoff, regularization, cadence).
        target_accept_prob: dual-averaging target of the acceptance statistic.
        init_strategy: "uniform", "median", "prior" or a dict of initial values.
    """

    def __init__(self, model=None, *, max_tree_depth: int = 10, **settings: Any):
        super().__init__(model, **settings)
        if not isinstance(max_tree_depth, int) or not 1 <= max_tree_depth <= 30:
            raise ValueError(f"max_tree_depth must be an int in [1, 30], got {max_tree_depth!r}")
        self.max_tree_depth = max_tree_depth

    def settings(self):
        return (*super().settings(), self.max_tree_depth)

    def step_fn(self, logdensity_fn):
        def step(key, state, step_size, inverse_mass_matrix):
            return nuts.step(
                key,
                state,
                logdensity_fn,
                step_size,
                inverse_mass_matrix,
                max_tree_depth=self.max_tree_depth,
            )

        return step


class HMC(_Kernel):
    """Static HMC: a fixed number of leapfrog steps (or a trajectory length), windowed warmup.

    Args:
        model: a model function or a :class:`ppl.LogDensity`.
        num_steps: leapfrog steps per draw (or give ``trajectory_length``).
        trajectory_length: integration time; steps = trajectory_length / step_size.
        jitter: draw the number of steps uniformly up to its value each iteration.
        **settings: as for :class:`NUTS`.
    """

    def __init__(
        self,
        model=None,
        *,
        num_steps: int | None = None,
        trajectory_length: float | None = None,
        jitter: bool = False,
        **settings: Any,
    ):
        super().__init__(model, **settings)
        if (num_steps is None) == (trajectory_length is None):
            raise ValueError("HMC needs exactly one of num_steps or trajectory_length")
        self.num_steps = num_steps
        self.trajectory_length = trajectory_length
        self.jitter = jitter

    def settings(self):
        return (*super().settings(), self.num_steps, self.trajectory_length, self.jitter)

    def step_fn(self, logdensity_fn):
        def step(key, state, step_size, inverse_mass_matrix):
            return hmc.step(
                key,
                state,
                logdensity_fn,
                step_size,
                inverse_mass_matrix,
                num_integration_steps=self.num_steps,
                trajectory_length=self.trajectory_length,
                jitter=self.jitter,
            )

        return step


# ---------------------------------------------------------------------- program


class SamplingState(NamedTuple):
    """A chain's sampler state after a run (what sampling continues from)."""

    state: hmc.HMCState
    step_size: jax.Array  # ()
    inverse_mass_matrix: Any  # (dim,), (dim, dim) or a LowRankInverseMass
    num_divergent: jax.Array  # () int, divergent transitions while sampling
    num_steps_warmup: jax.Array  # () int, gradient evaluations during warmup


class ChainCarry(NamedTuple):
    """Per-chain state carried between chunks of iterations."""

    warmup: Any  # WarmupState or GradWarmupState, frozen once warmup is over
    num_divergent_warmup: jax.Array  # () int
    num_divergent: jax.Array  # () int, while sampling
    num_steps_warmup: jax.Array  # () int, leapfrog steps (gradient evaluations) in warmup


class Draws(NamedTuple):
    """Per-chain draw buffers, each with a leading num_samples axis."""

    position: jax.Array  # (num_samples, dim) unconstrained
    log_density: jax.Array
    acceptance_rate: jax.Array
    diverging: jax.Array
    energy: jax.Array
    tree_depth: jax.Array
    num_steps: jax.Array


class _StanWarmup:
    """Stan's windowed warmup (``ppl.infer.adaptation``) as per-iteration steps."""

    def __init__(self, kernel: _Kernel, num_warmup: int, total: int):
        self.kernel = kernel
        flags = np.zeros((3, total), np.int32)
        if num_warmup:
            schedule = stan_window_schedule(num_warmup)
            flags[0, :num_warmup] = schedule.restart
            flags[1, :num_warmup] = schedule.update_metric
            flags[2, :num_warmup] = schedule.slow
        self.flags = flags

    def init(self, position, ld, inverse_mass_diag):
        dense = self.kernel.dense_mass
        return warmup_init(
            position,
            ld,
            dense_mass=dense,
            initial_step_size=self.kernel.step_size,
            initial_inverse_mass_matrix=jnp.diag(inverse_mass_diag) if dense else inverse_mass_diag,
            target_accept=self.kernel.target_accept_prob,
        )

    def before(self, key, w, flags, ld):
        restart, update_metric, _ = flags
        target = self.kernel.target_accept_prob
        return jax.lax.cond(
            restart.astype(bool),
            lambda w: warmup_restart(key, w, update_metric.astype(bool), ld, target_accept=target),
            lambda w: w,
            w,
        )

    def after(self, w, state, info, i, flags):
        slow = flags[2].astype(bool)
        return warmup_update(w, state, info.acceptance_rate, slow, self.kernel.target_accept_prob)

    def final(self, w):
        return warmup_final(w)


class _GradWarmup:
    """nutpie's gradient-based warmup (``ppl.infer.grad_adaptation``) as per-iteration steps."""

    def __init__(self, kernel: _Kernel, num_warmup: int, total: int, dim: int):
        self.kernel = kernel
        if kernel.metric == "diag":
            self.low_rank = None
            update_every = 1
        elif kernel.metric == "dense":  # the low-rank estimator at full rank
            self.low_rank = kernel.low_rank._replace(rank=dim, cutoff=1.0)
            update_every = self.low_rank.update_every
        else:
            self.low_rank = kernel.low_rank._replace(rank=min(kernel.low_rank.rank, dim))
            update_every = self.low_rank.update_every
        depth = getattr(kernel, "max_tree_depth", None)
        self.saturation_steps = None if depth is None else 2**depth - 1
        schedule = grad_window_schedule(num_warmup, update_every=update_every)
        self.buffer_rows = buffer_size(schedule)
        flags = np.zeros((6, total), np.int32)
        flags[0, :num_warmup] = schedule.restart
        flags[1, :num_warmup] = schedule.collect
        flags[2, :num_warmup] = schedule.switch
        flags[3, :num_warmup] = schedule.update
        flags[4, :num_warmup] = schedule.fg_start
        flags[5, :num_warmup] = schedule.late
        self.flags = flags

    def init(self, position, ld, inverse_mass_diag):
        return grad_warmup_init(
            position,
            ld,
            initial_inverse_mass_diag=inverse_mass_diag,
            initial_step_size=self.kernel.step_size,
            target_accept=self.kernel.target_accept_prob,
            low_rank=self.low_rank,
            buffer_rows=self.buffer_rows,
            dense=self.kernel.metric == "dense",
        )

    def before(self, key, w, flags, ld):
        return grad_warmup_before(
            key, w, flags[0].astype(bool), ld, target_accept=self.kernel.target_accept_prob
        )

    def after(self, w, state, info, i, flags):
        return grad_warmup_after(
            w,
            state,
            info,
            i,
            collect=flags[1].astype(bool),
            switch=flags[2].astype(bool),
            update=flags[3].astype(bool),
            fg_start=flags[4],
            late=flags[5].astype(bool),
            target_accept=self.kernel.target_accept_prob,
            low_rank=self.low_rank,
            dense=self.kernel.metric == "dense",
            saturation_steps=self.saturation_steps,
        )

    def final(self, w):
        return grad_warmup_final(w)


class _Program:
    """The per-chain functions for one (log-density layout, settings).

    Iterations are numbered globally: ``0 .. num_warmup - 1`` warm up,
    ``num_warmup ..`` sample (``num_samples * thinning`` of them). One function,
    :meth:`advance`, runs any range of them, so the kernel is compiled once for
    warmup and sampling; iteration ``i`` uses the key ``fold_in(chain_key, i)``.
    """

    def __init__(self, template: LogDensity, kernel: _Kernel, mcmc: MCMC):
        self.template = template
        self.kernel = kernel
        self.num_warmup = mcmc.num_warmup
        self.num_samples = mcmc.num_samples
        self.thinning = mcmc.thinning
        total = self.num_warmup + self.num_samples * self.thinning
        if kernel.adaptation == "stan":
            self.warmup = _StanWarmup(kernel, self.num_warmup, total)
        else:
            self.warmup = _GradWarmup(kernel, self.num_warmup, total, template.dim)
        self.schedule = jnp.asarray(self.warmup.flags)

    def _logdensity(self, data):
        return self.template.with_data_tree(data)

    def init(self, position, data, inverse_mass_diag=None) -> ChainCarry:
        ld = self._logdensity(data)
        if inverse_mass_diag is None:  # Stan starts from the identity, nutpie from 1/|grad|
            if self.kernel.adaptation == "stan":
                inverse_mass_diag = jnp.ones_like(position)
        wstate = self.warmup.init(position, ld, inverse_mass_diag)
        zero = jnp.zeros((), jnp.int32)
        return ChainCarry(wstate, zero, zero, zero)

    def empty_draws(self, position) -> Draws:
        n = self.num_samples
        f = position.dtype
        return Draws(
            position=jnp.zeros((n, position.shape[-1]), f),
            log_density=jnp.zeros(n, f),
            acceptance_rate=jnp.zeros(n, f),
            diverging=jnp.zeros(n, bool),
            energy=jnp.zeros(n, f),
            tree_depth=jnp.zeros(n, jnp.int32),
            num_steps=jnp.zeros(n, jnp.int32),
        )

    def advance(self, key, carry: ChainCarry, draws: Draws, data, start, n):
        """Run iterations ``start .. start + n - 1``."""
        ld = self._logdensity(data)
        step = self.kernel.step_fn(ld)
        da = dual_averaging(target_accept=self.kernel.target_accept_prob)
        warmup = self.warmup

        def body(i, c):
            carry, draws = c
            key_i = jax.random.fold_in(key, i)
            key_step, key_restart = jax.random.split(key_i)
            flags = self.schedule[:, i]
            in_warmup = i < self.num_warmup
            w = warmup.before(key_restart, carry.warmup, flags, ld)
            # while sampling the warmup state is frozen: its averaged step size is the one used
            step_size = jnp.where(
                in_warmup, w.step_size, da.final(w.dual_averaging).astype(w.step_size.dtype)
            )
            jitter = self.kernel.step_size_jitter
            if jitter:  # each iteration's step size uniform in (1 -+ jitter) x the adapted one
                u = jax.random.uniform(jax.random.fold_in(key_i, 2), dtype=step_size.dtype)
                step_size = step_size * (1.0 - jitter + 2.0 * jitter * u)
            state, info = step(key_step, w.state, step_size, w.inverse_mass_matrix)
            diverging = info.diverging.astype(jnp.int32)

            w = jax.lax.cond(
                in_warmup,
                lambda w: warmup.after(w, state, info, i, flags),
                lambda w: w._replace(state=state),
                w,
            )
            # written every iteration (in place): warmup iterations write row 0, which the
            # first kept draw overwrites; keeping the buffers out of the cond avoids copies
            j = jnp.maximum(i - self.num_warmup, 0) // self.thinning
            row = Draws(
                position=state.position,
                log_density=state.log_density,
                acceptance_rate=info.acceptance_rate,
                diverging=info.diverging,
                energy=info.energy,
                tree_depth=getattr(info, "tree_depth", jnp.zeros((), jnp.int32)),
                num_steps=info.num_steps,
            )
            draws = jax.tree.map(lambda buf, x: buf.at[j].set(x.astype(buf.dtype)), draws, row)
            carry = ChainCarry(
                w,
                carry.num_divergent_warmup + jnp.where(in_warmup, diverging, 0),
                carry.num_divergent + jnp.where(in_warmup, 0, diverging),
                carry.num_steps_warmup + jnp.where(in_warmup, info.num_steps, 0),
            )
            return carry, draws

        return jax.lax.fori_loop(start, start + n, body, (carry, draws))

    def finish(self, carry: ChainCarry) -> SamplingState:
        state, step_size, imm = self.warmup.final(carry.warmup)
        if self.num_warmup == 0:
            step_size = carry.warmup.step_size
        return SamplingState(state, step_size, imm, carry.num_divergent, carry.num_steps_warmup)


# ---------------------------------------------------------------------- driver


@dataclass
class _Segment:
    """Chains advanced together (all of them, or one in "sequential" mode) and how far."""

    keys: jax.Array
    positions: jax.Array
    label: str
    carry: ChainCarry | None = None
    draws: Draws | None = None
    next_iteration: int = 0


@dataclass
class _Pending:
    """A run in progress: its compiled functions, data and segments."""

    fns: dict
    data: Any
    segments: list = field(default_factory=list)
    inverse_mass_diag: Any = None  # (dim,) initial metric (from Pathfinder), or None


class MCMC:
    """Run a kernel's warmup and sampling for several chains.

    Args:
        kernel: :class:`NUTS` or :class:`HMC`.
        num_warmup: warmup (adaptation) iterations per chain. The default, 500, is half
            Stan's: with the gradient-based warmup every benchmark suite model reaches R-hat
            <= 1.01 and bulk ESS >= 400 with it (see ``benchmarks/README.md``).
        num_samples: kept draws per chain (after thinning).
        num_chains: number of chains.
        chain_method: "auto" (the default: "threaded" on a CPU with several cores,
            "looped" on one core, "vectorized" on an accelerator, with a mesh, or for
            kernels that adapt across chains), "vectorized" (chains vmapped in one
            program), "looped" (chains in one program, one after another inside it with
            ``lax.map``: on a CPU one chain at a time runs NUTS up to 3x faster than
            vmapped chains), "threaded" (the chains split into as many equal groups as
            there are usable CPU cores, at most: each group looped in the same compiled
            program, the groups at the same time in threads; the draws are those of
            "looped"), "parallel"
            (chains sharded over the available devices with ``jax.sharding``,
            vmapped within each device: the same as ``mesh=make_mesh(chains=k)`` with
            ``k`` the largest device count that divides ``num_chains``) or "sequential"
            (one chain after another).
        thinning: keep every ``thinning``-th draw.
        progress_bar: show the phase, iterations per second and divergences,
            updated from the host between chunks of iterations.
        chunk_size: iterations per compiled chunk when the progress bar is on
            (default: sized on the fly for an update about every half second).
        init: ``"pathfinder"`` starts the chains from multi-path Pathfinder draws
            (:func:`ppl.infer.pathfinder.pathfinder_init`) and the warmup from its
            covariance's diagonal as the inverse mass matrix; the result is kept in
            ``mcmc.pathfinder_`` (with its gradient count). Default: the kernel's
            ``init_strategy``. Ignored when ``run`` is given ``init_params``.
        mesh: a :class:`jax.sharding.Mesh` with a ``"chain"`` axis and/or a ``"data"``
            axis (e.g. from :func:`ppl.infer.sharding.make_mesh`): chains are split over
            ``"chain"`` (``num_chains`` must be a multiple of its size), each device
            running its own chains, and the arguments named in ``shard_data`` over
            ``"data"``; in a ``jax.distributed`` run the mesh may span every process's
            devices. The draws equal the single-device draws up to the order of
            floating-point sums. Not with ``chain_method="sequential"``. See the guide
            page "Scaling out".
        shard_data: names of the model's arguments holding per-row data (each array in
            them has the rows along its first axis), split over the mesh's ``"data"``
            axis: each device evaluates the log-likelihood of its rows and XLA sums the
            partial results (and gradients) across devices. The row count must be a
            multiple of the data axis size (the error names the argument otherwise).
    """

    def __init__(
        self,
        kernel: _Kernel,
        *,
        num_warmup: int = 500,
        num_samples: int = 1000,
        num_chains: int = 4,
        chain_method: str = "auto",
        thinning: int = 1,
        progress_bar: bool = True,
        chunk_size: int | None = None,
        init: str | None = None,
        mesh: Mesh | None = None,
        shard_data: tuple[str, ...] | list[str] | str = (),
    ):
        if not isinstance(kernel, _Kernel):
            raise TypeError(f"kernel must be NUTS(...) or HMC(...), got {kernel!r}")
        for name, value, low in (
            ("num_warmup", num_warmup, 0),
            ("num_samples", num_samples, 1),
            ("num_chains", num_chains, 1),
            ("thinning", thinning, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if chain_method not in CHAIN_METHODS:
            raise ValueError(f"chain_method must be one of {CHAIN_METHODS}, got {chain_method!r}")
        if chain_method == "auto":
            chain_method = _auto_chain_method(kernel, mesh, num_chains)
        if kernel.chains_batched and chain_method in ("sequential", *_LOOPED):
            raise ValueError(
                f"{type(kernel).__name__} adapts across chains: it cannot run them one at a "
                f"time (chain_method={chain_method!r})"
            )
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        if init not in (None, "pathfinder"):
            raise ValueError(f"init must be None or 'pathfinder', got {init!r}")
        shard_data = (shard_data,) if isinstance(shard_data, str) else tuple(shard_data)
        if mesh is not None:
            if chain_method in ("sequential", *_LOOPED):
                raise ValueError(
                    "mesh= shards chains run together: use chain_method='auto' (the "
                    f"default) or 'vectorized' with it, not {chain_method!r}"
                )
            mesh = _sharding.check_mesh(mesh, num_chains)
            data_size = mesh.shape.get("data", 1)
            if data_size > 1 and not shard_data:
                raise ValueError(
                    f"the mesh has a 'data' axis of size {data_size} but shard_data= names no "
                    "model argument to split over it: name the per-row data arguments, e.g. "
                    "shard_data=('x', 'y')"
                )
        if shard_data and (mesh is None or "data" not in mesh.axis_names):
            raise ValueError(
                f"shard_data={shard_data} needs a mesh with a 'data' axis, e.g. "
                "mesh=ppl.infer.sharding.make_mesh(chains=2, data=2)"
            )
        self.mesh = mesh
        self.shard_data = shard_data
        self.init = init
        self.pathfinder_ = None
        self.kernel = kernel
        self.num_warmup = num_warmup
        self.num_samples = num_samples
        self.num_chains = num_chains
        self.chain_method = chain_method
        #: chain groups run at once in threads ("threaded"), else 1
        self.num_groups = _thread_groups(num_chains) if chain_method == "threaded" else 1
        self.thinning = thinning
        self.progress_bar = progress_bar
        self.chunk_size = chunk_size
        self.logdensity_: LogDensity | None = None
        self._draws: Draws | None = None
        self._last: SamplingState | None = None
        self._pending: _Pending | None = None
        self._advance_args: Any = None  # abstract inputs of the last advance (compiled_hlo)
        self.complete = False
        self.num_completed_samples = 0

    # ------------------------------------------------------------------ setup
    def _logdensity(self, args: tuple, kwargs: dict, init_params: Any) -> LogDensity:
        kernel = self.kernel
        if kernel.logdensity_fn is not None:
            if init_params is None or isinstance(init_params, dict):
                raise ValueError(
                    "a kernel built from logdensity_fn= needs run(key, init_params=theta) "
                    "with a flat theta of shape (dim,) or (num_chains, dim)"
                )
            if args or kwargs:
                raise ValueError("a kernel built from logdensity_fn= takes no model arguments")
            return FunctionLogDensity(kernel.logdensity_fn, int(np.shape(init_params)[-1]))
        if isinstance(kernel.model, LogDensity):
            if args or kwargs:
                raise ValueError(
                    "the kernel was given a LogDensity, which already holds its data: call "
                    "run(key) without model arguments"
                )
            return kernel.model
        return LogDensity(kernel.model, args, kwargs)

    def _initial_positions(self, key: jax.Array, ld: LogDensity, init_params: Any) -> jax.Array:
        n = self.num_chains
        if init_params is None:
            return ld.init(key, self.kernel.init_strategy, num_chains=n)
        if isinstance(init_params, dict):
            return ld.init(key, init_params, num_chains=n)
        theta = jnp.asarray(init_params)
        if theta.shape == (ld.dim,):
            theta = jnp.broadcast_to(theta, (n, ld.dim))
        if theta.shape != (n, ld.dim):
            raise ValueError(
                f"init_params has shape {theta.shape}; expected ({ld.dim},) or ({n}, {ld.dim})"
            )
        return theta

    def _program(self, ld: LogDensity) -> tuple[dict, dict]:
        """The compiled functions for this log density's layout, and its array data.

        Programs are shared by every ``MCMC`` in the process (a small LRU cache): a second
        ``MCMC`` with the same model layout and settings, e.g. in a notebook or a test that
        builds a fresh one, reuses the compiled chains instead of compiling them again.
        """
        layout = ld.layout_key()
        key = (
            ("id", id(ld)) if layout is None else layout,
            self.kernel.settings(),
            self.num_warmup,
            self.num_samples,
            self.num_chains,
            self.thinning,
            self.chain_method,
            self._mesh(),
        )
        entry = _PROGRAM_CACHE.pop(key, None)
        if entry is None:
            # the entry holds ld, so an id() key cannot be reused by another object meanwhile
            entry = (ld, self._compile(self.kernel.program(ld, self)))
        _PROGRAM_CACHE[key] = entry  # most recently used last
        while len(_PROGRAM_CACHE) > _PROGRAM_CACHE_SIZE:
            _PROGRAM_CACHE.pop(next(iter(_PROGRAM_CACHE)))
        return entry[1], ld.data_tree()

    def _compile(self, program: _Program) -> dict:
        if self.kernel.chains_batched:

            def batch(fn, axes):
                return fn
        elif self.chain_method == "sequential":

            def batch(fn, axes):
                return fn
        elif self.chain_method in _LOOPED:

            def batch(fn, axes):
                return _map_over_chains(fn, axes)
        else:
            mesh = self._mesh()
            if mesh is None or mesh.shape.get("chain", 1) == 1:

                def batch(fn, axes):
                    return jax.vmap(fn, in_axes=axes)
            else:
                # Each device runs its own chains with its own loops. Left to XLA's automatic
                # partitioning, a vmapped while loop (NUTS's tree building) stops when every
                # chain is done: its predicate is a reduction over all chains, i.e. one
                # cross-device all-reduce per iteration, which costs more than a small
                # model's gradient. The "data" axis (if any) stays automatic: XLA sums the
                # per-device partial log-likelihoods across it.
                def batch(fn, axes):
                    specs = tuple(
                        PartitionSpec("chain") if a == 0 else PartitionSpec() for a in axes
                    )
                    return jax.shard_map(
                        jax.vmap(fn, in_axes=axes),
                        mesh=mesh,
                        in_specs=specs,
                        out_specs=PartitionSpec("chain"),
                        axis_names={"chain"},
                        check_vma=False,
                    )

        return {
            "init": jax.jit(batch(program.init, (0, None, None))),
            "empty_draws": jax.jit(batch(program.empty_draws, (0,))),
            "advance": jax.jit(
                batch(program.advance, (0, 0, 0, None, None, None)), donate_argnums=(1, 2)
            ),
            "finish": jax.jit(batch(program.finish, (0,))),
        }

    def _next_chunk(self, previous: int, elapsed: float, remaining: int) -> int:
        """Iterations in the next chunk of a phase (``previous`` 0 before the first one).

        Without a progress bar the phase is one chunk. With one, ``chunk_size``
        fixes the size; by default the first chunk is short and later chunks
        are sized to take about ``_UPDATE_SECONDS`` each, so the host syncs a
        handful of times per phase however fast the sampler is.
        """
        if not self.progress_bar:
            size = remaining
        elif self.chunk_size:
            size = self.chunk_size
        elif not previous:
            size = 20
        else:
            size = int(previous * _UPDATE_SECONDS / max(elapsed, 1e-4))
        return max(1, min(size, remaining))

    def _mesh(self) -> Mesh | None:
        """The device mesh of this run: ``mesh=``, a chain mesh for "parallel", or None."""
        if self.mesh is not None:
            return self.mesh
        if self.chain_method != "parallel":
            return None
        devices = jax.devices()
        count = max(d for d in range(1, len(devices) + 1) if self.num_chains % d == 0)
        return _sharding.make_mesh(chains=count, devices=devices)

    def _shard(self, *trees):
        """Place chain-batched pytrees on the mesh: arrays with a leading axis of
        ``num_chains`` split over "chain", the rest (ensemble-wide state of a
        ``chains_batched`` kernel) replicated."""
        mesh = self._mesh()
        if mesh is None:
            return trees
        split = _sharding.chain_sharding(mesh)
        whole = _sharding.replicated(mesh)

        def sharding_of(x):
            batched = np.ndim(x) >= 1 and np.shape(x)[0] == self.num_chains
            return split if batched else whole

        return tuple(_sharding.place(t, jax.tree.map(sharding_of, t)) for t in trees)

    def _place_data(self, ld: LogDensity, data: dict) -> dict:
        """The model's data on the mesh: ``shard_data`` rows over "data", the rest replicated."""
        mesh = self._mesh()
        if mesh is None:
            return data
        shardings = _sharding.data_shardings(ld, data, self.shard_data, mesh)
        return _sharding.place(data, shardings)

    # ------------------------------------------------------------------ run
    def run(self, key: jax.Array, *args: Any, init_params: Any = None, **kwargs: Any) -> None:
        """Warm up and sample every chain.

        Ctrl-C (``KeyboardInterrupt``) during the run stops it between chunks of iterations
        without losing work: the draws kept so far are available (``complete`` is then
        ``False``) and :meth:`resume` continues exactly where the run stopped, giving the same
        draws as an uninterrupted run.

        Args:
            key: a ``jax.random`` key.
            *args, **kwargs: the model's arguments (data).
            init_params: optional starting point: a dict of constrained values
                for some latent sites, or a flat unconstrained array of shape
                (dim,) or (num_chains, dim) (required with ``logdensity_fn=``).
        """
        ld = self._logdensity(args, kwargs, init_params)
        if ld.dim == 0:
            raise ValueError("the model has no latent variables to sample")
        key_init, key_chains = jax.random.split(key)
        inverse_mass_diag = None
        self.pathfinder_ = None
        if self.init == "pathfinder" and init_params is None:
            from ppl.infer.pathfinder import pathfinder_init

            with warnings.catch_warnings():
                # a high Pareto k matters for Pathfinder's draws as a posterior, not as starts
                warnings.filterwarnings("ignore", message="pathfinder: Pareto k")
                positions, inverse_mass_diag, self.pathfinder_ = pathfinder_init(
                    key_init, ld, self.num_chains
                )
        else:
            positions = self._initial_positions(key_init, ld, init_params)
        chain_keys = jax.random.split(key_chains, self.num_chains)
        self._start(ld, chain_keys, positions, inverse_mass_diag)
        self._continue()

    def _start(
        self,
        ld: LogDensity,
        chain_keys: jax.Array,
        positions: jax.Array,
        inverse_mass_diag: jax.Array | None = None,
    ) -> None:
        fns, data = self._program(ld)
        mesh = self._mesh()
        data = self._place_data(ld, data)
        # host-computed starts must agree exactly on every process of a distributed run
        chain_keys, positions, inverse_mass_diag = _sharding.broadcast(
            (chain_keys, positions, inverse_mass_diag), mesh
        )
        if mesh is not None and inverse_mass_diag is not None:
            inverse_mass_diag = _sharding.place(inverse_mass_diag, _sharding.replicated(mesh))
        if self.chain_method == "sequential":
            segments = [
                _Segment(chain_keys[c], positions[c], f"chain {c + 1} ")
                for c in range(self.num_chains)
            ]
        elif self.chain_method == "threaded":
            groups = zip(
                jnp.split(chain_keys, self.num_groups),
                jnp.split(positions, self.num_groups),
                strict=True,
            )
            segments = [_Segment(keys, start, "") for keys, start in groups]
        else:
            chain_keys, positions = self._shard(chain_keys, positions)
            segments = [_Segment(chain_keys, positions, "")]
        self._pending = _Pending(fns, data, segments, inverse_mass_diag)
        self._advance_fn, self._advance_args = fns["advance"], None
        self.logdensity_ = ld
        self._draws = self._last = None
        self.complete = False

    @property
    def num_iterations(self) -> int:
        """Iterations per chain: warmup plus ``num_samples * thinning``."""
        return self.num_warmup + self.num_samples * self.thinning

    def resume(self) -> None:
        """Continue an interrupted run from where it stopped (same draws as without the stop)."""
        if self._pending is None:
            raise RuntimeError(
                "nothing to resume: the last run completed (or none was started); use run()"
            )
        self._continue()

    def _continue(self) -> None:
        pending = self._pending
        try:
            if self.chain_method == "threaded":
                self._run_threads(pending)
            else:
                for segment in pending.segments:
                    if segment.next_iteration >= self.num_iterations and segment.carry is not None:
                        continue
                    with self._progress(segment.label, segment.next_iteration) as bar:
                        self._run_segment(pending, segment, bar.update)
        except KeyboardInterrupt:
            self._collect(pending)
            done = self.num_completed_samples
            warnings.warn(
                f"sampling interrupted: {done} of {self.num_samples} draws per chain kept; "
                "call MCMC.resume() to continue",
                stacklevel=3,
            )
            return
        self._collect(pending)
        self._pending = None

    def _progress(self, label: str, initial: int) -> _Progress:
        return _Progress(
            self.num_iterations,
            enabled=self.progress_bar and jax.process_index() == 0,
            label=label,
            chains=1 if self.chain_method == "sequential" else self.num_chains,
            initial=initial,
        )

    def _run_threads(self, pending: _Pending) -> None:
        """Advance the segments (chain groups) at once, one thread each, with one progress
        bar that follows the slowest group. An exception in any thread (an interrupt
        included) stops the others after their current chunk and is raised here."""
        segments = pending.segments
        self._init_segments(pending, segments)
        advance = self._compiled_advance(pending, segments[0])
        stop = threading.Event()
        with self._progress("", min(s.next_iteration for s in segments)) as bar:
            shared = _SharedProgress(bar, segments, self.num_warmup)
            with concurrent.futures.ThreadPoolExecutor(
                len(segments), thread_name_prefix="ppl-chains"
            ) as pool:
                futures = [
                    pool.submit(self._run_segment, pending, seg, shared.reporter(g), stop, advance)
                    for g, seg in enumerate(segments)
                ]
                try:
                    pending_futures = set(futures)
                    while pending_futures:  # short waits: Ctrl-C reaches this thread
                        done, pending_futures = concurrent.futures.wait(
                            pending_futures, timeout=0.2, return_when="FIRST_EXCEPTION"
                        )
                        if any(f.exception() is not None for f in done):
                            break
                finally:
                    stop.set()  # the other groups stop after their current chunk
                    concurrent.futures.wait(futures)
                for future in futures:
                    if future.exception() is not None:
                        raise future.exception()

    def _compiled_advance(self, pending: _Pending, segment: _Segment) -> Callable:
        """``advance`` compiled ahead of time for this segment's inputs, in this thread.

        The chain groups' threads call this executable rather than the jitted function:
        JAX's configuration (``jax.enable_x64`` and the like) is thread-local, so a thread's
        call could trace the program anew with other settings; compiled here, it is
        compiled once, with the caller's settings. Kept per input signature with the
        program, so a second run with the same shapes does not compile again.
        """
        args = (segment.keys, segment.carry, segment.draws, pending.data)
        leaves, treedef = jax.tree.flatten(args)
        signature = (treedef, tuple((np.shape(x), str(x.dtype)) for x in leaves))
        compiled = pending.fns.setdefault("compiled_advance", {})
        if signature not in compiled:
            compiled[signature] = (
                pending.fns["advance"].lower(*args, np.int32(0), np.int32(0)).compile()
            )
        return compiled[signature]

    def _init_segments(self, pending: _Pending, segments: list[_Segment]) -> None:
        """Initial chain states and empty draw buffers of those segments not started yet."""
        fns, data = pending.fns, pending.data
        for segment in segments:
            if segment.carry is None:
                carry = fns["init"](segment.positions, data, pending.inverse_mass_diag)
                draws = fns["empty_draws"](segment.positions)
                if self.chain_method != "sequential":  # XLA may leave fresh buffers on one device
                    carry, draws = self._shard(carry, draws)
                segment.carry, segment.draws = carry, draws

    def _run_segment(
        self,
        pending: _Pending,
        segment: _Segment,
        report: Callable[[int, str, Any], None],
        stop: threading.Event | None = None,
        advance: Callable | None = None,
    ) -> None:
        """Advance one segment to the end of the run in chunks, calling ``report(n, phase,
        divergent)`` after each; returns early once ``stop`` is set. ``advance`` replaces
        the program's jitted ``advance`` (with a compiled one, in threads)."""
        fns, data, total = pending.fns, pending.data, self.num_iterations
        advance = advance or fns["advance"]
        if segment.next_iteration >= total and segment.carry is not None:
            return
        mesh = self._mesh()
        self._init_segments(pending, [segment])
        for phase, end in (("warmup", self.num_warmup), ("sampling", total)):
            n, elapsed = 0, 0.0
            while segment.next_iteration < end:
                if stop is not None and stop.is_set():
                    return
                start = segment.next_iteration
                # every process must run the same chunks (the collectives pair up): in a
                # distributed run process 0's timing decides
                n = _sharding.broadcast_int(self._next_chunk(n, elapsed, end - start), mesh)
                if self._advance_args is None:
                    self._advance_args = _abstract(
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
                if self.progress_bar:  # reading the count waits for the chunk
                    divergent = int(np.sum(_sharding.to_host(divergent)))
                elif stop is not None:  # a thread holds its core until its chunk is done
                    jax.block_until_ready(carry)
                report(n, phase, divergent)
                elapsed = time.perf_counter() - began

    def _collect(self, pending: _Pending) -> None:
        """Results from the segments' current states (all of them or those so far)."""
        segments = pending.segments
        started = [s for s in segments if s.carry is not None]
        if len(started) < len(segments) or not started:
            kept = 0
        else:
            kept = min(self._kept(s.next_iteration) for s in segments)
        self.num_completed_samples = kept
        self.complete = kept == self.num_samples and all(
            s.next_iteration >= self.num_iterations for s in segments
        )
        if not started or len(started) < len(segments):
            self._draws = self._last = None
            return
        finish = pending.fns["finish"]
        if len(segments) > 1:  # one chain each ("sequential") or chain groups ("threaded")
            results = [(finish(s.carry), s.draws) for s in segments]
            last, draws = _join_segments(results, stack=self.chain_method == "sequential")
        else:
            last, draws = finish(segments[0].carry), segments[0].draws
        # a distributed run gathers the results onto every process (a collective)
        last, draws = _sharding.to_local((last, draws))
        if kept < self.num_samples:
            draws = jax.tree.map(lambda x: x[:, :kept], draws)
        self._last, self._draws = jax.block_until_ready((last, draws))
        if kept == 0:
            self._draws = None

    def _kept(self, next_iteration: int) -> int:
        sampled = max(next_iteration - self.num_warmup, 0)
        return min(sampled // self.thinning, self.num_samples)

    # ------------------------------------------------------------------ checkpoints
    def sampler_state(self) -> dict[str, np.ndarray]:
        """Everything needed to continue this run in another process, as numpy arrays.

        Holds, per segment of chains, the chain keys, the position in the iteration
        schedule and the full warmup / sampler state (positions, step size, mass matrix,
        estimators) and the draw buffers. Give it to :meth:`resume_from` with the same kernel
        settings, MCMC settings and model data.
        """
        if self._pending is None:
            raise RuntimeError("sampler_state() is for an interrupted run: this one completed")
        out: dict[str, np.ndarray] = {
            "num_segments": np.asarray(len(self._pending.segments)),
            "settings": np.asarray(repr(self._settings_fingerprint())),
        }
        for c, segment in enumerate(self._pending.segments):
            if segment.carry is None:
                out[f"s{c}_next"] = np.asarray(-1)
                continue
            keys = segment.keys
            typed = jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)
            # gathered to host (across processes in a distributed run: a collective)
            out[f"s{c}_keys"] = _sharding.to_host(keys)
            out[f"s{c}_typed"] = np.asarray(typed)
            out[f"s{c}_next"] = np.asarray(segment.next_iteration)
            leaves = jax.tree.leaves((segment.carry, segment.draws))
            for i, leaf in enumerate(leaves):
                out[f"s{c}_leaf{i}"] = _sharding.to_host(leaf)
        return out

    def _settings_fingerprint(self) -> tuple:
        # "threaded" runs the program of "looped" on groups of chains: the same draws, and a
        # state saved by one resumes in the other (with the saved grouping)
        method = "looped" if self.chain_method in _LOOPED else self.chain_method
        return (
            self.kernel.settings(),
            self.num_warmup,
            self.num_samples,
            self.num_chains,
            self.thinning,
            method,
        )

    def resume_from(self, state: dict, *args: Any, **kwargs: Any) -> None:
        """Continue a run saved with :meth:`sampler_state` (e.g. by another process).

        Args:
            state: the dict from :meth:`sampler_state` (or an ``np.load`` of it).
            *args, **kwargs: the model's arguments (data), as given to :meth:`run`.
        """
        saved = str(np.asarray(state["settings"]))
        if saved != repr(self._settings_fingerprint()):
            raise ValueError(
                "the saved sampler state was made with other settings: "
                f"saved {saved}, now {self._settings_fingerprint()!r}"
            )
        ld = self._logdensity(args, kwargs, None)
        if self.chain_method in _LOOPED:  # the saved grouping of the chains
            self.num_groups = int(np.asarray(state["num_segments"]))
            self.chain_method = "threaded" if self.num_groups > 1 else "looped"
        dummy_keys = jax.random.split(jax.random.key(0), self.num_chains)
        dummy_positions = jnp.zeros((self.num_chains, ld.dim), jnp.result_type(float))
        self._start(ld, dummy_keys, dummy_positions)
        fns, data = self._pending.fns, self._pending.data
        for c, segment in enumerate(self._pending.segments):
            next_iteration = int(np.asarray(state[f"s{c}_next"]))
            if next_iteration < 0:
                raise ValueError("the saved run had not started every chain; start it again")
            template = jax.eval_shape(
                lambda p: (fns["init"](p, data, None), fns["empty_draws"](p)), segment.positions
            )
            treedef = jax.tree.structure(template)
            leaves = [jnp.asarray(state[f"s{c}_leaf{i}"]) for i in range(treedef.num_leaves)]
            carry, draws = jax.tree.unflatten(treedef, leaves)
            keys = jnp.asarray(state[f"s{c}_keys"])
            if bool(np.asarray(state[f"s{c}_typed"])):
                keys = jax.random.wrap_key_data(keys)
            if self.chain_method != "sequential":
                keys, carry, draws = self._shard(keys, carry, draws)
            segment.keys, segment.carry, segment.draws = keys, carry, draws
            segment.next_iteration = next_iteration
        self._continue()

    def compiled_hlo(self) -> str:
        """The optimized HLO of the compiled program that advances the chains, as the last
        run compiled it for its inputs' shardings.

        For checking how a sharded run is partitioned: with ``shard_data`` the parameters
        hold each device's share of the rows (e.g. ``f64[500,20]`` for 1000 rows on a data
        axis of 2) and ``all-reduce`` ops sum the partial log-likelihoods and gradients.
        """
        if self._advance_args is None:
            raise RuntimeError("call MCMC.run(key, ...) before asking for its compiled program")
        keys, carry, draws, data = self._advance_args
        lowered = self._advance_fn.lower(keys, carry, draws, data, np.int32(0), np.int32(1))
        return lowered.compile().as_text()

    # ------------------------------------------------------------------ results
    def _require_run(self) -> Draws:
        if self._draws is None:
            if self._pending is not None:
                raise RuntimeError(
                    "the run was interrupted before any draw was kept: call MCMC.resume()"
                )
            raise RuntimeError("call MCMC.run(key, ...) before asking for its results")
        return self._draws

    def get_samples(self, group_by_chain: bool = False) -> dict[str, jax.Array]:
        """Constrained draws of latent and deterministic sites.

        Returns:
            dict ``site -> array`` of shape (num_chains, num_samples, ...) with
            ``group_by_chain``, else (num_chains * num_samples, ...).
        """
        draws = self._require_run()
        constrain = self.logdensity_.shared_jit(
            "constrain_chains", lambda ld, x: jax.vmap(jax.vmap(ld.constrain))(x)
        )
        samples = constrain(draws.position)
        if group_by_chain:
            return samples
        return {k: v.reshape((-1, *v.shape[2:])) for k, v in samples.items()}

    def get_sample_stats(self) -> dict[str, np.ndarray]:
        """Sampler statistics per chain and draw, each of shape (num_chains, num_samples)."""
        draws = self._require_run()
        stats = {
            "lp": draws.log_density,
            "acceptance_rate": draws.acceptance_rate,
            "diverging": draws.diverging,
            "energy": draws.energy,
            "step_size": jnp.broadcast_to(self._last.step_size[:, None], draws.log_density.shape),
            "n_steps": draws.num_steps,
        }
        if isinstance(self.kernel, NUTS):
            stats["tree_depth"] = draws.tree_depth
        return {k: np.asarray(v) for k, v in stats.items()}

    @property
    def inverse_mass_matrix(self) -> Any:
        """Adapted inverse mass matrix per chain: (num_chains, dim), (num_chains, dim, dim), or
        a :class:`~ppl.infer.metrics.LowRankInverseMass` batched over chains."""
        self._require_run()
        return self._last.inverse_mass_matrix

    @property
    def step_size(self) -> jax.Array:
        """Adapted step size per chain, shape (num_chains,)."""
        self._require_run()
        return self._last.step_size

    @property
    def last_state(self) -> SamplingState:
        """The chains' final sampler states (batched over chains)."""
        self._require_run()
        return self._last

    def to_datatree(self, dims: dict | None = None, coords: dict | None = None):
        """The run as an ArviZ DataTree (posterior, sample_stats, log_likelihood, observed_data)."""
        from ppl.convert import mcmc_to_datatree

        return mcmc_to_datatree(self, dims=dims, coords=coords)

    def print_summary(
        self, dims: dict | None = None, coords: dict | None = None, **summary_kwargs: Any
    ) -> None:
        """Print ArviZ's summary table (mean, sd, interval, ESS, R-hat, MCSE) and divergences.

        ``dims`` and ``coords`` label the table as in :meth:`to_datatree`; other keyword
        arguments go to ``arviz_stats.summary``.
        """
        import arviz_stats

        tree = self.to_datatree(dims=dims, coords=coords)
        print(arviz_stats.summary(tree, **summary_kwargs).to_string())
        divergences = int(self.get_sample_stats()["diverging"].sum())
        print(f"Number of divergences: {divergences}")


@functools.partial(jax.jit, static_argnames="stack")
def _join_segments(trees: list, stack: bool) -> Any:
    """Per-segment pytrees joined along a new (``stack``) or the leading chain axis, in one
    compiled call (a run's results, whatever their number of leaves)."""
    join = jnp.stack if stack else jnp.concatenate
    return jax.tree.map(lambda *xs: join(xs), *trees)


def _abstract(tree: Any) -> Any:
    """Shapes, dtypes and shardings of a pytree of arrays (for lowering without the data)."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)),
        tree,
    )


def _auto_chain_method(kernel: _Kernel, mesh: Mesh | None, num_chains: int) -> str:
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
    if kernel.chains_batched or mesh is not None or jax.default_backend() != "cpu":
        return "vectorized"
    return "threaded" if _thread_groups(num_chains) > 1 else "looped"


def _usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _thread_groups(num_chains: int) -> int:
    """Chain groups for "threaded": the largest divisor of ``num_chains`` that does not
    exceed the usable cores (equal groups share one compiled program)."""
    cores = _usable_cores()
    return max(g for g in range(1, min(cores, num_chains) + 1) if num_chains % g == 0)


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


class _SharedProgress:
    """One progress bar for chain groups that advance at once in threads: it shows the
    iterations every group has finished (the slowest group's), and the divergences of all."""

    def __init__(self, bar: _Progress, segments: list, num_warmup: int):
        self.bar = bar
        self.num_warmup = num_warmup
        self.lock = threading.Lock()
        self.done = [s.next_iteration for s in segments]
        self.divergent = [0] * len(segments)
        self.shown = min(self.done)

    def reporter(self, group: int) -> Callable[[int, str, Any], None]:
        """The ``report(n, phase, divergent)`` callback of one group."""

        def report(n: int, phase: str, divergent: Any) -> None:
            with self.lock:
                self.done[group] += n
                self.divergent[group] = int(np.sum(_sharding.to_host(divergent)))
                slowest = min(self.done)
                if slowest > self.shown:
                    shown_phase = "warmup" if slowest <= self.num_warmup else "sampling"
                    self.bar.update(slowest - self.shown, shown_phase, sum(self.divergent))
                    self.shown = slowest

        return report


class _Progress:
    """A tqdm bar over iterations, updated between chunks (never inside compiled code)."""

    def __init__(self, total: int, enabled: bool, label: str, chains: int, initial: int = 0):
        self.enabled = enabled
        self.initial = initial
        self.total = total
        self.label = label
        self.chains = chains
        self.bar = None

    def __enter__(self):
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                initial=self.initial,
                desc=f"{self.label}warmup",
                unit="it",
                file=sys.stderr,
                dynamic_ncols=True,
            )
        self.last_time = time.perf_counter()
        return self

    def update(self, n: int, phase: str, num_divergent) -> None:
        if self.bar is None:
            return
        # reading the count waits for the chunk to finish, so the rate is real
        divergent = int(np.sum(_sharding.to_host(num_divergent)))
        now = time.perf_counter()
        rate = n * self.chains / max(now - self.last_time, 1e-9)
        self.last_time = now
        self.bar.set_description(f"{self.label}{phase}", refresh=False)
        self.bar.set_postfix({"draws/s": f"{rate:.0f}", "divergences": divergent}, refresh=False)
        self.bar.update(n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
