"""The package's layout holds: every module imports on its own, no import cycles, the folders
of ``ppl/infer`` import only downward, and no module outgrows ~600 lines."""

from __future__ import annotations

import ast
import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ppl"
MAX_LINES = 600

# ppl.infer's folders in the order data flows through them: a module may import from its own
# folder and from folders ranked below it, never above (``base`` and ``core`` depend on no
# other part of ppl.infer; ``driver`` may use everything).
RANKS = {
    "base": 0,
    "keys": 0,
    "core": 0,
    "kernels": 1,
    "results": 1,
    "vi": 2,
    "warmup": 3,
    "driver": 4,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(p) for p in PACKAGE.rglob("*.py"))


def imports_of(path: Path, top_level_only: bool) -> set[str]:
    """The ``ppl`` modules a file imports (at module level only, or anywhere)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            # "from ppl.infer import kernels" imports the submodule ppl.infer.kernels
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        found.update(n for n in names if n == "ppl" or n.startswith("ppl."))
    return found


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    return {
        module_name(p): {m for m in imports_of(p, top_level_only) if m in MODULES}
        for p in PACKAGE.rglob("*.py")
    }


def test_there_are_modules_to_check():
    assert "ppl.infer.driver.mcmc" in MODULES and "ppl.infer.kernels.nuts" in MODULES
    assert "ppl.infer.kernels.nuts" in _graph(True)["ppl.infer.driver.config"]


def test_no_import_cycles_at_module_level():
    graph = _graph(top_level_only=True)
    # a package imports its parent packages first: those edges are not cycles
    visiting, done, cycles = [], set(), []

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            cycles.append([*visiting[visiting.index(module) :], module])
            return
        visiting.append(module)
        for target in sorted(graph.get(module, ())):
            if not module.startswith(f"{target}."):  # importing an enclosing package
                visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _folder(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 3 and parts[:2] == ["ppl", "infer"]:
        return parts[2]
    return None


def test_infer_folders_import_only_downward():
    """Module-level and lazy imports alike: a lazy import upward is still a dependency."""
    wrong = []
    for path in (PACKAGE / "infer").rglob("*.py"):
        source = module_name(path)
        folder = _folder(source)
        if folder is None:  # ppl/infer/__init__.py re-exports everything
            continue
        for target in imports_of(path, top_level_only=False):
            other = _folder(target)
            if other is None:
                if target == "ppl.infer":
                    wrong.append(f"{source} imports the ppl.infer package (import the module)")
                continue
            if RANKS[other] > RANKS[folder]:
                wrong.append(f"{source} ({folder}) imports {target} ({other})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_module_over_the_line_limit():
    long = {
        str(p.relative_to(ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by concept): {long}"


def test_every_module_has_a_docstring():
    missing = [
        module_name(p)
        for p in PACKAGE.rglob("*.py")
        if not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))
    ]
    assert not missing, missing


def _import_alone(module: str) -> tuple[str, int, str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        timeout=300,
    )
    return module, out.returncode, out.stderr[-2000:]


@pytest.mark.timeout(900)
def test_every_module_imports_alone():
    """Each module in a fresh interpreter of its own (as a user's first import would be)."""
    workers = max(
        1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2)
    )
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(_import_alone, MODULES))
    failed = {m: err for m, code, err in results if code != 0}
    assert not failed, "\n\n".join(f"{m}:\n{err}" for m, err in failed.items())


# the __all__ of every module of ppl.infer's flat layout (and ppl.convert) at commit 817372b
OLD_PUBLIC_NAMES = {
    "ppl.infer.mcmc": ("HMC", "MCMC", "NUTS"),
    "ppl.infer.nuts": ("NUTSInfo", "init", "step"),
    "ppl.infer.hmc": (
        "HMCInfo",
        "HMCState",
        "IntegratorState",
        "energy_error",
        "init",
        "step",
        "symmetric_acceptance",
        "velocity_verlet",
    ),
    "ppl.infer.metrics": (
        "LowRankInverseMass",
        "is_dense",
        "is_diagonal",
        "kinetic_energy",
        "low_rank_to_dense",
        "momentum_factor",
        "sample_momentum",
        "velocity",
    ),
    "ppl.infer.adaptation": (
        "DualAveraging",
        "DualAveragingState",
        "WarmupInfo",
        "WarmupSchedule",
        "WarmupState",
        "WelfordState",
        "dual_averaging",
        "find_reasonable_step_size",
        "stan_window_schedule",
        "stan_windows",
        "warmup_final",
        "warmup_init",
        "warmup_restart",
        "warmup_step",
        "warmup_update",
        "welford_covariance",
        "welford_init",
        "welford_update",
        "window_adaptation",
    ),
    "ppl.infer.grad_adaptation": (
        "DrawGradBuffer",
        "DrawGradStats",
        "GradWarmupSchedule",
        "GradWarmupState",
        "LowRankSettings",
        "buffer_size",
        "grad_diagonal",
        "grad_warmup_after",
        "grad_warmup_before",
        "grad_warmup_final",
        "grad_warmup_init",
        "grad_window_schedule",
        "initial_diagonal",
        "low_rank_metric",
        "stats_init",
        "stats_update",
    ),
    "ppl.infer.chees": ("ChEES", "ChEESState"),
    "ppl.infer.meads": ("MEADS", "MEADSParameters", "MEADSState", "meads_parameters"),
    "ppl.infer.ensemble": (
        "EnsembleCarry",
        "EnsembleKernel",
        "EnsembleProgram",
        "IterationResult",
        "chain_mean",
        "chain_variance",
        "halton",
        "max_eigenvalue",
        "replicate",
        "shared",
    ),
    "ppl.infer.sharding": ("AXES", "make_mesh", "multiprocess", "spans_processes", "to_host"),
    "ppl.infer.elbo": ("ELBO", "RenyiELBO", "TraceMeanField_ELBO", "Trace_ELBO", "get_traces"),
    "ppl.infer.guides": (
        "AutoDelta",
        "AutoGuide",
        "AutoLaplaceApproximation",
        "AutoLowRankMultivariateNormal",
        "AutoMultivariateNormal",
        "AutoNormal",
        "guide_to_datatree",
    ),
    "ppl.infer.svi": ("NonFiniteLossError", "SVI", "SVIRunResult", "SVIState"),
    "ppl.infer.lbfgs": (
        "CURVATURE_EPSILON",
        "Factors",
        "History",
        "NormalApproximation",
        "PathInfo",
        "STATUS",
        "approximation",
        "history_init",
        "history_update",
        "single_path",
    ),
    "ppl.infer.pathfinder": (
        "PathInfo",
        "PathfinderResult",
        "STATUS",
        "pathfinder",
        "pathfinder_init",
        "psis",
        "single_path",
    ),
    "ppl.infer.predictive": ("Predictive", "log_likelihood"),
    "ppl.convert": ("mcmc_to_datatree", "site_dims"),
}


def test_old_module_paths_still_work_with_a_deprecation_warning():
    import importlib
    import warnings

    import ppl
    from ppl.infer._moved import MOVED, REPLACED
    from ppl.infer.kernels.nuts import step

    assert set(OLD_PUBLIC_NAMES) == set(MOVED)
    with pytest.warns(DeprecationWarning, match=r"import step from ppl\.infer\.kernels\.nuts"):
        from ppl.infer.nuts import step as old_step
    assert old_step is step
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for module, names in OLD_PUBLIC_NAMES.items():
            old = importlib.import_module(module)
            replaced = REPLACED.get(module, ((), ""))[0]
            for name in names:
                if name in replaced:
                    with pytest.raises(AttributeError, match=f"{module}.{name} was replaced"):
                        getattr(old, name)
                else:
                    assert getattr(old, name) is not None, (module, name)
        # the old submodules as attributes of the package, e.g. ``from ppl.infer import nuts``
        from ppl.infer import mcmc

        assert mcmc.MCMC is ppl.infer.MCMC
    with pytest.raises(AttributeError, match=r"moved to ppl\.infer\.core\.metrics"):
        ppl.infer.metrics.no_such_name
    assert callable(ppl.infer.pathfinder)  # the function, as before; not the old module
