"""``landuse run report``: the self-contained HTML report, logged to MLflow (see landuse.report.html)."""

from __future__ import annotations

import argparse

from landuse.entrypoints.common import add_config_args, guarded, load_from_args
from landuse.training.signals import kill_runs_on_sigterm


@kill_runs_on_sigterm  # SIGTERM ends the MLflow runs KILLED instead of leaving them RUNNING
def main(argv: list[str] | None = None) -> int:
    """``landuse run report --config conf/X.yaml [--no-mlflow] [key=value ...]``."""
    parser = argparse.ArgumentParser(
        prog="landuse run report",
        description="self-contained HTML report (maps, ablation and per-class tables, data summaries), "
                    "logged to MLflow as run report:<name>")
    add_config_args(parser)
    parser.add_argument("--no-mlflow", action="store_true", help="write the report without logging it to MLflow")
    args = parser.parse_args(argv)

    def body() -> int:
        from landuse.report.html import build_report, log_report

        config = load_from_args(args)
        path = build_report(config)
        print(f"report: {path}")
        if not args.no_mlflow:
            run_id = log_report(config, path)
            print(f"report: logged to MLflow run {run_id} ({config.mlflow_uri}, experiment {config.mlflow.experiment})")
        return 0

    return guarded(body)
