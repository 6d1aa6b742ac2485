"""ppl: a probabilistic programming system on JAX.

Models are plain Python functions calling :func:`sample`, :func:`plate`,
:func:`deterministic`, :func:`factor` and :func:`param`; :func:`logdensity`
compiles a model and its data into a log density over a flat unconstrained
vector for the inference engines in :mod:`ppl.infer`.
"""

# numpyro must be imported before arviz: arviz 1.3 may otherwise install a lazy
# stub module under the name "numpyro" that breaks numpyro.distributions.
import numpyro
import numpyro.distributions  # noqa: F401

from ppl import compilation_cache, distributions, handlers, infer, reparam
from ppl.control_flow import scan
from ppl.density import InitializationError, LogDensity, SiteInfo, logdensity
from ppl.infer import Predictive, _moved, log_likelihood
from ppl.interop import from_numpyro
from ppl.primitives import deterministic, factor, param, plate, prng_key, sample
from ppl.runtime import MissingSeedError

compilation_cache.configure()  # JAX's persistent cache, per user (PPL_COMPILATION_CACHE)
_moved.install("ppl")  # ppl.convert, now ppl.infer.results.datatree

__version__ = "0.1.0"

__all__ = [
    "sample",
    "param",
    "deterministic",
    "factor",
    "plate",
    "prng_key",
    "scan",
    "handlers",
    "distributions",
    "reparam",
    "infer",
    "logdensity",
    "LogDensity",
    "SiteInfo",
    "InitializationError",
    "MissingSeedError",
    "Predictive",
    "log_likelihood",
    "from_numpyro",
]
