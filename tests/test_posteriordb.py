"""Zoo models against their posteriordb reference posteriors.

For each posteriordb posterior in the zoo, NUTS (4 chains) must reproduce every reference
parameter: mean within 4 MCSE of our run plus 2% of the reference sd, sd within 10% of the
reference sd (the posteriordb README's criterion; MCSE from arviz-stats, so the mean check
fails by chance with probability about 6e-5 per parameter). The reference means and sds
ship in ``models/data/posteriordb_reference.json``, so this does not need the shared
posteriordb folder. Runs are in float64.

The default run covers a fixed subset of cheap models; ``pytest -m slow`` runs the rest.
"""

import time

import jax
import pytest

from models import _posteriordb
from ppl import zoo
from ppl.infer import MCMC, NUTS

# cheap models (small data, short trees) run by default; the rest are marked slow.
# (eight_schools is also checked against posteriordb by default in tests/infer/driver/test_mcmc.py.)
DEFAULT = ("gp_regr", "kidscore_momhsiq")
NUM_WARMUP = 1000
NUM_SAMPLES = 1000
NUM_CHAINS = 4


def _cases():
    for i, name in enumerate(sorted(_posteriordb.POSTERIORS)):
        marks = () if name in DEFAULT else (pytest.mark.slow,)
        yield pytest.param(name, i, marks=marks, id=name)


def test_every_posteriordb_posterior_is_in_the_zoo_with_a_reference():
    names = set(zoo.names())
    for model_name, entry in _posteriordb.POSTERIORS.items():
        assert model_name in names, model_name
        ref = _posteriordb.reference(entry.name)
        assert ref and all(sd > 0 for _, sd in ref.values()), entry.name
    assert len(_posteriordb.POSTERIORS) == 12


@pytest.mark.parametrize("name,seed", list(_cases()))
def test_matches_posteriordb_reference(name, seed):
    module = zoo.load(name)
    with jax.enable_x64(True):
        mcmc = MCMC(
            NUTS(module.model),
            num_warmup=NUM_WARMUP,
            num_samples=NUM_SAMPLES,
            num_chains=NUM_CHAINS,
            progress_bar=False,
        )
        began = time.perf_counter()
        mcmc.run(jax.random.PRNGKey(100 + seed), **module.load_data())
        samples = mcmc.get_samples(group_by_chain=True)
        seconds = time.perf_counter() - began
    rows = _posteriordb.compare(name, samples)
    divergences = int(mcmc.get_sample_stats()["diverging"].sum())
    report = "\n".join(str(r) for r in rows)
    print(f"\n{name}: {seconds:.1f} s, {divergences} divergences\n{report}")
    failed = [str(r) for r in rows if not r.ok]
    assert not failed, f"{name} disagrees with posteriordb:\n" + "\n".join(failed)
