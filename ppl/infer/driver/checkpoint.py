"""An interrupted run's sampler state as plain numpy arrays, and back (resume in any process).

:func:`save_segments` writes, per segment of chains (:class:`~ppl.infer.driver.chains.Segment`),
the chain keys, the position in the iteration schedule and every leaf of the carry (chain
and warmup state) and of the draw buffers (as far as they are filled);
:func:`restore_segments` puts them back into a freshly started
:class:`~ppl.infer.driver.chains.ChainRun` of the same program.
``MCMC.sampler_state()`` and ``MCMC.resume_from()`` (:mod:`ppl.infer.driver.mcmc`) use them;
the command line saves the dict beside an interrupted run file.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

from ppl.infer.driver import sharding
from ppl.infer.driver.chains import ChainRun, shard_chains
from ppl.infer.driver.rescue import Rescue

__all__ = ["STATE_FORMAT", "check_state", "restore_segments", "save_segments"]

STATE_FORMAT = "ppl-sampler-state-4"
"""Layout of the saved carry (version 2: the chain state beside the warmup state; version 3:
the chain-rescue window statistics and the restarts so far; version 4: the auto metric's
buffer). Version 4 states may also hold ``checked`` (the last stop done), the keys and
starting points of chains not started yet, the initial ``inverse_mass_diag``, and
``s{c}_filled``: the draws per chain kept so far, the draw buffers then being saved only
that far (older states hold them whole)."""


def save_segments(run: ChainRun, fingerprint: tuple) -> dict[str, np.ndarray]:
    """The run's segments as numpy arrays (gathered to host; a collective when distributed).

    Args:
        run: the interrupted run.
        fingerprint: the settings that must match on resume (kernel and MCMC settings).
    """
    out: dict[str, np.ndarray] = {
        "format": np.asarray(STATE_FORMAT),
        "num_segments": np.asarray(len(run.segments)),
        "settings": np.asarray(repr(fingerprint)),
        "rescues": np.asarray(json.dumps([r.as_dict() for r in run.rescues])),
        # metric="auto": the warmup iteration where the run took the low-rank metric (-1: not)
        "metric_switched": np.asarray(
            -1 if run.metric_switched is None else int(run.metric_switched)
        ),
        "checked": np.asarray(run.checked),  # the last stop whose checkpoint work is done
    }
    if run.inverse_mass_diag is not None:
        out["inverse_mass_diag"] = sharding.to_host(run.inverse_mass_diag)
    for c, segment in enumerate(run.segments):
        keys = segment.keys
        typed = jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)
        out[f"s{c}_keys"] = sharding.to_host(keys)
        out[f"s{c}_typed"] = np.asarray(typed)
        if segment.carry is None:  # not started: its keys and starting points
            out[f"s{c}_next"] = np.asarray(-1)
            out[f"s{c}_positions"] = sharding.to_host(segment.positions)
            continue
        out[f"s{c}_next"] = np.asarray(segment.next_iteration)
        # the draw buffers only as far as they are filled (the rest is zeros until sampled)
        filled = run.sizes.kept(segment.next_iteration)
        out[f"s{c}_filled"] = np.asarray(filled)
        carried = len(jax.tree.leaves(segment.carry))
        draw_axis = np.ndim(segment.positions) - 1  # after the chain axes
        leaves = jax.tree.leaves((segment.carry, segment.draws))
        for i, leaf in enumerate(leaves):
            host = sharding.to_host(leaf)
            if i >= carried:
                host = host[(slice(None),) * draw_axis + (slice(0, filled),)]
            out[f"s{c}_leaf{i}"] = host
    return out


def check_state(state: dict, fingerprint: tuple) -> None:
    """Raise a ValueError unless ``state`` was saved by this version with these settings."""
    saved_format = str(np.asarray(state["format"])) if "format" in state else "ppl-sampler-state-1"
    if saved_format != STATE_FORMAT:
        raise ValueError(
            f"the saved sampler state has the layout {saved_format!r} of another version of "
            f"ppl (this one reads {STATE_FORMAT!r}); it cannot be resumed: sample again"
        )
    saved = str(np.asarray(state["settings"]))
    if saved != repr(fingerprint):
        raise ValueError(
            "the saved sampler state was made with other settings: "
            f"saved {saved}, now {fingerprint!r}"
        )


def restore_segments(run: ChainRun, state: dict) -> None:
    """Fill the segments of a freshly started ``run`` (same program) from a saved ``state``."""
    fns, data, sizes = run.fns, run.data, run.sizes
    run.rescues[:] = [Rescue(**r) for r in json.loads(str(np.asarray(state["rescues"])))]
    if "inverse_mass_diag" in state:
        run.inverse_mass_diag = jnp.asarray(state["inverse_mass_diag"])
    nexts = [int(np.asarray(state[f"s{c}_next"])) for c in range(len(run.segments))]
    if "checked" in state:
        run.checked = int(np.asarray(state["checked"]))
    else:  # saved before "checked": a stop every segment had reached was done
        run.checked = max((p for p in run.stops() if p <= min(nexts)), default=-1)
    for c, segment in enumerate(run.segments):
        next_iteration = nexts[c]
        if next_iteration < 0:
            if f"s{c}_positions" not in state:
                raise ValueError("the saved run had not started every chain; start it again")
            keys = _keys(state, c)
            positions = jnp.asarray(state[f"s{c}_positions"])
            if sizes.chain_method != "sequential":
                keys, positions = shard_chains((keys, positions), sizes.mesh, sizes.num_chains)
            segment.keys, segment.positions = keys, positions
            segment.carry = segment.draws = None
            segment.next_iteration = 0
            continue
        template = jax.eval_shape(
            lambda p: (fns["init"](p, data, None), fns["empty_draws"](p)), segment.positions
        )
        treedef = jax.tree.structure(template)
        shapes = jax.tree.leaves(template)
        leaves = [_full(state[f"s{c}_leaf{i}"], shapes[i].shape) for i in range(len(shapes))]
        carry, draws = jax.tree.unflatten(treedef, leaves)
        keys = _keys(state, c)
        if sizes.chain_method != "sequential":
            keys, carry, draws = shard_chains((keys, carry, draws), sizes.mesh, sizes.num_chains)
        segment.keys, segment.carry, segment.draws = keys, carry, draws
        segment.next_iteration = next_iteration


def _full(saved: np.ndarray, shape: tuple[int, ...]) -> jax.Array:
    """A saved leaf at its full ``shape``: draw buffers saved as far as they were filled
    get their unfilled draws back as zeros (those saved whole are as they were)."""
    saved = np.asarray(saved)
    if saved.shape != tuple(shape):
        grown = np.zeros(shape, saved.dtype)
        grown[tuple(slice(0, n) for n in saved.shape)] = saved
        saved = grown
    return jnp.asarray(saved)


def _keys(state: dict, c: int) -> jax.Array:
    """Segment ``c``'s chain keys (typed keys again when they were saved as such)."""
    keys = jnp.asarray(state[f"s{c}_keys"])
    if bool(np.asarray(state[f"s{c}_typed"])):
        keys = jax.random.wrap_key_data(keys)
    return keys
