"""The example notebooks (``notebooks/``) run top to bottom, and are committed executed.

Each notebook runs in a Jupyter kernel (``nbclient``) with ``PPL_NOTEBOOK_QUICK=1``, which
its first code cell reads to pick small settings, with the ``notebooks/`` folder as its
working directory (the notebooks write nothing there: files go to temporary folders).
XLA's backend optimisations are off in the kernel (as in ``tests/test_docs.py``): the
notebooks compile several samplers, and unoptimised compilation is several times faster.

The committed copies carry the outputs of a full run (``python notebooks/run.py``); the
tests check that they do, so the notebooks read well on a code host.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
HAVE_JUPYTER = all(
    importlib.util.find_spec(m) is not None for m in ("nbclient", "nbformat", "ipykernel")
)
needs_jupyter = pytest.mark.skipif(
    not HAVE_JUPYTER, reason="needs nbclient, nbformat and ipykernel (pip install -e '.[dev]')"
)
PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def test_at_least_six_notebooks():
    assert len(PATHS) >= 6, [p.name for p in PATHS]


@needs_jupyter
@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    assert "PPL_NOTEBOOK_QUICK" in code[0].source, (
        f"{path.name}: the first code cell must read PPL_NOTEBOOK_QUICK (small test settings)"
    )
    unrun = [i for i, c in enumerate(code, 1) if c.source.strip() and c.execution_count is None]
    assert not unrun, f"{path.name}: code cells {unrun} have no outputs: run notebooks/run.py"
    counts = [c.execution_count for c in code if c.source.strip()]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: cells were not executed top to bottom in one session ({counts})"
    )
    errors = [
        i
        for i, c in enumerate(code, 1)
        for out in c.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: cells {errors} were committed with errors"
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= 5, f"{path.name}: too little prose"


@needs_jupyter
@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch):
    spec = importlib.util.spec_from_file_location("notebooks_run", NOTEBOOKS / "run.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    flags = os.environ.get("XLA_FLAGS", "")
    monkeypatch.setenv("XLA_FLAGS", f"{flags} {FAST_XLA}".strip())
    monkeypatch.setenv("MPLBACKEND", "Agg")
    runner.execute(path, quick=True, cwd=NOTEBOOKS, timeout=600)
