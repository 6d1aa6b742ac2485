"""Automatic guides (variational families) built on the :class:`~ppl.density.LogDensity` layout.

An autoguide is a guide function made from a model: ``guide = AutoNormal(model)``. The
first time it runs (``SVI.init`` calls :meth:`AutoGuide.setup`) it compiles the model into
a ``LogDensity`` and takes from it the latent sites, their supports, their constraint
transforms (``biject_to(support)``) and the flat unconstrained vector ``theta`` of size
``dim``. The variational family lives on that unconstrained scale; each latent site is
returned to the model as its constrained value, with the log-Jacobian of the transform
counted in the guide's density, so ``q`` is a proper density on the constrained scale.

================================  ==========================================================
``AutoDelta``                     point mass per site (MAP in the constrained space)
``AutoNormal``                    independent normals on the unconstrained scale (mean field)
``AutoMultivariateNormal``        one full-covariance normal over ``theta``
``AutoLowRankMultivariateNormal`` normal over ``theta`` with covariance
                                  ``D^1/2 (W W^T + I) D^1/2``, ``W`` of shape (dim, rank)
``AutoLaplaceApproximation``      MAP of ``theta``, then the normal with the inverse
                                  negative Hessian of the log density there as covariance
================================  ==========================================================

Every autoguide has ``sample_posterior(key, params, num_samples)`` (constrained draws with
the model's deterministic sites), ``median(params)`` and ``quantiles(params, qs)``; the
Gaussian ones have ``loc(params)`` and ``covariance(params)`` of ``theta`` (e.g. to seed an
MCMC mass matrix). :func:`ppl.infer.guide_to_datatree` (:mod:`ppl.infer.results.datatree`)
turns a fitted guide into an ArviZ DataTree. :class:`~ppl.infer.vi.svi.SVI` fits them.

Latent sites inside subsampled plates (local latents with minibatches) need a hand-written
guide (a ``ppl.plate`` with the same name and ``subsample_size``, and params indexed by the
plate's indices); autoguides refuse them with a clear error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri
from numpyro.distributions import (
    Delta,
    LowRankMultivariateNormal,
    MultivariateNormal,
    Normal,
    constraints,
)
from numpyro.distributions.transforms import biject_to

from ppl.density import LogDensity, SiteInfo
from ppl.primitives import param, sample
from ppl.sites import is_real_support, subsampled_plates

__all__ = [
    "AutoGuide",
    "AutoDelta",
    "AutoNormal",
    "AutoMultivariateNormal",
    "AutoLowRankMultivariateNormal",
    "AutoLaplaceApproximation",
]


class AutoGuide:
    """Base class of the autoguides.

    Args:
        model: the model function.
        prefix: prefix of the param site names (``"{prefix}_..."``).
        init_loc_fn: where the guide starts: an init strategy of
            :meth:`LogDensity.init` ("median", "uniform", "prior") or a dict of constrained
            values for some latent sites.
        init_scale: initial standard deviation on the unconstrained scale (Gaussian guides).
    """

    def __init__(
        self,
        model: Callable,
        *,
        prefix: str = "auto",
        init_loc_fn: str | dict = "median",
        init_scale: float = 0.1,
    ):
        if not callable(model):
            raise TypeError(f"model must be callable, got {model!r}")
        if not (isinstance(init_scale, (int, float)) and init_scale > 0):
            raise ValueError(f"init_scale must be a positive float, got {init_scale!r}")
        self.model = model
        self.prefix = prefix
        self.init_loc_fn = init_loc_fn
        self.init_scale = float(init_scale)
        self.logdensity: LogDensity | None = None
        self.is_setup = False

    def __repr__(self) -> str:
        model = getattr(self.model, "__name__", type(self.model).__name__)
        return f"{type(self).__name__}(model={model}, prefix={self.prefix!r})"

    # ------------------------------------------------------------------ setup
    def setup(self, rng_key: jax.Array, *args: Any, **kwargs: Any) -> None:
        """Compile the model with these (concrete) arguments and choose the initial point.

        ``SVI.init`` calls this; call it yourself to use the guide outside SVI.
        """
        ld = LogDensity(self.model, args, kwargs)
        if ld.dim == 0:
            raise ValueError(f"{type(self).__name__}: the model has no latent sites to fit")
        _refuse_subsampled_latents(ld, type(self).__name__)
        self.logdensity = ld
        self.init_theta = ld.init(rng_key, self.init_loc_fn)
        self._setup_params(rng_key)
        self.is_setup = True

    def _setup_params(self, rng_key: jax.Array) -> None:
        """Extra setup of subclasses (initial values of params)."""

    def _ld(self) -> LogDensity:
        if not self.is_setup:
            raise RuntimeError(
                f"{type(self).__name__} is not set up: run SVI.init / SVI.run with it, or "
                "call guide.setup(rng_key, *args, **kwargs) with the model's arguments"
            )
        return self.logdensity

    @property
    def latent_names(self) -> tuple[str, ...]:
        return self._ld().latent_names

    # ------------------------------------------------------------------ guide
    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, jax.Array]:
        """Sample every latent site of the model; returns ``{site: constrained value}``."""
        if not self.is_setup:
            self.setup(jax.random.PRNGKey(0), *args, **kwargs)
        return self._guide()

    def _guide(self) -> dict[str, jax.Array]:
        raise NotImplementedError

    def _emit(self, unconstrained: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Sample each latent site as a point mass at its constrained value, with density
        ``-log|det J|`` of the constraint transform (so log q is on the constrained scale)."""
        out = {}
        for name, u in unconstrained.items():
            info = self.logdensity.sites[name]
            value, log_det = _constrain_site(info, u)
            out[name] = sample(name, Delta(value, -log_det, event_dim=len(info.shape)))
        return out

    # ------------------------------------------------------------------ posterior
    def unconstrained_draws(self, rng_key: jax.Array, params: dict, num_samples: int):
        """Draws of the flat unconstrained vector, shape (num_samples, dim)."""
        raise NotImplementedError

    def sample_posterior(
        self, rng_key: jax.Array, params: dict, num_samples: int = 1000
    ) -> dict[str, jax.Array]:
        """Constrained posterior draws of the latent and deterministic sites.

        Args:
            rng_key: a ``jax.random`` key.
            params: the fitted constrained params (``SVIRunResult.params``).
            num_samples: number of draws.

        Returns:
            ``{site: array of shape (num_samples, *site shape)}``; deterministic sites are
            evaluated with the data given to :meth:`setup`.
        """
        self._ld()
        thetas = self.unconstrained_draws(rng_key, params, int(num_samples))
        return self._constrain_batch(thetas)

    def _constrain_batch(self, thetas: jax.Array) -> dict[str, jax.Array]:
        """``ld.constrain`` of each row of ``thetas`` (n, dim), compiled."""
        ld = self._ld()
        return ld.shared_jit("guide_constrain", lambda ld, t: jax.vmap(ld.constrain)(t))(thetas)

    def median(self, params: dict) -> dict[str, jax.Array]:
        """The posterior median of each latent site (constrained), ``{site: array}``.

        Exact coordinate-wise for element-wise constraint transforms (real, positive,
        intervals); for coupled transforms (simplex, Cholesky factors) it is the image of
        the unconstrained median.
        """
        values = self._constrain_batch(self.loc(params)[None])
        return self._latent_only({k: v[0] for k, v in values.items()})

    def quantiles(self, params: dict, quantiles: Sequence[float]) -> dict[str, jax.Array]:
        """Marginal posterior quantiles of each latent site (constrained).

        Args:
            params: the fitted constrained params.
            quantiles: probabilities in (0, 1), length Q.

        Returns:
            ``{site: array of shape (Q, *site shape)}`` (same caveat as :meth:`median`).
        """
        q = jnp.asarray(quantiles, dtype=jnp.result_type(float))
        if q.ndim != 1 or not bool(jnp.all((q > 0) & (q < 1))):
            raise ValueError(f"quantiles must be a 1-d sequence in (0, 1), got {quantiles!r}")
        loc = self.loc(params)
        sd = jnp.sqrt(jnp.diag(self.covariance(params)))
        thetas = loc + ndtri(q)[:, None] * sd
        return self._latent_only(self._constrain_batch(thetas))

    def loc(self, params: dict) -> jax.Array:
        """Center of the guide on the flat unconstrained scale, shape (dim,)."""
        raise NotImplementedError

    def covariance(self, params: dict) -> jax.Array:
        """Covariance of the guide on the flat unconstrained scale, shape (dim, dim)."""
        raise NotImplementedError

    def _latent_only(self, values: dict) -> dict:
        return {k: v for k, v in values.items() if k in self.latent_names}


class AutoDelta(AutoGuide):
    """Point masses: SVI with this guide finds the MAP (mode of the posterior density on the
    constrained scale, no Jacobian).

    Params: ``{prefix}_{site}_loc`` (constrained, with the site's support as constraint).
    """

    def _setup_params(self, rng_key):
        self.init_values = self.logdensity.constrain(self.init_theta)

    def _guide(self):
        out = {}
        init = self.init_values
        for name in self.latent_names:
            info = self.logdensity.sites[name]
            value = param(f"{self.prefix}_{name}_loc", init[name], constraint=info.support)
            out[name] = sample(name, Delta(value, event_dim=len(info.shape)))
        return out

    def loc(self, params):
        values = {n: params[f"{self.prefix}_{n}_loc"] for n in self.latent_names}
        return self._ld().unconstrain(values)

    def covariance(self, params):
        dim = self._ld().dim
        return jnp.zeros((dim, dim))

    def unconstrained_draws(self, rng_key, params, num_samples):
        return jnp.broadcast_to(self.loc(params), (num_samples, self._ld().dim))

    def median(self, params):
        return {n: params[f"{self.prefix}_{n}_loc"] for n in self.latent_names}

    def quantiles(self, params, quantiles):
        q = len(quantiles)
        return {k: jnp.broadcast_to(v, (q, *jnp.shape(v))) for k, v in self.median(params).items()}


class AutoNormal(AutoGuide):
    """Mean-field normal on the unconstrained scale: ``theta_i ~ Normal(loc_i, scale_i)``.

    Sites with real support are sampled as ``Normal`` directly (so
    :class:`~ppl.infer.vi.elbo.TraceMeanField_ELBO` can use an analytic KL against a normal
    prior); other sites through their constraint transform. The constrained marginals are
    then e.g. log-normal (positive) or logit-normal (unit interval).

    Params: ``{prefix}_{site}_loc`` and ``{prefix}_{site}_scale`` (positive), each of the
    site's unconstrained shape.
    """

    def _guide(self):
        ld = self.logdensity
        init = ld.unflatten(self.init_theta)
        out = {}
        for name in ld.latent_names:
            info = ld.sites[name]
            loc = param(f"{self.prefix}_{name}_loc", init[name])
            scale = param(
                f"{self.prefix}_{name}_scale",
                jnp.full(info.unconstrained_shape, self.init_scale),
                constraint=constraints.positive,
            )
            if is_real_support(info.support):
                fn = Normal(loc, scale)
                if info.event_shape:
                    fn = fn.to_event(len(info.event_shape))
                out[name] = sample(name, fn)
            else:
                u = sample(
                    f"_{self.prefix}_{name}_unconstrained",
                    Normal(loc, scale).to_event(len(info.unconstrained_shape)),
                )
                out.update(self._emit({name: u}))
        return out

    def _flat(self, params, what):
        ld = self._ld()
        return ld.flatten({n: params[f"{self.prefix}_{n}_{what}"] for n in ld.latent_names})

    def loc(self, params):
        return self._flat(params, "loc")

    def scale(self, params) -> jax.Array:
        """Standard deviations on the flat unconstrained scale, shape (dim,)."""
        return self._flat(params, "scale")

    def covariance(self, params):
        return jnp.diag(self.scale(params) ** 2)

    def unconstrained_draws(self, rng_key, params, num_samples):
        loc, scale = self.loc(params), self.scale(params)
        return loc + scale * jax.random.normal(rng_key, (num_samples, loc.shape[0]), loc.dtype)


class AutoContinuous(AutoGuide):
    """Base of the guides with one joint distribution over the flat vector ``theta``.

    The guide samples ``_{prefix}_latent`` (shape (dim,)) from :meth:`get_posterior` and
    passes each site's slice through its constraint transform.
    """

    def _guide(self):
        theta = sample(f"_{self.prefix}_latent", self._posterior_from_params())
        return self._emit(self.logdensity.unflatten(theta))

    def _posterior_from_params(self):
        raise NotImplementedError

    def get_posterior(self, params: dict):
        """The distribution of ``theta`` (event shape (dim,)) at the fitted ``params``."""
        raise NotImplementedError

    def unconstrained_draws(self, rng_key, params, num_samples):
        return self.get_posterior(params).sample(rng_key, (num_samples,))

    def loc(self, params):
        return self.get_posterior(params).mean

    def covariance(self, params):
        return self.get_posterior(params).covariance_matrix


class AutoMultivariateNormal(AutoContinuous):
    """Full-covariance normal over the flat unconstrained vector.

    Params: ``{prefix}_loc`` (dim,) and ``{prefix}_scale_tril`` (dim, dim), a lower
    Cholesky factor of the covariance (initially ``init_scale * I``).
    :meth:`covariance` gives ``scale_tril @ scale_tril.T``.
    """

    def _posterior_from_params(self):
        dim = self.logdensity.dim
        loc = param(f"{self.prefix}_loc", self.init_theta)
        scale_tril = param(
            f"{self.prefix}_scale_tril",
            self.init_scale * jnp.eye(dim, dtype=self.init_theta.dtype),
            constraint=constraints.scaled_unit_lower_cholesky,
        )
        return MultivariateNormal(loc, scale_tril=scale_tril)

    def get_posterior(self, params):
        return MultivariateNormal(
            params[f"{self.prefix}_loc"], scale_tril=params[f"{self.prefix}_scale_tril"]
        )


class AutoLowRankMultivariateNormal(AutoContinuous):
    """Normal over the flat unconstrained vector with a low-rank-plus-diagonal covariance
    ``D^1/2 (W W^T + I) D^1/2``, ``D = diag(scale^2)``, ``W`` of shape (dim, rank).

    Args:
        model: the model function.
        rank: rank of ``W``; default ``ceil(sqrt(dim))``.
        **kwargs: as for :class:`AutoGuide`.

    Params: ``{prefix}_loc`` (dim,), ``{prefix}_cov_factor`` (dim, rank), initially small
    random values (``W = 0`` is a stationary point of the expected ELBO), and
    ``{prefix}_scale`` (dim,), positive, initially ``init_scale``.
    """

    def __init__(self, model: Callable, *, rank: int | None = None, **kwargs: Any):
        if rank is not None and (not isinstance(rank, int) or rank < 1):
            raise ValueError(f"rank must be a positive int, got {rank!r}")
        self.rank = rank
        super().__init__(model, **kwargs)

    def _setup_params(self, rng_key):
        dim = self.logdensity.dim
        rank = self.rank if self.rank is not None else math.ceil(math.sqrt(dim))
        self.rank_ = rank
        key = jax.random.fold_in(rng_key, 1)
        dtype = self.init_theta.dtype
        self.init_cov_factor = 0.01 * jax.random.normal(key, (dim, rank), dtype)

    def _dist(self, loc, cov_factor, scale):
        return LowRankMultivariateNormal(loc, cov_factor * scale[:, None], scale**2)

    def _posterior_from_params(self):
        dim = self.logdensity.dim
        loc = param(f"{self.prefix}_loc", self.init_theta)
        cov_factor = param(f"{self.prefix}_cov_factor", self.init_cov_factor)
        scale = param(
            f"{self.prefix}_scale",
            jnp.full((dim,), self.init_scale, self.init_theta.dtype),
            constraint=constraints.positive,
        )
        return self._dist(loc, cov_factor, scale)

    def get_posterior(self, params):
        p = self.prefix
        return self._dist(params[f"{p}_loc"], params[f"{p}_cov_factor"], params[f"{p}_scale"])


class AutoLaplaceApproximation(AutoContinuous):
    """Laplace approximation on the unconstrained scale.

    SVI fits the mode ``{prefix}_loc`` (dim,) of the log density of ``theta`` (Jacobians
    included, so the mode is on the unconstrained scale); :meth:`get_posterior` is then
    ``MultivariateNormal(loc, inverse(-Hessian))`` with the Hessian of the log density at
    the mode, computed with the data given to :meth:`setup` (pass ``logdensity=`` for other
    data, e.g. the full data set when SVI ran on minibatches).
    """

    def _posterior_from_params(self):
        return Delta(param(f"{self.prefix}_loc", self.init_theta), event_dim=1)

    def get_posterior(self, params, logdensity: LogDensity | None = None):
        ld = self._ld() if logdensity is None else logdensity
        loc = params[f"{self.prefix}_loc"]
        precision = -ld.shared_jit("hessian", lambda ld, x: jax.hessian(ld)(x))(loc)
        chol = jnp.linalg.cholesky(precision)
        if not bool(jnp.all(jnp.isfinite(chol))):
            eig = np.linalg.eigvalsh(np.asarray(precision))
            raise np.linalg.LinAlgError(
                "AutoLaplaceApproximation: the negative Hessian of the log density at the "
                f"fitted mode is not positive definite (smallest eigenvalue {eig.min():.3g}): "
                "the optimisation has not reached a mode (run more steps) or the posterior "
                "is improper or degenerate in some direction"
            )
        return MultivariateNormal(loc, precision_matrix=precision)

    def loc(self, params):
        return params[f"{self.prefix}_loc"]


# ---------------------------------------------------------------------- helpers


def _constrain_site(info: SiteInfo, u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Constrained value of a site and the summed log|det J| of its transform (scalar)."""
    if is_real_support(info.support):
        return u, jnp.zeros((), dtype=u.dtype)
    transform = biject_to(info.support)
    value = transform(u)
    return value, jnp.sum(transform.log_abs_det_jacobian(u, value))


def _refuse_subsampled_latents(ld: LogDensity, guide_name: str) -> None:
    subsampled = subsampled_plates(ld.prototype_trace)
    if not subsampled:
        return
    for name in ld.latent_names:
        plates = [f.name for f in ld.prototype_trace[name]["cond_indep_stack"]]
        inside = [p for p in plates if p in subsampled]
        if inside:
            raise ValueError(
                f"{guide_name}: latent site '{name}' is inside the subsampled plate "
                f"'{inside[0]}'; autoguides fit global latents only. Write a guide with "
                f"ppl.plate('{inside[0]}', size, subsample_size=...) whose params are indexed "
                "by the plate's indices"
            )
