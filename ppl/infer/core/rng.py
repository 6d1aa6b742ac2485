"""Random numbers inside the samplers' loops: an unrolled Threefry cipher and a Halton sequence.

:func:`leaf_uniform` gives NUTS (:mod:`ppl.infer.kernels.nuts`) one uniform per leapfrog
step from the transition's key and the leaf number, with :func:`threefry2x32`, the same
cipher as ``jax.random``'s default generator written out round by round (XLA's CPU lowering
of jax's version loops over its rounds, which costs about a third of a microsecond per call).
:func:`halton` is the base-2 quasi-random sequence that jitters ChEES's trajectory lengths
(:mod:`ppl.infer.warmup.ensemble`). Nothing here depends on the rest of ``ppl``.
"""

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["halton", "key_words", "leaf_uniform", "threefry2x32"]

_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_THREEFRY_PARITY = 0x1BD11BDA


def threefry2x32(key_words: Array, counter: tuple[Array, Array]) -> tuple[Array, Array]:
    """The Threefry-2x32 block cipher (20 rounds; Salmon et al. 2011, "Parallel random numbers:
    as easy as 1, 2, 3"), unrolled: two uint32 words of a counter encrypted under a key.

    The same function as ``jax.random``'s default generator (tested against it), written out
    because XLA's CPU lowering of jax's Threefry runs its rounds in a loop, whose overhead
    costs about a third of a microsecond per call: NUTS draws one uniform per leapfrog step.

    Args:
        key_words: ``uint32 (2,)``, the key.
        counter: two ``uint32`` scalars (or arrays of one shape).

    Returns:
        Two ``uint32`` arrays of the counter's shape: the random bits.
    """
    k0, k1 = key_words[0], key_words[1]
    schedule = (k0, k1, k0 ^ k1 ^ jnp.uint32(_THREEFRY_PARITY))
    x0 = counter[0] + schedule[0]
    x1 = counter[1] + schedule[1]
    for block in range(5):
        for r in _THREEFRY_ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = (x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r))
            x1 = x0 ^ x1
        x0 = x0 + schedule[(block + 1) % 3]
        x1 = x1 + schedule[(block + 2) % 3] + jnp.uint32(block + 1)
    return x0, x1


def key_words(key: Array) -> Array:
    """Two uint32 words of a PRNG key (typed or raw), as the Threefry key of the leaf draws."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return key.reshape(-1)[:2].astype(jnp.uint32)


def leaf_uniform(key_words: Array, leaf: Array, dtype) -> Array:
    """A uniform in [0, 1) for leaf number ``leaf`` of a transition: Threefry-2x32 of the
    counter ``(leaf, 0)`` under the transition's leaf key (32 random bits for a float32,
    64 for a float64)."""
    hi, lo = threefry2x32(key_words, (leaf.astype(jnp.uint32), jnp.zeros((), jnp.uint32)))
    if jnp.finfo(dtype).bits > 32:  # 53 bits: (2**53 - 1) / 2**53 at most
        return (hi.astype(dtype) * 2.0**21 + (lo >> jnp.uint32(11)).astype(dtype)) * 2.0**-53
    # 23 bits in the mantissa of a float in [1, 2)
    one_to_two = jax.lax.bitcast_convert_type((hi >> jnp.uint32(9)) | jnp.uint32(0x3F800000), dtype)
    return one_to_two - 1.0


def halton(index: Array, max_bits: int = 32) -> Array:
    """The base-2 Halton (van der Corput) number of a non-negative integer ``index``, in [0, 1).

    Bit ``k`` of ``index`` contributes ``2^-(k+1)``: 1 -> 0.5, 2 -> 0.25, 3 -> 0.75, ... so
    consecutive indices spread evenly over the unit interval.
    """
    index = jnp.asarray(index, jnp.uint32)
    bits = (index[..., None] >> jnp.arange(max_bits, dtype=jnp.uint32)) & 1
    weights = 0.5 ** jnp.arange(1, max_bits + 1, dtype=jnp.float32)
    return jnp.sum(bits.astype(jnp.float32) * weights, axis=-1)
