"""The MCMC driver: the samplers' settings (:mod:`~ppl.infer.driver.config`: ``NUTS``, ``HMC``,
``ChEES``, ``MEADS`` -> kernel + warmup), the one compiled loop
(:mod:`~ppl.infer.driver.program`), the chain methods (:mod:`~ppl.infer.driver.chains`, the
threaded one in :mod:`~ppl.infer.driver.threads`), device meshes
(:mod:`~ppl.infer.driver.sharding`), saved sampler states (:mod:`~ppl.infer.driver.checkpoint`)
and saves while a run goes on (:mod:`~ppl.infer.driver.autosave`), progress bars
(:mod:`~ppl.infer.driver.progress`) and ``MCMC`` itself (:mod:`~ppl.infer.driver.mcmc`)."""
