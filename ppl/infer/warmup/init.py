"""Where the chains start: initial positions from a strategy, given values, or Pathfinder.

:func:`initial_positions` turns ``MCMC.run``'s ``init_params`` (or the kernel's
``init_strategy``) into one flat unconstrained start per chain, through the
:class:`ppl.LogDensity` contract (``ld.init``); :func:`pathfinder_start` starts the chains
from multi-path Pathfinder draws (:func:`ppl.infer.vi.pathfinder.pathfinder_init`) and the
warmup from its covariance's diagonal. The driver (:mod:`ppl.infer.driver.mcmc`) calls both
before the first iteration.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp

from ppl.density import LogDensity
from ppl.infer.vi.pathfinder import pathfinder_init

__all__ = ["initial_positions", "pathfinder_start"]


def initial_positions(
    key: jax.Array, ld: LogDensity, strategy: str | dict, init_params: Any, num_chains: int
) -> jax.Array:
    """One starting point per chain, shape ``(num_chains, ld.dim)``.

    Args:
        key: a ``jax.random`` key.
        ld: the log density.
        strategy: the kernel's ``init_strategy`` ("uniform", "median", "prior" or a dict of
            constrained values), used when ``init_params`` is None.
        init_params: None, a dict of constrained values for some latent sites (the rest
            uniform), or a flat unconstrained array of shape ``(dim,)`` (every chain starts
            there) or ``(num_chains, dim)``.
        num_chains: the number of chains.

    Raises:
        ValueError: an array ``init_params`` of another shape.
        ppl.InitializationError: no valid start found (naming the site).
    """
    if init_params is None:
        return ld.init(key, strategy, num_chains=num_chains)
    if isinstance(init_params, dict):
        return ld.init(key, init_params, num_chains=num_chains)
    theta = jnp.asarray(init_params)
    if theta.shape == (ld.dim,):
        theta = jnp.broadcast_to(theta, (num_chains, ld.dim))
    if theta.shape != (num_chains, ld.dim):
        raise ValueError(
            f"init_params has shape {theta.shape}; expected ({ld.dim},) or ({num_chains}, {ld.dim})"
        )
    return theta


def pathfinder_start(key: jax.Array, ld: LogDensity, num_chains: int) -> tuple[Any, Any, Any]:
    """Starts from multi-path Pathfinder: ``(positions (num_chains, dim), inverse_mass_diag
    (dim,), result)``, as :func:`~ppl.infer.vi.pathfinder.pathfinder_init` gives them.

    A high Pareto k matters for Pathfinder's draws as a posterior, not as starting points:
    its warning is silenced here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pathfinder: Pareto k")
        return pathfinder_init(key, ld, num_chains)
