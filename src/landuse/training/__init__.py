"""Training: the protocol that fits and selects the land-use models, and its MLflow tracking.

:mod:`~landuse.training.protocol` (the training loop, K splits, epoch selection),
:mod:`~landuse.training.splits`, :mod:`~landuse.training.metrics` (KL / L1 / cosine) and
:mod:`~landuse.training.signals` (SIGTERM ends tracked runs as KILLED) are the protocol;
:mod:`~landuse.training.experiments` (train, ablation, fusion) and :mod:`~landuse.training.tune`
(model selection on validation KL) run it; :mod:`~landuse.training.tracking` holds the MLflow runs
and the model registry they write to. Benchmarks and probes that *score* representations live in
:mod:`landuse.evaluation`, image-encoder pretraining and cross-city transfer in
:mod:`landuse.pretraining`, and batch prediction with a registered model in
:mod:`landuse.serving.predict`.
"""
