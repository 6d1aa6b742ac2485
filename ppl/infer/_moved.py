"""The module paths ``ppl.infer`` had before its restructure, as deprecated aliases.

``ppl.infer`` used to be one flat folder (``ppl.infer.mcmc``, ``ppl.infer.nuts``,
``ppl.infer.grad_adaptation``, ...); its modules now live in ``core``, ``kernels``,
``warmup``, ``driver``, ``vi`` and ``results``. So that code written against the old paths
keeps working for a release, each old path is registered in ``sys.modules`` as a light
module whose attributes resolve, on first use, to the same object in its new home, with a
``DeprecationWarning`` naming the new import. Nothing is imported until then, and names the
restructure removed raise an ``AttributeError`` that says where the module went.
:mod:`ppl.infer` (and :mod:`ppl`, for ``ppl.convert``) install them; nothing else uses this.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from typing import Any

__all__ = ["MOVED", "REPLACED", "install", "package_getattr"]

#: old module -> the modules its public names now live in (searched in this order)
MOVED: dict[str, tuple[str, ...]] = {
    "ppl.infer.mcmc": (
        "ppl.infer.driver.mcmc",
        "ppl.infer.driver.config",
        "ppl.infer.driver.program",
    ),
    "ppl.infer.nuts": ("ppl.infer.kernels.nuts", "ppl.infer.core.rng"),
    "ppl.infer.hmc": ("ppl.infer.kernels.hmc", "ppl.infer.core.integrators"),
    "ppl.infer.metrics": ("ppl.infer.core.metrics",),
    "ppl.infer.adaptation": ("ppl.infer.warmup.stan", "ppl.infer.warmup.step_size"),
    "ppl.infer.grad_adaptation": ("ppl.infer.warmup.nutpie", "ppl.infer.warmup.low_rank"),
    "ppl.infer.chees": ("ppl.infer.driver.config", "ppl.infer.warmup.chees"),
    "ppl.infer.meads": ("ppl.infer.driver.config", "ppl.infer.warmup.meads"),
    "ppl.infer.ensemble": (
        "ppl.infer.kernels.ensemble",
        "ppl.infer.core.chain_stats",
        "ppl.infer.core.rng",
    ),
    "ppl.infer.sharding": ("ppl.infer.driver.sharding",),
    "ppl.infer.elbo": ("ppl.infer.vi.elbo",),
    "ppl.infer.guides": ("ppl.infer.vi.guides", "ppl.infer.results.datatree"),
    "ppl.infer.svi": ("ppl.infer.vi.svi",),
    "ppl.infer.lbfgs": ("ppl.infer.vi.lbfgs",),
    "ppl.infer.pathfinder": ("ppl.infer.vi.pathfinder", "ppl.infer.core.psis"),
    "ppl.infer.predictive": ("ppl.infer.results.predictive",),
    "ppl.convert": ("ppl.infer.results.datatree",),
}


#: old module -> (names the restructure replaced, what replaces them)
REPLACED: dict[str, tuple[tuple[str, ...], str]] = {
    "ppl.infer.adaptation": (
        (
            "WarmupSchedule",
            "WarmupState",
            "warmup_final",
            "warmup_init",
            "warmup_restart",
            "warmup_step",
            "warmup_update",
        ),
        "Stan's warmup is the Warmup protocol now: ppl.infer.warmup.stan.stan_warmup(...) "
        "(StanSchedule, StanWarmupState)",
    ),
    "ppl.infer.grad_adaptation": (
        (
            "GradWarmupSchedule",
            "GradWarmupState",
            "grad_warmup_after",
            "grad_warmup_before",
            "grad_warmup_final",
            "grad_warmup_init",
        ),
        "nutpie's warmup is the Warmup protocol now: ppl.infer.warmup.nutpie.nutpie_warmup(...) "
        "(NutpieSchedule, NutpieWarmupState)",
    ),
    "ppl.infer.ensemble": (
        ("EnsembleCarry", "EnsembleKernel", "EnsembleProgram", "IterationResult"),
        "ensemble kernels run through the one program now: ppl.infer.base.Kernel and Warmup, "
        "ppl.infer.driver.program.Program, ppl.infer.driver.config.EnsembleConfig",
    ),
}


class _MovedModule(types.ModuleType):
    """An old module path whose attributes come from the modules it moved to."""

    def __init__(self, name: str, targets: tuple[str, ...]):
        super().__init__(name, f"Deprecated alias: {name} moved to {', '.join(targets)}.")
        self._targets = targets

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        for target in self._targets:
            module = importlib.import_module(target)
            if hasattr(module, attr):
                warnings.warn(
                    f"{self.__name__} moved: import {attr} from {target} instead",
                    DeprecationWarning,
                    stacklevel=2,
                )
                return getattr(module, attr)
        names, replacement = REPLACED.get(self.__name__, ((), ""))
        if attr in names:
            raise AttributeError(f"{self.__name__}.{attr} was replaced: {replacement}")
        raise AttributeError(
            f"module {self.__name__!r} moved to {', '.join(self._targets)}, which have no {attr!r}"
        )

    def __dir__(self) -> list[str]:
        names = set()
        for target in self._targets:
            names.update(getattr(importlib.import_module(target), "__all__", ()))
        return sorted(names)


def install(prefix: str) -> None:
    """Register the aliases of the old modules under ``prefix`` (``"ppl.infer"`` or ``"ppl"``)
    in ``sys.modules``, so that ``import ppl.infer.nuts`` and ``from ppl.infer.nuts import
    step`` keep working."""
    for old, targets in MOVED.items():
        if old.rpartition(".")[0] == prefix:
            sys.modules.setdefault(old, _MovedModule(old, targets))


def package_getattr(package: str, name: str) -> Any:
    """A package's ``__getattr__``: ``ppl.infer.nuts`` (the old submodule as an attribute)."""
    old = f"{package}.{name}"
    if old in MOVED:
        return sys.modules[old]
    raise AttributeError(f"module {package!r} has no attribute {name!r}")
