"""What does saving a run while it samples cost? ``ppl sample``'s pipeline with and without it.

    python -m benchmarks.autosave_overhead [--model radon] [--repeats 3] [--every 10]
        [--chains 4 --warmup 1000 --draws 5000] [--progress]

Runs :func:`ppl.runs.sample_run` (what ``ppl sample`` runs) on a zoo model, alternately with
``autosave_to`` (``--save-every EVERY``: the draws so far and the sampler state written to the
run file about every EVERY seconds) and without it, in one process after one compiling run of
each, and prints the median time of each, their ratio (on / off) and the number and length of
the saves. The draws of both are checked to be equal.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.autosave_overhead")
    parser.add_argument("--model", default="radon")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=5000)
    parser.add_argument("--progress", action="store_true", help="with the progress bar (ppl's)")
    args = parser.parse_args(argv)

    from ppl.infer.driver import autosave
    from ppl.runs import Settings, resolve_model, sample_run

    spec = resolve_model(args.model)
    settings = Settings(num_chains=args.chains, num_warmup=args.warmup, num_samples=args.draws)
    saves: list[float] = []
    original = autosave.Autosave.__call__

    def timed(self):
        original(self)
        saves.append(self.seconds)

    autosave.Autosave.__call__ = timed
    times: dict[bool, list[float]] = {False: [], True: []}
    draws = {}
    try:
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "run.nc"
            for repeat in range(args.repeats + 1):
                for on in (False, True):
                    kwargs = {"autosave_to": out, "save_every": args.every} if on else {}
                    with contextlib.redirect_stderr(io.StringIO()):
                        start = time.perf_counter()
                        tree = sample_run(
                            spec, spec.data, settings, progress=args.progress, **kwargs
                        )
                        elapsed = time.perf_counter() - start
                    draws[on] = {k: v.values for k, v in tree["posterior"].data_vars.items()}
                    if repeat:  # the first round compiles
                        times[on].append(elapsed)
                    elif on:
                        saves.clear()
    finally:
        autosave.Autosave.__call__ = original
    for name, values in draws[False].items():  # saving changes no draw
        np.testing.assert_array_equal(values, draws[True][name])
    off, on = float(np.median(times[False])), float(np.median(times[True]))
    per_run = len(saves) / args.repeats
    mean_save = float(np.mean(saves)) if saves else 0.0
    print(
        f"{args.model}: {args.chains} chains x ({args.warmup} + {args.draws}), every {args.every} s"
    )
    print(f"without saves: median {off:.2f} s over {args.repeats} runs")
    print(f"with saves:    median {on:.2f} s ({per_run:.1f} saves per run, {mean_save:.3f} s each)")
    print(f"ratio with/without: {on / off:.3f}")
    return {"off_s": off, "on_s": on, "ratio": on / off, "saves": per_run, "save_s": mean_save}


if __name__ == "__main__":
    main()
