"""nutpie's low-rank modified metric, estimated from draws and their gradients.

After the diagonal rescaling ``scale = (sd(x) / sd(g))^(1/2)``, the draws and gradients are
projected on the subspace they span; there the SPD geometric mean ``A`` of the draws'
covariance and the inverse of the gradients' covariance (``A C_g A = C_x``; ``A = Σ`` for a
Gaussian) is eigendecomposed and the directions whose eigenvalue is outside ``[1/cutoff,
cutoff]`` correct the metric: ``M⁻¹ = S (I + U (Λ - I) Uᵀ) S``
(:class:`~ppl.infer.core.metrics.LowRankInverseMass`). The estimate runs on the host in float64
(``jax.pure_callback``). nutpie's warmup (:mod:`ppl.infer.warmup.nutpie`) calls
:func:`low_rank_metric` at its metric updates; :class:`LowRankSettings` is the user's knob
(``NUTS(metric="low_rank", low_rank=LowRankSettings(...))``).
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ppl.infer.core.metrics import LowRankInverseMass

__all__ = ["LowRankSettings", "from_host_bits", "low_rank_metric", "spd_mean", "to_host_bits"]

# nutpie's clamps for the diagonal (its LOWER_LIMIT / UPPER_LIMIT)
DIAG_MIN = 1e-20
DIAG_MAX = 1e20


class LowRankSettings(NamedTuple):
    """Settings of the low-rank modified metric (static).

    Attributes:
        rank: the largest number of corrected directions (a fixed-size representation; unused
            slots are inert). ``rank = dim`` with ``cutoff = 1`` gives a full-rank (dense) metric.
        cutoff: eigenvalues in ``[1/cutoff, cutoff]`` are ignored (nutpie's default 2).
        gamma: regularization of the projected covariances (nutpie's 1e-5): ``C = X Xᵀ/gamma + I``.
        update_every: the metric is recomputed every this many warmup draws (and at every
            estimator switch, i.e. every 10 draws early in warmup); its four symmetric
            eigendecompositions cost too much to repeat after every draw.
    """

    rank: int = 10
    cutoff: float = 2.0
    gamma: float = 1e-5
    update_every: int = 40


def _sym_power(matrix: np.ndarray, power: float) -> np.ndarray:
    """``matrix ** power`` for a symmetric positive definite matrix, via ``eigh`` (float64)."""
    vals, vecs = np.linalg.eigh(matrix)
    vals = np.maximum(vals, np.finfo(np.float64).tiny)
    return (vecs * vals**power) @ vecs.T


def spd_mean(a: Any, b: Any) -> np.ndarray:
    """The SPD geometric mean of ``a`` and ``b⁻¹``: the SPD ``m`` with ``m b m = a`` (float64).

    ``m = b^(-1/2) (b^(1/2) a b^(1/2))^(1/2) b^(-1/2)``; for ``a = Σ`` and ``b = Σ⁻¹`` it is ``Σ``.
    Shapes ``(k, k)``.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    b_half = _sym_power(b, 0.5)
    b_inv_half = _sym_power(b, -0.5)
    middle = _sym_power(b_half @ a @ b_half, 0.5)
    return b_inv_half @ middle @ b_inv_half


def _low_rank_numpy(draws, grads, weight, rank, cutoff, gamma):
    """The low-rank estimate in float64 numpy: ``(scale (dim,), vectors (dim, rank), values
    (rank,))``. See :func:`low_rank_metric`."""
    draws = np.asarray(draws, np.float64)
    grads = np.asarray(grads, np.float64)
    dim = draws.shape[1]
    values = np.ones(rank)
    vectors = np.zeros((dim, rank))
    keep = np.asarray(weight) > 0
    keep &= np.all(np.isfinite(draws), axis=1) & np.all(np.isfinite(grads), axis=1)
    x, g = draws[keep], grads[keep]
    n = x.shape[0]
    if n < 2:
        return np.ones(dim), vectors, values
    dx = x - x.mean(0)
    dg = g - g.mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.sqrt(np.sqrt(np.sum(dx**2, 0)) / np.sqrt(np.sum(dg**2, 0)))
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    scale = np.clip(scale, np.sqrt(DIAG_MIN), np.sqrt(DIAG_MAX))
    try:
        # draws or gradients far out in a transient (a chain at log p = -1e12, say) can make
        # the projected covariances too ill-conditioned for float64: then this window gets
        # the diagonal alone (a later one, past the transient, gets its correction)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            found = _low_rank_directions(dx, dg, scale, n, gamma)
    except np.linalg.LinAlgError:
        found = None
    if found is None:
        return scale, vectors, values
    vals, vecs, basis = found
    k = vals.shape[0]
    extremeness = np.abs(np.log(vals))
    order = np.argsort(-extremeness)[: min(rank, k)]
    order = order[extremeness[order] > np.log(cutoff)]
    m = order.size
    values[:m] = vals[order]
    vectors[:, :m] = vecs[:, order] if basis is None else basis @ vecs[:, order]
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(vectors))):
        return scale, np.zeros((dim, rank)), np.ones(rank)
    return scale, vectors, values


def _low_rank_directions(dx, dg, scale, n, gamma):
    """Eigenvalues ``(k,)`` and vectors ``(k, k)`` of the SPD mean of the rescaled draws' and
    gradients' regularised covariances on the subspace they span, and that subspace's basis
    ``(dim, k)`` (``None`` for the full space); ``None`` where they are not finite."""
    dim = dx.shape[1]
    xr = (dx / (scale * n)).T  # (dim, n)
    gr = (dg * scale / n).T
    if dim <= 2 * n:  # the draws and gradients may span everything: the full space
        basis, xp, gp = None, xr, gr
    else:  # an orthonormal basis of their span
        u, sv, _ = np.linalg.svd(np.concatenate([xr, gr], axis=1), full_matrices=False)
        if not sv[0] > 0:
            return None
        basis = u[:, sv > sv[0] * 2 * n * np.finfo(np.float64).eps]
        xp = basis.T @ xr
        gp = basis.T @ gr
    k = xp.shape[0]
    cov_x = xp @ xp.T / gamma + np.eye(k)
    cov_g = gp @ gp.T / gamma + np.eye(k)
    if not (np.all(np.isfinite(cov_x)) and np.all(np.isfinite(cov_g))):
        return None
    mean = spd_mean(cov_x, cov_g)
    # the mean solves m C_g m = C_x: where precision was lost it does not
    residual = np.linalg.norm(mean @ cov_g @ mean - cov_x) / np.linalg.norm(cov_x)
    if not (np.all(np.isfinite(mean)) and residual < 1e-6):
        return None
    vals, vecs = np.linalg.eigh(mean)
    if not (np.all(np.isfinite(vals)) and np.all(vals > 0)):
        return None
    return vals, vecs, basis


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def to_host_bits(x: Array) -> Array:
    """A float64 array as its bits, ``uint32 (..., 2)``, for a host callback; others unchanged.

    ``jax.pure_callback`` hands its inputs to the host with ``device_put`` on the thread that
    runs the callback, which rounds float64 to float32 where that thread does not see a
    thread-local ``jax.enable_x64``: whether it does depends on which thread XLA runs the
    callback on, so the estimate (and every draw after it) was not reproducible. Bits are
    not rounded. :func:`from_host_bits` is the inverse, on the host.
    """
    if x.dtype == jnp.float64:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    return x


def from_host_bits(x: Any) -> np.ndarray:
    """The float64 numpy array whose bits :func:`to_host_bits` sent (others unchanged)."""
    x = np.asarray(x)
    if x.dtype == np.uint32:
        return np.ascontiguousarray(x).view(np.float64)[..., 0]
    return x


def low_rank_metric(
    draws: Array, grads: Array, weight: Array, settings: LowRankSettings
) -> LowRankInverseMass:
    """nutpie's low-rank modified inverse mass matrix from weighted draws and gradients.

    Per coordinate, ``scale = (sd(x) / sd(g))^(1/2)`` (so the diagonal part is nutpie's
    gradient-based diagonal). In the rescaled space, with ``X`` and ``G`` the centred draws
    and gradients divided by ``n``, the SPD mean ``A`` of ``C_x = X Xᵀ/gamma + I`` and
    ``C_g⁻¹ = (G Gᵀ/gamma + I)⁻¹`` is computed on the subspace spanned by ``X`` and ``G``
    (``A = Σ`` for a Gaussian, shrunk toward 1 where the draws say little), and its
    eigenvectors whose eigenvalue lies outside ``[1/cutoff, cutoff]``, the most extreme first,
    correct the metric.

    The estimate runs on the host in float64 (``jax.pure_callback``): the projected covariances
    span ~``1/(ngamma)`` orders of magnitude, beyond float32, and the few eigendecompositions per
    warmup are cheap there. It is jittable and vmappable (chains are handled one by one).

    Args:
        draws, grads: ``(n, dim)`` draws and their log-density gradients.
        weight: ``(n,)`` weights in {0, 1} (rows with weight 0, or non-finite, are ignored).
        settings: a :class:`LowRankSettings`.

    Returns:
        A ``LowRankInverseMass`` with ``settings.rank`` slots (unused ones have eigenvalue 1
        and a zero vector), in the dtype of ``draws``.
    """
    dim = draws.shape[1]
    dtype = draws.dtype
    rank = settings.rank
    # float32 out of the host: the x64 flag can be thread-local (``jax.enable_x64``) and the
    # callback's thread may not see it
    shapes = (
        jax.ShapeDtypeStruct((dim,), jnp.float32),
        jax.ShapeDtypeStruct((dim, rank), jnp.float32),
        jax.ShapeDtypeStruct((rank,), jnp.float32),
    )

    def host(d, g, w):
        d, g, w = (from_host_bits(x) for x in (d, g, w))
        # one BLAS thread: these matrices are small, and OpenBLAS's threads fight XLA's for
        # the cores (measured 145 ms per estimate with threads, 8 ms without, 89 dims)
        with _blas_controller().limit(limits=1, user_api="blas"):
            out = _low_rank_numpy(d, g, w, rank, settings.cutoff, settings.gamma)
        return tuple(np.asarray(a, np.float32) for a in out)

    inputs = (to_host_bits(x) for x in (draws, grads, weight))
    scale, vectors, values = jax.pure_callback(host, shapes, *inputs, vmap_method="sequential")
    scale, vectors, values = (a.astype(dtype) for a in (scale, vectors, values))
    if jnp.finfo(dtype).bits > 32 and rank <= dim:
        # momentum draws and kinetic energy agree exactly only for orthonormal vectors
        q, r = jnp.linalg.qr(vectors)
        vectors = q * jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0)
    return LowRankInverseMass(scale, vectors, values)
