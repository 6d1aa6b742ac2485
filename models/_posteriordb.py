"""The posteriordb side of the zoo: which zoo model is which posteriordb posterior, Stan's
parameter names, the reference posteriors, and reading posteriordb's data files.

Posteriordb names parameters Stan's way: a site ``beta`` of shape (4,) is the columns
``beta[1]`` ... ``beta[4]`` (1-based), a matrix ``b`` of shape (2, 3) is ``b[1,1]``,
``b[1,2]``, ... in row-major order, a scalar is its own name. This module is the one place
that maps ppl sample dicts to those names (:func:`stan_columns`); :data:`POSTERIORS` holds the
per-model table, including the ppl sites whose names differ from Stan's.

The reference (``data/posteriordb_reference.json``) stores, per posterior and parameter, the
mean and sd of posteriordb's 10,000 reference draws.
"""

from __future__ import annotations

import json
import lzma
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).parent / "data"
REFERENCE_FILE = DATA / "posteriordb_reference.json"

__all__ = [
    "POSTERIORS",
    "Comparison",
    "compare",
    "Posterior",
    "posterior_of",
    "read_data",
    "reference",
    "stan_columns",
    "stan_names",
]


@dataclass(frozen=True)
class Posterior:
    """One posteriordb posterior implemented in the zoo.

    Attributes:
        name: posteriordb's posterior name, ``"<data>-<model>"`` (e.g. ``"arK-arK"``).
        stan_file: path of the Stan model in the stan-dev/posteriordb repository.
        rename: ppl site name -> Stan parameter name, for the sites named differently.
    """

    name: str
    stan_file: str
    rename: dict[str, str] = field(default_factory=dict)


def _stan(model: str) -> str:
    return f"posterior_database/models/stan/{model}.stan"


#: zoo module name -> its posteriordb posterior
POSTERIORS: dict[str, Posterior] = {
    "ark": Posterior("arK-arK", _stan("arK")),
    "blr": Posterior("sblrc-blr", _stan("blr")),
    "diamonds": Posterior("diamonds-diamonds", _stan("diamonds")),
    "eight_schools": Posterior(
        "eight_schools-eight_schools_noncentered",
        _stan("eight_schools_noncentered"),
        rename={"theta_tilde": "theta_trans"},
    ),
    "garch11": Posterior("garch-garch11", _stan("garch11")),
    "gp_regr": Posterior("gp_pois_regr-gp_regr", _stan("gp_regr")),
    "hmm_example": Posterior("hmm_example-hmm_example", _stan("hmm_example")),
    "kidscore_momhsiq": Posterior("kidiq-kidscore_momhsiq", _stan("kidscore_momhsiq")),
    "logearn_interaction": Posterior("earnings-logearn_interaction", _stan("logearn_interaction")),
    "logmesquite": Posterior("mesquite-logmesquite", _stan("logmesquite")),
    "low_dim_gauss_mix": Posterior(
        "low_dim_gauss_mix-low_dim_gauss_mix", _stan("low_dim_gauss_mix")
    ),
    "nes": Posterior("nes1972-nes", _stan("nes")),
}


def posterior_of(model_name: str) -> Posterior | None:
    """The posteriordb posterior of zoo model ``model_name``, or None if it has none."""
    return POSTERIORS.get(model_name)


def read_data(name: str) -> dict[str, Any]:
    """The posteriordb data file ``data/<name>.json`` (or ``.json.xz``) as a dict.

    The values are as posteriordb gives them (Stan's conventions: sizes as scalars,
    1-based indices); each model's ``load_data`` converts them to its arguments.
    """
    plain = DATA / f"{name}.json"
    if plain.exists():
        return json.loads(plain.read_text())
    packed = DATA / f"{name}.json.xz"
    if packed.exists():
        return json.loads(lzma.decompress(packed.read_bytes()))
    raise FileNotFoundError(f"no data file {plain.name} or {packed.name} in {DATA}")


def reference(posterior: str) -> dict[str, tuple[float, float]]:
    """Reference ``{Stan parameter name: (mean, sd)}`` of a posteriordb posterior."""
    table = json.loads(REFERENCE_FILE.read_text())["posteriors"]
    if posterior not in table:
        raise KeyError(
            f"no reference for posterior {posterior!r}; available: {', '.join(sorted(table))}"
        )
    return {k: (float(m), float(s)) for k, (m, s) in table[posterior]["params"].items()}


def stan_names(name: str, shape: tuple[int, ...]) -> list[str]:
    """Stan's names of the elements of a parameter ``name`` of ``shape``, row-major order.

    >>> stan_names("beta", (3,))
    ['beta[1]', 'beta[2]', 'beta[3]']
    >>> stan_names("b", (2, 2))
    ['b[1,1]', 'b[1,2]', 'b[2,1]', 'b[2,2]']
    >>> stan_names("sigma", ())
    ['sigma']
    """
    if not shape:
        return [name]
    return [f"{name}[{','.join(str(i + 1) for i in index)}]" for index in np.ndindex(*shape)]


def stan_columns(
    samples: dict[str, Any], model_name: str | None = None, sample_ndim: int = 1
) -> dict[str, np.ndarray]:
    """Flatten a ppl sample dict into Stan-named columns.

    Args:
        samples: ``{site: array}`` as from ``MCMC.get_samples()``; each array has
            ``sample_ndim`` leading sample axes (1: (draws, ...); 2 with
            ``group_by_chain=True``: (chains, draws, ...)).
        model_name: zoo model name, whose :data:`POSTERIORS` entry renames sites; None
            keeps the ppl names.
        sample_ndim: number of leading sample axes.

    Returns:
        ``{Stan name: array of the leading sample shape}``, e.g. ``theta[1]`` for the
        first element of site ``theta``.

    >>> import numpy as np
    >>> cols = stan_columns({"mu": np.zeros(5), "theta": np.ones((5, 2))})
    >>> sorted(cols), cols["theta[2]"].shape
    (['mu', 'theta[1]', 'theta[2]'], (5,))
    """
    entry = POSTERIORS.get(model_name) if model_name is not None else None
    rename = entry.rename if entry is not None else {}
    out: dict[str, np.ndarray] = {}
    for site, value in samples.items():
        value = np.asarray(value)
        lead, shape = value.shape[:sample_ndim], value.shape[sample_ndim:]
        flat = value.reshape(*lead, -1)
        for i, column in enumerate(stan_names(rename.get(site, site), shape)):
            out[column] = flat[..., i]
    return out


@dataclass(frozen=True)
class Comparison:
    """One parameter of a run compared with its posteriordb reference.

    The run agrees with the reference when ``|mean - ref_mean| < 4 mcse + 0.02 ref_sd``
    (``mean_ok``) and ``|sd - ref_sd| < 0.1 ref_sd`` (``sd_ok``), the criterion of the
    posteriordb README; ``mcse`` is the Monte Carlo standard error of the run's mean
    (arviz-stats, from the run's effective sample size).
    """

    param: str
    ref_mean: float
    ref_sd: float
    mean: float
    sd: float
    mcse: float

    @property
    def mean_ok(self) -> bool:
        return abs(self.mean - self.ref_mean) < 4 * self.mcse + 0.02 * self.ref_sd

    @property
    def sd_ok(self) -> bool:
        return abs(self.sd - self.ref_sd) < 0.1 * self.ref_sd

    @property
    def ok(self) -> bool:
        return self.mean_ok and self.sd_ok

    def __str__(self) -> str:
        flag = "ok  " if self.ok else "FAIL"
        return (
            f"{flag} {self.param:14s} mean {self.mean:+.5g} (ref {self.ref_mean:+.5g}, "
            f"4 mcse + 2% sd = {4 * self.mcse + 0.02 * self.ref_sd:.3g})  sd {self.sd:.5g} "
            f"(ref {self.ref_sd:.5g})"
        )


def compare(model_name: str, samples_by_chain: dict[str, Any]) -> list[Comparison]:
    """Compare draws of a zoo model with its posteriordb reference, parameter by parameter.

    Args:
        model_name: zoo model name with a :data:`POSTERIORS` entry.
        samples_by_chain: ``{site: array (chains, draws, ...)}``, e.g.
            ``MCMC.get_samples(group_by_chain=True)``.

    Returns:
        one :class:`Comparison` per reference parameter, in the reference's order.

    Raises:
        KeyError: if the model has no posteriordb entry, or a reference parameter has no
            matching column in the draws (a naming or shape mismatch).
    """
    from arviz_stats.base import array_stats

    entry = POSTERIORS.get(model_name)
    if entry is None:
        raise KeyError(f"zoo model {model_name!r} has no posteriordb posterior")
    columns = stan_columns(samples_by_chain, model_name, sample_ndim=2)
    ref = reference(entry.name)
    missing = [p for p in ref if p not in columns]
    if missing:
        raise KeyError(
            f"{model_name}: reference parameters {missing} have no column in the draws "
            f"(columns: {sorted(columns)})"
        )
    rows = []
    for param, (ref_mean, ref_sd) in ref.items():
        draws = np.asarray(columns[param], dtype=float)  # (chains, draws)
        rows.append(
            Comparison(
                param,
                ref_mean,
                ref_sd,
                float(draws.mean()),
                float(draws.std(ddof=1)),
                float(array_stats.mcse(draws, chain_axis=0, draw_axis=1, method="mean")),
            )
        )
    return rows
