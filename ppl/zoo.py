"""Find, describe and run the models of the zoo in ``models/``.

Each zoo model is a module ``models.<name>`` with ``model`` (a ppl model function),
``load_data()`` (its keyword arguments, read from data shipped in ``models/data/``),
``dims``/``coords`` (ArviZ labels) and ``description`` (one paragraph). Twelve of them are
posteriordb posteriors with stored reference moments (see ``models/_posteriordb.py``).

``python -m ppl.zoo`` lists the models, one line each; ``python -m ppl.zoo NAME --info``
describes one; ``python -m ppl.zoo NAME`` samples it with NUTS and prints its summary.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from dataclasses import dataclass
from types import ModuleType

__all__ = ["ModelInfo", "info", "load", "main", "names"]


@dataclass(frozen=True)
class ModelInfo:
    """What a CLI or a notebook needs to know about one zoo model.

    Attributes:
        name: the zoo name (module ``models.<name>``).
        title: the first line of the module docstring.
        description: one paragraph on the data and the model.
        num_latent: size of the flat unconstrained parameter vector (``LogDensity.dim``).
        latent_sites: names of the latent sample sites, in the flat vector's order.
        posteriordb: posteriordb posterior name (e.g. ``"arK-arK"``), or None.
        has_reference: whether reference posterior moments ship with the zoo.
        stan_file: the posteriordb Stan model's path in stan-dev/posteriordb, or None.
    """

    name: str
    title: str
    description: str
    num_latent: int
    latent_sites: tuple[str, ...]
    posteriordb: str | None
    has_reference: bool
    stan_file: str | None


def names() -> list[str]:
    """Names of the models in the zoo, sorted (private ``models._*`` helpers excluded)."""
    import models

    return sorted(
        m.name
        for m in pkgutil.iter_modules(models.__path__)
        if not m.ispkg and not m.name.startswith("_")
    )


def load(name: str) -> ModuleType:
    """The zoo module ``name`` (with ``model``, ``load_data``, ``dims``, ``coords``,
    ``description``).

    Raises:
        KeyError: naming the available models if there is no model ``name``.
    """
    available = names()
    if name not in available:
        raise KeyError(f"no model named {name!r} in the zoo; available: {', '.join(available)}")
    return importlib.import_module(f"models.{name}")


def info(name: str) -> ModelInfo:
    """Metadata of zoo model ``name``; builds its LogDensity once to count the latents.

    Example:
        >>> from ppl import zoo
        >>> meta = zoo.info("eight_schools")
        >>> meta.num_latent, meta.posteriordb
        (10, 'eight_schools-eight_schools_noncentered')
    """
    from models import _posteriordb
    from ppl.density import LogDensity

    module = load(name)
    ld = LogDensity(module.model, (), module.load_data())
    entry = _posteriordb.posterior_of(name)
    has_reference = False
    if entry is not None:
        try:
            _posteriordb.reference(entry.name)
            has_reference = True
        except KeyError:
            pass
    doc = (module.__doc__ or "").strip()
    return ModelInfo(
        name=name,
        title=doc.split("\n\n")[0].replace("\n", " "),
        description=module.description,
        num_latent=ld.dim,
        latent_sites=tuple(ld.latent_names),
        posteriordb=entry.name if entry is not None else None,
        has_reference=has_reference,
        stan_file=entry.stan_file if entry is not None else None,
    )


def _listing() -> list[str]:
    from models import _posteriordb

    lines = []
    for name in names():
        module = load(name)
        title = (module.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        entry = _posteriordb.posterior_of(name)
        tag = f"[posteriordb {entry.name}] " if entry and "posteriordb" not in title else ""
        lines.append(f"{name:24s} {tag}{title}")
    return lines


def main(argv: list[str] | None = None, prog: str = "python -m ppl.zoo") -> int:
    """Command line: list the zoo, describe a model (``--info``) or sample it with NUTS."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="model name; omit to list the zoo")
    parser.add_argument("--info", action="store_true", help="describe the model, do not run")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.model is None:
        print("\n".join(_listing()))
        return 0
    try:
        module = load(args.model)
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    if args.info:
        meta = info(args.model)
        print(f"{meta.name}: {meta.title}\n\n{meta.description}\n")
        print(f"latent dimensions: {meta.num_latent} ({', '.join(meta.latent_sites)})")
        if meta.posteriordb is not None:
            print(f"posteriordb: {meta.posteriordb} (Stan model {meta.stan_file})")
            print(f"reference moments stored: {'yes' if meta.has_reference else 'no'}")
        return 0

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
