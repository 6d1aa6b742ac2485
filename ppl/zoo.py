"""Find and run models of the zoo in ``models/``.

``python -m ppl.zoo eight_schools`` samples the model with NUTS and prints
its summary; ``python -m ppl.zoo`` lists the models.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from types import ModuleType

__all__ = ["load", "names"]


def names() -> list[str]:
    """Names of the models in the zoo."""
    import models

    return sorted(m.name for m in pkgutil.iter_modules(models.__path__) if not m.ispkg)


def load(name: str) -> ModuleType:
    """The zoo module ``name`` (with ``model``, ``load_data``, ``dims``, ``coords``)."""
    available = names()
    if name not in available:
        raise KeyError(f"no model named {name!r} in the zoo; available: {', '.join(available)}")
    return importlib.import_module(f"models.{name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppl.zoo", description=__doc__)
    parser.add_argument("model", nargs="?", help="model name; omit to list the zoo")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.model is None:
        for name in names():
            print(f"{name:24s} {load(name).description}")
        return 0
    try:
        module = load(args.model)
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2

    import jax

    from ppl.infer import MCMC, NUTS

    mcmc = MCMC(
        NUTS(module.model),
        num_warmup=args.warmup,
        num_samples=args.draws,
        num_chains=args.chains,
    )
    mcmc.run(jax.random.PRNGKey(args.seed), **module.load_data())
    print(f"{args.model}: {args.chains} chains x ({args.warmup} warmup + {args.draws} draws), NUTS")
    mcmc.print_summary(dims=module.dims, coords=module.coords)
    return 0


if __name__ == "__main__":
    sys.exit(main())
