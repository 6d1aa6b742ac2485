"""Project-level checks: import order pitfalls, public API, lint."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_arviz_before_ppl():
    # arviz 1.3 may register a lazy stub for numpyro; ppl must still work after it
    code = (
        "import arviz, ppl, jax, jax.numpy as jnp\n"
        "import ppl.distributions as dist\n"
        "def m():\n"
        "    ppl.sample('x', dist.Normal(0., 1.))\n"
        "ld = ppl.logdensity(m)\n"
        "print(float(ld(jnp.zeros(1))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert abs(float(out.stdout.strip()) + 0.9189385) < 1e-5


def test_public_api():
    import ppl

    for name in ppl.__all__:
        assert hasattr(ppl, name), name
    assert ppl.distributions.Normal is __import__("numpyro").distributions.Normal


def _ruff() -> str:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    return ruff


def test_ruff_check_is_clean():
    out = subprocess.run([_ruff(), "check", "."], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_is_clean():
    out = subprocess.run(
        [_ruff(), "format", "--check", "."], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_readme_examples_run(capsys):
    import re

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for code in blocks:  # later blocks build on the names of earlier ones
        exec(compile(code, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "mu" in out and "sigma" in out and "r_hat" in out
    assert namespace["mcmc"].get_samples()["mu"].shape == (500 * 4,)
