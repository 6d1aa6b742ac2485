"""Execute the example notebooks in place, so they are committed with their outputs.

Usage (from the repository root)::

    python notebooks/run.py                      # every notebook, full settings
    python notebooks/run.py 01_getting_started   # some of them (names without .ipynb)
    python notebooks/run.py --quick              # the small settings the tests use

Each notebook reads ``PPL_NOTEBOOK_QUICK`` in its first code cell: ``1`` selects small
settings (few warmup iterations and draws), for the test suite; unset, the full analysis.
Notebooks run with the ``notebooks/`` folder as their working directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def notebooks(names: list[str] | None = None) -> list[Path]:
    """The notebooks (``NN_name.ipynb`` in this folder), all or those named."""
    found = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return found
    by_name = {p.stem: p for p in found}
    missing = [n for n in names if n.removesuffix(".ipynb") not in by_name]
    if missing:
        raise SystemExit(f"no such notebook: {', '.join(missing)} (have {', '.join(by_name)})")
    return [by_name[n.removesuffix(".ipynb")] for n in names]


def execute(path: Path, *, quick: bool, cwd: Path, timeout: int = 1800):
    """Run a notebook top to bottom; returns the executed ``nbformat`` notebook.

    Raises ``nbclient.exceptions.CellExecutionError`` (with the cell's source and the
    traceback) at the first failing cell.
    """
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.get("PPL_NOTEBOOK_QUICK")
    os.environ["PPL_NOTEBOOK_QUICK"] = "1" if quick else "0"
    try:
        client = nbclient.NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(cwd)}},
        )
        client.execute()
    finally:
        if env_before is None:
            os.environ.pop("PPL_NOTEBOOK_QUICK", None)
        else:
            os.environ["PPL_NOTEBOOK_QUICK"] = env_before
    return nb


def main(argv: list[str] | None = None) -> int:
    import nbformat

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="small settings (as in the tests)")
    args = parser.parse_args(argv)
    for path in notebooks(args.names):
        start = time.perf_counter()
        print(f"{path.name} ...", end=" ", flush=True)
        nb = execute(path, quick=args.quick, cwd=HERE)
        if not args.quick:  # the committed outputs are the full analysis
            nbformat.write(nb, path)
        print(f"{time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
