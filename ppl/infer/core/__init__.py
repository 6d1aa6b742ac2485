"""Numerical pieces the kernels, warmups and VI share: the leapfrog integrator
(:mod:`~ppl.infer.core.integrators`), metrics (:mod:`~ppl.infer.core.metrics`), in-loop random
numbers (:mod:`~ppl.infer.core.rng`), statistics across chains
(:mod:`~ppl.infer.core.chain_stats`) and Pareto-smoothed importance sampling
(:mod:`~ppl.infer.core.psis`). Nothing here knows about models, kernels or drivers."""
