"""The documentation: every ``python`` code block of every page runs, and the site builds.

Blocks on one page run in order in one namespace (later blocks use the names of earlier
ones, as a reader would); blocks fenced as ``bash``, ``text``, ``stan`` ... are not run.
A fence may be indented (inside an admonition or a tab): the block is dedented first.

The pages run in one fresh Python process (``python tests/test_docs.py PAGE ...``), one
namespace per page, each in its own temporary working directory, with XLA's backend
optimisations off (``--xla_backend_optimization_level=0``): the examples compile several
small samplers, and unoptimised compilation is several times faster while the results are
the same up to float rounding. The process reports one JSON line per page.

The strict MkDocs build (``mkdocs build --strict``: any warning fails, including
mkdocstrings' complaints about docstrings and broken links) runs when MkDocs and
mkdocstrings are installed (``pip install -e ".[docs]"``, also part of the ``dev`` extra).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^( *)```python[^\n]*\n(.*?)^\1```", re.S | re.M)
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def python_blocks(text: str) -> list[str]:
    """The ``python`` fenced blocks of a Markdown page, dedented, in order."""
    return [textwrap.dedent(code) for _, code in FENCE.findall(text)]


def pages_with_code() -> list[str]:
    """Docs pages (relative to ``docs/``) with at least one ``python`` block."""
    return sorted(
        p.relative_to(DOCS).as_posix()
        for p in DOCS.rglob("*.md")
        if python_blocks(p.read_text(encoding="utf-8"))
    )


def run_page(page: str, text: str | None = None) -> dict:
    """Run one page's blocks in a fresh namespace, in a temporary working directory.

    Returns ``{"page", "ok", "seconds"}`` plus, on failure, the failing ``block`` (1-based),
    its ``code`` and the traceback as ``error``. ``text`` replaces the page's file.
    """
    if text is None:
        text = (DOCS / page).read_text(encoding="utf-8")
    blocks = python_blocks(text)
    namespace: dict = {"__name__": "__docs__"}
    start = time.perf_counter()
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the examples' own warnings are not under test here
        os.chdir(tmp)
        try:
            for i, code in enumerate(blocks, 1):
                try:
                    exec(compile(code, f"docs/{page} [python block {i}]", "exec"), namespace)
                except BaseException:
                    return {
                        "page": page,
                        "ok": False,
                        "block": i,
                        "code": code,
                        "error": traceback.format_exc(limit=-8),
                        "seconds": time.perf_counter() - start,
                    }
        finally:
            os.chdir(cwd)
    return {"page": page, "ok": True, "blocks": len(blocks), "seconds": time.perf_counter() - start}


def main(pages: list[str]) -> None:
    """Run the pages, printing one JSON line per page (the examples' output goes to stderr)."""
    sys.path.insert(0, str(ROOT))
    out = sys.stdout
    sys.stdout = sys.stderr
    for page in pages:
        out.write(json.dumps(run_page(page)) + "\n")
        out.flush()


def run_pages(pages: list[str], timeout: float = 600) -> dict[str, dict]:
    """Run ``pages`` in one fresh process; ``{page: result}``.

    The process gets an empty JAX compilation cache of its own, so that a sampler compiled
    by one page (e.g. eight schools with the same settings) is reused by the next page
    instead of compiled again; nothing is kept between test runs.
    """
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FAST_XLA}".strip()
    env.setdefault("JAX_PLATFORMS", "cpu")
    with tempfile.TemporaryDirectory(prefix="ppl-docs-jax-cache-") as cache:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), *pages],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=timeout,
        )
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result["page"]] = result
    for page in pages:
        results.setdefault(
            page,
            {
                "page": page,
                "ok": False,
                "error": f"the docs runner stopped (exit {proc.returncode}) before this page:\n"
                + proc.stderr[-4000:],
            },
        )
    return results


PAGES = pages_with_code()


@pytest.fixture(scope="module")
def page_results() -> dict[str, dict]:
    return run_pages(PAGES)


def test_blocks_are_found():
    text = (
        "a\n```python\nx = 1\n```\n```bash\nls\n```\n"
        '!!! note\n    ```python\n    y = x\n    ```\n```python title="t"\nz = 2\n```\n'
    )
    assert python_blocks(text) == ["x = 1\n", "y = x\n", "z = 2\n"]
    assert {"index.md", "concepts.md", "guide/mcmc.md"} <= set(PAGES)


def test_runner_reports_a_broken_block():
    text = "```python\nx = 1\n```\ntext\n```python\ny = x + undefined_name\n```\n"
    result = run_page("broken.md", text)
    assert not result["ok"] and result["block"] == 2
    assert "NameError" in result["error"] and "undefined_name" in result["error"]
    assert "docs/broken.md [python block 2]" in result["error"]
    assert run_page("fine.md", "```python\nx = 1\nassert x == 1\n```\n")["ok"]


@pytest.mark.parametrize("page", PAGES)
def test_page_code_runs(page, page_results):
    result = page_results[page]
    if not result["ok"]:
        where = f"python block {result['block']}" if "block" in result else "the runner"
        pytest.fail(
            f"docs/{page}: {where} failed\n{result.get('code', '')}\n{result['error']}",
            pytrace=False,
        )


def test_mkdocs_build_strict(tmp_path):
    missing = [
        m for m in ("mkdocs", "mkdocstrings", "material") if importlib.util.find_spec(m) is None
    ]
    if missing:
        pytest.skip(f'{", ".join(missing)} not installed (pip install -e ".[docs]")')
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    assert "WARNING" not in log, log
    site = tmp_path / "site"
    api = (site / "api" / "infer" / "index.html").read_text(encoding="utf-8")
    assert 'id="ppl.infer.driver.mcmc.MCMC"' in api  # the reference is generated from docstrings
    for html in (site / "api").rglob("*.html"):
        text = html.read_text(encoding="utf-8")
        # docstrings' reST markup was rewritten to Markdown (docs/_ext/rst_docstrings.py)
        assert ":class:" not in text and ":func:" not in text and "``" not in text, html
    assert (site / "benchmarks" / "full.json").exists()


if __name__ == "__main__":
    main(sys.argv[1:])
