"""``landuse run benchmark-landuse``: the region-embedding land-use protocol (see landuse.training.landuse_benchmark)."""

from __future__ import annotations

import argparse

from landuse.entrypoints.common import add_config_args, guarded, load_from_args
from landuse.training.signals import kill_runs_on_sigterm


@kill_runs_on_sigterm  # SIGTERM ends the MLflow runs KILLED instead of leaving them RUNNING
def main(argv: list[str] | None = None) -> int:
    """``landuse run benchmark-landuse --config conf/X.yaml [--no-mlflow] [key=value ...]``."""
    parser = argparse.ArgumentParser(
        prog="landuse run benchmark-landuse",
        description="land-use distribution under the published region-embedding protocol: R repeats (20%% test, "
                    "20%% of the rest validation), every feature table through the MLP probe and our models trained "
                    "end to end on the same splits; KL, L1, cosine mean +- std beside published results")
    add_config_args(parser)
    parser.add_argument("--no-mlflow", action="store_true", help="write the tables without logging an MLflow run")
    args = parser.parse_args(argv)

    def body() -> int:
        from landuse.training.landuse_benchmark import run_landuse_benchmark

        config = load_from_args(args)
        result = run_landuse_benchmark(config, track=not args.no_mlflow)
        print(result.markdown)
        for note in result.notes:
            print(f"benchmark-landuse: {note}")
        print(f"benchmark-landuse: tables -> {result.directory}")
        if result.run_id:
            print(f"benchmark-landuse: MLflow run {result.run_id} ({config.mlflow_uri}, experiment {config.mlflow.experiment})")
        best = result.best
        print(f"best_model={best['model'].replace(' ', '')} kl={best['kl']:.4f} kl_std={best['kl_std']:.4f} "
              f"l1_sum={best['l1_sum']:.4f} cosine={best['cosine']:.4f} val_kl={best['val_kl']:.4f}")
        return 0

    return guarded(body)
