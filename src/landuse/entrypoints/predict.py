"""``landuse run predict --model URI`` (see landuse.training.predict); with ``--regions FILE`` it embeds
and scores regions that were not in the training run (see landuse.serving.new_regions)."""

from __future__ import annotations

import argparse
from pathlib import Path

from landuse.config import ConfigError
from landuse.entrypoints.common import add_config_args, guarded, load_from_args
from landuse.locks import work_dir_lock


def main(argv: list[str] | None = None) -> int:
    """``landuse run predict --config conf/X.yaml --model models:/landuse-hgcn@champion [--regions NEW.gpkg] [key=value ...]``."""
    parser = argparse.ArgumentParser(prog="landuse run predict",
                                     description="predicted land-use distributions per region from an MLflow model")
    add_config_args(parser)
    parser.add_argument("--model", default=None,
                        help="MLflow model URI (models:/NAME@champion, runs:/RUN/model); default: "
                             "models:/<training.registered_model>@champion")
    parser.add_argument("--regions", type=Path, default=None, metavar="FILE",
                        help="score regions that were not in the training run: a polygon file (gpkg, shp, GeoJSON, "
                             "GeoParquet), embedded with the training run's fitted models in "
                             "<work_dir>/new_regions/<name>-<hash>/ (--force reruns its stages)")
    parser.add_argument("--regions-id-column", default=None, metavar="COL",
                        help="id column of --regions (default: the training regions' id column; row_number: "
                             "number them 0..N-1 in file order)")
    args = parser.parse_args(argv)

    def body() -> int:
        from landuse.training.predict import predict
        from landuse.training.tracking import setup_mlflow

        if args.regions_id_column is not None and args.regions is None:
            raise ConfigError("--regions-id-column: only with --regions FILE")
        config = load_from_args(args)
        setup_mlflow(config)
        uri = args.model or f"models:/{config.training.registered_model}@champion"
        with work_dir_lock(config, command="landuse run predict"):
            if args.regions is not None:
                return _new_regions(config, uri, args)
            table, parquet, geojson = predict(config, uri)
        counts = table["dominant_class"].value_counts().to_dict()
        print(f"predict: {len(table)} regions from {uri} -> {parquet} and {geojson}")
        print("dominant classes: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return 0

    return guarded(body)


def _new_regions(config, uri: str, args: argparse.Namespace) -> int:  # config: landuse.config.Config
    """The ``--regions`` branch: derived work dir, its stages, the scores; print where they went."""
    from landuse.serving.new_regions import predict_new_regions

    result = predict_new_regions(config, uri, args.regions, args.regions_id_column, force=args.force)
    ran = [r.name for r in result.stages if r.status == "ran"]
    counts = result.table["dominant_class"].value_counts().to_dict()
    print(f"predict: {len(result.table)} new regions of {args.regions} from {uri} -> {result.parquet} and {result.geojson}")
    print(f"work dir of the new regions: {result.config.work_dir} (stages run: {', '.join(ran) or 'none, all unchanged'})")
    if result.aligned:
        print(f"scored with the training vocabulary and idf: {', '.join(result.aligned)}")
    print("dominant classes: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if result.kl is not None:
        print(f"KL on the {result.labelled} labelled new regions: {result.kl:.5f}")
    return 0
