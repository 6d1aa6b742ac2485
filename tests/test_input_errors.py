"""Input mistakes a new user makes get errors that name the argument, the file or the line
(issue 17): an int where a key goes, a list as data, ragged lists, CSV data files, a seed out
of range, a bad distribution parameter before the first site."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
import ppl.distributions as dist
from ppl.infer.keys import check_key
from ppl.runs import UsageError, load_data_file

ROOT = Path(__file__).resolve().parents[1]


def model(y=None):
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    with ppl.plate("n", 3):
        ppl.sample("y", dist.Normal(mu, 1.0), obs=y)


def _mcmc(m=model):
    return ppl.infer.MCMC(
        ppl.infer.NUTS(m), num_warmup=20, num_samples=20, num_chains=1, progress_bar=False
    )


@pytest.mark.parametrize("key", [0, 3.5, "seed", np.zeros(2, np.float32)])
def test_a_key_that_is_not_one_names_the_argument_and_the_fix(key):
    with pytest.raises(TypeError, match=r"key must be a JAX random key, got .*jax\.random\.key"):
        _mcmc().run(key, y=jnp.ones(3))


def test_keys_of_both_kinds_are_accepted():
    assert check_key(jax.random.key(0)) is not None
    assert check_key(jax.random.PRNGKey(0)) is not None
    with pytest.raises(TypeError, match="rng_key must be"):
        check_key(7, "rng_key")


def test_a_list_of_numbers_as_data_works_like_an_array():
    a, b = _mcmc(), _mcmc()
    a.run(jax.random.PRNGKey(1), y=[0.5, 1.0, 1.5])
    b.run(jax.random.PRNGKey(1), y=jnp.array([0.5, 1.0, 1.5]))
    np.testing.assert_array_equal(a.get_samples()["mu"], b.get_samples()["mu"])


def test_a_ragged_list_names_the_argument():
    def rows(x):
        ppl.sample("m", dist.Normal(0.0, 1.0))

    with pytest.raises(TypeError, match=r"model argument 'x' is a ragged list \(rows of lengths"):
        ppl.logdensity(rows, [[1.0, 2.0], [3.0]])


def test_a_bad_distribution_parameter_names_the_model_line():
    def bad():
        ppl.sample("scale_site", dist.Normal(0.0, -1.0))

    with pytest.raises(ValueError, match="invalid scale") as err:
        ppl.logdensity(bad)
    note = " ".join(getattr(err.value, "__notes__", []))
    assert "before its first site" in note
    assert "test_input_errors.py:" in note and 'ppl.sample("scale_site"' in note


def test_ragged_json_names_the_key(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"y": [[1, 2, 3], [4, 5]]}))
    with pytest.raises(UsageError, match=r"key 'y' is a ragged list \(rows of lengths 2, 3\)"):
        load_data_file(path)
    path.write_text(json.dumps({"y": [1, [2, 3]]}))
    with pytest.raises(UsageError, match="numbers and lists mixed"):
        load_data_file(path)


def test_csv_data_files_give_one_array_per_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("county,floor,log_radon\n0,1,0.8\n1,0,1.2\n1,1,0.1\n")
    data = load_data_file(path)
    assert sorted(data) == ["county", "floor", "log_radon"]
    assert data["county"].dtype.kind == "i" and data["log_radon"].dtype.kind == "f"
    np.testing.assert_allclose(data["log_radon"], [0.8, 1.2, 0.1], rtol=1e-6)
    path.write_text("county,name\n0,a\n1,b\n")
    with pytest.raises(UsageError, match="column 'name' is not numeric"):
        load_data_file(path)
    path.write_text("a,b\n1,2\n3,\n")
    with pytest.raises(UsageError, match=r"column 'b' has empty or missing values \(line\(s\) 3"):
        load_data_file(path)


def test_a_json_error_mentions_the_other_formats(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(UsageError, match=r"not valid JSON.*\.csv"):
        load_data_file(path)


def _ppl(*args):
    return subprocess.run(
        [sys.executable, "-m", "ppl", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )


def test_a_huge_seed_is_a_usage_error_naming_the_option(tmp_path):
    out = _ppl("sample", "eight_schools", "--seed", "99999999999999999999", "--out",
               tmp_path / "r.nc")  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "--seed" in out.stderr and "must be at most" in out.stderr
    assert "Traceback" not in out.stderr and "OverflowError" not in out.stderr
