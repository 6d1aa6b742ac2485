"""The model zoo: one module per model, each with ``model``, ``load_data()``,
``dims``/``coords`` for ArviZ and a ``description``.

``ppl.zoo`` finds these modules by name (``ppl.zoo.names()``, ``ppl.zoo.load(name)``,
``ppl.zoo.info(name)``). Data ship in ``models/data/``; nothing is downloaded. Modules whose
name starts with an underscore are helpers, not models: ``models._posteriordb`` maps the
twelve posteriordb posteriors of the zoo to Stan's parameter names and holds their
reference moments.
"""
