"""Stochastic variational inference: the ``SVI`` driver.

``SVI(model, guide, optimizer, loss)`` fits the ``ppl.param`` sites of a guide (and of the
model, if it has any) by minimizing a variational loss (:mod:`ppl.infer.vi.elbo`) with an optax
optimizer. Params live on the unconstrained scale (``biject_to(constraint)``); users see
constrained values.

The state is data (:class:`SVIState`) and :meth:`SVI.update` is a pure function of it, so
it can be jitted, scanned or vmapped; :meth:`SVI.run` compiles the update loop with
``lax.scan`` in chunks, shows the smoothed loss between chunks, and stops with
:class:`NonFiniteLossError` at the first step whose loss or gradient is not finite.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> import ppl, ppl.distributions as dist
    >>> from ppl.infer import SVI
    >>> from ppl.infer import AutoNormal
    >>> def model(y):
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 10.0))
    ...     with ppl.plate("obs", y.shape[0]):
    ...         ppl.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> svi = SVI(model, AutoNormal(model), optax.adam(0.05))
    >>> result = svi.run(jax.random.PRNGKey(0), 500, jnp.array([1.2, 0.4, 2.3]),
    ...                  progress_bar=False)
    >>> result.losses.shape
    (500,)
    >>> # posterior mean 1.296, sd 0.58: the fitted mean is close
    >>> bool(abs(result.params["auto_mu_loc"] - 1.296) < 0.2)
    True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

from ppl.density import join_data, split_data
from ppl.handlers import replay, seed, trace
from ppl.infer.keys import check_key
from ppl.infer.vi.elbo import ELBO, Trace_ELBO

__all__ = ["SVI", "SVIState", "SVIRunResult", "NonFiniteLossError"]


class SVIState(NamedTuple):
    """State of an SVI run (a pytree).

    Attributes:
        optim_state: the optax optimizer's state.
        params: ``{param site: unconstrained value}``.
        rng_key: the key for the next step.
    """

    optim_state: Any
    params: dict
    rng_key: jax.Array


class SVIRunResult(NamedTuple):
    """Result of :meth:`SVI.run`.

    Attributes:
        params: ``{param site: constrained value}`` after the last step.
        state: the final :class:`SVIState` (to continue with ``run(..., init_state=)``).
        losses: the loss at each step, shape (num_steps,); ``losses[i]`` is evaluated at
            the params before step ``i``'s update.
    """

    params: dict
    state: SVIState
    losses: jax.Array


class NonFiniteLossError(FloatingPointError):
    """The loss or its gradient became NaN or infinite during :meth:`SVI.run`.

    Attributes:
        step: index of the first step at fault (0-based, as in ``losses``).
        losses: the losses up to and including that step (numpy array).
    """

    def __init__(self, message: str, step: int, losses: np.ndarray):
        super().__init__(message)
        self.step = step
        self.losses = losses


class SVI:
    """Stochastic variational inference.

    Args:
        model: the model function.
        guide: the guide, a function with the model's signature that samples every latent
            site of the model, e.g. an autoguide from :mod:`ppl.infer.vi.guides` or a
            hand-written function using ``ppl.param``.
        optimizer: an optax ``GradientTransformation`` (e.g. ``optax.adam(1e-2)``).
        loss: a loss from :mod:`ppl.infer.vi.elbo`; default ``Trace_ELBO(num_particles=1)``.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        optimizer: optax.GradientTransformation,
        loss: ELBO | None = None,
    ):
        if not callable(model) or not callable(guide):
            raise TypeError("SVI needs a callable model and a callable guide")
        if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
            raise TypeError(
                f"optimizer must be an optax GradientTransformation (e.g. optax.adam(1e-2)), "
                f"got {optimizer!r}"
            )
        self.model = model
        self.guide = guide
        self.optimizer = optimizer
        self.loss = Trace_ELBO() if loss is None else loss
        if not hasattr(self.loss, "loss"):
            raise TypeError(f"loss must have a .loss method (e.g. Trace_ELBO()), got {loss!r}")
        self.constraints: dict[str, constraints.Constraint] | None = None
        self._compiled: dict = {}

    # ---------------------------------------------------------------- params
    def init(
        self, rng_key: jax.Array, *args: Any, init_params: dict | None = None, **kwargs: Any
    ) -> SVIState:
        """Create the params (running the guide and the model once) and the optimizer state.

        Args:
            rng_key: a ``jax.random`` key.
            *args, **kwargs: the model's and guide's arguments.
            init_params: optional ``{param site: constrained value}`` overriding init values.

        Returns:
            The initial :class:`SVIState`.
        """
        rng_key, setup_key, init_key = jax.random.split(check_key(rng_key, "rng_key"), 3)
        setup = getattr(self.guide, "setup", None)
        if callable(setup) and not getattr(self.guide, "is_setup", False):
            setup(setup_key, *args, **kwargs)
        # one compiled run of guide and model (faster than op-by-op dispatch); the
        # constraints are read off the traces while tracing
        arrays, structure = split_data(args, kwargs)
        constraint_of: dict[str, constraints.Constraint] = {}

        def initial_values(key, arrays):
            a, kw = join_data(arrays, structure)
            guide_key, model_key = jax.random.split(key)
            guide_trace = trace(seed(self.guide, rng_seed=guide_key)).get_trace(*a, **kw)
            model_fn = replay(seed(self.model, rng_seed=model_key), guide_trace)
            model_trace = trace(model_fn).get_trace(*a, **kw)
            values = {}
            for tr in (guide_trace, model_trace):
                for name, site in tr.items():
                    if site["type"] == "param" and name not in values:
                        constraint = site["kwargs"].get("constraint") or constraints.real
                        constraint_of[name] = constraint
                        values[name] = site["value"]
            return values

        init_params = {k: jnp.asarray(v) for k, v in (init_params or {}).items()}

        def initial_unconstrained(key, arrays, overrides):
            values = initial_values(key, arrays)
            values.update({k: v for k, v in overrides.items() if k in values})
            out, checks = {}, {}
            for name, value in values.items():
                value = jnp.asarray(value)
                if not jnp.issubdtype(value.dtype, jnp.floating):
                    value = value.astype(jnp.result_type(float))
                constraint = constraint_of[name]
                u = biject_to(constraint).inv(value)
                out[name] = u
                checks[name] = (
                    value,
                    jnp.all(constraint(value)) & jnp.all(jnp.isfinite(value)),
                    jnp.all(jnp.isfinite(u)),
                )
            return out, checks

        unconstrained, checks = jax.jit(initial_unconstrained)(init_key, arrays, init_params)
        for name, (value, valid, finite) in checks.items():
            _check_init_value(name, value, bool(valid), bool(finite), constraint_of[name])
        init_params = {k: v for k, v in init_params.items() if k not in constraint_of}
        if init_params:
            raise KeyError(
                f"init_params given for {sorted(init_params)}, which are not param sites of "
                f"the guide or model (param sites: {sorted(constraint_of)})"
            )
        self.constraints = constraint_of
        return SVIState(jax.jit(self.optimizer.init)(unconstrained), unconstrained, rng_key)

    def constrain(self, unconstrained: dict) -> dict:
        """``{param: constrained value}`` from ``{param: unconstrained value}``."""
        self._check_init()
        return {name: biject_to(self.constraints[name])(u) for name, u in unconstrained.items()}

    def get_params(self, state: SVIState) -> dict:
        """The constrained params of ``state``."""
        self._check_init()
        return jax.jit(self.constrain)(state.params)

    def _check_init(self) -> None:
        if self.constraints is None:
            raise RuntimeError("call SVI.init(rng_key, *args) (or SVI.run) first")

    # ---------------------------------------------------------------- steps
    def _loss_fn(self, key, args, kwargs) -> Callable:
        def loss_of(unconstrained):
            params = self.constrain(unconstrained)
            return self.loss.loss(key, params, self.model, self.guide, *args, **kwargs)

        return loss_of

    def _step(self, state: SVIState, args: tuple, kwargs: dict, stable: bool):
        """One update; also returns per-param gradient finiteness flags."""
        rng_key, key = jax.random.split(state.rng_key)
        loss, grads = jax.value_and_grad(self._loss_fn(key, args, kwargs))(state.params)
        updates, optim_state = self.optimizer.update(grads, state.optim_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_ok = {name: jnp.all(jnp.isfinite(g)) for name, g in grads.items()}
        new_state = SVIState(optim_state, params, rng_key)
        if stable:
            ok = jnp.isfinite(loss)
            for flag in grad_ok.values():
                ok = ok & flag
            kept = SVIState(state.optim_state, state.params, rng_key)
            new_state = jax.tree_util.tree_map(
                lambda new, old: jnp.where(ok, new, old), new_state, kept
            )
        return new_state, loss, grad_ok

    def update(self, state: SVIState, *args: Any, **kwargs: Any) -> tuple[SVIState, jax.Array]:
        """One optimizer step (pure; jit it for speed).

        Returns:
            ``(new_state, loss)`` where ``loss`` is evaluated at the params of ``state``.
        """
        self._check_init()
        new_state, loss, _ = self._step(state, args, kwargs, stable=False)
        return new_state, loss

    def stable_update(self, state: SVIState, *args: Any, **kwargs: Any):
        """Like :meth:`update`, but a step with a non-finite loss or gradient leaves the
        params and optimizer state unchanged (the key still advances)."""
        self._check_init()
        new_state, loss, _ = self._step(state, args, kwargs, stable=True)
        return new_state, loss

    def evaluate(self, state: SVIState, *args: Any, **kwargs: Any) -> jax.Array:
        """The loss at ``state``'s params with its key (no update; scalar)."""
        self._check_init()
        _, key = jax.random.split(state.rng_key)
        return self._loss_fn(key, args, kwargs)(state.params)

    # ---------------------------------------------------------------- driver
    def run(
        self,
        rng_key: jax.Array,
        num_steps: int,
        *args: Any,
        progress_bar: bool = True,
        stable_update: bool = False,
        init_state: SVIState | None = None,
        init_params: dict | None = None,
        num_chunks: int = 20,
        early_stop: Callable[[np.ndarray], bool] | None = None,
        **kwargs: Any,
    ) -> SVIRunResult:
        """Run ``num_steps`` optimizer steps, compiled as ``lax.scan`` chunks.

        Args:
            rng_key: a ``jax.random`` key; the same key (and inputs) gives the same result.
            num_steps: number of steps.
            *args, **kwargs: the model's and guide's arguments.
            progress_bar: show a tqdm bar with the mean loss of the last chunk.
            stable_update: skip steps whose loss or gradient is not finite (params unchanged)
                and warn with their count, instead of raising.
            init_state: continue from this state (``rng_key`` is then unused).
            init_params: constrained init values for some params (see :meth:`init`).
            num_chunks: how many compiled chunks the run is split into (progress updates, the
                non-finite check and ``early_stop`` happen between chunks).
            early_stop: optional function of the losses so far (numpy array) returning True
                to stop after the current chunk; ``losses`` then has the steps run.

        Returns:
            :class:`SVIRunResult` with constrained ``params``, ``losses`` (num_steps,) and
            the final ``state``.

        Raises:
            NonFiniteLossError naming the first step whose loss or gradient was NaN or
            infinite, and the last finite loss (unless ``stable_update``).
        """
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        if init_state is None:
            state = self.init(rng_key, *args, init_params=init_params, **kwargs)
        else:
            self._check_init()
            state = init_state
        num_chunks = max(1, min(int(num_chunks), num_steps))
        chunk_len = math.ceil(num_steps / num_chunks)
        num_chunks = math.ceil(num_steps / chunk_len)
        arrays, structure = split_data(args, kwargs)
        chunk = self._chunk_fn(structure, chunk_len, bool(stable_update))
        bar = _progress(progress_bar, num_steps)
        losses, grad_flags = [], []
        skipped = 0
        try:
            for c in range(num_chunks):
                start = c * chunk_len
                state, (loss, grad_ok) = chunk(state, arrays, jnp.asarray(start), num_steps)
                n = min(chunk_len, num_steps - start)
                loss = np.asarray(loss)[:n]
                grad_ok = {k: np.asarray(v)[:n] for k, v in grad_ok.items()}
                losses.append(loss)
                grad_flags.append(grad_ok)
                bad = ~np.isfinite(loss)
                for flags in grad_ok.values():
                    bad |= ~flags
                if bad.any():
                    if not stable_update:
                        all_losses = np.concatenate(losses)
                        step = start + int(np.argmax(bad))
                        raise _non_finite_error(step, all_losses, grad_flags, num_steps)
                    skipped += int(bad.sum())
                if bar is not None:
                    bar.update(n)
                    bar.set_postfix(loss=f"{float(np.nanmean(loss)):.5g}")
                if early_stop is not None and early_stop(np.concatenate(losses)):
                    break
        finally:
            if bar is not None:
                bar.close()
        if skipped:
            warnings.warn(
                f"SVI.run: {skipped} of {sum(len(x) for x in losses)} steps had a non-finite "
                "loss or gradient and were skipped (stable_update=True)",
                RuntimeWarning,
                stacklevel=2,
            )
        params = self.get_params(state)
        for name, value in params.items():
            if not bool(jnp.all(jnp.isfinite(value))):
                raise FloatingPointError(f"SVI.run: param '{name}' is not finite after the run")
        return SVIRunResult(params, state, jnp.asarray(np.concatenate(losses)))

    def _chunk_fn(self, structure, chunk_len: int, stable: bool) -> Callable:
        try:
            cache_key = (structure, chunk_len, stable)
            hash(cache_key)
        except TypeError:
            cache_key = None
        if cache_key is not None and cache_key in self._compiled:
            return self._compiled[cache_key]

        def chunk(state, arrays, start, num_steps):
            args, kwargs = join_data(arrays, structure)

            def body(state, i):
                new_state, loss, grad_ok = self._step(state, args, kwargs, stable)
                active = i < num_steps
                state = jax.tree_util.tree_map(
                    lambda new, old: jnp.where(active, new, old), new_state, state
                )
                return state, (loss, grad_ok)

            return lax.scan(body, state, start + jnp.arange(chunk_len))

        compiled = jax.jit(chunk)
        if cache_key is not None:
            self._compiled[cache_key] = compiled
        return compiled


def _check_init_value(name: str, value, valid: bool, finite: bool, constraint) -> None:
    if not valid:
        raise ValueError(
            f"param '{name}': init value {np.asarray(value)} is not finite or outside its "
            f"constraint {_describe(constraint)}"
        )
    if not finite:
        raise ValueError(
            f"param '{name}': init value {np.asarray(value)} lies on the boundary of its "
            f"constraint {_describe(constraint)}; move it inside"
        )


def _describe(constraint) -> str:
    return repr(constraint).split(" object at")[0].replace("<", "").replace(">", "")


def _non_finite_error(step: int, losses: np.ndarray, grad_flags: list, num_steps: int):
    loss = losses[step]
    finite = np.flatnonzero(np.isfinite(losses[:step]))
    if finite.size:
        last = f"the last finite loss was {losses[finite[-1]]:.6g} at step {finite[-1]}"
    else:
        last = "no earlier step had a finite loss"
    if np.isfinite(loss):
        flags = {k: np.concatenate([f[k] for f in grad_flags]) for k in grad_flags[0]}
        bad = sorted(k for k, v in flags.items() if not v[step])
        what = f"the gradient with respect to param(s) {bad} is not finite (loss {loss:.6g})"
    else:
        what = f"the loss is {loss}"
    message = (
        f"SVI stopped at step {step} of {num_steps} (steps count from 0): {what}; {last}. "
        "Params are not returned. Check the model for invalid values (e.g. a scale that "
        "reaches 0), lower the learning rate, or pass stable_update=True to skip such steps"
    )
    return NonFiniteLossError(message, step, losses[: step + 1])


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="SVI", unit="step")
