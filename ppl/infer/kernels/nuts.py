"""The No-U-Turn Sampler as Stan does it, built iteratively in one ``lax.while_loop``.

Algorithm (Hoffman & Gelman 2014; Betancourt 2017, appendix A; Stan's ``base_nuts.hpp``):

* Draw a fresh momentum, then double the trajectory: at depth ``d`` pick a direction at random and
  integrate a new subtree of ``2**d`` leapfrog steps off that end.
* Multinomial sampling: inside a subtree the candidate is drawn with probability proportional to
  ``exp(-H)`` (uniform progressive sampling, leaf by leaf); when a complete subtree is appended
  the candidate replaces the sample with probability ``min(1, W_subtree / W_old)`` (biased
  progressive sampling).
* Generalized U-turn criterion on the summed momentum ``rho`` with the velocities ``M⁻¹p`` at
  both ends, checked for every merge of two (sub)trees, plus Stan's two extra checks across the
  seam: (left tree + first state of the right tree) and (last state of the left tree + right
  tree).
* A subtree that U-turns internally or contains a divergent state (``H - H0 > 1000``) is
  discarded and ends the transition; a U-turn of the whole trajectory or reaching
  ``max_tree_depth`` ends it after the subtree is used.

Iterative build. Number the states in the order they are built: the initial point is leaf 0 and
the new states are leaves 1, 2, 3, ... In that order the whole trajectory is a perfect binary tree
whatever the directions, because a doubling appends ``2**d`` leaves to a trajectory of ``2**d``
leaves. Leaf ``n`` completes as many merges as ``n`` has trailing one bits, at levels
``0, 1, ..., k - 1``; when ``n + 1`` is a power of two the last of them (level ``depth``) is the
top-level merge of the trajectory with the new subtree, all others are inside the subtree. Each
level holds at most one complete left sibling waiting for its right sibling, so checkpoint arrays
of shape ``(max_tree_depth + 1, dim)`` (running momentum sum before the node, momentum and velocity
at its first and last state) hold everything the U-turn checks need: memory is
O(max_tree_depth · dim) and no tree is stored. Summed momenta are differences of the running sum
over all states in build order. Per leaf the body runs one leapfrog, writes the node the leaf
completes, then checks the ``k`` merges in a small inner loop that stops at the first U-turn
(``k`` is 1 on average). The U-turn checks are symmetric in the two ends of a (sub)trajectory, so
subtrees built backward need no special casing; the trajectory node alone is stored in time
order (left end, right end), and its ends are swapped when the doubling goes backward.

Leaf uniforms come from :mod:`ppl.infer.core.rng`; the step size and metric come from a warmup
(:mod:`ppl.infer.warmup`) through the driver (:mod:`ppl.infer.driver`).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ppl.infer.kernels import nuts
    >>> logdensity_fn = lambda x: -0.5 * jnp.sum(x**2)
    >>> state = nuts.init(jnp.zeros(3), logdensity_fn)
    >>> state, info = nuts.step(jax.random.key(0), state, logdensity_fn, 0.5, jnp.ones(3))
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ppl.infer.base import Kernel
from ppl.infer.core.integrators import (
    IntegratorState,
    energy_error,
    symmetric_acceptance,
    velocity_verlet,
)
from ppl.infer.core.metrics import is_diagonal, momentum_factor, sample_momentum, velocity
from ppl.infer.core.rng import key_words, leaf_uniform
from ppl.infer.kernels import hmc
from ppl.infer.kernels.hmc import HMCState

__all__ = ["NUTSInfo", "init", "kernel", "step"]

init = hmc.init


class NUTSInfo(NamedTuple):
    """Diagnostics of one NUTS transition.

    Attributes:
        acceptance_rate: scalar, mean over all new states of ``min(1, exp(H0 - H))`` (Stan's
            ``accept_stat__``; the statistic dual averaging adapts on).
        acceptance_sym: scalar, mean over all new states of ``2 / (1 + exp(|H - H0|))``,
            nutpie's symmetric acceptance statistic: the same expectation as
            ``acceptance_rate`` at equilibrium (a state and its time reversal weighed
            together), with less noise; nutpie's late warmup adapts on it.
        diverging: bool, a new state had ``H - H0 > max_delta_energy`` (or a NaN energy).
        energy: scalar Hamiltonian of the returned state (with its momentum).
        tree_depth: int32, number of completed doublings (Stan's ``treedepth__``).
        num_steps: int32, leapfrog steps = gradient evaluations (Stan's ``n_leapfrog__``). It
            equals ``2**tree_depth - 1`` when the transition ended on a U-turn of the whole
            trajectory or at ``max_tree_depth``, and lies in
            ``[2**tree_depth, 2**(tree_depth + 1) - 1]`` when a subtree was rejected (divergence
            or U-turn inside it).
    """

    acceptance_rate: Array
    acceptance_sym: Array
    diverging: Array
    energy: Array
    tree_depth: Array
    num_steps: Array


class _Sample(NamedTuple):
    """A candidate state: what the transition may return."""

    position: Array
    log_density: Array
    grad: Array
    energy: Array


# Fields of a checkpoint row, shape (num_fields, dim). Velocities are stored for a dense metric
# only; for a diagonal one recomputing M⁻¹p is cheaper than carrying them.
_SUM_BEFORE = 0  # running momentum sum (build order) just before the node's first state
_P_FIRST = 1  # momentum at the node's first state
_P_LAST = 2  # momentum at its last state
_V_FIRST = 3  # velocity at its first state (dense metric only)
_V_LAST = 4  # velocity at its last state (dense metric only)


class _Loop(NamedTuple):
    """The carry of the leaf loop."""

    ends: IntegratorState  # the trajectory's ends, stacked: [0] backward-most, [1] forward-most
    sample: _Sample  # current sample of the whole trajectory
    log_weight: Array  # log sum of exp(H0 - H) over the accepted trajectory
    subtree_sample: _Sample  # multinomial candidate of the subtree being built
    subtree_log_weight: Array  # log sum of exp(H0 - H) over it (-inf before its first leaf)
    checkpoints: Array  # (max_tree_depth + 1, num_fields, dim): per level, the complete left
    # sibling waiting for its right sibling. Inside the current subtree "first" and "last" are
    # in build order (the seam is after "last"); the trajectory node is in time order.
    momentum_sum: Array  # running sum of momenta over all states in build order
    num_leaves: Array  # leaves built so far (= index of the last new leaf)
    depth: Array  # completed doublings
    sum_accept: Array  # sum of min(1, exp(H0 - H)) over new leaves
    sum_accept_sym: Array  # sum of 2 / (1 + exp(|H - H0|)) over new leaves
    diverging: Array
    done: Array


def _where(pred: Array, a, b):
    return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)


def kernel(*, max_tree_depth: int = 10, step_size_jitter: float = 0.0) -> Kernel:
    """NUTS as a :class:`~ppl.infer.base.Kernel` taking :class:`~ppl.infer.base.StepParameters`
    (see :func:`ppl.infer.kernels.hmc.step_kernel`).

    Args:
        max_tree_depth: the most doublings per transition.
        step_size_jitter: the fraction within which the step size is jittered (0: none).
    """
    return hmc.step_kernel(step, step_size_jitter, max_tree_depth=max_tree_depth)


def _not_turning(v_first: Array, v_last: Array, rho: Array) -> Array:
    """Generalized no-U-turn criterion: ``v_first·rho > 0 and v_last·rho > 0``."""
    return (jnp.dot(v_first, rho) > 0) & (jnp.dot(v_last, rho) > 0)


def step(
    key: Array,
    state: HMCState,
    logdensity_fn: Callable[[Array], Array],
    step_size: Array,
    inverse_mass_matrix: Array,
    max_tree_depth: int = 10,
    max_delta_energy: float = 1000.0,
) -> tuple[HMCState, NUTSInfo]:
    """One NUTS transition (Stan's multinomial variant with the extra U-turn checks).

    Args:
        key: a JAX PRNG key.
        state: the current ``HMCState`` (from ``init`` or a previous step).
        logdensity_fn: ``(dim,) -> scalar`` log density.
        step_size: scalar leapfrog step size.
        inverse_mass_matrix: shape ``(dim,)`` (diagonal) or ``(dim, dim)`` (dense).
        max_tree_depth: static int ≥ 1, the most doublings (at most ``2**max_tree_depth - 1``
            gradient evaluations per transition).
        max_delta_energy: energy error ``H - H0`` above which a state is divergent.

    Returns:
        ``(new_state, info)``: an ``HMCState`` and a ``NUTSInfo``.
    """
    if not (isinstance(max_tree_depth, int) and 1 <= max_tree_depth <= 30):
        raise ValueError(f"max_tree_depth must be a Python int in [1, 30]; got {max_tree_depth!r}.")
    key_momentum, key_direction, key_biased, key_leaf = jax.random.split(key, 4)
    factor = momentum_factor(inverse_mass_matrix)
    momentum = sample_momentum(key_momentum, state.position, inverse_mass_matrix, factor)
    # One direction (True = forward in time) and one biased-sampling uniform per doubling.
    forward = jax.random.bernoulli(key_direction, 0.5, (max_tree_depth,))
    uniforms_biased = jax.random.uniform(key_biased, (max_tree_depth,), dtype=momentum.dtype)
    return _transition(
        key_leaf,
        state,
        momentum,
        forward,
        uniforms_biased,
        logdensity_fn,
        step_size,
        inverse_mass_matrix,
        max_delta_energy,
    )


def _transition(
    key_leaf: Array,
    state: HMCState,
    momentum: Array,
    forward: Array,
    uniforms_biased: Array,
    logdensity_fn: Callable[[Array], Array],
    step_size: Array,
    inverse_mass_matrix: Array,
    max_delta_energy: float,
) -> tuple[HMCState, NUTSInfo]:
    """Build the trajectory for a given momentum and given per-doubling randomness.

    Args:
        key_leaf: PRNG key for the per-leaf multinomial draws (:func:`leaf_uniform`).
        state: the current ``HMCState``.
        momentum: shape ``(dim,)``, the fresh momentum.
        forward: bool ``(max_tree_depth,)``, the direction of each doubling (True = forward).
        uniforms_biased: ``(max_tree_depth,)`` uniforms for the biased top-level sampling.
        logdensity_fn, step_size, inverse_mass_matrix, max_delta_energy: as in ``step``.

    Returns:
        ``(new_state, info)`` as in ``step``.
    """
    max_tree_depth = forward.shape[0]
    integrator = velocity_verlet(logdensity_fn, inverse_mass_matrix)
    leaf_key = key_words(key_leaf)
    dtype = momentum.dtype

    v0 = velocity(momentum, inverse_mass_matrix)
    h0 = -state.log_density + 0.5 * jnp.dot(momentum, v0)
    z0 = IntegratorState(state.position, momentum, state.log_density, state.grad)
    # Level 0 holds the trajectory made of the initial point alone (nothing built before it).
    # One spare row: the node completed by the last possible leaf goes to row max_tree_depth.
    store_velocity = not is_diagonal(inverse_mass_matrix)
    first_row = [jnp.zeros_like(momentum), momentum, momentum] + (
        [v0, v0] if store_velocity else []
    )
    checkpoints = jnp.zeros((max_tree_depth + 1, len(first_row), *momentum.shape), dtype)
    checkpoints = checkpoints.at[0].set(jnp.stack(first_row))
    sample0 = _Sample(state.position, state.log_density, state.grad, h0)
    loop0 = _Loop(
        ends=jax.tree.map(lambda x: jnp.stack([x, x]), z0),
        sample=sample0,
        log_weight=jnp.zeros((), dtype),
        subtree_sample=sample0,
        subtree_log_weight=jnp.full((), -jnp.inf, dtype),
        checkpoints=checkpoints,
        momentum_sum=momentum,
        num_leaves=jnp.zeros((), jnp.int32),
        depth=jnp.zeros((), jnp.int32),
        sum_accept=jnp.zeros((), dtype),
        sum_accept_sym=jnp.zeros((), dtype),
        diverging=jnp.zeros((), bool),
        done=jnp.zeros((), bool),
    )

    def add_leaf(loop: _Loop) -> _Loop:
        n = loop.num_leaves + 1
        depth = loop.depth
        going_forward = forward[depth]
        side = going_forward.astype(jnp.int32)
        edge = jax.tree.map(lambda x: x[side], loop.ends)
        leaf = integrator(edge, jnp.where(going_forward, step_size, -step_size))
        p = leaf.momentum
        v = velocity(p, inverse_mass_matrix)
        energy = -leaf.log_density + 0.5 * jnp.dot(p, v)
        delta = energy_error(h0, energy)
        diverging = delta > max_delta_energy
        log_w = -delta
        sum_accept = loop.sum_accept + jnp.exp(jnp.minimum(0.0, log_w))
        sum_accept_sym = loop.sum_accept_sym + symmetric_acceptance(delta)

        # Uniform progressive sampling inside the subtree (prob. 1 for its first leaf).
        subtree_log_weight = jnp.logaddexp(loop.subtree_log_weight, log_w)
        u_leaf = leaf_uniform(leaf_key, n, dtype)
        take_leaf = u_leaf < jnp.exp(log_w - subtree_log_weight)
        leaf_sample = _Sample(leaf.position, leaf.log_density, leaf.grad, energy)
        subtree_sample = _where(take_leaf, leaf_sample, loop.subtree_sample)

        # This leaf completes the merges at levels j < k (k = trailing one bits of n) of the
        # checkpoint at level j (left sibling) with R_j: this leaf merged with the checkpoints
        # below j (right sibling). R_k is the node completed; write it to row k first (rows < k,
        # which the checks read, are untouched) so that XLA updates the rows in place.
        ck = loop.checkpoints
        previous_sum = loop.momentum_sum
        momentum_sum = previous_sum + p
        k = jax.lax.population_count((n ^ (n + 1)) >> 1)
        completes_subtree = (n & (n + 1)) == 0  # n + 1 is a power of two: k == depth + 1

        def right_sibling_start(ck: Array, j: Array):
            """Running sum before R_j, momentum and velocity at its first state, row j - 1."""
            row = ck[jnp.maximum(j - 1, 0)]
            alone = j == 0
            v_row = (
                row[_V_FIRST] if store_velocity else velocity(row[_P_FIRST], inverse_mass_matrix)
            )
            return (
                jnp.where(alone, previous_sum, row[_SUM_BEFORE]),
                jnp.where(alone, p, row[_P_FIRST]),
                jnp.where(alone, v, v_row),
                row,
            )

        sum_before, p_first, v_first, below = right_sibling_start(ck, k)
        # A completed trajectory is stored in time order: grown backward, this leaf is its left end.
        backward_top = completes_subtree & ~going_forward
        node = [
            sum_before,
            jnp.where(backward_top, p, p_first),
            jnp.where(backward_top, below[_P_LAST], p),
        ]
        if store_velocity:
            node += [
                jnp.where(backward_top, v, v_first),
                jnp.where(backward_top, below[_V_LAST], v),
            ]
        ck = ck.at[k].set(jnp.stack(node))

        def check_level(carry):
            j, _ = carry
            right_before, p_right_first, v_right_first, _ = right_sibling_start(ck, j)
            left = ck[j]
            # Left sibling's ends: far from the seam and at the seam (the trajectory node is
            # stored in time order, so swap its ends when growing backward).
            swap = (j == depth) & ~going_forward
            p_seam = jnp.where(swap, left[_P_FIRST], left[_P_LAST])
            if store_velocity:
                v_far = jnp.where(swap, left[_V_LAST], left[_V_FIRST])
                v_seam = jnp.where(swap, left[_V_FIRST], left[_V_LAST])
            else:
                v_far = velocity(
                    jnp.where(swap, left[_P_LAST], left[_P_FIRST]), inverse_mass_matrix
                )
                v_seam = velocity(p_seam, inverse_mass_matrix)
            rho = momentum_sum - left[_SUM_BEFORE]
            rho_left_plus = right_before - left[_SUM_BEFORE] + p_right_first
            rho_right_plus = momentum_sum - right_before + p_seam
            ok = (
                _not_turning(v_far, v, rho)
                & _not_turning(v_far, v_right_first, rho_left_plus)
                & _not_turning(v_seam, v, rho_right_plus)
            )
            return j + 1, ~ok

        num_checked, turning = jax.lax.while_loop(
            lambda c: (c[0] < k) & ~c[1], check_level, (jnp.zeros_like(k), jnp.zeros((), bool))
        )
        trajectory_turning = turning & completes_subtree & (num_checked == k)
        subtree_turning = turning & ~trajectory_turning

        # Top level: append the completed subtree with biased progressive sampling.
        valid = ~(diverging | subtree_turning)
        merge = completes_subtree & valid
        take_subtree = uniforms_biased[depth] < jnp.exp(subtree_log_weight - loop.log_weight)
        sample = _where(merge & take_subtree, subtree_sample, loop.sample)
        log_weight = jnp.where(
            merge, jnp.logaddexp(loop.log_weight, subtree_log_weight), loop.log_weight
        )
        new_depth = depth + merge.astype(depth.dtype)
        done = ~valid | (merge & (trajectory_turning | (new_depth >= max_tree_depth)))
        return _Loop(
            ends=jax.tree.map(lambda x, y: x.at[side].set(y), loop.ends, leaf),
            sample=sample,
            log_weight=log_weight,
            subtree_sample=subtree_sample,
            subtree_log_weight=jnp.where(completes_subtree, -jnp.inf, subtree_log_weight),
            checkpoints=ck,
            momentum_sum=momentum_sum,
            num_leaves=n,
            depth=new_depth,
            sum_accept=sum_accept,
            sum_accept_sym=sum_accept_sym,
            diverging=diverging,
            done=done,
        )

    loop = jax.lax.while_loop(lambda lp: ~lp.done, add_leaf, loop0)
    new_state = HMCState(loop.sample.position, loop.sample.log_density, loop.sample.grad)
    info = NUTSInfo(
        acceptance_rate=loop.sum_accept / loop.num_leaves,
        acceptance_sym=loop.sum_accept_sym / loop.num_leaves,
        diverging=loop.diverging,
        energy=loop.sample.energy,
        tree_depth=loop.depth,
        num_steps=loop.num_leaves,
    )
    return new_state, info
