"""Distributions: a re-export of ``numpyro.distributions``.

``ppl`` does not define its own distribution library; anything in
``numpyro.distributions`` (and its ``constraints`` and ``transforms``) can be
used in a ppl model.
"""

from numpyro.distributions import *  # noqa: F403
from numpyro.distributions import __all__ as _numpyro_all
from numpyro.distributions import constraints, transforms

__all__ = [*_numpyro_all, "constraints", "transforms"]
