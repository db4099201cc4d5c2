"""Stages ``benchmark-landuse`` and ``benchmark-embeddings``: our tables and models beside published results.

* ``benchmark-landuse`` (landuse.evaluation.landuse_benchmark): the region-embedding literature's
  land-use protocol (``benchmark.repeats`` random splits, MLP probe on every feature table, our models
  trained end to end on the same splits) -> ``<work_dir>/results/benchmark_landuse/`` (``results.csv``,
  ``results.md``, ``best.json``, ``embeddings/``). Rows are written as each candidate finishes: a crash
  keeps them in ``results/benchmark_landuse.incomplete/``; a run with failed candidates is committed
  but not reused, so the next run retries them.
* ``benchmark-embeddings`` (landuse.evaluation.embeddings_benchmark): every modality, fused, the HGCN hidden layer
  and extra tables (``benchmark_embeddings.embeddings``) vs baselines; with the mh-180 labels file
  (``benchmark_embeddings.labels``, or ``${vars.data_root}/labels/mh180_region_labels.csv``) the
  MVURE/MGFN protocol -> ``<work_dir>/results/benchmark_embeddings/``.

Both are steps of ``landuse pipeline`` when their ``enabled`` key is true (``benchmark.enabled``,
``benchmark_embeddings.enabled``); ``landuse run benchmark-…`` runs them regardless. The runner skips
them while their settings, input files and tables are unchanged (``--force`` reruns).
"""

from __future__ import annotations

from pathlib import Path

from landuse.config import Config
from landuse.runner import Stage, StageContext, no_spark

LANDUSE = "benchmark-landuse"
EMBEDDINGS = "benchmark-embeddings"


# --- benchmark-landuse ------------------------------------------------------------------------------

@no_spark  # reads the Petastorm shards; no Spark session
def run_landuse(ctx: StageContext) -> None:
    """Every candidate on the same repeats, into the stage's staging directory; MLflow when benchmark.mlflow."""
    from landuse.evaluation.landuse_benchmark import PUBLISHED_LABEL, run_landuse_benchmark

    config = ctx.config
    result = run_landuse_benchmark(config, track=config.benchmark.mlflow, out=ctx.out(LANDUSE))
    ours = result.table[result.table["kind"] != PUBLISHED_LABEL]
    failed = ours.loc[ours["status"] != "ok", "model"].tolist()
    ctx.summary.update({"notes": result.notes, "mlflow_run_id": result.run_id, "best": result.best,
                        "candidates": len(ours), "failed": failed})
    if failed:
        ctx.summary["complete"] = False  # rerun next time: the failed candidates get another try


def _landuse_outputs(config: Config) -> dict:
    from landuse.training.experiments import results_dir
    from landuse.evaluation.landuse_benchmark import KIND

    return {LANDUSE: results_dir(config, KIND)}


LANDUSE_STAGE = Stage(
    name=LANDUSE,
    description="land-use distribution under the published region-embedding protocol (MLP probe, benchmark.repeats "
                "repeats) for every feature table and our models, beside published results -> results/benchmark_landuse/",
    run=run_landuse,
    outputs=_landuse_outputs,
    config_keys=("seed", "training", "labels", "benchmark", "inputs.embeddings"),
    upstream=("assemble",),
    enabled=lambda config: config.benchmark.enabled,
    group="model",
    keep_incomplete=True,
)


# --- benchmark-embeddings ---------------------------------------------------------------------------

def _embeddings_inputs(config: Config) -> list[Path]:
    """The labels file of task (b) (given, or the default when it exists) and the extra embedding tables."""
    from landuse.evaluation.embeddings_benchmark import labels_for

    labels, _, _ = labels_for(config)
    return [*([labels] if labels is not None else []), *(Path(p) for p in config.benchmark_embeddings.embeddings.values())]


@no_spark  # node_features through Petastorm, flows and poi_counts through pyarrow
def run_embeddings(ctx: StageContext) -> None:
    """Both tasks on every candidate, into the stage's staging directory; MLflow when benchmark_embeddings.mlflow."""
    from landuse.evaluation.embeddings_benchmark import labels_for, run_benchmark

    config = ctx.config
    cfg = config.benchmark_embeddings
    labels, explicit, skipped = labels_for(config)
    result = run_benchmark(config, labels=labels, extra=dict(cfg.embeddings), splits=cfg.splits, track=cfg.mlflow,
                           explicit_labels=explicit, out=ctx.out(EMBEDDINGS))
    ctx.summary.update({"notes": result.notes + ([skipped] if skipped else []), "mlflow_run_id": result.run_id,
                        "labels": str(labels) if labels is not None else None,
                        "mvure_protocol": result.mvure is not None})


def _embeddings_outputs(config: Config) -> dict:
    from landuse.evaluation.embeddings_benchmark import KIND
    from landuse.training.experiments import results_dir

    return {EMBEDDINGS: results_dir(config, KIND)}


EMBEDDINGS_STAGE = Stage(
    name=EMBEDDINGS,
    description="region embeddings vs baselines vs published MVURE/MGFN/HREP/HAFusion (NYC mh-180) + land-use MLP "
                "probe -> results/benchmark_embeddings/",
    run=run_embeddings,
    outputs=_embeddings_outputs,
    # flow_source / flow.source pick the flows of the od_rows baseline
    config_keys=("seed", "training", "labels", "benchmark_embeddings", "assemble.flow_source", "embeddings.flow.source"),
    inputs=_embeddings_inputs,
    upstream=("regions", "assemble"),  # node_features and the edges; region centroids
    optional_upstream=("flows", "pois"),  # the od_rows and poi_counts baselines (skipped with a note when absent)
    enabled=lambda config: config.benchmark_embeddings.enabled,
    group="model",
)
