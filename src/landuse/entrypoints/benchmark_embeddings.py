"""``landuse run benchmark-embeddings``: region embeddings vs baselines vs published results (see landuse.training.benchmark)."""

from __future__ import annotations

import argparse
from pathlib import Path

from landuse.config import ConfigError
from landuse.entrypoints.common import add_config_args, guarded, load_from_args
from landuse.training.signals import kill_runs_on_sigterm


def parse_embeddings(items: list[str] | None) -> dict[str, Path]:
    """``NAME=PATH`` items → {name: path}; names unique and non-empty."""
    out: dict[str, Path] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--embeddings {item!r}: expected NAME=PATH (a Parquet table with region_id, vector)")
        if name.strip() in out:
            raise ConfigError(f"--embeddings: name {name.strip()!r} given twice")
        out[name.strip()] = Path(path.strip())
    return out


@kill_runs_on_sigterm  # SIGTERM ends the MLflow runs KILLED instead of leaving them RUNNING
def main(argv: list[str] | None = None) -> int:
    """``landuse run benchmark-embeddings --config conf/X.yaml [--labels CSV] [--embeddings NAME=PATH] [key=value ...]``."""
    parser = argparse.ArgumentParser(
        prog="landuse run benchmark-embeddings",
        description="benchmark region embeddings (each modality, fused, the HGCN hidden layer, extra tables) against "
                    "baselines (raw OD rows, POI counts, random): (a) land-use distribution with an MLP probe over "
                    "repeated splits; (b) with --labels, the MVURE/MGFN protocol on NYC mh-180 (Ridge 5-fold for "
                    "crime / check-in counts, KMeans(12) vs community districts) beside the published results")
    add_config_args(parser)
    parser.add_argument("--labels", type=Path, default=None,
                        help="per-region labels CSV (region_id, community_district, crime_count, checkin_count) for "
                             "task (b); default: ${vars.data_root}/labels/mh180_region_labels.csv when the config "
                             "has vars.data_root and that file exists; otherwise task (b) is skipped")
    parser.add_argument("--embeddings", action="append", metavar="NAME=PATH", default=None,
                        help="an extra embedding table (Parquet: region_id, vector) to benchmark; repeat for more")
    parser.add_argument("--splits", type=int, default=None,
                        help="splits of task (a) (default: training.splits, at most 10)")
    parser.add_argument("--no-mlflow", action="store_true", help="write the tables without logging an MLflow run")
    args = parser.parse_args(argv)

    def body() -> int:
        from landuse.training.benchmark import default_labels_path, run_benchmark

        extra = parse_embeddings(args.embeddings)
        config = load_from_args(args)
        labels = args.labels
        skipped = None
        if labels is None:
            default = default_labels_path(config)
            if default is not None and default.is_file():
                labels = default
            else:
                skipped = ("task (b) skipped: no --labels given" if default is None
                           else f"task (b) skipped: no --labels given and {default} does not exist")
        result = run_benchmark(config, labels=labels, extra=extra, splits=args.splits, track=not args.no_mlflow,
                               explicit_labels=args.labels is not None)
        print(result.landuse_md)
        if result.mvure_md is not None:
            print(result.mvure_md)
        for note in result.notes + ([skipped] if skipped else []):
            print(f"benchmark-embeddings: {note}")
        print(f"benchmark-embeddings: tables -> {result.directory}")
        if result.run_id:
            print(f"benchmark-embeddings: MLflow run {result.run_id} ({config.mlflow_uri}, experiment {config.mlflow.experiment})")
        return 0

    return guarded(body)
