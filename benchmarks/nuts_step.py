"""Cost of one NUTS leapfrog step, ppl's kernel against BlackJAX's, with nothing else around.

    python -m benchmarks.nuts_step [--dim 100] [--chains 4] [--draws 1000] [--repeats 5]

Both kernels run the same diagonal Gaussian (scales log-spaced 0.01..100) with
the same step size and the exact inverse mass matrix, chains vmapped and draws
in one ``lax.scan``; the time of a compiled run divided by the number of
leapfrog steps gives microseconds per step (all chains together).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np


def _runner(name: str, logdensity, step_size, imm, chains: int, draws: int):
    from ppl.infer.kernels import nuts

    def one_chain(key, x):
        if name == "ppl":
            state = nuts.init(x, logdensity)

            def body(s, k):
                s, info = nuts.step(k, s, logdensity, step_size, imm)
                return s, info.num_steps
        else:
            import blackjax

            kernel = blackjax.nuts(logdensity, step_size, imm)
            state = kernel.init(x)

            def body(s, k):
                s, info = kernel.step(k, s)
                return s, info.num_integration_steps

        _, steps = jax.lax.scan(body, state, jax.random.split(key, draws))
        return steps.sum()

    return jax.jit(lambda key, pos: jax.vmap(one_chain)(jax.random.split(key, chains), pos).sum())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nuts_step")
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    scales = jnp.logspace(-2, 2, args.dim)

    def logdensity(x):
        return -0.5 * jnp.sum((x / scales) ** 2)

    position = jax.random.normal(jax.random.PRNGKey(0), (args.chains, args.dim)) * scales
    samplers = ["ppl"]
    try:
        import blackjax  # noqa: F401

        samplers.append("blackjax")
    except ImportError:
        print("blackjax is not installed (pip install -e '.[bench]'): timing ppl only")
    runners = {
        name: _runner(name, logdensity, 0.8, scales**2, args.chains, args.draws)
        for name in samplers
    }
    for run in runners.values():
        run(jax.random.PRNGKey(1), position).block_until_ready()
    per_step: dict[str, list[float]] = {name: [] for name in runners}
    for repeat in range(args.repeats):  # interleaved, so that load hits both alike
        for name, run in runners.items():
            start = time.perf_counter()
            steps = int(run(jax.random.PRNGKey(2 + repeat), position))
            per_step[name].append((time.perf_counter() - start) / steps * args.chains * 1e6)
    result = {name: float(np.median(v)) for name, v in per_step.items()}
    for name, us in result.items():
        print(f"{name:9s} {us:8.2f} us per leapfrog step ({args.chains} chains, dim {args.dim})")
    if "blackjax" in result:
        print(f"ratio ppl/blackjax: {result['ppl'] / result['blackjax']:.3f}")
    return result


if __name__ == "__main__":
    main()
