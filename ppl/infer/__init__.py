"""Inference: MCMC kernels and driver, predictive distributions."""

from ppl.infer.mcmc import HMC, MCMC, NUTS
from ppl.infer.predictive import Predictive, log_likelihood

__all__ = ["HMC", "MCMC", "NUTS", "Predictive", "log_likelihood"]
