"""``landuse run predict [--model URI]``: the predict stage (landuse.stages.predict); with ``--regions FILE``
it embeds and scores regions that were not in the training run (see landuse.serving.new_regions).

``--model`` is the override ``predict.model=URI``. The runner skips the stage when the model resolves
to the same registered version (and artifacts) and the tables are unchanged; the summary is printed
from the committed outputs either way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from landuse.config import ConfigError
from landuse.entrypoints.common import add_config_args, flag_overrides, guarded, load_from_args, stage_main
from landuse.locks import work_dir_lock


def build_parser() -> argparse.ArgumentParser:
    """The predict command's arguments (``--model`` sets ``predict.model``)."""
    parser = argparse.ArgumentParser(prog="landuse run predict",
                                     description="predicted land-use distributions per region from an MLflow model")
    add_config_args(parser)
    parser.add_argument("--model", default=None,
                        help="MLflow model URI (models:/NAME@champion, models:/NAME/3, runs:/RUN/model) "
                             "(predict.model; default: models:/<training.registered_model>@champion)")
    parser.add_argument("--regions", type=Path, default=None, metavar="FILE",
                        help="score regions that were not in the training run: a polygon file (gpkg, shp, GeoJSON, "
                             "GeoParquet), embedded with the training run's fitted models in "
                             "<work_dir>/new_regions/<name>-<hash>/ (--force reruns its stages)")
    parser.add_argument("--regions-id-column", default=None, metavar="COL",
                        help="id column of --regions (default: the training regions' id column; row_number: "
                             "number them 0..N-1 in file order)")
    return parser


def model_overrides(args: argparse.Namespace) -> list[str]:
    """``predict.model=URI`` when ``--model`` is given."""
    return flag_overrides(args, "predict", ("model",))


def summary(config, result) -> None:  # config: landuse.config.Config; result: landuse.runner.StageResult
    """Print the predictions from the committed outputs (also when the stage was skipped as unchanged)."""
    from landuse.manifest import read_manifest
    from landuse.storage import read_parquet
    from landuse.serving.predict import DOMINANT, GEOJSON_FILE, MAP_OUTPUT, T_PREDICTIONS

    parquet = result.outputs[T_PREDICTIONS]
    geojson = result.outputs[MAP_OUTPUT] / GEOJSON_FILE
    manifest = read_manifest(parquet) or {}
    dominant = read_parquet(parquet, columns=[DOMINANT]).column(0).to_pandas()
    counts = dominant.value_counts().to_dict()
    print(f"predict: {len(dominant)} regions from {manifest.get('model_uri')} -> {parquet} and {geojson}")
    print("dominant classes: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if result.status == "unchanged":
        version = (manifest.get("extra") or {}).get("version")
        print(f"predict: model{f' version {version}' if version else ''} and tables unchanged since the last run; "
              "its predictions stand (--force rescores)")


def main(argv: list[str] | None = None) -> int:
    """``landuse run predict --config conf/X.yaml [--model models:/landuse-hgcn@champion] [--regions NEW.gpkg] [key=value ...]``."""
    args = build_parser().parse_args(argv)
    if args.regions is None and args.regions_id_column is None:
        return stage_main("predict", argv, parser=build_parser(), overrides=model_overrides, summary=summary)

    def body() -> int:
        from landuse.serving.predict import model_uri
        from landuse.training.tracking import setup_mlflow

        if args.regions is None:
            raise ConfigError("--regions-id-column: only with --regions FILE")
        config = load_from_args(args, model_overrides(args))
        setup_mlflow(config)
        with work_dir_lock(config, command="landuse run predict --regions"):
            return _new_regions(config, model_uri(config), args)

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
