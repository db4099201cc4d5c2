"""``landuse run report``: the report stage (landuse.stages.report), the self-contained HTML report,
logged to MLflow (see landuse.report.html). ``--no-mlflow`` is the override ``report.mlflow=false``."""

from __future__ import annotations

import argparse

from landuse.entrypoints.common import add_config_args, stage_main
from landuse.training.signals import kill_runs_on_sigterm


def build_parser() -> argparse.ArgumentParser:
    """The report command's arguments."""
    parser = argparse.ArgumentParser(
        prog="landuse run report",
        description="self-contained HTML report (maps, ablation and per-class tables, data summaries), "
                    "logged to MLflow as run report:<name>")
    add_config_args(parser)
    parser.add_argument("--no-mlflow", action="store_true",
                        help="write the report without logging it to MLflow (report.mlflow=false)")
    return parser


def summary(config, result) -> None:  # config: landuse.config.Config; result: landuse.runner.StageResult
    """Print where the report is and the MLflow run it was logged to (from the committed manifest)."""
    from landuse.manifest import read_manifest
    from landuse.report.html import REPORT_FILE
    from landuse.stages.report import REPORT

    out = result.outputs[REPORT]
    print(f"report: {out / REPORT_FILE}")
    facts = read_manifest(out) or {}
    if result.status == "unchanged":
        print("report: its inputs and config are unchanged since the last run; the report stands (--force rebuilds)")
    if facts.get("mlflow_run_id"):
        print(f"report: logged to MLflow run {facts['mlflow_run_id']} ({config.mlflow_uri}, "
              f"experiment {config.mlflow.experiment})")


@kill_runs_on_sigterm  # SIGTERM ends the MLflow runs KILLED instead of leaving them RUNNING
def main(argv: list[str] | None = None) -> int:
    """``landuse run report --config conf/X.yaml [--no-mlflow] [key=value ...]``."""
    return stage_main("report", argv, parser=build_parser(),
                      overrides=lambda args: ["report.mlflow=false"] if args.no_mlflow else [], summary=summary)
