"""Runs: a model and its data in, an ArviZ ``DataTree`` saved as one netCDF file out.

This is the machinery behind ``ppl sample``; :mod:`ppl.cli` only parses arguments.

A *model* is either the name of a module in the zoo (``models/``, see :mod:`ppl.zoo`) or
the path of a Python file. Such a file defines

- ``model``: the model function;
- its data: a function ``load_data()`` returning the model's keyword arguments as a
  dict, or a dict ``data`` (optional when ``--data FILE`` gives the data, or when the
  model takes no arguments);
- optionally ``dims`` and ``coords`` (ArviZ dimension names and coordinates, as in
  :meth:`ppl.infer.MCMC.to_datatree`) and a one-line ``description``.

A data file (``--data FILE``, JSON or NumPy ``.npz``) *replaces* the model's own data:
its keys are the model's keyword arguments; a key that names no argument of the model
is an error naming it, and so is a required argument that nothing supplies. JSON lists
become arrays (integer lists stay integer), numbers stay Python numbers (so that sizes
like ``J`` stay static), ``null`` becomes ``None``.

Methods (:data:`METHODS`): "nuts" and "hmc" (:class:`ppl.infer.MCMC`, Stan's warmup),
"advi" (a mean-field normal guide, :class:`ppl.infer.guides.AutoNormal`, fitted by
:class:`ppl.infer.svi.SVI` with Adam; the Pareto k of its draws' importance ratios is
recorded) and "pathfinder" (:func:`ppl.infer.pathfinder.pathfinder`, one path per chain).

For prediction the model runs with its data unchanged under a handler that turns every
observed site into a draw from its likelihood (see :func:`posterior_predictive`), so no
convention on which argument holds the observations is needed, and models that take
sizes from the data (``y.shape[0]``) work.

A saved run is a DataTree with the groups posterior, sample_stats, log_likelihood,
observed_data and posterior_predictive (the last three when the model has observed
sites) and these attributes on its root (see :data:`RUN_ATTRS`): the settings
(``ppl_settings``, JSON), the seed, the model's name, file and source code, the data's
origin, the package versions (``ppl_versions``, JSON), the timing in seconds
(``ppl_timing``, JSON), whether the run is complete (``ppl_complete``, 1 or 0), the
command line and the creation time.

Example:
    >>> from ppl.runs import Settings, resolve_model, sample_run
    >>> spec = resolve_model("eight_schools")
    >>> settings = Settings(num_chains=2, num_warmup=100, num_samples=100, seed=0)
    >>> tree = sample_run(spec, spec.data, settings, progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import importlib.util
import inspect
import json
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "METHODS",
    "RUN_ATTRS",
    "ModelSpec",
    "RunError",
    "Settings",
    "UsageError",
    "check_data",
    "load_data_file",
    "load_run",
    "posterior_predictive",
    "resolve_model",
    "run_attrs",
    "sample_run",
    "save_run",
]

RUN_FORMAT = "ppl-run-1"
"""Value of the root attribute ``ppl_format`` of every saved run."""

RUN_ATTRS = (
    "ppl_format",
    "ppl_settings",
    "ppl_seed",
    "ppl_method",
    "ppl_max_tree_depth",
    "ppl_model",
    "ppl_model_file",
    "ppl_model_source",
    "ppl_data_source",
    "ppl_versions",
    "ppl_timing",
    "ppl_complete",
    "ppl_command",
    "ppl_created",
)
"""Root attributes of a saved run (all str or int, as netCDF stores them)."""


_INCOMPLETE = "_ppl_incomplete"  # in-memory attribute of an interrupted run (not saved)


class UsageError(Exception):
    """Bad input from the user: a missing model, mismatched data, an unreadable run file.

    The command-line tool prints its message as one line and exits with status 2.
    """


class RunError(UsageError):
    """A run file that cannot be read as a ppl run."""


# ---------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class Settings:
    """Settings of one run.

    Attributes:
        method: "nuts", "hmc", "advi" or "pathfinder" (see :data:`METHODS`).
        num_chains: number of chains.
        num_warmup: warmup (adaptation) iterations per chain.
        num_samples: kept draws per chain.
        seed: the integer seed of ``jax.random.PRNGKey``.
        max_tree_depth: NUTS: the most trajectory doublings per draw (a draw whose tree
            depth reaches it was cut short).
        target_accept_prob: the step-size adaptation's target acceptance statistic.
        num_steps: HMC: leapfrog steps per draw.
        dense_mass: adapt a dense inverse mass matrix.
        vi_steps: ADVI: optimizer steps.
        learning_rate: ADVI: Adam's learning rate.
    """

    method: str = "nuts"
    num_chains: int = 4
    num_warmup: int = 1000
    num_samples: int = 1000
    seed: int = 0
    max_tree_depth: int = 10
    target_accept_prob: float = 0.8
    num_steps: int = 16
    dense_mass: bool = False
    vi_steps: int = 10_000
    learning_rate: float = 0.01

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Settings:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})


# ---------------------------------------------------------------------- models


@dataclasses.dataclass
class ModelSpec:
    """A model ready to run: the function, its data and how to label its dimensions.

    Attributes:
        name: zoo name or file stem.
        model: the model function.
        data: keyword arguments of ``model`` (the model's own data; may be empty).
        dims, coords: ArviZ dims (``site -> [dim names]``) and coords (``dim -> labels``).
        description: one line.
        source: the model module's source code.
        file: path of the module's file ("" if unknown).
        data_source: where ``data`` came from, in words.
    """

    name: str
    model: Callable
    data: dict
    dims: dict
    coords: dict
    description: str
    source: str
    file: str
    data_source: str


def _module_spec(module: Any, name: str, origin: str) -> ModelSpec:
    model = getattr(module, "model", None)
    if not callable(model):
        raise UsageError(f"{origin} defines no function named 'model'")
    if callable(getattr(module, "load_data", None)):
        try:
            data = module.load_data()
        except Exception as err:
            raise UsageError(f"{origin}: load_data() failed: {type(err).__name__}: {err}") from err
        data_source = f"{name}.load_data()"
    elif isinstance(getattr(module, "data", None), dict):
        data = module.data
        data_source = f"{name}.data"
    else:
        data, data_source = {}, "none"
    if not isinstance(data, dict):
        raise UsageError(
            f"{origin}: load_data() must return a dict of keyword arguments, "
            f"got {type(data).__name__}"
        )
    file = getattr(module, "__file__", None) or ""
    try:
        source = Path(file).read_text() if file else inspect.getsource(module)
    except (OSError, TypeError):
        source = ""
    description = getattr(module, "description", None) or (module.__doc__ or "").strip()
    return ModelSpec(
        name=name,
        model=model,
        data=dict(data),
        dims=dict(getattr(module, "dims", None) or {}),
        coords=dict(getattr(module, "coords", None) or {}),
        description=description.split("\n")[0],
        source=source,
        file=str(file),
        data_source=data_source,
    )


def resolve_model(spec: str) -> ModelSpec:
    """The model named ``spec``: a zoo name, or the path of a Python file (see the module doc).

    Raises:
        UsageError: no such zoo model or file, or the file does not define ``model``.
    """
    from ppl import zoo

    path = Path(spec)
    if spec.endswith(".py") or path.is_file() or "/" in spec:
        if not path.is_file():
            raise UsageError(f"model file {spec} does not exist")
        mod_name = f"_ppl_user_model_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise UsageError(f"cannot import {spec} as a Python module")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[mod_name]
            raise UsageError(
                f"importing model file {spec} failed: {type(err).__name__}: {err}"
            ) from err
        return _module_spec(module, path.stem, f"model file {spec}")
    try:
        module = zoo.load(spec)
    except KeyError as err:
        raise UsageError(err.args[0]) from None
    return _module_spec(module, spec, f"zoo model {spec}")


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        arr = np.asarray(value)
        if arr.dtype == object:
            raise UsageError("data file: nested lists must be rectangular arrays of numbers")
        return arr
    return value


def load_data_file(path: str | Path) -> dict:
    """The keyword arguments stored in a JSON (object) or ``.npz`` file.

    JSON lists become JAX arrays (integers stay integers; 32-bit unless x64 is enabled),
    scalars stay Python scalars; in ``.npz`` files 0-d arrays become Python scalars.

    Raises:
        UsageError: missing, unreadable or malformed file.
    """
    return {k: _jax_array(v) for k, v in _read_data_file(Path(path)).items()}


def _jax_array(value: Any) -> Any:
    """NumPy arrays as JAX arrays of JAX's default dtypes (int32/float32 unless x64 is on)."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        import jax.numpy as jnp

        return jnp.asarray(value)
    return value


def _read_data_file(path: Path) -> dict:
    if not path.is_file():
        raise UsageError(f"data file {path} does not exist")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: (npz[k].item() if npz[k].ndim == 0 else npz[k]) for k in npz.files}
        except (OSError, ValueError) as err:
            raise UsageError(f"data file {path} is not a readable .npz file: {err}") from None
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"data file {path} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise UsageError(
            f"data file {path} must hold a JSON object mapping the model's arguments to "
            f"values, got a {type(raw).__name__}"
        )
    try:
        return {k: _from_json(v) for k, v in raw.items()}
    except UsageError as err:
        raise UsageError(f"data file {path}: {err}") from None


def check_data(model: Callable, data: dict, origin: str) -> None:
    """Check that ``data`` are keyword arguments ``model`` accepts and that none is missing.

    Raises:
        UsageError: naming the keys that match no argument (and the arguments there
            are), or the required arguments that ``data`` lacks.
    """
    try:
        signature = inspect.signature(model)
    except (TypeError, ValueError):
        return
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = []
    else:
        keyword_ok = {
            n
            for n, p in params.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        }
        unknown = sorted(set(data) - keyword_ok)
    arguments = ", ".join(params) or "no arguments"
    if unknown:
        raise UsageError(
            f"{origin}: key(s) {', '.join(unknown)} match no argument of the model "
            f"(its arguments: {arguments})"
        )
    missing = [
        n
        for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and n not in data
    ]
    if missing:
        raise UsageError(
            f"{origin}: the model's argument(s) {', '.join(missing)} have no value "
            f"(its arguments: {arguments})"
        )


# ---------------------------------------------------------------------- predictive


def _unobserved(model: Callable, names: set[str]) -> Callable:
    """``model`` with the observed sites in ``names`` turned into draws from their likelihood."""
    from ppl.handlers import Messenger

    class unobserve(Messenger):
        def process_message(self, msg: dict) -> None:
            if msg["type"] == "sample" and msg["is_observed"] and msg["name"] in names:
                msg["value"] = None
                msg["is_observed"] = False

    return unobserve(model)


def posterior_predictive(
    model: Callable,
    latent_draws: dict[str, Any],
    observed_names: list[str],
    data: dict,
    key: Any,
) -> dict[str, np.ndarray]:
    """Replicated data of the observed sites, one set per posterior draw.

    The model runs with its data unchanged (so sizes taken from the data still
    work), under a handler that turns each observed site into a draw from its
    likelihood given the substituted latent draws; this needs no convention on
    which argument holds the observations.

    Args:
        model: the model function.
        latent_draws: ``latent site -> (chains, draws, ...)`` constrained draws.
        observed_names: the observed sites to replicate.
        data: the model's keyword arguments.
        key: a ``jax.random`` key.

    Returns:
        ``site -> (chains, draws, *site shape)``.
    """
    from ppl.infer import Predictive

    predictive = Predictive(
        _unobserved(model, set(observed_names)),
        latent_draws,
        return_sites=list(observed_names),
        batch_ndims=2,
    )
    return {k: np.asarray(v) for k, v in predictive(key, **data).items()}


# ---------------------------------------------------------------------- methods


def _mcmc_kernel(settings: Settings, model: Callable):
    from ppl.infer import HMC, NUTS

    if settings.method == "nuts":
        return NUTS(
            model,
            max_tree_depth=settings.max_tree_depth,
            target_accept_prob=settings.target_accept_prob,
            dense_mass=settings.dense_mass,
        )
    return HMC(
        model,
        num_steps=settings.num_steps,
        target_accept_prob=settings.target_accept_prob,
        dense_mass=settings.dense_mass,
    )


def _observed(ld) -> list[str]:
    return [n for n, info in ld.sites.items() if info.kind == "observed"]


def _add_predictive_groups(tree, spec, data, ld, latent, settings, progress, timing) -> None:
    """Add log_likelihood (if missing) and posterior_predictive for the observed sites.

    ``latent`` holds the constrained latent draws with leading (chain, draw) dims.
    """
    import jax

    from ppl.infer import log_likelihood

    observed = _observed(ld)
    if not observed:
        return
    began = time.perf_counter()
    if "log_likelihood" not in tree.children:
        ll = log_likelihood(spec.model, latent, batch_ndims=2, **data)
        _add_group(tree, "log_likelihood", {k: np.asarray(v) for k, v in ll.items()}, ld, spec)
    if "observed_data" not in tree.children:
        values = {n: np.asarray(ld.prototype_trace[n]["value"]) for n in observed}
        _add_group(tree, "observed_data", values, ld, spec)
    if progress:
        print("posterior predictive draws ...", file=sys.stderr, flush=True)
    key = jax.random.fold_in(jax.random.PRNGKey(settings.seed), 1)
    draws = posterior_predictive(spec.model, latent, observed, data, key)
    _add_group(tree, "posterior_predictive", draws, ld, spec)
    timing["predictive_s"] = time.perf_counter() - began


def _run_mcmc(
    spec: ModelSpec,
    data: dict,
    settings: Settings,
    progress: bool,
    timing: dict,
    resume_state: dict | None = None,
):
    """NUTS or HMC: warm up and sample; the DataTree (posterior, sample_stats, ...).

    An interrupted run (Ctrl-C, or SIGTERM in the command-line tool) gives the draws kept so
    far, marked incomplete, with the sampler state to resume from (see :func:`save_run`);
    ``resume_state`` continues such a run.
    """
    import jax
    import xarray as xr

    from ppl.infer import MCMC

    mcmc = MCMC(
        _mcmc_kernel(settings, spec.model),
        num_warmup=settings.num_warmup,
        num_samples=settings.num_samples,
        num_chains=settings.num_chains,
        progress_bar=progress,
    )
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="sampling interrupted")
        if resume_state is None:
            mcmc.run(jax.random.PRNGKey(settings.seed), **data)
        else:
            mcmc.resume_from(resume_state, **data)
    timing["sampling_s"] = time.perf_counter() - began
    if not mcmc.complete:
        if mcmc.num_completed_samples:
            tree = mcmc.to_datatree(dims=spec.dims or None, coords=spec.coords or None)
        else:
            tree = xr.DataTree.from_dict({"posterior": xr.Dataset()})
        tree.attrs[_INCOMPLETE] = {
            "state": mcmc.sampler_state(),
            "kept": mcmc.num_completed_samples,
        }
        return tree
    began = time.perf_counter()
    tree = mcmc.to_datatree(dims=spec.dims or None, coords=spec.coords or None)
    timing["conversion_s"] = time.perf_counter() - began
    ld = mcmc.logdensity_
    latent = {
        k: v
        for k, v in mcmc.get_samples(group_by_chain=True).items()
        if ld.sites[k].kind == "latent"
    }
    _add_predictive_groups(tree, spec, data, ld, latent, settings, progress, timing)
    return tree


def _vi_tree(spec: ModelSpec, ld, samples: dict, loss: np.ndarray, loss_dims, pareto_k: float):
    """A variational run's DataTree: one chain of draws, the loss, Pareto k as attribute."""
    import arviz_base
    import xarray as xr

    from ppl.convert import site_dims

    posterior = {k: np.asarray(v)[None] for k, v in samples.items()}
    tree = arviz_base.from_dict(
        {"posterior": posterior},
        dims=site_dims(ld, list(posterior), spec.dims or None),
        coords=spec.coords or None,
    )
    tree["optimization"] = xr.DataTree(xr.Dataset({"loss": (loss_dims, loss)}))
    tree.attrs["ppl_pareto_k"] = float(pareto_k)
    return tree


def _run_advi(spec: ModelSpec, data: dict, settings: Settings, progress: bool, timing: dict):
    """ADVI: a mean-field normal guide (AutoNormal) fitted by SVI with Adam; PSIS Pareto k
    of the draws' importance ratios log p - log q (on the unconstrained scale)."""
    import jax
    import jax.numpy as jnp
    import optax

    from ppl.density import LogDensity
    from ppl.infer.guides import AutoNormal
    from ppl.infer.pathfinder import psis
    from ppl.infer.svi import SVI

    key_fit, key_draws = jax.random.split(jax.random.PRNGKey(settings.seed))
    guide = AutoNormal(spec.model)
    svi = SVI(spec.model, guide, optax.adam(settings.learning_rate))
    began = time.perf_counter()
    result = svi.run(key_fit, settings.vi_steps, progress_bar=progress, **data)
    timing["optimization_s"] = time.perf_counter() - began
    began = time.perf_counter()
    ld = LogDensity(spec.model, (), data)
    loc, scale = guide.loc(result.params), guide.scale(result.params)
    n = settings.num_samples
    z = loc + scale * jax.random.normal(key_draws, (n, loc.shape[0]), loc.dtype)
    log_q = jnp.sum(jax.scipy.stats.norm.logpdf(z, loc, scale), axis=-1)
    log_p = jax.vmap(ld)(z)
    _, k = psis(np.asarray(log_p - log_q))
    samples = jax.vmap(ld.constrain)(z)
    tree = _vi_tree(spec, ld, samples, np.asarray(result.losses), ("step",), k)
    timing["draws_s"] = time.perf_counter() - began
    latent = {k_: v[None] for k_, v in samples.items() if ld.sites[k_].kind == "latent"}
    _add_predictive_groups(tree, spec, data, ld, latent, settings, progress, timing)
    return tree


def _run_pathfinder(spec: ModelSpec, data: dict, settings: Settings, progress, timing: dict):
    """Multi-path Pathfinder: one path per chain, pooled and importance-resampled draws."""
    import jax

    from ppl.infer.pathfinder import pathfinder

    if progress:
        print(f"pathfinder: {settings.num_chains} path(s) ...", file=sys.stderr, flush=True)
    began = time.perf_counter()
    result = pathfinder(
        jax.random.PRNGKey(settings.seed),
        spec.model,
        num_paths=settings.num_chains,
        num_draws=settings.num_samples,
        **data,
    )
    timing["optimization_s"] = time.perf_counter() - began
    ld = result.logdensity
    # the loss of each path: the negative ELBO at each L-BFGS iterate (nan after its end)
    loss = -np.asarray(result.paths.elbo_history, float).reshape(settings.num_chains, -1)
    tree = _vi_tree(spec, ld, result.samples, loss, ("path", "step"), result.pareto_k)
    latent = {k: v[None] for k, v in result.samples.items() if ld.sites[k].kind == "latent"}
    _add_predictive_groups(tree, spec, data, ld, latent, settings, progress, timing)
    return tree


def _add_group(tree, group: str, values: dict, ld, spec: ModelSpec) -> None:
    import arviz_base

    from ppl.convert import site_dims

    dims = site_dims(ld, list(values), spec.dims or None)
    extra = arviz_base.from_dict({group: values}, dims=dims, coords=spec.coords or None)
    tree[group] = extra[group]


METHODS: dict[str, Callable] = {
    "nuts": _run_mcmc,
    "hmc": _run_mcmc,
    "advi": _run_advi,
    "pathfinder": _run_pathfinder,
}
"""``method -> runner(spec, data, settings, progress, timing) -> DataTree``.

A variational runner returns a DataTree with a posterior of iid draws (one chain), a
group ``optimization`` holding ``loss`` along the dim ``step`` (and ``path`` for
Pathfinder), and the root attribute ``ppl_pareto_k`` (the Pareto k of the importance
weights of the draws); the report then shows the loss curve and Pareto k instead of the
MCMC diagnostics.
"""


# ---------------------------------------------------------------------- running


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in (
        "ppl",
        "jax",
        "jaxlib",
        "numpyro",
        "numpy",
        "arviz",
        "arviz-base",
        "arviz-stats",
        "arviz-plots",
        "xarray",
        "h5netcdf",
    ):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def run_attrs(tree) -> dict[str, Any]:
    """The run's attributes with the JSON ones decoded (settings, versions, timing)."""
    attrs = dict(tree.attrs)
    for name in ("ppl_settings", "ppl_versions", "ppl_timing"):
        if isinstance(attrs.get(name), str):
            try:
                attrs[name] = json.loads(attrs[name])
            except json.JSONDecodeError:
                pass
    return attrs


def sample_run(
    spec: ModelSpec,
    data: dict,
    settings: Settings,
    *,
    progress: bool = True,
    data_source: str | None = None,
    command: str = "",
    resume_state: dict | None = None,
):
    """Run ``settings.method`` on ``spec.model`` with ``data``; the DataTree with attributes.

    Raises:
        UsageError: an unknown method, a method that is not available yet, or data that
            do not fit the model.
    """
    if settings.method not in METHODS:
        raise UsageError(f"unknown method {settings.method!r}; choose one of {', '.join(METHODS)}")
    check_data(spec.model, data, f"data for model {spec.name}")
    timing: dict[str, float] = {}
    began = time.perf_counter()
    if resume_state is None:
        tree = METHODS[settings.method](spec, data, settings, progress, timing)
    elif settings.method in ("nuts", "hmc"):
        tree = _run_mcmc(spec, data, settings, progress, timing, resume_state=resume_state)
    else:
        raise UsageError(f"a {settings.method} run cannot be resumed; only nuts and hmc runs")
    timing["total_s"] = time.perf_counter() - began
    incomplete = tree.attrs.get(_INCOMPLETE)
    tree.attrs.update(
        {
            "ppl_format": RUN_FORMAT,
            "ppl_settings": settings.to_json(),
            "ppl_seed": int(settings.seed),
            "ppl_method": settings.method,
            "ppl_max_tree_depth": int(settings.max_tree_depth),
            "ppl_model": spec.name,
            "ppl_model_file": spec.file,
            "ppl_model_source": spec.source,
            "ppl_data_source": data_source or spec.data_source,
            "ppl_versions": json.dumps(_versions(), sort_keys=True),
            "ppl_timing": json.dumps({k: round(v, 4) for k, v in timing.items()}),
            "ppl_complete": 0 if incomplete else 1,
            "ppl_command": command,
            "ppl_created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
    )
    if "sample_stats" in tree.children:
        tree["sample_stats"].attrs["max_tree_depth"] = int(settings.max_tree_depth)
    return tree


# ---------------------------------------------------------------------- files


def _netcdf_attr(value: Any) -> Any:
    """An attribute netCDF can store: bools as ints, dicts as JSON, sequences as arrays."""
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    if isinstance(value, list | tuple) and value:
        arr = np.asarray(value)
        if arr.dtype == bool:
            return arr.astype(int)
        if arr.dtype.kind in "iuf":
            return arr
        return [str(v) for v in value]
    return value


def state_path(run_path: str | Path) -> Path:
    """Where the sampler state of an interrupted run is kept: ``RUN.state.npz`` beside it."""
    run_path = Path(run_path)
    return run_path.with_name(run_path.name + ".state.npz")


def incomplete_draws(tree) -> int | None:
    """Draws per chain kept by an interrupted run (``None`` for a complete one)."""
    incomplete = tree.attrs.get(_INCOMPLETE)
    return None if incomplete is None else int(incomplete["kept"])


def save_run(tree, path: str | Path) -> Path:
    """Write the run to ``path`` (netCDF4/HDF5 via h5netcdf, one group per DataTree node).

    An interrupted run's sampler state goes to :func:`state_path` beside it (for
    ``ppl sample ... --resume RUN``); saving a complete run removes a stale one.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise UsageError(f"cannot write {path}: folder {path.parent} does not exist")
    tmp = path.with_name(path.name + ".partial")
    tree = tree.copy()
    incomplete = tree.attrs.pop(_INCOMPLETE, None)
    for node in tree.subtree:
        node.attrs = {k: _netcdf_attr(v) for k, v in node.attrs.items() if v is not None}
    tree.to_netcdf(tmp, engine="h5netcdf")
    state_file = state_path(path)
    if incomplete is not None:
        state_tmp = state_file.with_name(state_file.name + ".partial.npz")
        np.savez(state_tmp, **incomplete["state"])
        state_tmp.replace(state_file)
    elif state_file.exists():
        state_file.unlink()
    tmp.replace(path)
    return path


def load_sampler_state(run_path: str | Path) -> dict:
    """The sampler state saved beside an interrupted run.

    Raises:
        RunError: there is none, or it cannot be read.
    """
    file = state_path(run_path)
    if not file.exists():
        raise RunError(
            f"no sampler state {file} beside {run_path}: only an interrupted nuts/hmc run "
            "saved with it can be resumed"
        )
    try:
        with np.load(file) as opened:
            return {k: opened[k] for k in opened.files}
    except Exception as err:
        raise RunError(f"sampler state {file} could not be read ({type(err).__name__})") from None


def load_run(path: str | Path):
    """Read a run written by :func:`save_run` (fully into memory; the file is closed).

    Raises:
        RunError: the file is missing, not netCDF, or not a ppl run.
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise RunError(f"run file {path} does not exist")
    if path.is_dir():
        raise RunError(f"run file {path} is a folder, not a run file")
    try:
        with xr.open_datatree(path, engine="h5netcdf") as opened:
            tree = opened.load().copy()
    except Exception as err:  # h5py/h5netcdf raise OSError, ValueError, KeyError...
        raise RunError(
            f"run file {path} could not be read as a netCDF run ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}); it may be corrupt or "
            "truncated: sample again"
        ) from None
    if tree.attrs.get("ppl_format") != RUN_FORMAT or "posterior" not in tree.children:
        raise RunError(
            f"run file {path} is netCDF but not a ppl run (no ppl_format attribute or no "
            "posterior group)"
        )
    return tree
