"""Inference: MCMC kernels, warmups and driver, variational inference, Pathfinder, predictive draws.

The folders follow the data: a :class:`ppl.LogDensity` goes to a kernel
(:mod:`ppl.infer.kernels`) tuned by a warmup (:mod:`ppl.infer.warmup`), both built from the
numerical pieces in :mod:`ppl.infer.core` and joined by the protocols in
:mod:`ppl.infer.base`; the driver (:mod:`ppl.infer.driver`: ``MCMC`` and the samplers' settings
``NUTS``, ``HMC``, ``ChEES``, ``MEADS``) runs them over chains; variational inference and
Pathfinder are in :mod:`ppl.infer.vi`; draws become ArviZ DataTrees and predictive draws in
:mod:`ppl.infer.results`. Everything users call is re-exported here. The module paths of
the flat layout before (``ppl.infer.mcmc``, ``ppl.infer.nuts``, ...) still import, with a
``DeprecationWarning`` naming the new one (:mod:`ppl.infer._moved`).
"""

from ppl.enumeration import config_enumerate
from ppl.infer import _moved
from ppl.infer.driver.config import HMC, MEADS, NUTS, ChEES
from ppl.infer.driver.mcmc import MCMC
from ppl.infer.driver.rescue import ChainWarning, RescueSettings
from ppl.infer.driver.sharding import make_mesh
from ppl.infer.results.datatree import guide_to_datatree
from ppl.infer.results.discrete import infer_discrete
from ppl.infer.results.predictive import Predictive, log_likelihood
from ppl.infer.vi.elbo import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from ppl.infer.vi.guides import (
    AutoDelta,
    AutoLaplaceApproximation,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from ppl.infer.vi.pathfinder import PathfinderResult, pathfinder, pathfinder_init
from ppl.infer.vi.svi import SVI, NonFiniteLossError, SVIRunResult, SVIState
from ppl.infer.warmup.low_rank import LowRankSettings

__all__ = [
    "HMC",
    "MCMC",
    "MEADS",
    "NUTS",
    "SVI",
    "AutoDelta",
    "AutoLaplaceApproximation",
    "AutoLowRankMultivariateNormal",
    "AutoMultivariateNormal",
    "AutoNormal",
    "ChEES",
    "ChainWarning",
    "LowRankSettings",
    "NonFiniteLossError",
    "PathfinderResult",
    "Predictive",
    "RenyiELBO",
    "RescueSettings",
    "SVIRunResult",
    "SVIState",
    "TraceMeanField_ELBO",
    "Trace_ELBO",
    "config_enumerate",
    "guide_to_datatree",
    "infer_discrete",
    "log_likelihood",
    "make_mesh",
    "pathfinder",
    "pathfinder_init",
]

_moved.install("ppl.infer")


def __getattr__(name: str):
    return _moved.package_getattr(__name__, name)
