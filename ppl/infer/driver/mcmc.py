"""The MCMC driver: ``MCMC(kernel, ...)``, what users call to warm up and sample chains.

``MCMC(NUTS(model), num_warmup=500, num_samples=1000, num_chains=4)`` runs the kernel's
warmup (nutpie's gradient-based one by default, Stan's by name; :mod:`ppl.infer.warmup`)
then sampling for every chain. :class:`MCMC` checks the settings, compiles the model into a
:class:`ppl.LogDensity`, finds the chains' starting points (:mod:`ppl.infer.warmup.init`),
gets the compiled program for the model layout and settings
(:mod:`ppl.infer.driver.program`, batched and cached by :mod:`ppl.infer.driver.chains`),
runs it in chunks with a progress bar (interrupt and resume included; saved states:
:mod:`ppl.infer.driver.checkpoint`), and gives the results: constrained draws, sampler
statistics, the adapted parameters and an ArviZ ``DataTree`` (:mod:`ppl.infer.results`).
A second ``run`` with new data of the same shapes reuses the compiled program. The API
follows NumPyro's so that a NumPyro user only changes imports.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import ppl, ppl.distributions as dist
    >>> from ppl.infer import MCMC, NUTS
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

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ppl.density import FunctionLogDensity, LogDensity
from ppl.infer.driver import chains, checkpoint, sharding
from ppl.infer.driver.autosave import AUTOSAVE_SECONDS, Autosave
from ppl.infer.driver.chains import CHAIN_METHODS, LOOPED, ChainRun, RunSizes, Segment
from ppl.infer.driver.config import NUTS, KernelConfig
from ppl.infer.driver.program import Draws, Program, SamplingState
from ppl.infer.driver.rescue import ChainWarning, Rescue, RescueSettings, chain_disagreement
from ppl.infer.keys import check_key
from ppl.infer.warmup.init import initial_positions, pathfinder_start

__all__ = ["MCMC"]


class MCMC:
    """Run a kernel's warmup and sampling for several chains.

    Args:
        kernel: :class:`~ppl.infer.NUTS`, :class:`~ppl.infer.HMC`, :class:`~ppl.infer.ChEES`
            or :class:`~ppl.infer.MEADS` (:mod:`ppl.infer.driver.config`).
        num_warmup: warmup (adaptation) iterations per chain. The default, 500, is half
            Stan's: with the gradient-based warmup every benchmark suite model reaches R-hat
            <= 1.01 and bulk ESS >= 400 with it (see ``benchmarks/README.md``).
        num_samples: kept draws per chain (after thinning).
        num_chains: number of chains.
        chain_method: "auto" (the default: "threaded" on a CPU with several cores,
            "looped" on one core, "vectorized" on an accelerator, with a mesh, or for
            kernels that adapt across chains; see
            :func:`~ppl.infer.driver.chains.auto_chain_method`), "vectorized" (chains vmapped
            in one program), "looped" (chains one after another inside one program with
            ``lax.map``), "threaded" (equal groups of chains, one per usable CPU core, each
            looped, the groups at once in threads; the draws of "looped"), "parallel"
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
            (:func:`ppl.infer.vi.pathfinder.pathfinder_init`) and the warmup from its
            covariance's diagonal as the inverse mass matrix; the result is kept in
            ``mcmc.pathfinder_`` (with its gradient count). Default: the kernel's
            ``init_strategy``. Ignored when ``run`` is given ``init_params``.
        mesh: a :class:`jax.sharding.Mesh` with a ``"chain"`` axis and/or a ``"data"``
            axis (e.g. from :func:`ppl.infer.make_mesh`): chains are split over
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
        rescue: compare the chains at checkpoints during warmup and restart a chain that fell
            away from the others (collapsed step size, log density far below theirs, or
            saturated trees) from a healthy chain's state and adaptation
            (:mod:`ppl.infer.driver.rescue`). ``True`` (the default) uses the default
            :class:`~ppl.infer.driver.rescue.RescueSettings`; pass settings to change the
            thresholds, ``False`` to turn it off. Restarts are warmup decisions (the draws
            stay valid), are warned about (:class:`~ppl.infer.driver.rescue.ChainWarning`)
            and kept in ``mcmc.rescues`` and the DataTree. A run where no chain is restarted
            gives the draws of ``rescue=False``. Not with ``chain_method="sequential"`` or
            kernels that adapt across chains (ChEES, MEADS).
        check_chains: after a complete run, warn (:class:`ChainWarning`) when the chains sit
            in different regions, naming the sites where they differ most.
        autosave: ``autosave(mcmc)`` is called between chunks about every
            ``autosave_seconds`` while the run goes on (never more often than 20 times its
            own duration; :mod:`ppl.infer.driver.autosave`), with the draws so far collected
            (``get_samples()``, ``to_datatree()``) and :meth:`sampler_state` ready to save:
            ``ppl sample`` writes them, so a killed process loses at most that much work.
            A distributed run calls it on every process, when process 0's clock says so.

    Attributes:
        rescues: the chains restarted during the last run's warmup, as
            :class:`~ppl.infer.driver.rescue.Rescue` records (chain, iteration, donor,
            reason).
    """

    def __init__(
        self,
        kernel: KernelConfig,
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
        rescue: bool | RescueSettings = True,
        check_chains: bool = True,
        autosave: Callable[[MCMC], None] | None = None,
        autosave_seconds: float = AUTOSAVE_SECONDS,
    ):
        if not isinstance(kernel, KernelConfig):
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
            chain_method = chains.auto_chain_method(kernel.chains_batched, mesh, num_chains)
        if kernel.chains_batched and chain_method in ("sequential", *LOOPED):
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
            if chain_method in ("sequential", *LOOPED):
                raise ValueError(
                    "mesh= shards chains run together: use chain_method='auto' (the "
                    f"default) or 'vectorized' with it, not {chain_method!r}"
                )
            mesh = sharding.check_mesh(mesh, num_chains)
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
                "mesh=ppl.infer.make_mesh(chains=2, data=2)"
            )
        if rescue is True:
            rescue = RescueSettings()
        elif rescue is False or rescue is None:
            rescue = None
        elif not isinstance(rescue, RescueSettings):
            raise TypeError(f"rescue must be True, False or a RescueSettings, got {rescue!r}")
        if kernel.chains_batched or chain_method == "sequential" or num_chains < 2:
            rescue = None  # nothing to compare a chain with while it warms up
        self.rescue = rescue
        self.check_chains = bool(check_chains)
        if autosave is not None and not autosave_seconds > 0:
            raise ValueError(f"autosave_seconds must be > 0, got {autosave_seconds!r}")
        self.autosave, self.autosave_seconds = autosave, autosave_seconds
        self.rescues: list[Rescue] = []
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
        self.num_groups = chains.thread_groups(num_chains) if chain_method == "threaded" else 1
        self.thinning = thinning
        self.progress_bar = progress_bar
        self.chunk_size = chunk_size
        self.logdensity_: LogDensity | None = None
        self._draws: Draws | None = None
        self._last: SamplingState | None = None
        self._pending: ChainRun | None = None  # the run in progress (None once complete)
        self._run: ChainRun | None = None  # the latest run (for compiled_hlo)
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

    def _sizes(self) -> RunSizes:
        return RunSizes(
            chain_method=self.chain_method,
            num_chains=self.num_chains,
            num_warmup=self.num_warmup,
            num_samples=self.num_samples,
            thinning=self.thinning,
            progress_bar=self.progress_bar,
            chunk_size=self.chunk_size,
            mesh=self._mesh(),
        )

    def _program(self, ld: LogDensity, kernel: KernelConfig | None = None) -> dict:
        """The compiled functions for this log density's layout (cached across MCMCs);
        ``kernel`` replaces ``self.kernel`` (the low-rank view of ``metric="auto"``)."""
        kernel = self.kernel if kernel is None else kernel
        layout = ld.layout_key()
        key = (
            ("id", id(ld)) if layout is None else layout,
            kernel.settings(),
            self.num_warmup,
            self.num_samples,
            self.num_chains,
            self.thinning,
            self.chain_method,
            self._mesh(),
        )

        def build() -> Program:
            transition, warmup = kernel.build(
                ld.dim, self.num_warmup, self.num_iterations, self.num_chains
            )
            chain_axes = 1 if kernel.chains_batched else 0
            return Program(
                transition,
                warmup,
                ld,
                self.num_warmup,
                self.num_samples,
                self.thinning,
                chain_axes,
            )

        return chains.compile_program(key, ld, build, self.chain_method, self._mesh())

    def _mesh(self) -> Mesh | None:
        """The device mesh of this run: ``mesh=``, a chain mesh for "parallel", or None."""
        if self.mesh is not None:
            return self.mesh
        if self.chain_method != "parallel":
            return None
        devices = jax.devices()
        count = max(d for d in range(1, len(devices) + 1) if self.num_chains % d == 0)
        return sharding.make_mesh(chains=count, devices=devices)

    def _place_data(self, ld: LogDensity, data: dict) -> dict:
        """The model's data on the mesh: ``shard_data`` rows over "data", the rest replicated."""
        mesh = self._mesh()
        if mesh is None:
            return data
        shardings = sharding.data_shardings(ld, data, self.shard_data, mesh)
        return sharding.place(data, shardings)

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
        key_init, key_chains = jax.random.split(check_key(key))
        inverse_mass_diag = None
        self.pathfinder_ = None
        if self.init == "pathfinder" and init_params is None:
            positions, inverse_mass_diag, self.pathfinder_ = pathfinder_start(
                key_init, ld, self.num_chains
            )
        else:
            positions = initial_positions(
                key_init, ld, self.kernel.init_strategy, init_params, self.num_chains
            )
        chain_keys = jax.random.split(key_chains, self.num_chains)
        self._start(ld, chain_keys, positions, inverse_mass_diag)
        self._continue()

    def _start(
        self,
        ld: LogDensity,
        chain_keys: jax.Array,
        positions: jax.Array,
        inverse_mass_diag: jax.Array | None = None,
        metric_switched: int | None = None,
    ) -> None:
        switch_metric = None
        if self.kernel.switches_metric and self.chain_method != "sequential":

            def switch_metric() -> dict:
                return self._program(ld, self.kernel.low_rank_view())

        fns = switch_metric() if metric_switched is not None else self._program(ld)
        mesh = self._mesh()
        data = self._place_data(ld, ld.data_tree())
        # host-computed starts must agree exactly on every process of a distributed run
        chain_keys, positions, inverse_mass_diag = sharding.broadcast(
            (chain_keys, positions, inverse_mass_diag), mesh
        )
        if mesh is not None and inverse_mass_diag is not None:
            inverse_mass_diag = sharding.place(inverse_mass_diag, sharding.replicated(mesh))
        if self.chain_method == "sequential":
            segments = [
                Segment(chain_keys[c], positions[c], f"chain {c + 1} ")
                for c in range(self.num_chains)
            ]
        elif self.chain_method == "threaded":
            groups = zip(
                jnp.split(chain_keys, self.num_groups),
                jnp.split(positions, self.num_groups),
                strict=True,
            )
            segments = [Segment(keys, start, "") for keys, start in groups]
        else:
            chain_keys, positions = chains.shard_chains(
                (chain_keys, positions), mesh, self.num_chains
            )
            segments = [Segment(chain_keys, positions, "")]
        self._pending = self._run = ChainRun(
            fns,
            data,
            segments,
            self._sizes(),
            inverse_mass_diag,
            rescue=self.rescue,
            switch_metric=switch_metric,
            metric_switched=metric_switched,
            autosave=None if self.autosave is None else Autosave(self._save, self.autosave_seconds),
        )
        self.rescues = self._run.rescues
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
        reported = len(pending.rescues)
        try:
            pending.advance()
        except KeyboardInterrupt:
            _warn_rescues(pending.rescues[reported:])
            self._collect(pending)
            done = self.num_completed_samples
            warnings.warn(
                f"sampling interrupted: {done} of {self.num_samples} draws per chain kept; "
                "call MCMC.resume() to continue",
                stacklevel=3,
            )
            return
        _warn_rescues(pending.rescues[reported:])
        self._collect(pending)
        self._pending = None
        if self.check_chains and self._draws is not None:
            ld, draws = self.logdensity_, self._draws
            sites = [n for n in ld.latent_names for _ in range(ld.sites[n].size)]
            message = chain_disagreement(
                np.asarray(draws.position), np.asarray(draws.log_density), sites
            )
            if message is not None:  # the chains sit in different regions
                warnings.warn(message, ChainWarning, stacklevel=3)

    def _collect(self, pending: ChainRun) -> None:
        """Results from the segments' current states (all of them or those so far)."""
        self._last, self._draws, self.num_completed_samples = pending.collect()
        self.complete = pending.complete

    # ------------------------------------------------------------------ checkpoints
    def _save(self) -> None:
        """The ``autosave`` callback, with the draws so far collected."""
        self._collect(self._pending)
        self.autosave(self)

    def sampler_state(self) -> dict[str, np.ndarray]:
        """Everything needed to continue this run in another process, as numpy arrays: per
        segment of chains, the chain keys, the position in the iteration schedule, the full
        warmup and sampler state and the draw buffers (:mod:`~ppl.infer.driver.checkpoint`).
        Give it to :meth:`resume_from` with the same settings and model data."""
        if self._pending is None:
            raise RuntimeError("sampler_state() is for an interrupted run: this one completed")
        return checkpoint.save_segments(self._pending, self._settings_fingerprint())

    def _settings_fingerprint(self) -> tuple:
        # "threaded" runs the program of "looped" on groups of chains: the same draws, and a
        # state saved by one resumes in the other (with the saved grouping)
        method = "looped" if self.chain_method in LOOPED else self.chain_method
        sizes = (self.num_warmup, self.num_samples, self.num_chains, self.thinning)
        return (self.kernel.settings(), *sizes, method, self.rescue)

    def resume_from(self, state: dict, *args: Any, init_params: Any = None, **kwargs: Any) -> None:
        """Continue a run saved with :meth:`sampler_state` (e.g. by another process).

        Args:
            state: the dict from :meth:`sampler_state` (or an ``np.load`` of it).
            *args, **kwargs: the model's arguments (data), as given to :meth:`run`.
            init_params: with a kernel built from ``logdensity_fn=``, a flat point of the
                target's dimension, as given to :meth:`run` (its values are not used).
        """
        checkpoint.check_state(state, self._settings_fingerprint())
        ld = self._logdensity(args, kwargs, init_params)
        if self.chain_method in LOOPED:  # the saved grouping of the chains
            self.num_groups = int(np.asarray(state["num_segments"]))
            self.chain_method = "threaded" if self.num_groups > 1 else "looped"
        dummy_keys = jax.random.split(jax.random.key(0), self.num_chains)
        dummy_positions = jnp.zeros((self.num_chains, ld.dim), jnp.result_type(float))
        switched = int(np.asarray(state.get("metric_switched", -1)))
        self._start(ld, dummy_keys, dummy_positions, None, None if switched < 0 else switched)
        checkpoint.restore_segments(self._pending, state)
        self._continue()

    def compiled_hlo(self) -> str:
        """The optimized HLO of the program that advances the chains, as the last run
        compiled it for its inputs' shardings (to check how a sharded run is partitioned:
        with ``shard_data`` the parameters hold each device's share of the rows, e.g.
        ``f64[500,20]`` for 1000 rows on a data axis of 2, and ``all-reduce`` ops sum the
        partial log-likelihoods and gradients)."""
        if self._run is None or self._run.advance_args is None:
            raise RuntimeError("call MCMC.run(key, ...) before asking for its compiled program")
        keys, carry, draws, data = self._run.advance_args
        lowered = self._run.fns["advance"].lower(keys, carry, draws, data, np.int32(0), np.int32(1))
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
            ``group_by_chain``, else (num_chains * num_samples, ...); numpy arrays (of the
            draws kept so far) while the run is unfinished.
        """
        position = self._require_run().position
        constrain = self.logdensity_.shared_jit(
            "constrain_chains", lambda ld, x: jax.vmap(jax.vmap(ld.constrain))(x)
        )
        kept = position.shape[1]
        if kept < self.num_samples:  # unfinished: one compiled shape (the full run's) for all
            samples = constrain(chains.pad_draws(position, self.num_samples))
            samples = {k: np.asarray(v)[:, :kept] for k, v in samples.items()}
        else:
            samples = constrain(position)
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
            "step_size": np.broadcast_to(
                np.asarray(self._last.step_size)[:, None], draws.log_density.shape
            ),
            "n_steps": draws.num_steps,
        }
        if isinstance(self.kernel, NUTS):
            stats["tree_depth"] = draws.tree_depth
        return {k: np.asarray(v) for k, v in stats.items()}

    @property
    def inverse_mass_matrix(self) -> Any:
        """Adapted inverse mass matrix per chain: (num_chains, dim), (num_chains, dim, dim), or
        a :class:`~ppl.infer.core.metrics.LowRankInverseMass` batched over chains."""
        self._require_run()
        return self._last.inverse_mass_matrix

    @property
    def metric_switched(self) -> int | None:
        """``metric="auto"``: the warmup iteration at which the last run switched from the
        diagonal to the low-rank metric, or ``None`` (it kept the diagonal metric)."""
        return None if self._run is None else self._run.metric_switched

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

    def to_datatree(
        self, dims: dict | None = None, coords: dict | None = None, *, discrete: bool = True
    ):
        """The run as an ArviZ DataTree (posterior, sample_stats, log_likelihood, observed_data).

        With ``discrete`` (the default) the posterior also holds draws of the model's
        enumerated discrete sites (see :func:`ppl.infer.infer_discrete`).
        """
        from ppl.infer.results.datatree import mcmc_to_datatree

        return mcmc_to_datatree(self, dims=dims, coords=coords, discrete=discrete)

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


def _warn_rescues(records: list[Rescue]) -> None:
    for record in records:
        warnings.warn(record.describe(), ChainWarning, stacklevel=4)
