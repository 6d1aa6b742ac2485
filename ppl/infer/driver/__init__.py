"""The MCMC driver: the samplers' settings (:mod:`~ppl.infer.driver.config`: ``NUTS``, ``HMC``,
``ChEES``, ``MEADS`` -> kernel + warmup), the one compiled loop
(:mod:`~ppl.infer.driver.program`), the chain methods (:mod:`~ppl.infer.driver.chains`), device
meshes (:mod:`~ppl.infer.driver.sharding`), saved sampler states
(:mod:`~ppl.infer.driver.checkpoint`), progress bars (:mod:`~ppl.infer.driver.progress`) and
``MCMC`` itself (:mod:`~ppl.infer.driver.mcmc`)."""
