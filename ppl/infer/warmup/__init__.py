"""Warmups: the adaptation of a kernel's parameters as :class:`ppl.infer.base.Warmup` protocols.

Stan's windowed warmup (:mod:`~ppl.infer.warmup.stan`), nutpie's gradient-based warmup
(:mod:`~ppl.infer.warmup.nutpie`, with its low-rank metric in
:mod:`~ppl.infer.warmup.low_rank`), the ensemble warmups of ChEES
(:mod:`~ppl.infer.warmup.chees`) and MEADS (:mod:`~ppl.infer.warmup.meads`), the step-size
adaptation they share (:mod:`~ppl.infer.warmup.step_size`), and where chains start
(:mod:`~ppl.infer.warmup.init`)."""
