"""The samplers users name: ``NUTS``, ``HMC``, ``ChEES``, ``MEADS`` — settings -> kernel + warmup.

Each class checks its settings, says where the log density comes from (a model, a
:class:`ppl.LogDensity` or a plain function), and :meth:`KernelConfig.build` pairs a
:class:`~ppl.infer.base.Kernel` from :mod:`ppl.infer.kernels` with the
:class:`~ppl.infer.base.Warmup` from :mod:`ppl.infer.warmup` that tunes it. The driver
(:class:`ppl.infer.MCMC`, :mod:`ppl.infer.driver.mcmc`) compiles that pair into one program
(:mod:`ppl.infer.driver.program`); nothing here runs a chain.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from ppl.density import LogDensity
from ppl.infer.base import Kernel, Warmup
from ppl.infer.kernels import ensemble, hmc, nuts
from ppl.infer.warmup.chees import PRECONDITIONERS, chees_warmup
from ppl.infer.warmup.low_rank import LowRankSettings
from ppl.infer.warmup.meads import meads_warmup
from ppl.infer.warmup.nutpie import METRICS, nutpie_warmup
from ppl.infer.warmup.stan import stan_warmup

__all__ = ["ADAPTATIONS", "HMC", "MEADS", "METRICS", "NUTS", "ChEES", "KernelConfig"]

ADAPTATIONS = ("nutpie", "stan")


class KernelConfig:
    """Settings shared by the HMC-family kernels, and where their log density comes from."""

    #: True for kernels whose program runs all chains at once (ensemble adaptation, e.g.
    #: ChEES): MCMC then compiles the program as it is instead of batching it over chains.
    chains_batched: bool = False

    def __init__(
        self,
        model: Callable | LogDensity | None = None,
        *,
        logdensity_fn: Callable | None = None,
        step_size: float = 1.0,
        step_size_jitter: float = 0.0,
        dense_mass: bool = False,
        metric: str | None = None,
        adaptation: str = "nutpie",
        low_rank: LowRankSettings | None = None,
        target_accept_prob: float = 0.8,
        init_strategy: str | dict = "uniform",
    ):
        if (model is None) == (logdensity_fn is None):
            raise ValueError(
                f"{type(self).__name__} needs exactly one of a model (or LogDensity) and "
                "logdensity_fn="
            )
        if logdensity_fn is not None and not callable(logdensity_fn):
            raise TypeError(f"logdensity_fn must be callable, got {logdensity_fn!r}")
        if not 0.0 < target_accept_prob < 1.0:
            raise ValueError(f"target_accept_prob must be in (0, 1), got {target_accept_prob}")
        if not 0.0 <= step_size_jitter < 1.0:
            raise ValueError(f"step_size_jitter must be in [0, 1), got {step_size_jitter!r}")
        if not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size}")
        if metric is None:
            metric = "dense" if dense_mass else "auto"
        elif dense_mass and metric != "dense":
            raise ValueError(f"dense_mass=True contradicts metric={metric!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if adaptation not in ADAPTATIONS:
            raise ValueError(f"adaptation must be one of {ADAPTATIONS}, got {adaptation!r}")
        if metric == "low_rank" and adaptation != "nutpie":
            raise ValueError(
                "metric='low_rank' is estimated from draws and gradients: it needs "
                "adaptation='nutpie'"
            )
        if metric == "auto" and adaptation != "nutpie":
            metric = "diag"  # Stan's warmup estimates the draws' variance only
        if low_rank is not None and metric not in ("low_rank", "auto"):
            raise ValueError("low_rank= settings apply to metric='low_rank' or 'auto' only")
        if low_rank is not None and not isinstance(low_rank, LowRankSettings):
            raise TypeError(f"low_rank must be a LowRankSettings, got {low_rank!r}")
        self.model = model
        self.logdensity_fn = logdensity_fn
        self.step_size = float(step_size)
        self.step_size_jitter = float(step_size_jitter)
        self.metric = metric
        self.dense_mass = metric == "dense"
        self.adaptation = adaptation
        self.low_rank = low_rank if low_rank is not None else LowRankSettings()
        #: the view of metric="auto" the warmup gives the kernel (see low_rank_view)
        self.auto_view = "diag"
        self.target_accept_prob = float(target_accept_prob)
        self.init_strategy = init_strategy

    def settings(self) -> tuple:
        """Hashable settings that change the compiled program."""
        return (
            type(self).__name__,
            self.step_size,
            self.step_size_jitter,
            self.metric,
            self.adaptation,
            self.low_rank,
            self.target_accept_prob,
            self.auto_view,
        )

    @property
    def switches_metric(self) -> bool:
        """Whether a run may switch from the diagonal to the low-rank metric during warmup
        (``metric="auto"`` with nutpie's warmup)."""
        return self.metric == "auto" and self.adaptation == "nutpie" and not self.chains_batched

    def low_rank_view(self) -> KernelConfig:
        """A copy of these settings whose warmup gives the kernel the low-rank metric of
        ``metric="auto"`` (the same warmup state: the driver switches a run to it)."""
        other = copy.copy(self)
        other.auto_view = "low_rank"
        return other

    def build(
        self, dim: int, num_warmup: int, num_iterations: int, num_chains: int
    ) -> tuple[Kernel, Warmup]:
        """The kernel and the warmup paired with it for a run of these sizes.

        Args:
            dim: the target's dimension.
            num_warmup: warmup iterations per chain.
            num_iterations: all iterations per chain (warmup and sampling, with thinning).
            num_chains: the number of chains.
        """
        raise NotImplementedError

    def _warmup(self, dim: int, num_warmup: int, saturation_steps: int | None) -> Warmup:
        """The HMC family's warmup: Stan's windows or nutpie's gradient-based adaptation."""
        if self.adaptation == "stan":
            return stan_warmup(
                num_warmup,
                dense_mass=self.dense_mass,
                initial_step_size=self.step_size,
                target_accept=self.target_accept_prob,
            )
        return nutpie_warmup(
            num_warmup,
            dim,
            metric=self.metric,
            low_rank=self.low_rank,
            initial_step_size=self.step_size,
            target_accept=self.target_accept_prob,
            saturation_steps=saturation_steps,
            auto_view=self.auto_view,
        )


class NUTS(KernelConfig):
    """The No-U-Turn Sampler (Stan's multinomial variant) with gradient-based warmup.

    Args:
        model: a model function or a :class:`ppl.LogDensity` (e.g. from
            :func:`ppl.from_numpyro`).
        logdensity_fn: instead of a model, a plain function ``theta (dim,) -> log
            density``; give ``init_params`` to :meth:`MCMC.run`.
        max_tree_depth: the most trajectory doublings per draw.
        step_size: initial step size (adapted during warmup).
        step_size_jitter: each iteration's step size is drawn uniformly within this fraction
            of the adapted one (nutpie's 0.1; default 0: no jitter).
        metric: "auto" (default), "diag", "low_rank" (diagonal plus a low-rank correction
            for correlated posteriors; nutpie's) or "dense". "auto" is the diagonal metric
            until warmup finds linear correlations well above noise in the draws, then the
            low-rank one (see :func:`ppl.infer.warmup.nutpie.nutpie_warmup`); with
            ``adaptation="stan"`` it is "diag".
        dense_mass: ``True`` is the same as ``metric="dense"``.
        adaptation: "nutpie" (default: the metric from draws and their gradients, see
            :mod:`ppl.infer.warmup.nutpie`) or "stan" (Stan's windowed warmup, the
            metric from the draws' (co)variance, :mod:`ppl.infer.warmup.stan`). With
            "nutpie", "dense" is the low-rank estimator at full rank.
        low_rank: :class:`~ppl.infer.warmup.low_rank.LowRankSettings` for
            ``metric="low_rank"`` (rank, eigenvalue cutoff, regularization, cadence).
        target_accept_prob: dual-averaging target of the acceptance statistic.
        init_strategy: "uniform", "median", "prior" or a dict of initial values.
    """

    def __init__(self, model=None, *, max_tree_depth: int = 10, **settings: Any):
        super().__init__(model, **settings)
        if not isinstance(max_tree_depth, int) or not 1 <= max_tree_depth <= 30:
            raise ValueError(f"max_tree_depth must be an int in [1, 30], got {max_tree_depth!r}")
        self.max_tree_depth = max_tree_depth

    def settings(self):
        return (*super().settings(), self.max_tree_depth)

    def build(self, dim, num_warmup, num_iterations, num_chains):
        kernel = nuts.kernel(
            max_tree_depth=self.max_tree_depth, step_size_jitter=self.step_size_jitter
        )
        # a transition that runs to the maximum tree depth during collection resets nutpie's
        # metric (see nutpie_warmup)
        return kernel, self._warmup(dim, num_warmup, saturation_steps=2**self.max_tree_depth - 1)


class HMC(KernelConfig):
    """Static HMC: a fixed number of leapfrog steps (or a trajectory length), windowed warmup.

    Args:
        model: a model function or a :class:`ppl.LogDensity`.
        num_steps: leapfrog steps per draw (or give ``trajectory_length``).
        trajectory_length: integration time; steps = trajectory_length / step_size.
        jitter: draw the number of steps uniformly up to its value each iteration.
        **settings: as for :class:`NUTS`.
    """

    def __init__(
        self,
        model=None,
        *,
        num_steps: int | None = None,
        trajectory_length: float | None = None,
        jitter: bool = False,
        **settings: Any,
    ):
        super().__init__(model, **settings)
        if (num_steps is None) == (trajectory_length is None):
            raise ValueError("HMC needs exactly one of num_steps or trajectory_length")
        self.num_steps = num_steps
        self.trajectory_length = trajectory_length
        self.jitter = jitter

    def settings(self):
        return (*super().settings(), self.num_steps, self.trajectory_length, self.jitter)

    def build(self, dim, num_warmup, num_iterations, num_chains):
        kernel = hmc.kernel(
            num_integration_steps=self.num_steps,
            trajectory_length=self.trajectory_length,
            jitter=self.jitter,
            step_size_jitter=self.step_size_jitter,
        )
        return kernel, self._warmup(dim, num_warmup, saturation_steps=None)


class EnsembleConfig(KernelConfig):
    """Base class of the kernels that adapt across chains (``MCMC`` runs them all at once).

    Args:
        model: a model function or a :class:`ppl.LogDensity`.
        logdensity_fn: instead of a model, a plain function ``theta (dim,) -> log density``.
        init_strategy: "uniform", "median", "prior" or a dict of initial values.
        step_size: initial step size (in the units of the preconditioned space).
        min_chains: the fewest chains the kernel's cross-chain statistics accept.
    """

    chains_batched = True
    min_chains = 2

    def __init__(
        self,
        model: Callable | LogDensity | None = None,
        *,
        logdensity_fn: Callable | None = None,
        step_size: float = 1.0,
        target_accept_prob: float = 0.8,
        init_strategy: str | dict = "uniform",
    ):
        super().__init__(
            model,
            logdensity_fn=logdensity_fn,
            step_size=step_size,
            target_accept_prob=target_accept_prob,
            init_strategy=init_strategy,
        )

    def settings(self) -> tuple:
        return (type(self).__name__, self.step_size, self.target_accept_prob)

    def check_chains(self, num_chains: int) -> None:
        """Raise a ValueError when ``num_chains`` is too few for this kernel."""
        if num_chains < self.min_chains:
            raise ValueError(
                f"{type(self).__name__} adapts from statistics across chains and needs "
                f"num_chains >= {self.min_chains}, got {num_chains} (it is meant for 64 to "
                "4096 chains; use NUTS for a few)"
            )


class ChEES(EnsembleConfig):
    """ChEES-HMC for many chains: jittered HMC with ensemble-tuned step size and length.

    Use through :class:`~ppl.infer.MCMC` with many chains (64 to 4096):
    ``MCMC(ChEES(model), num_chains=256, num_warmup=500, num_samples=500)``. Every chain
    takes the same number of leapfrog steps at an iteration, so a GPU runs them in lockstep.
    The algorithm (Hoffman, Radul & Sountsov 2021) is described in
    :mod:`ppl.infer.warmup.chees`; the transition is
    :func:`ppl.infer.kernels.ensemble.jittered_hmc_kernel`.

    Args:
        model: a model function or a :class:`ppl.LogDensity`.
        logdensity_fn: instead of a model, ``theta (dim,) -> log density`` (give
            ``init_params`` to :meth:`MCMC.run`).
        target_accept_prob: target of the harmonic-mean acceptance probability (0.651, the
            optimum for HMC in high dimension).
        step_size: initial step size; default from the ensemble's gradients
            (``0.5 / sqrt(λ_max)`` of the preconditioned gradients' second moment).
        preconditioner: "gradient" (default; ``sqrt(Var θ / Var ∇log p)`` across chains) or
            "variance" (the cross-chain variance of the positions).
        learning_rate: Adam's learning rate on ``log T``.
        max_num_steps: the most leapfrog steps per iteration (caps ``T / ε``).
        jitter: the fraction of ``T`` that is jittered: lengths are ``(1 - jitter + jitter
            u) T`` with ``u`` the Halton sequence (1: uniform over ``(0, T]``, as the paper).
        final_fraction: fraction of warmup, at its end, with the preconditioner held fixed.
        init_strategy: "uniform", "median", "prior" or a dict of initial values.

    Example:
        >>> import jax.numpy as jnp
        >>> from ppl.infer import MCMC, ChEES
        >>> kernel = ChEES(logdensity_fn=lambda x: -0.5 * jnp.sum(x**2))
        >>> mcmc = MCMC(kernel, num_warmup=500, num_samples=500, num_chains=256,
        ...             progress_bar=False)
        >>> kernel.chains_batched  # MCMC runs its program over all chains at once
        True

    (The user guide's page "Many chains" runs complete examples.)
    """

    min_chains = 2

    def __init__(
        self,
        model: Callable | LogDensity | None = None,
        *,
        logdensity_fn: Callable | None = None,
        target_accept_prob: float = 0.651,
        step_size: float | None = None,
        preconditioner: str = "gradient",
        learning_rate: float = 0.025,
        max_num_steps: int = 1024,
        jitter: float = 1.0,
        final_fraction: float = 0.15,
        init_strategy: str | dict = "uniform",
    ):
        super().__init__(
            model,
            logdensity_fn=logdensity_fn,
            step_size=1.0 if step_size is None else step_size,
            target_accept_prob=target_accept_prob,
            init_strategy=init_strategy,
        )
        if preconditioner not in PRECONDITIONERS:
            raise ValueError(
                f"preconditioner must be one of {PRECONDITIONERS}, got {preconditioner!r}"
            )
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
        if not isinstance(max_num_steps, int) or isinstance(max_num_steps, bool):
            raise ValueError(f"max_num_steps must be an int >= 1, got {max_num_steps!r}")
        if max_num_steps < 1:
            raise ValueError(f"max_num_steps must be an int >= 1, got {max_num_steps!r}")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {jitter!r}")
        if not 0.0 <= final_fraction < 1.0:
            raise ValueError(f"final_fraction must be in [0, 1), got {final_fraction!r}")
        self.initial_step_size = None if step_size is None else float(step_size)
        self.preconditioner = preconditioner
        self.learning_rate = float(learning_rate)
        self.max_num_steps = max_num_steps
        self.jitter = float(jitter)
        self.final_fraction = float(final_fraction)

    def settings(self) -> tuple:
        return (
            *super().settings(),
            self.initial_step_size,
            self.preconditioner,
            self.learning_rate,
            self.max_num_steps,
            self.jitter,
            self.final_fraction,
        )

    def build(self, dim, num_warmup, num_iterations, num_chains):
        self.check_chains(num_chains)
        warmup = chees_warmup(
            num_warmup,
            num_iterations,
            num_chains,
            target_accept=self.target_accept_prob,
            initial_step_size=self.initial_step_size,
            preconditioner=self.preconditioner,
            learning_rate=self.learning_rate,
            max_num_steps=self.max_num_steps,
            jitter=self.jitter,
            final_fraction=self.final_fraction,
        )
        return ensemble.jittered_hmc_kernel(), warmup


class MEADS(EnsembleConfig):
    """MEADS generalized HMC for many chains (one gradient per chain per iteration).

    Use through :class:`~ppl.infer.MCMC` with many chains (64 to 4096), a multiple of
    ``num_folds``: ``MCMC(MEADS(model), num_chains=256, num_warmup=1000, num_samples=2000)``.
    Draws are strongly autocorrelated (one leapfrog each) but cheap; give more iterations (or
    ``thinning``) than NUTS would need. The algorithm (Hoffman & Sountsov 2022) is described
    in :mod:`ppl.infer.warmup.meads`; the transition is
    :func:`ppl.infer.kernels.ensemble.ghmc_kernel`.

    Args:
        model: a model function or a :class:`ppl.LogDensity`.
        logdensity_fn: instead of a model, ``theta (dim,) -> log density``.
        num_folds: ``K``, the number of folds (4 in the paper); each fold needs >= 2 chains.
        step_size_multiplier: ``ε = multiplier / sqrt(λ_max)`` (0.5 in the paper).
        damping_slowdown: scales the early damping floor ``1 / (t ε)`` (1 in the paper).
        preconditioner: "gradient" (default: ``σ² = sqrt(Var θ / Var ∇log p)`` across the
            source fold, as nutpie's metric; exact for a Gaussian even far from it) or
            "variance" (the paper's ``σ²`` = the source fold's variance of the positions).
        init_strategy: "uniform", "median", "prior" or a dict of initial values.

    Example:
        >>> import jax.numpy as jnp
        >>> from ppl.infer import MCMC, MEADS
        >>> kernel = MEADS(logdensity_fn=lambda x: -0.5 * jnp.sum(x**2))
        >>> mcmc = MCMC(kernel, num_warmup=500, num_samples=500, num_chains=256,
        ...             progress_bar=False)
        >>> kernel.chains_batched  # MCMC runs its program over all chains at once
        True

    (The user guide's page "Many chains" runs complete examples.)
    """

    def __init__(
        self,
        model: Callable | LogDensity | None = None,
        *,
        logdensity_fn: Callable | None = None,
        num_folds: int = 4,
        step_size_multiplier: float = 0.5,
        damping_slowdown: float = 1.0,
        preconditioner: str = "gradient",
        init_strategy: str | dict = "uniform",
    ):
        super().__init__(model, logdensity_fn=logdensity_fn, init_strategy=init_strategy)
        if not isinstance(num_folds, int) or isinstance(num_folds, bool) or num_folds < 2:
            raise ValueError(
                f"num_folds must be an int >= 2 (a fold is tuned from another), got {num_folds!r}"
            )
        if not step_size_multiplier > 0:
            raise ValueError(f"step_size_multiplier must be positive, got {step_size_multiplier}")
        if not damping_slowdown > 0:
            raise ValueError(f"damping_slowdown must be positive, got {damping_slowdown}")
        if preconditioner not in PRECONDITIONERS:
            raise ValueError(
                f"preconditioner must be 'gradient' or 'variance', got {preconditioner!r}"
            )
        self.preconditioner = preconditioner
        self.num_folds = num_folds
        self.step_size_multiplier = float(step_size_multiplier)
        self.damping_slowdown = float(damping_slowdown)
        self.min_chains = 2 * num_folds

    def settings(self) -> tuple:
        return (
            *super().settings(),
            self.num_folds,
            self.step_size_multiplier,
            self.damping_slowdown,
            self.preconditioner,
        )

    def check_chains(self, num_chains: int) -> None:
        super().check_chains(num_chains)
        if num_chains % self.num_folds:
            raise ValueError(
                f"MEADS splits the chains into num_folds={self.num_folds} equal folds: "
                f"num_chains={num_chains} is not a multiple of it"
            )

    def build(self, dim, num_warmup, num_iterations, num_chains):
        self.check_chains(num_chains)
        warmup = meads_warmup(
            num_warmup,
            num_chains,
            num_folds=self.num_folds,
            step_size_multiplier=self.step_size_multiplier,
            damping_slowdown=self.damping_slowdown,
            preconditioner=self.preconditioner,
        )
        return ensemble.ghmc_kernel(), warmup
