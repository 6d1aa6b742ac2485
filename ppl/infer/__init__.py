"""Inference: MCMC kernels and driver, variational inference, Pathfinder, predictive draws."""

from ppl.infer.chees import ChEES
from ppl.infer.elbo import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from ppl.infer.grad_adaptation import LowRankSettings
from ppl.infer.guides import (
    AutoDelta,
    AutoLaplaceApproximation,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
    guide_to_datatree,
)
from ppl.infer.mcmc import HMC, MCMC, NUTS
from ppl.infer.meads import MEADS
from ppl.infer.pathfinder import PathfinderResult, pathfinder, pathfinder_init
from ppl.infer.predictive import Predictive, log_likelihood
from ppl.infer.sharding import make_mesh
from ppl.infer.svi import SVI, NonFiniteLossError, SVIRunResult, SVIState

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
    "LowRankSettings",
    "NonFiniteLossError",
    "PathfinderResult",
    "Predictive",
    "RenyiELBO",
    "SVIRunResult",
    "SVIState",
    "TraceMeanField_ELBO",
    "Trace_ELBO",
    "guide_to_datatree",
    "log_likelihood",
    "make_mesh",
    "pathfinder",
    "pathfinder_init",
]
