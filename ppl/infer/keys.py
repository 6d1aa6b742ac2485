"""The random keys the inference entry points take, checked where they come in.

JAX's own error for a key that is not one ("JAX encountered invalid PRNG key data") names
neither the argument nor the fix; :func:`check_key` does both.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["check_key"]


def check_key(key: Any, name: str = "key") -> jax.Array:
    """``key`` if it is a JAX random key: a typed key array (``jax.random.key(0)``) or raw
    ``uint32`` key data (``jax.random.PRNGKey(0)``).

    Raises:
        TypeError: naming ``name``, what was given, and how to make a key from a seed.
    """
    if isinstance(key, jax.Array | np.ndarray):
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            return key
        if key.dtype == np.uint32 and key.ndim >= 1:
            return key
        given = f"an array of dtype {key.dtype} and shape {tuple(key.shape)}"
    else:
        given = f"{type(key).__name__} {key!r}" if np.isscalar(key) else type(key).__name__
    raise TypeError(
        f"{name} must be a JAX random key, got {given}; make one from a seed with "
        "jax.random.key(0) (or jax.random.PRNGKey(0))"
    )
