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

A data file (``--data FILE``: JSON, NumPy ``.npz`` or CSV) *replaces* the model's own data:
its keys are the model's keyword arguments; a key that names no argument of the model
is an error naming it, and so is a required argument that nothing supplies. JSON lists
become arrays (integer lists stay integer), numbers stay Python numbers (so that sizes
like ``J`` stay static), ``null`` becomes ``None``.

Methods (:data:`METHODS`): "nuts" and "hmc" (:class:`ppl.infer.MCMC` with its default,
nutpie's gradient-based warmup),
"advi" (a mean-field normal guide, :class:`ppl.infer.AutoNormal`, fitted by
:class:`ppl.infer.SVI` with Adam; the Pareto k of its draws' importance ratios is
recorded) and "pathfinder" (:func:`ppl.infer.pathfinder`, one path per chain).

For prediction the model runs with its data unchanged under a handler that turns every
observed site into a draw from its likelihood (see
:func:`ppl.infer.results.predictive.posterior_predictive`), so no convention on which argument
holds the observations is needed, and models that take sizes from the data
(``y.shape[0]``) work.

A saved run is a DataTree with the groups posterior, sample_stats, log_likelihood,
observed_data and posterior_predictive (the last three when the model has observed
sites) and these attributes on its root (see :data:`RUN_ATTRS`): the settings
(``ppl_settings``, JSON), the seed, the model's name, file and source code, the data's
origin, the package versions (``ppl_versions``, JSON), the timing in seconds
(``ppl_timing``, JSON), whether the run is complete (``ppl_complete``, 1 or 0), the
command line and the creation time.

The submodules (this package only re-exports their public names):

- :mod:`ppl.runs.errors`: :class:`UsageError` and :class:`RunError`;
- :mod:`ppl.runs.models`: :class:`ModelSpec` and :func:`resolve_model` (a zoo name or a
  Python file);
- :mod:`ppl.runs.data`: :func:`load_data_file` (JSON, ``.npz`` or CSV) and :func:`check_data`;
- :mod:`ppl.runs.files`: the run file on disk: :func:`save_run`, :func:`load_run`,
  :data:`RUN_ATTRS`, an interrupted run's sampler state (:func:`state_path`,
  :func:`load_sampler_state`, :func:`incomplete_draws`) and :func:`run_attrs`;
- :mod:`ppl.runs.pipelines`: :class:`Settings`, :data:`METHODS` (one runner per method)
  and :func:`sample_run`;
- :mod:`ppl.runs.locks`: :class:`RunLock`, one writer per run file;
- :mod:`ppl.runs.inputs`: a saved run's model and data again (:func:`run_inputs`) and what
  changed since it was sampled (:func:`changes_since`), for ``--resume`` and ``ppl loo``;
- :mod:`ppl.runs.pointwise`: the log_likelihood and posterior_predictive groups in blocks
  of draws, or left out above a size limit (``--pointwise``);
- :mod:`ppl.runs.loo`: PSIS-LOO of a run in bounded memory (``ppl loo``), from its stored
  log_likelihood or recomputed a block of observations at a time.

While a nuts or hmc run samples, :func:`sample_run` (with ``autosave_to``) saves it every
few seconds, marked incomplete, with its sampler state: a killed process leaves a run that
``--resume`` finishes to the draws of an uninterrupted one.

The DataTrees are built with :mod:`ppl.infer.results.datatree` (``vi_datatree``,
``add_group``), and :func:`posterior_predictive` comes from :mod:`ppl.infer.results.predictive`.

Example:
    >>> from ppl.runs import Settings, resolve_model, sample_run
    >>> spec = resolve_model("eight_schools")
    >>> settings = Settings(num_chains=2, num_warmup=100, num_samples=100, seed=0)
    >>> tree = sample_run(spec, spec.data, settings, progress=False)  # doctest: +SKIP
"""

from ppl.infer.results.predictive import posterior_predictive
from ppl.runs.data import check_data, data_fingerprint, load_data_file
from ppl.runs.errors import RunError, UsageError
from ppl.runs.files import (
    RUN_ATTRS,
    RUN_FORMAT,
    incomplete_draws,
    load_run,
    load_sampler_state,
    run_attrs,
    save_run,
    state_path,
)
from ppl.runs.locks import RunLock
from ppl.runs.models import ModelSpec, resolve_model
from ppl.runs.pipelines import METHODS, Settings, sample_run, source_fingerprint

__all__ = [
    "METHODS",
    "RUN_ATTRS",
    "RUN_FORMAT",
    "ModelSpec",
    "RunError",
    "RunLock",
    "Settings",
    "UsageError",
    "check_data",
    "data_fingerprint",
    "incomplete_draws",
    "load_data_file",
    "load_run",
    "load_sampler_state",
    "posterior_predictive",
    "resolve_model",
    "run_attrs",
    "sample_run",
    "source_fingerprint",
    "save_run",
    "state_path",
]
