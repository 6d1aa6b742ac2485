"""The protocols of MCMC: a kernel, the warmup that tunes it, and how the driver runs them.

Data flows model -> :class:`ppl.LogDensity` -> kernel + warmup -> driver -> draws -> DataTree.
A *kernel* (:mod:`ppl.infer.kernels`) is a Markov transition; a *warmup*
(:mod:`ppl.infer.warmup`) adapts the kernel's parameters (step size, metric, trajectory
length) while the chain runs; the driver (:mod:`ppl.infer.driver`) pairs them (its
``config`` module turns ``NUTS(...)``, ``HMC(...)``, ``ChEES(...)`` or ``MEADS(...)`` into
one :class:`Kernel` and one :class:`Warmup`) and runs both in one compiled loop
(:class:`ppl.infer.driver.program.Program`). Each is a tuple of pure functions over pytrees,
as optax's ``GradientTransformation`` is, so ``jit``, ``vmap``, ``lax.map`` and sharding
apply unchanged.

One iteration ``i`` of a chain (or of all chains at once, for kernels that adapt across
chains) is::

    key_i = fold_in(chain_key, i)
    w = warmup.before(key_i, w, state, i, flags_i, logdensity_fn)       # every iteration
    parameters = warmup.parameters(w, i, in_warmup)
    new_state, info = kernel.step(key_i, state, logdensity_fn, parameters)
    if in_warmup:
        w = warmup.after(w, state, new_state, info, i, flags_i)
    state = new_state                         # the draw is new_state.position, with info

where ``flags_i`` is row ``i`` of ``warmup.schedule`` (named per-iteration flags; all zero
after warmup), and after the run ``warmup.final(w)`` gives the step size and inverse mass
matrix sampling used. A kernel and the warmup paired with it both receive ``key_i`` and draw
from disjoint parts of it: the HMC-family kernels use ``split(key_i)[0]`` (and
``fold_in(key_i, 2)`` for a jittered step size), their warmups ``split(key_i)[1]``; the
ensemble kernels document their own split.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

from jax import Array

__all__ = ["Kernel", "StepParameters", "Warmup"]


class Kernel(NamedTuple):
    """A Markov transition kernel as two pure functions.

    Attributes:
        init: ``init(position, logdensity_fn) -> state``: the chain state at ``position``
            (``(dim,)``, or ``(num_chains, dim)`` for a kernel over all chains at once). The
            state has at least ``position`` and ``log_density`` (e.g. an ``HMCState``).
        step: ``step(key, state, logdensity_fn, parameters) -> (state, info)``: one
            transition with the parameters a warmup gives. ``info`` has at least
            ``acceptance_rate``, ``diverging``, ``energy`` and ``num_steps`` (gradient
            evaluations), and ``tree_depth`` where the kernel builds trees.
    """

    init: Callable[..., Any]
    step: Callable[..., tuple[Any, Any]]


class Warmup(NamedTuple):
    """The adaptation of a kernel's parameters, as a schedule and five (or six) pure
    functions.

    Attributes:
        schedule: a NamedTuple of numpy arrays of length ``num_warmup`` (per-iteration flags
            with names, e.g. ``restart``, ``collect``), or ``()`` when there is none. The
            driver pads it with zeros to the whole run and passes row ``i`` as ``flags``.
        init: ``init(state, logdensity_fn, inverse_mass_diag) -> warmup_state`` before the
            first iteration; ``inverse_mass_diag`` ``(dim,)`` is a starting metric (e.g.
            Pathfinder's) or ``None`` for the warmup's own.
        before: ``before(key, warmup_state, state, iteration, flags, logdensity_fn) ->
            warmup_state``, at the start of every iteration, warmup and sampling alike
            (e.g. the step-size heuristic where ``flags.restart`` is set).
        parameters: ``parameters(warmup_state, iteration, in_warmup) -> parameters``, what the
            kernel's ``step`` takes this iteration (frozen values once warmup is over).
        after: ``after(warmup_state, previous_state, state, info, iteration, flags) ->
            warmup_state``, after each warmup iteration's transition (not while sampling).
        final: ``final(warmup_state) -> (step_size, inverse_mass_matrix)``, what sampling
            uses, as the driver reports it.
        chunk_end: ``chunk_end(warmup_state, next_iteration) -> warmup_state`` or ``None``:
            after each chunk of iterations the driver runs, for work too costly for every
            iteration, e.g. a judgement of the recent draws.
        stops: the iteration counts at which ``chunk_end`` has work: the driver ends a chunk
            there, with every chain (and reads what it left in the state).
    """

    schedule: Any
    init: Callable[..., Any]
    before: Callable[..., Any]
    parameters: Callable[..., Any]
    after: Callable[..., Any]
    final: Callable[[Any], tuple[Array, Any]]
    chunk_end: Callable[..., Any] | None = None
    stops: tuple[int, ...] = ()


class StepParameters(NamedTuple):
    """The parameters of an HMC or NUTS transition, as the Stan and nutpie warmups give them.

    Attributes:
        step_size: scalar leapfrog step size.
        inverse_mass_matrix: ``(dim,)``, ``(dim, dim)`` or a
            :class:`~ppl.infer.core.metrics.LowRankInverseMass`.
    """

    step_size: Array
    inverse_mass_matrix: Any
