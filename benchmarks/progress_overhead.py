"""Does the progress bar cost anything? Warm runs with and without it, interleaved.

    python -m benchmarks.progress_overhead [--repeats 7] [--chains 4 --warmup 1000 --draws 1000]

Runs eight schools (non-centered) with ``MCMC(..., progress_bar=True)`` and
``progress_bar=False`` alternately in one process, after one compiling run of
each, and prints the median warm time of each and their ratio (on / off).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import jax
import numpy as np


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.progress_overhead")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    args = parser.parse_args(argv)

    from models import eight_schools
    from ppl.infer import MCMC, NUTS

    data = eight_schools.load_data()
    runs = {
        bar: MCMC(
            NUTS(eight_schools.model),
            num_warmup=args.warmup,
            num_samples=args.draws,
            num_chains=args.chains,
            progress_bar=bar,
        )
        for bar in (False, True)
    }
    times: dict[bool, list[float]] = {False: [], True: []}
    for repeat in range(args.repeats + 1):
        for bar, mcmc in runs.items():
            with contextlib.redirect_stderr(io.StringIO()):
                start = time.perf_counter()
                mcmc.run(jax.random.PRNGKey(repeat), **data)
                elapsed = time.perf_counter() - start
            if repeat:  # the first round compiles
                times[bar].append(elapsed)
    off, on = float(np.median(times[False])), float(np.median(times[True]))
    print(f"progress_bar=False: median warm run {off:.3f} s over {args.repeats} runs")
    print(f"progress_bar=True:  median warm run {on:.3f} s over {args.repeats} runs")
    print(f"ratio on/off: {on / off:.3f}")
    return {"off_s": off, "on_s": on, "ratio": on / off}


if __name__ == "__main__":
    main()
