"""The ``ppl`` command: from a model to a saved run, a summary and a diagnostics report.

Commands::

    ppl models                                   list the zoo, one line each
    ppl sample MODEL [--data FILE] [--chains 4 --warmup 1000 --draws 1000 --seed 0
                     --method nuts|hmc|advi|pathfinder] --out RUN
    ppl summary RUN                              summary table, checks and verdict
    ppl report RUN -o report.html                self-contained HTML diagnostics report
    ppl loo RUN [--data FILE]                    PSIS-LOO in bounded memory

MODEL is a zoo name (``ppl models``) or the path of a Python file that defines
``model`` and its data (``load_data()`` or a ``data`` dict); ``--data FILE`` (JSON or
``.npz``) replaces that data, its keys being the model's keyword arguments (see
:mod:`ppl.runs`). RUN is a netCDF file holding the ArviZ DataTree of the run.

Exit status: 0 success; 1 the run's diagnostics failed and ``--strict`` was given (the
verdict is "do not trust"; "look closer" only warns); 2 bad usage or any other error,
reported as one line (``--debug`` shows the traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from ppl.runs import METHODS, UsageError

__all__ = ["main"]

EXIT_OK, EXIT_STRICT, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2)."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _count(low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    return parse


#: the largest seed: JAX's random keys take 63-bit integers
MAX_SEED = 2**63 - 1


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


def _real(low: float, inclusive: bool):
    """An argparse type: a finite number > ``low`` (>= with ``inclusive``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (value >= low if inclusive else value > low) or not math.isfinite(value):
            bound = f"{'>=' if inclusive else '>'} {low:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
        return value

    return parse


_positive = _real(0.0, inclusive=False)
_nonnegative = _real(0.0, inclusive=True)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser = _Parser(
        prog="ppl",
        description="Sample models, summarize runs and write diagnostics reports.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    sub.add_parser("models", help="list the models of the zoo", parents=[common])

    s = sub.add_parser(
        "sample",
        help="run inference on a model and save the run",
        parents=[common],
        description="Run inference on MODEL (a zoo name or a Python file defining `model` "
        "and `load_data()` or `data`) and save the run as a netCDF DataTree.",
    )
    s.add_argument("model", metavar="MODEL", help="zoo model name or path to a .py file")
    s.add_argument("--data", metavar="FILE", help="JSON or .npz file of the model's arguments")
    s.add_argument(
        "--out", "-o", metavar="RUN", help="run file to write (.nc); with --resume: that run"
    )
    s.add_argument("--method", default="nuts", choices=list(METHODS), help="default: nuts")
    s.add_argument("--chains", type=_count(1), default=4, help="default: 4")
    s.add_argument("--warmup", type=_count(0), default=1000, help="per chain; default: 1000")
    s.add_argument("--draws", type=_count(1), default=1000, help="per chain; default: 1000")
    s.add_argument(
        "--seed", type=_count(0, MAX_SEED), default=0, help=f"0 to {MAX_SEED} (default: 0)"
    )
    s.add_argument("--max-tree-depth", type=_count(1), default=10, help="NUTS; default: 10")
    s.add_argument("--target-accept", type=_probability, default=0.8, help="adaptation target; 0.8")
    s.add_argument("--num-steps", type=_count(1), default=16, help="HMC leapfrog steps; 16")
    s.add_argument("--dense-mass", action="store_true", help="adapt a dense mass matrix")
    s.add_argument("--steps", type=_count(1), default=10_000, help="ADVI optimizer steps")
    s.add_argument(
        "--learning-rate", type=_positive, default=0.01, help="ADVI Adam step size; 0.01"
    )
    s.add_argument(
        "--strict", action="store_true", help="exit 1 if a check failed (verdict: do not trust)"
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument(
        "--no-discrete",
        action="store_true",
        help="leave enumerated discrete sites out of the posterior (they are drawn by default)",
    )
    s.add_argument(
        "--no-rescue",
        action="store_true",
        help="do not restart a chain that falls away from the others during warmup",
    )
    s.add_argument(
        "--pointwise",
        choices=("auto", "always", "never"),
        default="auto",
        help="store log_likelihood and posterior_predictive (a value per draw and per "
        "observation): auto (default) unless a group exceeds 1e8 values; always; never",
    )
    s.add_argument("--force", action="store_true", help="overwrite RUN if it exists")
    s.add_argument(
        "--save-every",
        type=_nonnegative,
        default=10.0,
        metavar="SECONDS",
        help="nuts/hmc: save the run so far (incomplete, resumable) about this often while it "
        "runs, so a killed process loses at most that much; 0: only at the end (default: 10)",
    )
    s.add_argument(
        "--resume",
        metavar="RUN",
        help="continue an interrupted run (its settings and seed; the result equals an "
        "uninterrupted run draw for draw)",
    )
    s.add_argument(
        "--allow-changes",
        action="store_true",
        help="with --resume: resume although the data or the model's source differ from the "
        "run's (recorded in the run); by default that is refused",
    )

    m = sub.add_parser("summary", help="print a run's summary and verdict", parents=[common])
    m.add_argument("run", metavar="RUN")
    m.add_argument("--rows", type=_count(1), default=50, help="parameters listed (worst first)")
    m.add_argument("--all", action="store_true", help="list every parameter")
    m.add_argument(
        "--strict", action="store_true", help="exit 1 if a check failed (verdict: do not trust)"
    )

    r = sub.add_parser("report", help="write a run's HTML diagnostics report", parents=[common])
    r.add_argument("run", metavar="RUN")
    r.add_argument("-o", "--out", metavar="HTML", required=True, help="report file to write")
    r.add_argument(
        "--strict", action="store_true", help="exit 1 if a check failed (verdict: do not trust)"
    )
    r.add_argument("--no-progress", action="store_true", help="no progress messages")

    lo = sub.add_parser(
        "loo",
        help="PSIS-LOO of a run, in bounded memory (also when it did not store log_likelihood)",
        parents=[common],
    )
    lo.add_argument("run", metavar="RUN")
    lo.add_argument("--data", metavar="FILE", help="the run's data, if not where it was")
    lo.add_argument("--var", metavar="SITE", help="observed site (default: the first)")
    lo.add_argument(
        "--recompute", action="store_true", help="recompute the log-likelihood even if stored"
    )
    lo.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


# ---------------------------------------------------------------------- commands


def _one_line_cut(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _models(args) -> int:
    from ppl import zoo

    names = zoo.names()
    width = max((len(n) for n in names), default=0)
    room = max(shutil.get_terminal_size((100, 24)).columns, 60) - width - 2
    for name in names:
        try:
            description = zoo.load(name).description
        except Exception as err:  # one broken module must not hide the others
            description = f"(cannot be imported: {type(err).__name__}: {err})"
        print(f"{name:{width}s}  {_one_line_cut(str(description), room)}")
    return EXIT_OK


def _resume(args, argv: Sequence[str]) -> int:
    """Continue the interrupted run ``args.resume`` from its saved sampler state (refused
    when the data or the model's source changed, unless ``--allow-changes``)."""
    from ppl.runs import RunLock

    run_path = Path(args.resume)
    if not run_path.is_file():  # before the lock: a mistyped path leaves no lock file
        raise UsageError(f"run file {run_path} does not exist: there is nothing to resume")
    out = Path(args.out) if args.out else run_path
    with RunLock(run_path), _maybe_lock(out, run_path):
        return _resume_locked(args, argv, run_path, out)


def _maybe_lock(out: Path, held: Path):
    """The lock of ``out`` unless it is the one already ``held``."""
    from contextlib import nullcontext

    from ppl.runs import RunLock

    return nullcontext() if out.resolve() == held.resolve() else RunLock(out)


def _resume_locked(args, argv: Sequence[str], run_path: Path, out: Path) -> int:
    from ppl.runs import Settings, load_run, load_sampler_state, sample_run
    from ppl.runs.inputs import changes_since, run_inputs

    attrs = load_run(run_path, groups=("posterior",)).attrs
    if int(attrs.get("ppl_complete", 1)):
        raise UsageError(f"{run_path} is a complete run: there is nothing to resume")
    state = load_sampler_state(run_path)
    settings = Settings.from_json(str(attrs["ppl_settings"]))
    spec, data, data_source = run_inputs(attrs, run_path, args.model, args.data)
    overrides = changes_since(attrs, spec, data)
    if overrides and not args.allow_changes:
        raise UsageError(
            f"{run_path} was sampled with other {' and '.join(overrides)}: resuming would mix "
            "draws of two posteriors; sample anew, or pass --allow-changes to resume anyway "
            "(recorded in the run)"
        )
    overrides = [*json.loads(str(attrs.get("ppl_resume_overrides", "[]")) or "[]"), *overrides]
    progress = not args.no_progress
    if progress:
        print(f"{spec.name}: resuming {run_path}", file=sys.stderr, flush=True)
    tree = sample_run(
        spec,
        data,
        settings,
        progress=progress,
        data_source=data_source,
        command=shlex.join(["ppl", *argv]),
        resume_state=state,
        overrides=overrides,
        **_autosave(args, out),
    )
    return _finish_sample(tree, out, args.model, args.strict)


def _autosave(args, out: Path) -> dict:
    """``sample_run``'s saving while it runs, from ``--save-every``."""
    if not args.save_every:
        return {}
    return {"autosave_to": out, "save_every": args.save_every}


def _finish_sample(tree, out: Path, model: str, strict: bool) -> int:
    """Save the run; report an interruption (exit 130) or the verdict."""
    from ppl.report import assess
    from ppl.runs import incomplete_draws, save_run

    kept = incomplete_draws(tree)
    save_run(tree, out)
    if kept is not None:
        print(
            f"ppl: interrupted: saved {out} with {kept} draws per chain (incomplete); "
            f"continue with: ppl sample {shlex.quote(model)} --resume {out}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    try:
        print(f"saved {out}", flush=True)
        _print_skipped(tree, out)
        assessment = assess(tree)
        print(assessment.text())
    except KeyboardInterrupt:  # the run is complete and saved: say so
        print(
            f"ppl: interrupted while checking the run; {out} is saved and complete "
            f"(ppl summary {shlex.quote(str(out))} shows the checks)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return _verdict_exit(assessment, strict)


def _verdict_exit(assessment, strict: bool) -> int:
    """Exit 1 under ``--strict`` when a check failed; warnings ("look closer") pass."""
    return EXIT_STRICT if strict and assessment.verdict == "do not trust" else EXIT_OK


def _sample(args, argv: Sequence[str]) -> int:
    from ppl.runs import (
        RunLock,
        Settings,
        check_data,
        load_data_file,
        resolve_model,
        sample_run,
    )

    if args.resume:
        return _resume(args, argv)
    if not args.out:
        raise UsageError("ppl sample needs --out RUN (or --resume RUN)")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UsageError(f"{out} exists; pass --force to overwrite it")
    if not out.parent.exists():
        raise UsageError(f"cannot write {out}: folder {out.parent} does not exist")
    spec = resolve_model(args.model)
    if args.data:
        data = load_data_file(args.data)
        data_source = str(args.data)
        check_data(spec.model, data, f"data file {args.data}")
    else:
        data, data_source = spec.data, spec.data_source
    settings = Settings(
        method=args.method,
        num_chains=args.chains,
        num_warmup=args.warmup,
        num_samples=args.draws,
        seed=args.seed,
        max_tree_depth=args.max_tree_depth,
        target_accept_prob=args.target_accept,
        num_steps=args.num_steps,
        dense_mass=args.dense_mass,
        vi_steps=args.steps,
        learning_rate=args.learning_rate,
        discrete=not args.no_discrete,
        rescue=not args.no_rescue,
        pointwise=args.pointwise,
    )
    progress = not args.no_progress
    if progress:
        if settings.method == "advi":
            what = f"{settings.vi_steps} steps, then {settings.num_samples} draws"
        elif settings.method == "pathfinder":
            what = f"{settings.num_chains} path(s), {settings.num_samples} draws"
        else:
            what = (
                f"{settings.num_chains} chain(s) x ({settings.num_warmup} warmup + "
                f"{settings.num_samples} draws)"
            )
        print(
            f"{spec.name}: {settings.method.upper()}, {what}, seed {settings.seed}",
            file=sys.stderr,
            flush=True,
        )
    # locked while it samples and saves (not before: a usage error leaves no lock file)
    with RunLock(out):
        tree = sample_run(
            spec,
            data,
            settings,
            progress=progress,
            data_source=data_source,
            command=shlex.join(["ppl", *argv]),
            **_autosave(args, out),
        )
        return _finish_sample(tree, out, args.model, args.strict)


def _require_draws(tree, path: str) -> None:
    """A run stopped in warmup has no draws to check: say so, and how to continue it."""
    if tree["posterior"].sizes.get("draw", 0):
        return
    model = tree.attrs.get("ppl_model_file") or tree.attrs.get("ppl_model", "MODEL")
    raise UsageError(
        f"{path} holds no draws yet: the run stopped during warmup; continue it with: "
        f"ppl sample {shlex.quote(str(model))} --resume {shlex.quote(str(path))}"
    )


def _summary(args) -> int:
    import pandas as pd

    from ppl.report import assess
    from ppl.runs import load_run, run_attrs

    # only what the checks read: not the pointwise posterior_predictive, nor observed_data
    tree = load_run(args.run, groups=("posterior", "sample_stats", "log_likelihood"))
    _require_draws(tree, args.run)
    attrs = run_attrs(tree)
    assessment = assess(tree)
    settings = attrs.get("ppl_settings") if isinstance(attrs.get("ppl_settings"), dict) else {}
    head = (
        f"{attrs.get('ppl_model', '?')}: {str(attrs.get('ppl_method', '?')).upper()}, "
        f"{assessment.num_chains} chain(s) x {assessment.num_draws} draws"
    )
    if "num_warmup" in settings and assessment.kind == "mcmc":
        head += f" after {settings['num_warmup']} warmup"
    if "seed" in settings:
        head += f", seed {settings['seed']}"
    if not int(attrs.get("ppl_complete", 1)):
        head += " (INCOMPLETE)"
    print(head)
    table = assessment.summary
    shown = table if args.all else table.iloc[: args.rows]
    flag = shown["flagged"].map({True: "*", False: ""})
    view = shown.drop(columns=["badness", "flagged", "constant"]).assign(flag=flag)
    if assessment.kind == "vi":
        view = view.drop(columns=["r_hat"], errors="ignore")
    formats = {c: "{:.0f}".format for c in view.columns if c.startswith("ess")}
    formats["r_hat"] = "{:.3f}".format
    with pd.option_context("display.max_rows", None, "display.width", 200):
        print(view.to_string(formatters=formats, float_format="{:.4g}".format))
    if len(shown) < len(table):
        print(f"... {len(table) - len(shown)} more parameter(s), all listed with --all")
    print("(worst-diagnosed first; * marks parameters past a threshold)")
    if assessment.divergences is not None:
        print(f"Number of divergences: {int(assessment.divergences.sum())}")
    print(assessment.text())
    return _verdict_exit(assessment, args.strict)


def _print_skipped(tree, out: Path) -> None:
    """One line when the run left its pointwise groups out (``--pointwise``)."""
    from ppl.runs.pointwise import skipped_note

    note = skipped_note(tree, shlex.quote(str(out)))
    if note:
        print(note, flush=True)


def _loo(args) -> int:
    """``ppl loo RUN``: PSIS-LOO in bounded memory (:mod:`ppl.runs.loo`)."""
    from ppl.runs.loo import run_loo

    result = run_loo(args.run, data_file=args.data, var_name=args.var, recompute=args.recompute)
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.text())
    return EXIT_OK


def _report(args) -> int:
    from ppl.report import assess, write_report
    from ppl.runs import load_run

    tree = load_run(args.run)
    _require_draws(tree, args.run)
    out = Path(args.out)
    if not out.parent.exists():
        raise UsageError(f"cannot write {out}: folder {out.parent} does not exist")
    status = _Status(enabled=not args.no_progress)
    posterior = tree["posterior"].dataset
    draws = posterior.sizes.get("chain", 1) * posterior.sizes.get("draw", 1)
    scalars = sum(var.size // max(draws, 1) for var in posterior.data_vars.values())
    status(f"checking diagnostics of {scalars} scalar parameter(s) ...")
    assessment = assess(tree)
    write_report(tree, out, assessment=assessment, progress=status)
    status.close()
    size = out.stat().st_size
    print(f"wrote {out} ({size / 1e6:.2f} MB); verdict: {assessment.verdict}")
    return _verdict_exit(assessment, args.strict)


class _Status:
    """One status line on stderr, rewritten in place on a terminal (no-op when disabled)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.width = 0

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            sys.stderr.write("\r" + message.ljust(self.width))
            self.width = len(message)
        else:
            sys.stderr.write(message + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _one_line(err: BaseException) -> str:
    """The error's message and its first note (where ppl says which site or line raised)."""
    text = " ".join(str(err).split()) or type(err).__name__
    notes = getattr(err, "__notes__", None) or []
    if notes:
        text += " " + " ".join(str(notes[0]).split())
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ppl`` command with ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = _parser().parse_args(argv)
        if args.command is None:
            _parser().print_help()
            return EXIT_USAGE
        if args.command == "models":
            return _models(args)
        if args.command == "sample":
            # a kill (SIGTERM) stops sampling like Ctrl-C: the draws so far are saved; and
            # Ctrl-C (SIGINT) does so even where the shell started us with it ignored (a
            # background job of a script)
            signal.signal(signal.SIGTERM, _interrupt)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            return _sample(args, argv)
        if args.command == "summary":
            return _summary(args)
        if args.command == "loo":
            return _loo(args)
        return _report(args)
    except UsageError as err:
        if debug:
            raise
        print(f"ppl: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # the reader of our output (e.g. `ppl models | head`) went away: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        if debug:
            raise
        print("ppl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if debug:
            raise
        print(
            f"ppl: error: {type(err).__name__}: {_one_line(err)} (run with --debug for the "
            "traceback)",
            file=sys.stderr,
        )
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
