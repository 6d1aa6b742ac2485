"""A saved run's inputs again: its model and data, and what differs from when it was sampled.

``ppl sample --resume`` (continuing a run) and ``ppl loo`` (the log-likelihood of its draws)
need the model and the data the run was sampled with. :func:`run_inputs` finds them from the
run's attributes (``ppl_model``, ``ppl_model_file``, ``ppl_data_source``) or from what the user
names, and :func:`changes_since` compares them with the run's SHA-256 fingerprints
(``ppl_data_sha256`` per key, ``ppl_model_sha256``), in words.
"""

from __future__ import annotations

import json
from pathlib import Path

from ppl.runs.data import check_data, data_fingerprint, load_data_file
from ppl.runs.errors import UsageError
from ppl.runs.models import ModelSpec, resolve_model

__all__ = ["changes_since", "run_inputs"]


def run_inputs(
    attrs, run: str | Path, model: str | None = None, data_file: str | None = None
) -> tuple[ModelSpec, dict, str]:
    """The model, the data and the data's origin of the run ``run`` (its root ``attrs``).

    Args:
        attrs: the run's root attributes.
        run: the run's path (for messages).
        model: a zoo name or a model file; by default the run's own (its file if it is still
            there, else its name).
        data_file: a data file; by default the one the run was sampled with, else the
            model's own data.

    Raises:
        UsageError: the model is not the run's, cannot be loaded, or the run's data file is
            gone.
    """
    recorded_file = str(attrs.get("ppl_model_file") or "")
    recorded = str(attrs.get("ppl_model") or "")
    if model is None:
        model = recorded_file if recorded_file and Path(recorded_file).is_file() else recorded
    try:
        spec = resolve_model(model)
    except UsageError as err:
        raise UsageError(f"the model of {run} ({model}) cannot be loaded: {err}") from None
    if recorded and spec.name != recorded:
        raise UsageError(f"{run} is a run of model {recorded!r}, not {spec.name!r}")
    source = str(attrs.get("ppl_data_source") or "")
    if data_file:
        data, source = load_data_file(data_file), str(data_file)
        check_data(spec.model, data, f"data file {data_file}")
    elif source and source != spec.data_source and Path(source).is_file():
        data = load_data_file(source)
    elif source and source != spec.data_source:
        raise UsageError(
            f"{run} was sampled with data {source}, which does not exist here: pass it with "
            "--data FILE"
        )
    else:
        data = spec.data
    return spec, data, source


def changes_since(attrs, spec: ModelSpec, data: dict) -> list[str]:
    """What differs from when the run was sampled, in words ("data (key(s) y differ)", "model
    source (FILE was edited)"); runs saved before ppl kept fingerprints are not checked."""
    from ppl.runs.pipelines import source_fingerprint

    changes = []
    saved_data = attrs.get("ppl_data_sha256")
    if saved_data is not None:
        saved, now = json.loads(str(saved_data)), data_fingerprint(data)
        keys = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if keys:
            changes.append(f"data (key(s) {', '.join(keys)} differ)")
    saved_model = attrs.get("ppl_model_sha256")
    if saved_model is not None and str(saved_model) != source_fingerprint(spec.source):
        changes.append(f"model source ({spec.file or spec.name} was edited)")
    return changes
