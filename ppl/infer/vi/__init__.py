"""Variational inference: ELBO losses (:mod:`~ppl.infer.vi.elbo`), autoguides
(:mod:`~ppl.infer.vi.guides`), the SVI driver (:mod:`~ppl.infer.vi.svi`), L-BFGS paths
(:mod:`~ppl.infer.vi.lbfgs`) and Pathfinder (:mod:`~ppl.infer.vi.pathfinder`)."""
