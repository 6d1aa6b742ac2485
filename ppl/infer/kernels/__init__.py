"""Markov transition kernels as pure ``init``/``step`` functions (:class:`ppl.infer.base.Kernel`):
static HMC (:mod:`~ppl.infer.kernels.hmc`, with the chain state every HMC-family kernel
shares), NUTS (:mod:`~ppl.infer.kernels.nuts`), and the transitions of the kernels that run all
chains at once, jittered HMC and generalized HMC (:mod:`~ppl.infer.kernels.ensemble`). Their
parameters come from a warmup (:mod:`ppl.infer.warmup`)."""
