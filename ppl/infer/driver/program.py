"""The one compiled loop every kernel runs through: warmup and sampling iterations in chunks.

:class:`Program` holds the four pure functions the driver compiles for one (log-density
layout, kernel + warmup, run sizes): ``init`` (the chain state and the warmup state at the
initial positions), ``empty_draws`` (preallocated draw buffers), ``advance`` (any range of
iterations, warmup or sampling, written into the buffers) and ``finish`` (what sampling
used). Iteration ``i`` of a chain uses the key ``fold_in(chain_key, i)`` (see
:mod:`ppl.infer.base` for what the kernel and the warmup do in it), so the draws do not
depend on how a run is cut into chunks. A program runs one chain (``chain_axes=0``; the
driver batches it over chains, :mod:`ppl.infer.driver.chains`) or all chains at once
(``chain_axes=1``, for kernels that adapt across chains).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl.density import LogDensity
from ppl.infer.base import Kernel, Warmup
from ppl.infer.driver.rescue import WindowStats, window_init, window_update

__all__ = ["ChainCarry", "Draws", "Program", "SamplingState"]


class SamplingState(NamedTuple):
    """A chain's sampler state after a run (what sampling continues from).

    Attributes:
        state: the kernel's chain state (an ``HMCState`` for HMC and NUTS).
        step_size: ``()`` the step size sampling used.
        inverse_mass_matrix: ``(dim,)``, ``(dim, dim)`` or a ``LowRankInverseMass``.
        num_divergent: ``()`` int, divergent transitions while sampling.
        num_steps_warmup: ``()`` int, gradient evaluations during warmup.
    """

    state: Any
    step_size: jax.Array
    inverse_mass_matrix: Any
    num_divergent: jax.Array
    num_steps_warmup: jax.Array


class ChainCarry(NamedTuple):
    """Per-chain state carried between chunks of iterations.

    Attributes:
        state: the kernel's chain state.
        warmup: the warmup's state (frozen once warmup is over).
        num_divergent_warmup: ``()`` int, divergent transitions during warmup.
        num_divergent: ``()`` int, while sampling.
        num_steps_warmup: ``()`` int, leapfrog steps (gradient evaluations) in warmup.
        window: the warmup iterations' :class:`~ppl.infer.driver.rescue.WindowStats` since
            the driver last compared the chains (it empties them then).
    """

    state: Any
    warmup: Any
    num_divergent_warmup: jax.Array
    num_divergent: jax.Array
    num_steps_warmup: jax.Array
    window: WindowStats


class Draws(NamedTuple):
    """Per-chain draw buffers, each with a leading num_samples axis."""

    position: jax.Array  # (num_samples, dim) unconstrained
    log_density: jax.Array
    acceptance_rate: jax.Array
    diverging: jax.Array
    energy: jax.Array
    tree_depth: jax.Array
    num_steps: jax.Array


class Program:
    """The functions for one (log-density layout, kernel + warmup, run sizes).

    Iterations are numbered globally: ``0 .. num_warmup - 1`` warm up,
    ``num_warmup ..`` sample (``num_samples * thinning`` of them). One function,
    :meth:`advance`, runs any range of them, so the kernel is compiled once for
    warmup and sampling.

    Args:
        kernel: the transition (:class:`~ppl.infer.base.Kernel`).
        warmup: the adaptation paired with it (:class:`~ppl.infer.base.Warmup`).
        template: a ``LogDensity`` of the model layout; each call takes its array data.
        num_warmup, num_samples, thinning: the run's sizes per chain.
        chain_axes: 0 for a program over one chain (the driver batches it), 1 for a program
            over all chains at once (every array has the chain axis first).
    """

    def __init__(
        self,
        kernel: Kernel,
        warmup: Warmup,
        template: LogDensity,
        num_warmup: int,
        num_samples: int,
        thinning: int,
        chain_axes: int = 0,
    ):
        self.kernel = kernel
        self.warmup = warmup
        self.template = template
        self.num_warmup = num_warmup
        self.num_samples = num_samples
        self.thinning = thinning
        self.chain_axes = chain_axes
        total = num_warmup + num_samples * thinning

        def pad(flags: np.ndarray) -> jax.Array:  # no flag is set after warmup
            out = np.zeros(total, flags.dtype)
            out[:num_warmup] = flags[:num_warmup]
            return jnp.asarray(out)

        self.schedule = jax.tree.map(pad, warmup.schedule)

    def _logdensity(self, data) -> LogDensity:
        return self.template.with_data_tree(data)

    def init(self, position, data, inverse_mass_diag=None) -> ChainCarry:
        """The carry at ``position`` (``(dim,)``, or ``(num_chains, dim)`` with chain axes)."""
        ld = self._logdensity(data)
        state = self.kernel.init(position, ld)
        warmup_state = self.warmup.init(state, ld, inverse_mass_diag)
        lead = jnp.shape(position)[: self.chain_axes]
        zero = jnp.zeros(lead, jnp.int32)
        window = window_init(lead, jnp.asarray(position).dtype)
        return ChainCarry(state, warmup_state, zero, zero, zero, window)

    def empty_draws(self, position) -> Draws:
        """Zeroed draw buffers: ``(num_samples, ...)`` after the chain axes."""
        lead = jnp.shape(position)[: self.chain_axes]
        n = (*lead, self.num_samples)
        f = position.dtype
        return Draws(
            position=jnp.zeros((*n, position.shape[-1]), f),
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
        kernel, warmup = self.kernel, self.warmup
        if self.chain_axes:
            fold_in = jax.vmap(jax.random.fold_in, in_axes=(0, None))
        else:
            fold_in = jax.random.fold_in
        before_draw = (slice(None),) * self.chain_axes

        def body(i, c):
            carry, draws = c
            key_i = fold_in(key, i)
            flags = jax.tree.map(lambda a: a[i], self.schedule)
            in_warmup = i < self.num_warmup
            w = warmup.before(key_i, carry.warmup, carry.state, i, flags, ld)
            parameters = warmup.parameters(w, i, in_warmup)
            state, info = kernel.step(key_i, carry.state, ld, parameters)
            if getattr(flags, "adapt", None) is not None:
                # the warmup's after() is inert where its schedule's "adapt" flag is False
                # (after warmup): called directly, its state (buffers included) is updated
                # in place instead of being copied through a conditional every iteration
                w = warmup.after(w, carry.state, state, info, i, flags)
            else:
                w = jax.lax.cond(
                    in_warmup,
                    lambda w: warmup.after(w, carry.state, state, info, i, flags),
                    lambda w: w,
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
                tree_depth=getattr(info, "tree_depth", jnp.zeros_like(info.num_steps)),
                num_steps=info.num_steps,
            )
            index = (*before_draw, j)
            draws = jax.tree.map(lambda buf, x: buf.at[index].set(x.astype(buf.dtype)), draws, row)
            diverging = info.diverging.astype(jnp.int32)
            carry = ChainCarry(
                state,
                w,
                carry.num_divergent_warmup + jnp.where(in_warmup, diverging, 0),
                carry.num_divergent + jnp.where(in_warmup, 0, diverging),
                carry.num_steps_warmup + jnp.where(in_warmup, info.num_steps, 0),
                window_update(
                    carry.window,
                    state.log_density,
                    info.num_steps,
                    getattr(parameters, "step_size", jnp.ones(())),
                    in_warmup,
                ),
            )
            return carry, draws

        carry, draws = jax.lax.fori_loop(start, start + n, body, (carry, draws))
        if warmup.chunk_end is not None:
            carry = carry._replace(warmup=warmup.chunk_end(carry.warmup, start + n))
        return carry, draws

    def finish(self, carry: ChainCarry) -> SamplingState:
        """The chain's state and what sampling used (step size, inverse mass matrix)."""
        step_size, inverse_mass_matrix = self.warmup.final(carry.warmup)
        return SamplingState(
            carry.state,
            step_size,
            inverse_mass_matrix,
            carry.num_divergent,
            carry.num_steps_warmup,
        )
