"""The ``ppl`` command end to end, through ``python -m ppl`` in a subprocess.

A zoo run (non-centered eight schools at target_accept 0.99: no divergences, and 2,000
draws give bulk and tail ESS far above the 400 needed) is sampled, summarized and
reported, and must be trusted; a centered eight schools with 30 warmup steps diverges
and must not be; the report opens in headless Chromium without console errors and with
every figure decoded. Bad input exits 2 with one line.
"""

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ppl import cli
from ppl.runs import load_run, run_attrs

ROOT = Path(__file__).resolve().parents[1]

CENTERED = '''\
"""Centered eight schools: a funnel that NUTS cannot sample without divergences."""
import jax.numpy as jnp

import ppl
import ppl.distributions as dist

description = "Centered eight schools"
data = {
    "J": 8,
    "sigma": jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]),
    "y": jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]),
}
dims = {"theta": ["school"], "y": ["school"]}


def model(J, sigma, y=None):
    mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
    tau = ppl.sample("tau", dist.HalfCauchy(5.0))
    with ppl.plate("school", J):
        theta = ppl.sample("theta", dist.Normal(mu, tau))
        ppl.sample("y", dist.Normal(theta, sigma), obs=y)
'''


def ppl_cmd(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "ppl", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=600,
    )


def assert_one_line_error(out, *fragments):
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("ppl: error: ")
    assert "Traceback" not in out.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def good_run(workdir):
    run = workdir / "good.nc"
    out = ppl_cmd(
        "sample", "eight_schools", "--chains", 4, "--warmup", 500, "--draws", 500,
        "--target-accept", 0.99, "--seed", 1, "--out", run, "--strict",
    )  # fmt: skip
    return run, out


@pytest.fixture(scope="module")
def good_report(workdir, good_run):
    run, _ = good_run
    html = workdir / "good.html"
    out = ppl_cmd("report", run, "-o", html)
    return html, out


def test_sample_a_zoo_model(good_run):
    run, out = good_run
    assert out.returncode == 0, out.stderr
    assert "Verdict: TRUST" in out.stdout
    assert "sampling" in out.stderr  # the progress bar
    tree = load_run(run)
    assert {"posterior", "sample_stats", "log_likelihood", "observed_data"} <= set(tree.children)
    assert tree["posterior_predictive"]["y"].dims == ("chain", "draw", "school")
    assert tree["posterior"].sizes["chain"] == 4 and tree["posterior"].sizes["draw"] == 500
    attrs = run_attrs(tree)
    assert attrs["ppl_settings"]["num_warmup"] == 500
    assert attrs["ppl_settings"]["target_accept_prob"] == 0.99
    assert attrs["ppl_seed"] == 1 and attrs["ppl_max_tree_depth"] == 10
    assert attrs["ppl_complete"] == 1
    assert "def model(J, sigma, y=None)" in attrs["ppl_model_source"]
    assert {"jax", "numpyro", "arviz-stats", "ppl"} <= set(attrs["ppl_versions"])
    assert attrs["ppl_timing"]["sampling_s"] > 0
    assert attrs["ppl_command"].startswith("ppl sample eight_schools")


def test_summary(good_run):
    run, _ = good_run
    out = ppl_cmd("summary", run, "--strict")
    assert out.returncode == 0, out.stderr
    for text in ("eight_schools: NUTS, 4 chain(s) x 500 draws", "theta[A]", "tau", "r_hat",
                 "ess_tail", "Number of divergences: 0", "Verdict: TRUST"):  # fmt: skip
        assert text in out.stdout, text


def test_report(good_report):
    html, out = good_report
    assert out.returncode == 0, out.stderr
    assert "verdict: trust" in out.stdout
    text = html.read_text()
    assert 'data-verdict="trust"' in text and "Verdict: Trust" in text
    assert "Figure failed" not in text
    # energy, trace, rank, predictive check, Pareto k (no divergences: no pair plot)
    assert text.count('<img src="data:image/png;base64,') == 5


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_renders_in_headless_chromium(good_report, workdir):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary found (Debian: apt-get install chromium); not checked")
    html, _ = good_report
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--disable-dev-shm-usage",
        f"--user-data-dir={workdir / 'chromium-profile'}",
    ]
    shot = workdir / "report.png"
    out = subprocess.run(
        [browser, *flags, "--enable-logging=stderr", "--v=0", f"--screenshot={shot}",
         "--window-size=1200,4000", html.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.exists() and shot.stat().st_size > 50_000, out.stderr[-2000:]
    console = [line for line in out.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # the page has no scripts: any console message is an error

    # every <img> must decode: a copy of the page counts the decoded images on load
    probe = workdir / "probe.html"
    probe.write_text(
        html.read_text().replace(
            "</body>",
            "<script>window.addEventListener('load', () => {"
            "const ok = [...document.images].filter(i => i.complete && i.naturalWidth > 0);"
            "document.body.setAttribute('data-decoded', ok.length + '/' + "
            "document.images.length);});</script></body>",
        )
    )
    out = subprocess.run(
        [browser, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    decoded = re.search(r'data-decoded="(\d+)/(\d+)"', out.stdout)
    assert decoded, out.stderr[-2000:]
    assert decoded.group(1) == decoded.group(2) == "5"


def test_bad_run_is_not_trusted(workdir):
    model = workdir / "centered.py"
    model.write_text(CENTERED)
    out = ppl_cmd(
        "sample", model, "--chains", 2, "--warmup", 30, "--draws", 200, "--seed", 0,
        "--out", workdir / "bad.nc", "--strict", "--no-progress",
    )  # fmt: skip
    assert out.returncode == 1, out.stderr  # --strict: failed diagnostics
    assert "Verdict: DO NOT TRUST" in out.stdout
    # the centered funnel with 30 warmup iterations: stuck chains (R-hat) or divergences
    # (which of the two depends on the seed), each reported
    assert re.search(
        r"\[(FAIL| ok )\] divergences: \d+ of 400 draws|divergences: no divergent", out.stdout
    ), out.stdout
    assert re.search(r"\[FAIL\] (R-hat|divergences): ", out.stdout), out.stdout
    tree = load_run(workdir / "bad.nc")
    assert tree["posterior"]["theta"].dims == ("chain", "draw", "school")
    assert "Centered eight schools" in tree.attrs["ppl_model_source"]


def test_missing_model_name():
    out = ppl_cmd("sample", "no_such_model", "--out", "x.nc")
    assert_one_line_error(out, "no model named 'no_such_model'", "eight_schools")


def test_data_keys_that_do_not_match_the_model(workdir):
    data = workdir / "schools.json"
    data.write_text('{"J": 8, "sigma": [1, 2], "y": [1, 2], "school_names": ["a"], "n": 3}')
    out = ppl_cmd("sample", "eight_schools", "--data", data, "--out", workdir / "x.nc")
    assert_one_line_error(out, "key(s) n, school_names match no argument", "J, sigma, y")
    assert not (workdir / "x.nc").exists()


def test_corrupt_run_file(workdir, capsys):
    run = workdir / "corrupt.nc"
    run.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 100)
    assert_one_line_error(ppl_cmd("summary", run), "could not be read as a netCDF run")
    code, out = run_main(capsys, "report", run, "-o", workdir / "c.html")
    assert code == 2 and "could not be read as a netCDF run" in out.err


# in-process: the same main(), without the cost of a new interpreter


def run_main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr()


def test_models_lists_the_zoo(capsys):
    code, out = run_main(capsys, "models")
    assert code == 0
    line = next(x for x in out.out.splitlines() if x.startswith("eight_schools"))
    assert "coaching" in line


def test_usage_errors_are_one_line(capsys, tmp_path):
    cases = [
        (["sample", "eight_schools"], "needs --out RUN"),
        (["sample", "eight_schools", "--chains", "0", "--out", "r.nc"], "must be at least 1"),
        (["sample", "eight_schools", "--method", "gibbs", "--out", "r.nc"], "invalid choice"),
        (["sample", "eight_schools", "--resume", str(tmp_path / "r.nc")], "does not exist"),
        (["sample", str(tmp_path / "nope.py"), "--out", "r.nc"], "does not exist"),
        (["sample", "eight_schools", "--data", str(tmp_path / "d.json"), "--out",
          str(tmp_path / "r.nc")], "data file"),
        (["summary", str(tmp_path / "missing.nc")], "does not exist"),
        (["report", str(tmp_path / "missing.nc"), "-o", "r.html"], "does not exist"),
        (["frobnicate"], "invalid choice"),
    ]  # fmt: skip
    for argv, fragment in cases:
        code, out = run_main(capsys, *argv)
        assert code == 2, argv
        lines = out.err.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (argv, out.err)
    existing = tmp_path / "exists.nc"
    existing.write_text("")
    code, out = run_main(capsys, "sample", "eight_schools", "--out", existing)
    assert code == 2 and "--force" in out.err


def test_model_file_with_a_broken_import(capsys, tmp_path):
    model = tmp_path / "broken.py"
    model.write_text(textwrap.dedent("import no_such_module\n"))
    code, out = run_main(capsys, "sample", model, "--out", tmp_path / "r.nc")
    assert code == 2 and "ModuleNotFoundError" in out.err and "no_such_module" in out.err
    model.write_text("x = 1\n")
    code, out = run_main(capsys, "sample", model, "--out", tmp_path / "r.nc")
    assert code == 2 and "defines no function named 'model'" in out.err


@pytest.mark.slow
@pytest.mark.parametrize("method", ["advi", "pathfinder"])
def test_variational_methods(workdir, method):
    run, html = workdir / f"{method}.nc", workdir / f"{method}.html"
    out = ppl_cmd("sample", "eight_schools", "--method", method, "--steps", 2000, "--draws",
                  500, "--out", run, "--no-progress")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Pareto k of the importance weights is" in out.stdout
    tree = load_run(run)
    assert tree["posterior"].sizes["chain"] == 1 and tree["posterior"].sizes["draw"] == 500
    assert "loss" in tree["optimization"] and "posterior_predictive" in tree.children
    assert float(tree.attrs["ppl_pareto_k"]) > -1
    out = ppl_cmd("report", run, "-o", html)
    assert out.returncode == 0, out.stderr
    text = html.read_text()
    assert "<h2>Variational fit</h2>" in text and 'alt="loss curve"' in text
    assert "Figure failed" not in text


def test_strict_fails_only_on_failed_checks(capsys, tmp_path):
    import arviz_base
    import numpy as np

    from ppl.runs import Settings, save_run

    rng = np.random.default_rng(0)
    depth = np.full((4, 500), 3)
    depth[0, :10] = 10  # tree depth saturation warns ("look closer")
    stats = {"diverging": np.zeros((4, 500), bool), "tree_depth": depth}
    for name, diverging, code in (("warn", 0, 0), ("fail", 2, 1)):
        stats["diverging"][1, :diverging] = True
        tree = arviz_base.from_dict(
            {"posterior": {"x": rng.normal(size=(4, 500))}, "sample_stats": stats}
        )
        tree.attrs.update({"ppl_format": "ppl-run-1", "ppl_max_tree_depth": 10,
                           "ppl_settings": Settings().to_json()})  # fmt: skip
        save_run(tree, tmp_path / f"{name}.nc")
        assert run_main(capsys, "summary", tmp_path / f"{name}.nc", "--strict")[0] == code
        assert run_main(capsys, "summary", tmp_path / f"{name}.nc")[0] == 0


MIXTURE_FILE = """
import numpy as np
import ppl
import ppl.distributions as dist

data = {"y": np.array([-2.1, -1.7, -2.4, 1.8, 2.2, 2.0, 1.9])}


@ppl.infer.config_enumerate
def model(y):
    mu = ppl.sample("mu", dist.Normal(np.array([-2.0, 2.0]), 1.0).to_event(1))
    with ppl.plate("obs", y.shape[0]):
        z = ppl.sample("z", dist.Categorical(np.array([0.5, 0.5])))
        ppl.sample("y", dist.Normal(mu[z], 0.5), obs=y)
"""


def test_sample_puts_enumerated_sites_into_the_posterior(capsys, tmp_path):
    from ppl.runs import load_run

    (tmp_path / "mixture.py").write_text(MIXTURE_FILE)
    common = ["sample", tmp_path / "mixture.py", "--chains", 1, "--warmup", 50, "--draws", 50]
    code, _ = run_main(capsys, *common, "--no-progress", "--out", tmp_path / "with")
    assert code == 0
    tree = load_run(tmp_path / "with")
    assert tree.posterior["z"].dims == ("chain", "draw", "obs")
    assert tree.posterior["z"].mean(("chain", "draw")).values.round().tolist() == [0] * 3 + [1] * 4
    assert tree.log_likelihood["y"].shape == (1, 50, 7)
    code, _ = run_main(capsys, *common, "--no-progress", "--no-discrete", "--out", tmp_path / "w")
    assert code == 0
    assert "z" not in load_run(tmp_path / "w").posterior


def test_an_interrupt_after_the_run_is_saved_says_so(tmp_path, monkeypatch, capsys, good_run):
    import ppl.report

    def interrupted(tree):
        raise KeyboardInterrupt

    monkeypatch.setattr(ppl.report, "assess", interrupted)
    out = tmp_path / "copy.nc"
    status = cli._finish_sample(load_run(good_run[0]), out, "eight_schools", strict=False)
    assert status == 130
    err = capsys.readouterr().err
    assert f"{out} is saved and complete" in err and "ppl summary" in err
    assert load_run(out).attrs["ppl_complete"] == 1
