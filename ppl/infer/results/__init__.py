"""What inference produces, for users and ArviZ: DataTrees of draws for every engine
(:mod:`~ppl.infer.results.datatree`) and prior / posterior predictive draws and pointwise
log-likelihoods (:mod:`~ppl.infer.results.predictive`)."""
