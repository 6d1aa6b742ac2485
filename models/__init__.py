"""The model zoo: one module per model, each with ``model``, ``load_data()``,
``dims``/``coords`` for ArviZ and a ``description``.

``ppl.zoo`` finds these modules by name.
"""
