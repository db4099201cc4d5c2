"""``landuse run predict --model URI`` (see landuse.training.predict)."""

from __future__ import annotations

import argparse

from landuse.entrypoints.common import add_config_args, guarded, load_from_args


def main(argv: list[str] | None = None) -> int:
    """``landuse run predict --config conf/X.yaml --model models:/landuse-hgcn@champion [key=value ...]``."""
    parser = argparse.ArgumentParser(prog="landuse run predict",
                                     description="predicted land-use distributions per region from an MLflow model")
    add_config_args(parser)
    parser.add_argument("--model", default=None,
                        help="MLflow model URI (models:/NAME@champion, runs:/RUN/model); default: "
                             "models:/<training.registered_model>@champion")
    args = parser.parse_args(argv)

    def body() -> int:
        from landuse.training.predict import predict
        from landuse.training.tracking import setup_mlflow

        config = load_from_args(args)
        setup_mlflow(config)
        uri = args.model or f"models:/{config.training.registered_model}@champion"
        table, parquet, geojson = predict(config, uri)
        counts = table["dominant_class"].value_counts().to_dict()
        print(f"predict: {len(table)} regions from {uri} -> {parquet} and {geojson}")
        print("dominant classes: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return 0

    return guarded(body)
