"""Stage ``report``: the self-contained HTML report (landuse.report.html), logged to MLflow.

Writes ``<driver_dir>/report/report.html`` with its figures (PNG) beside it, from whatever the work
dir holds: ``regions`` and ``predictions`` are required (a one-line error names the command that
makes the missing one), every other part is optional. The stages whose outputs it reads are its
``optional_upstream``: when one of them reruns (a new champion, a new ablation table), the report
reruns; otherwise ``landuse run report`` is skipped as unchanged. The ``tables/zeroshot_<method>``
tables (``landuse run zeroshot``, not a stage) enter the fingerprint through :func:`zeroshot_state`.
With ``report.mlflow`` (default true) the report is also logged as an MLflow run ``report:<name>``;
the run id is in the report's manifest (``mlflow_run_id``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from landuse.config import Config
from landuse.runner import Stage, StageContext, no_spark

REPORT = "report"
# what build_report reads from the config (besides the tables): names, maps, results, data summary, run facts
CONFIG_KEYS = ("name", "seed", "study.crs", "labels.classes", "training", "mlflow", "inputs.imagery", "report",
               "privacy")
# every stage whose outputs the report reads (names not registered are skipped by the runner)
READS = ("labels", "train", "ablation", "fusion", "tune", "predict", "monitor", "benchmark-landuse",
         "benchmark-embeddings", "transfer")


def outputs(config: Config) -> dict:
    """``<driver_dir>/report/`` (report.html, figures, manifest)."""
    from landuse.report.html import REPORT_DIR

    return {REPORT: config.driver_dir / REPORT_DIR}


def zeroshot_state(config: Config) -> dict[str, Any] | None:
    """sha256 of each ``tables/zeroshot_<method>`` manifest present (not a stage: no fingerprint of its own)."""
    from landuse.manifest import read_manifest
    from landuse.zeroshot.run import METHODS, table_name

    state = {}
    for method in METHODS:
        manifest = read_manifest(config.tables_dir / table_name(method))
        if manifest is not None:
            text = json.dumps(manifest, sort_keys=True, default=str)
            state[method] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return {"zeroshot": state} if state else None


@no_spark  # pandas, geopandas and matplotlib on driver-sized tables
def run(ctx: StageContext) -> None:
    """Build the page into the staging dir; log it to MLflow with ``report.mlflow``."""
    from landuse.report.html import build_report, log_report

    config = ctx.config
    built = build_report(config, ctx.out(REPORT))
    ctx.summary.update(config=config.name, **built.summary())
    if config.report.mlflow:
        ctx.summary["mlflow_run_id"] = log_report(config, built.path)  # MLflow copies the files


STAGE = Stage(
    name="report",
    description="self-contained HTML report (maps, ablation and per-class tables, data summaries) -> report/, "
                "logged to MLflow as run report:<name> (report.mlflow)",
    run=run,
    outputs=outputs,
    config_keys=CONFIG_KEYS,
    upstream=("regions",),
    optional_upstream=READS,
    extra=zeroshot_state,
    group="report",
)
