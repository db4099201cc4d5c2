"""``landuse run score``: batch scoring on Spark with ``mlflow.pyfunc.spark_udf`` (see landuse.serving.batch)."""

from __future__ import annotations

import argparse

from landuse.entrypoints.common import add_config_args, guarded, load_from_args

T_PREDICTIONS_BATCH = "predictions_batch"


def main(argv: list[str] | None = None) -> int:
    """``landuse run score --config conf/X.yaml [--model URI] [--input TABLE] [--output TABLE] [key=value ...]``."""
    parser = argparse.ArgumentParser(prog="landuse run score",
                                     description="score a region table on Spark with an MLflow model (spark_udf)")
    add_config_args(parser)
    parser.add_argument("--model", default=None,
                        help="MLflow model URI (models:/NAME@champion, runs:/RUN/model); default: "
                             "models:/<training.registered_model>@champion")
    parser.add_argument("--input", default=None, metavar="TABLE_PATH",
                        help="a region table (Parquet or Delta directory); default: built on Spark from the work "
                             "dir's node_features and edge tables")
    parser.add_argument("--output", default=None, metavar="TABLE_PATH",
                        help=f"where to write the scores; default: <work_dir>/tables/{T_PREDICTIONS_BATCH}")
    parser.add_argument("--unknown-neighbours", choices=("error", "drop"), default="error",
                        help="a neighbour id that is not a row of the table: refuse (default) or ignore it")
    args = parser.parse_args(argv)

    def body() -> int:
        from landuse.config import ConfigError
        from landuse.manifest import commit_dir, discard_dir, now_iso, recover_dir, staging_dir, write_manifest
        from landuse.serving.batch import pinned_uri, region_table_spark, score_spark
        from landuse.spark.io import read_spark, write_spark
        from landuse.spark.session import build_session
        from landuse.storage import is_local, location
        from landuse.serving.predict import load_served_model
        from landuse.training.tracking import setup_mlflow

        config = load_from_args(args)
        setup_mlflow(config)
        started = now_iso()
        asked = args.model or f"models:/{config.training.registered_model}@champion"
        uri = pinned_uri(asked)
        _, spec = load_served_model(uri)  # one-line errors for a missing or foreign model, before Spark starts
        source = location(args.input, config.storage) if args.input else None
        if source is not None and is_local(source) and not source.is_dir():
            raise ConfigError(f"--input {args.input}: no such table directory")
        spark = build_session(config)
        if source is not None:
            regions = read_spark(spark, source)
        else:
            regions = region_table_spark(spark, config, spec)
        scored = score_spark(spark, regions, uri, params={"unknown_neighbours": args.unknown_neighbours})
        out = location(args.output, config.storage) if args.output else config.tables_dir / T_PREDICTIONS_BATCH
        recover_dir(out)
        staged = staging_dir(out)
        try:
            write_spark(scored, staged)
            counts = {r["dominant_class"]: r["count"] for r in scored.groupBy("dominant_class").count().collect()}
            rows = sum(counts.values())
            write_manifest(staged, {"stage": "score", "model_uri": asked, "model_version_uri": uri, "rows": rows,
                                    "input": args.input or "node_features + edge tables (region_table_spark)",
                                    "variant": spec.variant, "features": list(spec.features),
                                    "classes": list(spec.classes), "started": started, "finished": now_iso()})
        except BaseException:
            discard_dir(staged)  # the previous output stays as it was
            raise
        commit_dir(staged, out)
        print(f"score: {rows} regions from {asked} ({uri}) -> {out}")
        print("dominant classes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
        return 0

    return guarded(body)
