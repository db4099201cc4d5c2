"""Stages ``train``, ``ablation`` and ``fusion``: the training experiments (landuse.training.experiments).

Each reads the assembled training tables, trains and tracks in MLflow, registers a model (the
champion only when it beats the current one on validation KL) and writes its tables into
``<work_dir>/results/<kind>/`` (CSV + Markdown, per-class errors, curves, ``run.json``). The
runner skips an experiment whose training config and input tables are unchanged; an experiment
with failed variants is committed but not reused, so the next run retries them. A crash keeps the
rows finished so far in ``results/<kind>.incomplete/``.
"""

from __future__ import annotations

import json

from landuse.config import Config
from landuse.runner import Stage, StageContext, no_spark

# what an experiment's result follows besides its input tables
CONFIG_KEYS = ("seed", "training", "labels", "inputs.embeddings")
TRAINING_TABLES = ("assemble",)


def _experiment(kind: str):
    @no_spark  # training reads the Petastorm shards; no Spark session
    def run(ctx: StageContext) -> None:
        from landuse.training.experiments import run_experiment

        _, _, model = run_experiment(ctx.config, kind, out=ctx.out(kind))
        record = json.loads((ctx.out(kind) / "run.json").read_text())
        ctx.summary["mlflow_run_id"] = record["run_id"]
        if model.get("version"):
            ctx.summary["registered"] = {k: model[k] for k in ("name", "version", "champion") if k in model}
        if record.get("failed"):
            ctx.summary["complete"] = False  # rerun next time: the failed variants get another try
    return run


def results_outputs(kind: str):
    """``outputs`` of a stage whose one output is ``results/<kind>/`` under that name (train, tune, transfer, ...)."""
    def outputs(config: Config) -> dict:
        from landuse.training.experiments import results_dir

        return {kind: results_dir(config, kind)}
    return outputs


def _stage(kind: str, description: str) -> Stage:
    return Stage(name=kind, description=description, run=_experiment(kind), outputs=results_outputs(kind),
                 config_keys=CONFIG_KEYS, upstream=TRAINING_TABLES, group="model", keep_incomplete=True,
                 enabled=lambda config: config.inputs.regions is not None)


TRAIN_STAGE = _stage("train", "train training.variant over K splits; MLflow run, registered model (champion if better)")
ABLATION_STAGE = _stage("ablation", "the 14-variant thesis ablation table (CSV + Markdown), tracked in MLflow")
FUSION_STAGE = _stage("fusion", "the fusion ablation M_P, M_PI, M_PIG, M_PIGF (training.fusion), tracked in MLflow")
