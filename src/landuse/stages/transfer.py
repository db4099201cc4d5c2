"""Stage ``transfer``: pretrain on a source city, fine-tune on this (the target) city (landuse.pretraining.transfer).

Enabled when the config names a source city (``transfer.source_config``, layered with
``transfer.source_set``). Reads the target's assembled tables and the source's (``node_features`` and
the edge tables of ``training.variant``); writes ``<work_dir>/results/transfer/`` (``transfer.csv``,
``transfer.md``, ``transfer_splits.csv``, ``transfer_kl.png``) and the MLflow run
``transfer:<source>-><target>``. The runner skips it while the target's training / transfer settings,
the source config files, the source's training settings and both cities' tables are unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from landuse.config import Config
from landuse.runner import Stage, StageContext, no_spark
from landuse.stages.experiments import results_outputs

KIND = "transfer"
DESCRIPTION = ("cross-city transfer: pretrain training.variant on transfer.source_config (--source-config), fine-tune "
               "on --config at training fractions vs from scratch; table + KL plot -> results/transfer/, MLflow")


def enabled(config: Config) -> bool:
    """A step whenever the config names a source city."""
    return bool(config.transfer.source_config)


def inputs(config: Config) -> list[Path]:
    """The source city's config files (content-hashed: editing the source config reruns the transfer)."""
    return [Path(p) for p in config.transfer.source_config]


def extra(config: Config) -> dict[str, Any]:
    """What the result follows on the source side: its name and training settings, and the fingerprints
    of its tables (None for a table without a manifest)."""
    from landuse.data.reader import PRODUCERS
    from landuse.manifest import read_manifest
    from landuse.spark.io import table_path
    from landuse.pretraining.transfer import load_source_config

    source = load_source_config(config)
    tables = {}
    for name in PRODUCERS:  # node_features and the edge tables a variant may read
        manifest = read_manifest(table_path(source, name))
        tables[name] = manifest.get("fingerprint") if manifest else None
    return {"source": source.name, "source_config": source.section_hash("seed", "training", "labels"),
            "source_tables": tables}


@no_spark  # both cities' tables are read with pyarrow / Petastorm
def run(ctx: StageContext) -> None:
    """Run the transfer experiment into the stage's staging directory."""
    import logging

    from landuse.pretraining.transfer import load_source_config, transfer_experiment

    target = ctx.config
    source = load_source_config(target)
    logging.getLogger(__name__).info("transfer: %s -> %s", source.name, target.name)
    result, _ = transfer_experiment(target, source, out=ctx.out(KIND))
    ctx.summary.update({"source": source.name, "target": target.name, "mlflow_run_id": result.run_id,
                        "reinit_head": result.reinit_head, "variant": target.training.variant})


STAGE = Stage(
    name="transfer",
    description=DESCRIPTION,
    run=run,
    outputs=results_outputs(KIND),
    config_keys=("seed", "training", "labels", "transfer"),
    inputs=inputs,
    upstream=("assemble",),
    enabled=enabled,
    extra=extra,
    group="model",
)
