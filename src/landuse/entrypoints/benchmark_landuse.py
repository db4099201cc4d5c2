"""``landuse run benchmark-landuse``: the benchmark-landuse stage (landuse.stages.benchmarks, landuse.evaluation.landuse_benchmark).

Runs the stage even when ``benchmark.enabled`` is false (that flag makes it a step of ``landuse
pipeline``); ``--no-mlflow`` is ``benchmark.mlflow=false``. An unchanged benchmark is skipped and its
committed results are printed again (``--force`` reruns). The last stdout line is
``best_model=... kl=...``, read from the committed ``best.json``.
"""

from __future__ import annotations

import argparse
import json

from landuse.entrypoints.common import add_config_args, stage_main
from landuse.training.signals import kill_runs_on_sigterm


def build_parser() -> argparse.ArgumentParser:
    """``--config``, ``--force``, ``--no-mlflow`` and trailing ``key=value`` overrides."""
    parser = argparse.ArgumentParser(
        prog="landuse run benchmark-landuse",
        description="land-use distribution under the published region-embedding protocol: R repeats (20%% test, "
                    "20%% of the rest validation), every feature table through the MLP probe and our models trained "
                    "end to end on the same splits; KL, L1, cosine mean +- std beside published results")
    add_config_args(parser)
    parser.add_argument("--no-mlflow", action="store_true",
                        help="write the tables without logging an MLflow run (benchmark.mlflow=false)")
    return parser


def overrides(args: argparse.Namespace) -> list[str]:
    """``benchmark.enabled=true`` (this command runs it) and ``benchmark.mlflow=false`` for ``--no-mlflow``;
    a trailing ``key=value`` wins over both."""
    return ["benchmark.enabled=true", *(["benchmark.mlflow=false"] if args.no_mlflow else [])]


def best_line(best: dict) -> str:
    """The command's last line: ``best_model=... kl=... kl_std=... l1_sum=... cosine=... val_kl=...``."""
    return (f"best_model={best['model'].replace(' ', '')} kl={best['kl']:.4f} kl_std={best['kl_std']:.4f} "
            f"l1_sum={best['l1_sum']:.4f} cosine={best['cosine']:.4f} val_kl={best['val_kl']:.4f}")


@kill_runs_on_sigterm  # SIGTERM ends the MLflow runs KILLED instead of leaving them RUNNING
def main(argv: list[str] | None = None) -> int:
    """``landuse run benchmark-landuse --config conf/X.yaml [--no-mlflow] [--force] [key=value ...]``."""
    from landuse.manifest import read_manifest

    last: list[str] = []

    def summary(config, result) -> None:  # config: landuse.config.Config; result: landuse.runner.StageResult
        out = result.outputs["benchmark-landuse"]
        facts = read_manifest(out) or {}
        print((out / "results.md").read_text())
        for note in facts.get("notes") or []:
            print(f"benchmark-landuse: {note}")
        if result.status == "unchanged":
            print("benchmark-landuse: settings and input tables unchanged since the last run; its results stand "
                  "(--force reruns)")
        print(f"benchmark-landuse: tables -> {out}")
        if facts.get("mlflow_run_id"):
            print(f"benchmark-landuse: MLflow run {facts['mlflow_run_id']} ({config.mlflow_uri}, "
                  f"experiment {config.mlflow.experiment})")
        last.append(best_line(json.loads((out / "best.json").read_text())))

    code = stage_main("benchmark-landuse", argv, parser=build_parser(), overrides=overrides, summary=summary)
    if code == 0 and last:
        print(last[0])  # after the runner's status lines: scripts parse the last line
    return code
