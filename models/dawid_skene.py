"""Dawid-Skene model of annotators with the true class of each item enumerated (simulated
data).

I = 50 items, each labelled into one of C = 3 classes by 5 annotators, the first of them
three times (7 labels per item, as in Dawid and Skene's 1979 data that NumPyro's annotation
example uses). The true class of item i, c_i ~ categorical(pi), is a discrete latent site
in the ``item`` plate, enumerated; label p of item i comes from the confusion matrix of its
annotator, y_pi ~ categorical(beta[annotator_p, c_i]), in the ``position`` plate nested in
the ``item`` plate (the labels enter as (position, item), so that c has shape (I,)). The
rows of the confusion matrices lie in nested plates (``annotator`` around ``class``). The
class prevalences ``pi`` have a Dirichlet(1, 1, 1) prior and each row of a confusion
matrix (annotator, true class) a Dirichlet prior with weight 2.5 C = 7.5 on the true class
and 1 elsewhere: annotators are better than chance. That prior also breaks the symmetry of
relabelling the classes (with a flat one, as in NumPyro's example, chains get trapped in
relabelled modes; with weight 5, about one chain in eight still did). The log density sums
the classes out exactly, and ``ppl.infer.infer_discrete`` draws each item's class. The
labels are simulated by :func:`simulate` with seed 22 (prevalences 0.5, 0.3, 0.2,
annotators correct 85%, 75%, 70%, 65% and 55% of the time) and shipped in
``data/dawid_skene.json``.
"""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import ppl
import ppl.distributions as dist

description = __doc__.split("\n\n")[1].replace("\n", " ")

DATA_FILE = Path(__file__).parent / "data" / "dawid_skene.json"
SEED = 22
NUM_CLASSES = 3
NUM_ANNOTATORS = 5
#: the annotator of each label position: the first annotator labels every item three times
POSITIONS = [0, 0, 0, 1, 2, 3, 4]
dims = {
    "pi": ["class"],
    "beta": ["annotator", "class", "response"],
    "c": ["item"],
    "y": ["position", "item"],
}
coords = {
    "class": list(range(NUM_CLASSES)),
    "response": list(range(NUM_CLASSES)),
    "annotator": list(range(1, NUM_ANNOTATORS + 1)),
}


def simulate(seed: int = SEED, num_items: int = 50) -> dict:
    """Simulate the data set: positions (7,) annotator indices and annotations (num_items,
    7) labels in 0..2, as lists."""
    rng = np.random.default_rng(seed)
    prevalence = np.array([0.5, 0.3, 0.2])
    accuracy = np.array([0.85, 0.75, 0.7, 0.65, 0.55])
    c = rng.choice(NUM_CLASSES, size=num_items, p=prevalence)
    annotations = np.empty((num_items, len(POSITIONS)), dtype=int)
    for i in range(num_items):
        for p, a in enumerate(POSITIONS):
            probs = np.full(NUM_CLASSES, (1 - accuracy[a]) / (NUM_CLASSES - 1))
            probs[c[i]] = accuracy[a]
            annotations[i, p] = rng.choice(NUM_CLASSES, p=probs)
    return {"positions": list(POSITIONS), "annotations": annotations.tolist()}


def load_data() -> dict:
    """Keyword arguments of :func:`model`: positions (P,) and annotations (I, P), integers."""
    raw = json.loads(DATA_FILE.read_text())
    return {
        "positions": jnp.asarray(raw["positions"], dtype=jnp.int32),
        "annotations": jnp.asarray(raw["annotations"], dtype=jnp.int32),
    }


def model(positions, annotations):
    """c_i ~ categorical(pi) (enumerated), y_pi ~ categorical(beta[positions[p], c_i])."""
    num_items, num_positions = annotations.shape
    concentration = 1.0 + (2.5 * NUM_CLASSES - 1.0) * jnp.eye(NUM_CLASSES)  # 7.5 on label k
    with ppl.plate("annotator", NUM_ANNOTATORS, dim=-2), ppl.plate("class", NUM_CLASSES):
        beta = ppl.sample("beta", dist.Dirichlet(concentration))
    pi = ppl.sample("pi", dist.Dirichlet(jnp.ones(NUM_CLASSES)))
    with ppl.plate("item", num_items):
        c = ppl.sample("c", dist.Categorical(pi), infer={"enumerate": "parallel"})
        # the labels as (position, item), so that c is one value per item, shape (I,)
        with ppl.plate("position", num_positions, dim=-2):
            probs = beta[positions[:, None], c]  # (P, I, C); (K, P, I, C) when enumerated
            ppl.sample("y", dist.Categorical(probs), obs=annotations.T)
