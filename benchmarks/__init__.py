"""ppl versus NumPyro, BlackJAX and nutpie on the same models, side by side in one run.

Run ``python -m benchmarks --help`` from the repository root; see
``benchmarks/README.md`` for what is measured and how.

Modules:
    models       the model suite, each model written once as a function of a PPL module
    pymc_models  the same models in PyMC, for nutpie
    samplers     one runner per sampler (ppl, numpyro, blackjax, nutpie): timed runs, draws,
                 gradients; sampler specs with options (``ppl:adaptation=stan``)
    worker       one (sampler, model) measurement in a fresh process, printed as JSON
    harness      runs the workers model by model, computes ratios, prints tables, writes JSON
"""
