"""One Pathfinder path: L-BFGS with its inverse-Hessian estimates as normal approximations.

:func:`single_path` runs L-BFGS on ``-log p`` and, at each iterate, forms a normal
approximation and estimates its ELBO (see its docstring); :mod:`ppl.infer.vi.pathfinder`
runs several paths and pools them.

The approximation at an iterate comes from the optimizer's history. Along an L-BFGS
path on ``-log p`` each iterate ``theta`` comes with a history of update pairs
``s = theta_{l} - theta_{l-1}`` and ``y = grad f(theta_{l}) - grad f(theta_{l-1})``
(``f = -log p``). Zhang et al. (2022, "Pathfinder: parallel
quasi-Newton variational inference", JMLR) turn that history into the inverse
Hessian estimate, in the compact form of Byrd, Nocedal & Schnabel (1994),

    Sigma = diag(alpha) + beta @ gamma @ beta.T,

    beta  = [diag(alpha) Y, S]                              (dim, 2J)
    gamma = [[0, -R^-1], [-R^-T, R^-T (D + Y^T diag(alpha) Y) R^-1]]   (2J, 2J)

with ``S``, ``Y`` the last ``J`` accepted pairs as columns (oldest first),
``R = triu(S^T Y)``, ``D = diag(S^T Y)``, and ``alpha`` a diagonal estimate updated
with every accepted pair (Gilbert & Lemarechal's scaled diagonal BFGS update). A
pair is accepted only if it satisfies the curvature condition ``s.y > eps |y|^2``,
which keeps ``Sigma`` positive definite. The normal approximation at ``theta`` is
``N(theta + Sigma grad log p(theta), Sigma)`` (one quasi-Newton step from the
iterate). Draws use a thin QR factorisation of ``diag(alpha)^-1/2 beta``, so a draw
costs O(dim J) and the covariance is never formed.

Unused history slots (before ``J`` pairs were accepted) hold zero pairs; they get a
unit diagonal in ``R`` so that ``R`` stays invertible, and their zero columns in
``beta`` make them drop out of ``Sigma``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.scipy.linalg import solve_triangular

__all__ = [
    "CURVATURE_EPSILON",
    "STATUS",
    "Factors",
    "History",
    "NormalApproximation",
    "PathInfo",
    "approximation",
    "history_init",
    "history_update",
    "single_path",
]

CURVATURE_EPSILON = 1e-12  # accept a pair (s, y) only if s.y > CURVATURE_EPSILON * |y|^2

# why a path stopped (PathInfo.status)
STATUS = (
    "running",
    "converged: relative change of log density below ftol",
    "converged: gradient norm below gtol",
    "reached max_iterations",
    "line search failed to decrease -log p",
    "non-finite log density or gradient at the line search's point",
)
_RUNNING, _FTOL, _GTOL, _MAXITER, _LINESEARCH, _NONFINITE = range(6)


class History(NamedTuple):
    """The accepted L-BFGS update pairs and the diagonal estimate.

    Attributes:
        s: position differences, shape (J, dim), oldest first; unused rows are zero.
        y: gradient differences of ``-log p``, shape (J, dim), rows aligned with ``s``.
        num_pairs: number of used rows (the last ``num_pairs`` rows), int scalar.
        alpha: diagonal inverse-Hessian estimate, shape (dim,), positive.
    """

    s: jax.Array
    y: jax.Array
    num_pairs: jax.Array
    alpha: jax.Array


class NormalApproximation(NamedTuple):
    """``N(mean, diag(alpha) + beta @ gamma @ beta.T)`` (a pytree: stack it, vmap it).

    Attributes:
        mean: shape (dim,).
        alpha: diagonal part of the covariance, shape (dim,).
        beta: low-rank factor, shape (dim, 2J).
        gamma: symmetric (indefinite) middle factor, shape (2J, 2J).
    """

    mean: jax.Array
    alpha: jax.Array
    beta: jax.Array
    gamma: jax.Array

    @property
    def dim(self) -> int:
        return self.mean.shape[-1]

    def covariance(self) -> jax.Array:
        """The dense covariance matrix, shape (dim, dim)."""
        return jnp.diag(self.alpha) + self.beta @ self.gamma @ self.beta.T

    def variance(self) -> jax.Array:
        """The covariance's diagonal, shape (dim,), without forming the matrix."""
        return self.alpha + jnp.einsum("ij,jk,ik->i", self.beta, self.gamma, self.beta)

    def low_rank(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(scale, vectors, values)`` with ``Sigma = S (I + U (diag(values) - I) U^T) S``.

        ``S = diag(scale)``, ``scale = sqrt(alpha)`` (dim,); ``U`` (dim, r) has orthonormal
        columns and ``values`` (r,) are positive, ``r = min(dim, 2J)``; directions with value
        1 are inert. This is the diagonal-plus-low-rank inverse mass matrix form used by
        :mod:`ppl.infer.core.metrics` (``LowRankInverseMass(scale, vectors, values)``).
        """
        q, chol, _ = self.factors()
        values, rotation = jnp.linalg.eigh(chol @ chol.T)
        return jnp.sqrt(self.alpha), q @ rotation, values

    def factors(self) -> Factors:
        """The factorisation used to draw and evaluate densities (one thin QR, one Cholesky)."""
        scaled = self.beta / jnp.sqrt(self.alpha)[:, None]
        q, r = jnp.linalg.qr(scaled, mode="reduced")
        eye = jnp.eye(r.shape[0], dtype=r.dtype)
        chol = jnp.linalg.cholesky(eye + r @ self.gamma @ r.T)
        log_det = jnp.sum(jnp.log(self.alpha)) + 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
        return Factors(q, chol, log_det)

    def sample(
        self, key: jax.Array, num_draws: int, factors: Factors | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """``num_draws`` draws and their log densities.

        Args:
            key: a ``jax.random`` key.
            num_draws: number of draws.
            factors: :meth:`factors`, if already computed.

        Returns:
            ``(draws, log_q)`` of shapes (num_draws, dim) and (num_draws,).
        """
        u = jax.random.normal(key, (num_draws, self.dim), dtype=self.mean.dtype)
        return self.transform(u, factors)

    def transform(
        self, u: jax.Array, factors: Factors | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Map standard normal draws ``u`` (..., dim) to draws of this normal.

        Returns:
            ``(draws, log_q)`` of shapes (..., dim) and (...).
        """
        q, chol, log_det = self.factors() if factors is None else factors
        eye = jnp.eye(chol.shape[0], dtype=chol.dtype)
        z = u + ((u @ q) @ (chol - eye).T) @ q.T
        draws = self.mean + jnp.sqrt(self.alpha) * z
        log_q = -0.5 * (log_det + jnp.sum(u**2, axis=-1) + self.dim * math.log(2 * math.pi))
        return draws, log_q

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log density at ``x`` of shape (..., dim); returns shape (...)."""
        q, chol, log_det = self.factors()
        eye = jnp.eye(chol.shape[0], dtype=chol.dtype)
        z = (x - self.mean) / jnp.sqrt(self.alpha)
        # (I + q (L - I) q^T)^-1 = I + q (L^-1 - I) q^T for orthonormal q
        chol_inv = solve_triangular(chol, eye, lower=True)
        u = z + ((z @ q) @ (chol_inv - eye).T) @ q.T
        return -0.5 * (log_det + jnp.sum(u**2, axis=-1) + self.dim * math.log(2 * math.pi))


class Factors(NamedTuple):
    """``Sigma = D^1/2 (I + q (chol chol^T - I) q^T) D^1/2`` with ``D = diag(alpha)``.

    Attributes:
        q: orthonormal columns, shape (dim, r) with ``r = min(dim, 2J)``.
        chol: lower Cholesky factor of ``I + R gamma R^T``, shape (r, r).
        log_det: ``log det Sigma``, scalar.
    """

    q: jax.Array
    chol: jax.Array
    log_det: jax.Array


def history_init(dim: int, history_size: int, dtype) -> History:
    """An empty history: no pairs, ``alpha = 1``."""
    zeros = jnp.zeros((history_size, dim), dtype=dtype)
    return History(zeros, zeros, jnp.zeros((), jnp.int32), jnp.ones((dim,), dtype=dtype))


def _diagonal_update(alpha: jax.Array, s: jax.Array, y: jax.Array) -> jax.Array:
    """Diagonal of the BFGS update of ``diag(1/alpha)`` rescaled by ``y'Dy / y's`` (inverted)."""
    a = jnp.sum(alpha * y**2)
    b = jnp.dot(y, s)
    c = jnp.sum(s**2 / alpha)
    inv_alpha = a / (b * alpha) + y**2 / b - a * s**2 / (b * c * alpha**2)
    return 1.0 / inv_alpha


def history_update(history: History, s: jax.Array, y: jax.Array) -> tuple[History, jax.Array]:
    """Add the pair ``(s, y)`` if it satisfies the curvature condition.

    Returns:
        ``(history, accepted)``: the (possibly unchanged) history and a bool scalar.
    """
    sy = jnp.dot(s, y)
    alpha = _diagonal_update(history.alpha, s, y)
    accepted = (
        (sy > CURVATURE_EPSILON * jnp.dot(y, y))
        & jnp.all(jnp.isfinite(s))
        & jnp.all(jnp.isfinite(y))
        & jnp.all(jnp.isfinite(alpha))
        & jnp.all(alpha > 0)
    )
    size = history.s.shape[0]
    new = History(
        s=jnp.concatenate([history.s[1:], s[None]]),
        y=jnp.concatenate([history.y[1:], y[None]]),
        num_pairs=jnp.minimum(history.num_pairs + 1, size),
        alpha=alpha,
    )
    return jax.tree.map(lambda n, o: jnp.where(accepted, n, o), new, history), accepted


def approximation(
    position: jax.Array, grad_log_p: jax.Array, history: History
) -> NormalApproximation:
    """The normal approximation at an iterate.

    Args:
        position: the iterate, shape (dim,).
        grad_log_p: gradient of ``log p`` there (not of ``-log p``), shape (dim,).
        history: the accepted pairs up to this iterate.

    Returns:
        ``N(position + Sigma @ grad_log_p, Sigma)`` as a :class:`NormalApproximation`.
    """
    s, y, alpha = history.s.T, history.y.T, history.alpha  # (dim, J)
    size = s.shape[1]
    unused = jnp.arange(size) < size - history.num_pairs
    sty = s.T @ y
    r = jnp.triu(sty) + jnp.diag(unused.astype(sty.dtype))
    r_inv = solve_triangular(r, jnp.eye(size, dtype=sty.dtype), lower=False)
    alpha_y = alpha[:, None] * y
    middle = jnp.diag(jnp.diag(sty)) + y.T @ alpha_y
    gamma = jnp.block(
        [
            [jnp.zeros((size, size), dtype=sty.dtype), -r_inv],
            [-r_inv.T, r_inv.T @ middle @ r_inv],
        ]
    )
    beta = jnp.concatenate([alpha_y, s], axis=1)
    mean = position + alpha * grad_log_p + beta @ (gamma @ (beta.T @ grad_log_p))
    return NormalApproximation(mean, alpha, beta, gamma)


# ---------------------------------------------------------------------- one path


class PathInfo(NamedTuple):
    """How one path went (each field gains a leading (num_paths,) axis for several paths).

    Attributes:
        elbo: ELBO estimate of the chosen approximation (nats); -inf if the path failed.
        best_iteration: index of the chosen iterate (0 is the starting point).
        num_iterations: L-BFGS iterations run.
        num_gradient_evals: evaluations of ``log p`` with its gradient (optimizer and
            line search, including the starting point).
        num_logdensity_evals: evaluations of ``log p`` alone (ELBO estimates and draws).
        elbo_history: ELBO estimate at each iterate, shape (max_iterations + 1,); entries
            after the last iterate are nan.
        status: index into :data:`STATUS`: why L-BFGS stopped.
    """

    elbo: jax.Array
    best_iteration: jax.Array
    num_iterations: jax.Array
    num_gradient_evals: jax.Array
    num_logdensity_evals: jax.Array
    elbo_history: jax.Array
    status: jax.Array


class _PathState(NamedTuple):
    iteration: jax.Array  # index of the current iterate (0: the starting point)
    position: jax.Array
    value: jax.Array  # -log p
    grad: jax.Array  # gradient of -log p
    opt_state: Any
    history: History
    best: NormalApproximation
    best_factors: Factors
    best_elbo: jax.Array
    best_iteration: jax.Array
    elbo_history: jax.Array
    num_gradient_evals: jax.Array
    status: jax.Array
    done: jax.Array


def _finite_or_neg_inf(x: jax.Array) -> jax.Array:
    """nan and +inf (not a usable density value) become -inf."""
    return jnp.where(jnp.isnan(x) | (x == jnp.inf), -jnp.inf, x)


def single_path(
    key: jax.Array,
    logdensity_fn: Callable[[jax.Array], jax.Array],
    initial_position: jax.Array,
    *,
    num_draws: int = 1000,
    num_elbo_draws: int = 25,
    history_size: int = 6,
    max_iterations: int = 1000,
    ftol: float | None = None,
    gtol: float = 1e-8,
    max_linesearch_steps: int = 20,
) -> tuple[jax.Array, jax.Array, jax.Array, NormalApproximation, PathInfo]:
    """One Pathfinder path: a pure function (jit it, vmap it over keys and starting points).

    L-BFGS (optax's, with a zoom line search that enforces the strong Wolfe conditions and
    history ``history_size``) minimises ``-logdensity_fn`` from ``initial_position``. Each
    iterate, the starting point included, gets the normal approximation of
    :func:`ppl.infer.vi.lbfgs.approximation` and an ELBO estimate from ``num_elbo_draws``
    draws; the iterate with the highest ELBO is kept and ``num_draws`` draws are made from
    its approximation. The ELBO draws of every iterate are transforms of one block of
    standard normals (common random numbers: the comparison between iterates is less
    noisy than with fresh draws, and each estimate stays unbiased). A draw whose log
    density is nan counts as -inf. (The paper considers iterates 1..L only; the starting
    point, whose covariance is the identity, rarely wins but keeps a path that stops at
    iteration 0 usable.) Iterates whose line-search point has a non-finite log density or
    gradient end the path at the last finite iterate.

    Note: the ELBO is estimated with a few draws and maximised over the iterates, so it is
    biased upward and the chosen iterate is often not the last one (on a 5-dimensional
    Gaussian over 20 starts, the median KL(q || p) of the chosen approximation was 0.10
    with 5 ELBO draws, 0.04 with 25 and 0.008 with 100).

    Args:
        key: a ``jax.random`` key.
        logdensity_fn: ``theta (dim,) -> log p(theta)`` (up to a constant), differentiable.
        initial_position: shape (dim,); ``logdensity_fn`` and its gradient must be finite there.
        num_draws: draws from the chosen approximation.
        num_elbo_draws: Monte Carlo draws per ELBO estimate.
        history_size: L-BFGS history (update pairs kept), J in the paper.
        max_iterations: most L-BFGS iterations.
        ftol: stop when ``|f_l - f_{l-1}| / max(|f_l|, |f_{l-1}|, 1) < ftol`` with
            ``f = -log p``; default Stan's ``tol_rel_obj`` (``1e4`` float64 epsilons,
            2.2e-12), or 10 epsilons of the dtype if larger (1.2e-6 in float32, where
            smaller relative changes are rounding noise).
        gtol: stop when the gradient's Euclidean norm is below ``gtol``.
        max_linesearch_steps: most function evaluations per line search.

    Returns:
        ``(draws, log_p, log_q, approximation, info)``: draws (num_draws, dim), their log
        densities under the target (num_draws,) and under the approximation
        (num_draws,), the chosen :class:`~ppl.infer.vi.lbfgs.NormalApproximation` and a
        :class:`PathInfo`.
    """
    position = jnp.asarray(initial_position)
    if position.ndim != 1:
        raise ValueError(f"initial_position must have shape (dim,), got {position.shape}")
    if not jnp.issubdtype(position.dtype, jnp.floating):
        position = position.astype(jnp.result_type(float))
    dtype = position.dtype
    dim = position.shape[0]
    if ftol is None:
        ftol = max(1e4 * float(jnp.finfo(jnp.float64).eps), 10 * float(jnp.finfo(dtype).eps))

    def neg_log_p(x):
        return -logdensity_fn(x)

    optimizer = optax.lbfgs(
        memory_size=history_size,
        linesearch=optax.scale_by_zoom_linesearch(
            max_linesearch_steps=max_linesearch_steps, initial_guess_strategy="one"
        ),
    )
    # one block of standard normals: the first num_elbo_draws rows are reused at every iterate
    # (common random numbers make the ELBO comparison between iterates less noisy), the
    # rest become the final draws
    normals = jax.random.normal(key, (num_elbo_draws + num_draws, dim), dtype=dtype)
    value, grad = jax.value_and_grad(neg_log_p)(position)
    history = history_init(dim, history_size, dtype)
    start_finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))
    initial_status = jnp.select(
        [~start_finite, jnp.linalg.norm(grad) < gtol, max_iterations == 0],
        [_NONFINITE, _GTOL, _MAXITER],
        _RUNNING,
    ).astype(jnp.int32)
    placeholder = approximation(position, -grad, history)
    rank = min(dim, 2 * history_size)
    state = _PathState(
        iteration=jnp.zeros((), jnp.int32),
        position=position,
        value=value,
        grad=grad,
        opt_state=optimizer.init(position),
        history=history,
        best=placeholder,
        best_factors=Factors(
            jnp.zeros((dim, rank), dtype), jnp.eye(rank, dtype=dtype), jnp.zeros((), dtype)
        ),
        best_elbo=jnp.asarray(-jnp.inf, dtype),
        best_iteration=jnp.zeros((), jnp.int32),
        elbo_history=jnp.full((max_iterations + 1,), jnp.nan, dtype=dtype),
        num_gradient_evals=jnp.ones((), jnp.int32),
        status=initial_status,
        done=jnp.asarray(False),
    )

    def evaluate(state: _PathState) -> _PathState:
        """Form the current iterate's approximation, estimate its ELBO, keep the best."""
        approx = approximation(state.position, -state.grad, state.history)
        factors = approx.factors()
        draws, log_q = approx.transform(normals[:num_elbo_draws], factors)
        log_p = _finite_or_neg_inf(jax.vmap(logdensity_fn)(draws))
        elbo = _finite_or_neg_inf(jnp.mean(log_p - log_q))
        better = elbo > state.best_elbo
        pick = lambda new, old: jnp.where(better, new, old)  # noqa: E731
        return state._replace(
            best=jax.tree.map(pick, approx, state.best),
            best_factors=jax.tree.map(pick, factors, state.best_factors),
            best_elbo=pick(elbo, state.best_elbo),
            best_iteration=pick(state.iteration, state.best_iteration),
            elbo_history=state.elbo_history.at[state.iteration].set(elbo),
        )

    def step(state: _PathState) -> _PathState:
        """One L-BFGS iteration; a non-finite line-search point leaves the iterate as is."""
        updates, opt_state = optimizer.update(
            state.grad,
            state.opt_state,
            state.position,
            value=state.value,
            grad=state.grad,
            value_fn=neg_log_p,
        )
        new_position = state.position + updates
        new_value = optax.tree_utils.tree_get(opt_state, "value")
        new_grad = optax.tree_utils.tree_get(opt_state, "grad")
        info = optax.tree_utils.tree_get(opt_state, "info")
        finite = (
            jnp.isfinite(new_value)
            & jnp.all(jnp.isfinite(new_grad))
            & jnp.all(jnp.isfinite(new_position))
        )
        history, _ = history_update(
            state.history, new_position - state.position, new_grad - state.grad
        )
        iteration = state.iteration + 1
        scale = jnp.maximum(jnp.maximum(jnp.abs(new_value), jnp.abs(state.value)), 1.0)
        relative_change = jnp.abs(new_value - state.value) / scale
        no_progress = ~(new_value < state.value)
        status = jnp.select(
            [
                ~finite,
                no_progress & (info.decrease_error > 0),
                relative_change < ftol,
                jnp.linalg.norm(new_grad) < gtol,
                iteration >= max_iterations,
            ],
            [_NONFINITE, _LINESEARCH, _FTOL, _GTOL, _MAXITER],
            _RUNNING,
        ).astype(jnp.int32)
        evals = state.num_gradient_evals + jnp.asarray(info.num_linesearch_steps, jnp.int32)
        moved = state._replace(
            iteration=iteration,
            position=new_position,
            value=new_value,
            grad=new_grad,
            opt_state=opt_state,
            history=history,
        )
        kept = state._replace(done=jnp.asarray(True))
        out = jax.tree.map(lambda m, k: jnp.where(finite, m, k), moved, kept)
        return out._replace(num_gradient_evals=evals, status=status)

    def body(state: _PathState) -> _PathState:
        state = evaluate(state)
        return jax.lax.cond(
            state.status == _RUNNING,
            step,
            lambda s: s._replace(done=jnp.asarray(True)),
            state,
        )

    state = jax.lax.while_loop(lambda s: ~s.done, body, state)
    draws, log_q = state.best.transform(normals[num_elbo_draws:], state.best_factors)
    log_p = _finite_or_neg_inf(jax.vmap(logdensity_fn)(draws))
    num_evaluated = jnp.sum(~jnp.isnan(state.elbo_history)).astype(jnp.int32)
    info = PathInfo(
        elbo=state.best_elbo,
        best_iteration=state.best_iteration,
        num_iterations=state.iteration,
        num_gradient_evals=state.num_gradient_evals,
        num_logdensity_evals=num_evaluated * num_elbo_draws + num_draws,
        elbo_history=state.elbo_history,
        status=state.status,
    )
    return draws, log_p, log_q, state.best, info
