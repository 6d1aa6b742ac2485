"""The MCMC driver: chains, warmup and collection compiled into one program.

``MCMC(NUTS(model), num_warmup=1000, num_samples=1000, num_chains=4)`` runs
Stan's windowed warmup then sampling for every chain inside one jitted
function (chains vectorized with ``vmap``, or run one after another), and
keeps the draws on the unconstrained scale together with the sampler
statistics. The API follows NumPyro's so that a NumPyro user only changes
imports.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import ppl, ppl.distributions as dist
    >>> def model(y):
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 10.0))
    ...     with ppl.plate("obs", y.shape[0]):
    ...         ppl.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> mcmc = MCMC(NUTS(model), num_warmup=200, num_samples=200, num_chains=2)
    >>> mcmc.run(jax.random.PRNGKey(0), jnp.array([0.5, 1.5]))
    >>> mcmc.get_samples()["mu"].shape
    (400,)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl.density import LogDensity
from ppl.infer import hmc, nuts
from ppl.infer.adaptation import window_adaptation

__all__ = ["MCMC", "NUTS", "HMC"]

CHAIN_METHODS = ("vectorized", "sequential")


class _Kernel:
    """Shared settings of the HMC-family kernels and how they get their log density."""

    def __init__(
        self,
        model: Callable | LogDensity | None = None,
        *,
        step_size: float = 1.0,
        dense_mass: bool = False,
        target_accept_prob: float = 0.8,
        init_strategy: str | dict = "uniform",
        adapt_step_size: bool = True,
        adapt_mass_matrix: bool = True,
    ):
        if model is None:
            raise ValueError(f"{type(self).__name__} needs a model or a LogDensity")
        if not 0.0 < target_accept_prob < 1.0:
            raise ValueError(f"target_accept_prob must be in (0, 1), got {target_accept_prob}")
        if step_size <= 0:
            raise ValueError(f"step_size must be positive, got {step_size}")
        self.model = model
        self.step_size = float(step_size)
        self.dense_mass = bool(dense_mass)
        self.target_accept_prob = float(target_accept_prob)
        self.init_strategy = init_strategy
        self.adapt_step_size = adapt_step_size
        self.adapt_mass_matrix = adapt_mass_matrix

    def logdensity(self, args: tuple, kwargs: dict) -> LogDensity:
        """The LogDensity to sample: the given one, or the model compiled with its data."""
        if isinstance(self.model, LogDensity):
            if args or kwargs:
                raise ValueError(
                    "the kernel was given a LogDensity, which already holds its data: call "
                    "run(key) without model arguments"
                )
            return self.model
        return LogDensity(self.model, args, kwargs)

    def step_fn(self, logdensity_fn: Callable) -> Callable:
        """``(key, state, step_size, inverse_mass_matrix) -> (state, info)``."""
        raise NotImplementedError


class NUTS(_Kernel):
    """The No-U-Turn Sampler (Stan's multinomial variant) with windowed warmup.

    Args:
        model: a model function or a :class:`ppl.LogDensity`.
        max_tree_depth: the most trajectory doublings per draw.
        step_size: initial step size (adapted during warmup).
        dense_mass: adapt a dense instead of a diagonal inverse mass matrix.
        target_accept_prob: dual-averaging target of the acceptance statistic.
        init_strategy: "uniform", "median", "prior" or a dict of initial values.
    """

    def __init__(self, model=None, *, max_tree_depth: int = 10, **settings: Any):
        super().__init__(model, **settings)
        if not isinstance(max_tree_depth, int) or not 1 <= max_tree_depth <= 30:
            raise ValueError(f"max_tree_depth must be an int in [1, 30], got {max_tree_depth!r}")
        self.max_tree_depth = max_tree_depth

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
    """Static HMC with a fixed number of leapfrog steps (or trajectory length), windowed warmup.

    Args:
        model: a model function or a :class:`ppl.LogDensity`.
        num_steps: leapfrog steps per draw (or give ``trajectory_length``).
        trajectory_length: integration time; steps = trajectory_length / step_size.
        jitter: jitter the number of steps uniformly.
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


class _ChainResult(NamedTuple):
    positions: jax.Array  # (draws, dim) unconstrained
    log_density: jax.Array  # (draws,)
    info: Any  # kernel info, each leaf (draws, ...)
    step_size: jax.Array  # ()
    inverse_mass_matrix: jax.Array  # (dim,) or (dim, dim)


class MCMC:
    """Run a kernel's warmup and sampling for several chains.

    Args:
        kernel: :class:`NUTS` or :class:`HMC`.
        num_warmup: warmup (adaptation) iterations per chain.
        num_samples: kept draws per chain (after thinning).
        num_chains: number of chains.
        chain_method: "vectorized" (all chains in one vmapped program) or
            "sequential" (one compiled chain program run for each chain).
        thinning: keep every ``thinning``-th draw.
    """

    def __init__(
        self,
        kernel: _Kernel,
        *,
        num_warmup: int = 1000,
        num_samples: int = 1000,
        num_chains: int = 4,
        chain_method: str = "vectorized",
        thinning: int = 1,
    ):
        if not isinstance(kernel, _Kernel):
            raise TypeError(f"kernel must be NUTS(...) or HMC(...), got {kernel!r}")
        for name, value, low in (
            ("num_warmup", num_warmup, 0),
            ("num_samples", num_samples, 1),
            ("num_chains", num_chains, 1),
            ("thinning", thinning, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if chain_method not in CHAIN_METHODS:
            raise ValueError(f"chain_method must be one of {CHAIN_METHODS}, got {chain_method!r}")
        self.kernel = kernel
        self.num_warmup = num_warmup
        self.num_samples = num_samples
        self.num_chains = num_chains
        self.chain_method = chain_method
        self.thinning = thinning
        self.logdensity_: LogDensity | None = None
        self._result: _ChainResult | None = None
        self._args: tuple = ()
        self._kwargs: dict = {}

    def _one_chain(self, ld: LogDensity, key: jax.Array, position: jax.Array) -> _ChainResult:
        kernel = self.kernel
        step = kernel.step_fn(ld)
        dim = position.shape[0]
        key_warmup, key_sample = jax.random.split(key)
        if self.num_warmup > 0:
            state, step_size, imm, _ = window_adaptation(
                key_warmup,
                position,
                ld,
                step,
                self.num_warmup,
                dense_mass=kernel.dense_mass,
                target_accept=kernel.target_accept_prob,
                initial_step_size=kernel.step_size,
            )
        else:
            state = hmc.init(position, ld)
            step_size = jnp.asarray(kernel.step_size, position.dtype)
            imm = jnp.eye(dim, dtype=position.dtype) if kernel.dense_mass else jnp.ones(dim)

        def body(state, key):
            state, info = step(key, state, step_size, imm)
            return state, (state.position, state.log_density, info)

        keys = jax.random.split(key_sample, self.num_samples * self.thinning)
        _, (positions, log_density, info) = jax.lax.scan(body, state, keys)
        keep = slice(self.thinning - 1, None, self.thinning)
        info = jax.tree.map(lambda x: x[keep], info)
        return _ChainResult(positions[keep], log_density[keep], info, step_size, imm)

    def run(self, key: jax.Array, *args: Any, **kwargs: Any) -> None:
        """Warm up and sample every chain; model arguments follow the key."""
        ld = self.kernel.logdensity(args, kwargs)
        if ld.dim == 0:
            raise ValueError("the model has no latent variables to sample")
        key_init, key_chains = jax.random.split(key)
        positions = ld.init(key_init, self.kernel.init_strategy, num_chains=self.num_chains)
        chain_keys = jax.random.split(key_chains, self.num_chains)
        one_chain = partial(self._one_chain, ld)
        if self.chain_method == "vectorized":
            result = jax.jit(jax.vmap(one_chain))(chain_keys, positions)
        else:
            compiled = jax.jit(one_chain)
            per_chain = [compiled(k, p) for k, p in zip(chain_keys, positions, strict=True)]
            result = jax.tree.map(lambda *xs: jnp.stack(xs), *per_chain)
        self.logdensity_ = ld
        self._result = jax.block_until_ready(result)
        self._args, self._kwargs = args, kwargs

    def _require_run(self) -> _ChainResult:
        if self._result is None:
            raise RuntimeError("call MCMC.run(key, ...) before asking for its results")
        return self._result

    def get_samples(self, group_by_chain: bool = False) -> dict[str, jax.Array]:
        """Constrained draws of latent and deterministic sites.

        Returns:
            dict ``site -> array`` of shape (num_chains, num_samples, ...) with
            ``group_by_chain``, else (num_chains * num_samples, ...).
        """
        result = self._require_run()
        ld = self.logdensity_
        samples = jax.vmap(jax.vmap(ld.constrain))(result.positions)
        if group_by_chain:
            return samples
        return {k: v.reshape((-1, *v.shape[2:])) for k, v in samples.items()}

    def get_sample_stats(self) -> dict[str, np.ndarray]:
        """Sampler statistics per chain and draw, shape (num_chains, num_samples)."""
        result = self._require_run()
        info = result.info
        stats = {
            "lp": result.log_density,
            "acceptance_rate": info.acceptance_rate,
            "diverging": info.diverging,
            "energy": info.energy,
            "step_size": jnp.broadcast_to(result.step_size[:, None], result.log_density.shape),
        }
        if hasattr(info, "tree_depth"):
            stats["tree_depth"] = info.tree_depth
        stats["n_steps"] = info.num_steps
        return {k: np.asarray(v) for k, v in stats.items()}

    @property
    def inverse_mass_matrix(self) -> jax.Array:
        """Adapted inverse mass matrix per chain: (num_chains, dim) or (num_chains, dim, dim)."""
        return self._require_run().inverse_mass_matrix

    @property
    def step_size(self) -> jax.Array:
        """Adapted step size per chain, shape (num_chains,)."""
        return self._require_run().step_size

    def to_datatree(self, dims: dict | None = None, coords: dict | None = None):
        """The run as an ArviZ DataTree (posterior, sample_stats, log_likelihood, observed_data)."""
        from ppl.convert import mcmc_to_datatree

        return mcmc_to_datatree(self, dims=dims, coords=coords)

    def print_summary(self, **summary_kwargs: Any) -> None:
        """Print ArviZ's summary table (mean, sd, HDI, ESS, R-hat, MCSE) of the posterior."""
        import arviz_stats

        table = arviz_stats.summary(self.to_datatree(), **summary_kwargs)
        with np.printoptions(linewidth=120):
            print(table.to_string())
        divergences = int(self.get_sample_stats()["diverging"].sum())
        print(f"Number of divergences: {divergences}")
