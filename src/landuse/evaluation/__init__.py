"""Evaluation: benchmarks and probes that score region representations and models against each other.

:mod:`~landuse.evaluation.landuse_benchmark` is the region-embedding literature's land-use protocol
(stage ``benchmark-landuse``: feature tables through an MLP probe beside our models on the same
splits), :mod:`~landuse.evaluation.embeddings_benchmark` the mh-180 MVURE/MGFN protocol over every
modality and baseline (stage ``benchmark-embeddings``), and :mod:`~landuse.evaluation.probe` the
linear / MLP probes (pretrained vs random image encoder, dominant-class probe). These modules only
measure; the training loop, splits and metrics they reuse live in :mod:`landuse.training`, and the
stage wiring (config keys, outputs, skip rules) in :mod:`landuse.stages.benchmarks`.
"""
