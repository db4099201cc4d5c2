"""Prediction with a registered (or any logged) model: distributions, dominant class, mixed-use entropy."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from landuse.config import Config, ConfigError

log = logging.getLogger(__name__)
T_PREDICTIONS = "predictions"
MAP_OUTPUT = "predictions_map"  # the predict stage's output of maps: <driver_dir>/maps/predictions/
GEOJSON_FILE = "predictions.geojson"  # in it (EPSG:4326)
DOMINANT = "dominant_class"
CONFIDENCE = "confidence"
ENTROPY = "entropy"  # Shannon entropy (nats) of the predicted distribution: a mixed-use index
ENTROPY_NORM = "entropy_norm"  # entropy / ln(C), in [0, 1]


def load_served_model(model_uri: str):
    """(pyfunc model, spec) of a landuse region model from an MLflow model URI; one-line ConfigError otherwise."""
    from landuse.serving.pyfunc import ArtifactIntegrityError, load_region_model

    try:
        return load_region_model(model_uri)
    except ArtifactIntegrityError:
        raise  # already one line naming the version and the file (a user error in the CLI)
    except ValueError as exc:
        raise ConfigError(f"--model {exc}") from None
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types; report one line
        missing = registered_model_missing(model_uri)
        if missing:
            raise ConfigError(f"--model {model_uri}: {missing}") from None
        raise ConfigError(f"--model {model_uri}: cannot load the model ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def registered_model_missing(model_uri: str) -> str | None:
    """For ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` URIs whose name or alias is not in the
    registry: a one-line explanation naming what to run; None otherwise (or when it cannot tell)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if not model_uri.startswith("models:/"):
        return None
    ref = model_uri.removeprefix("models:/")
    name, _, alias = ref.partition("@") if "@" in ref else (ref.split("/", 1)[0], "", "")
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    hint = "run `landuse run train` or `landuse run ablation` first (they register the model)"
    if not versions:
        return f"no model is registered as {name!r}; {hint}"
    if alias:
        try:
            client.get_model_version_by_alias(name, alias)
        except MlflowException:
            latest = max(int(v.version) for v in versions)
            return (f"{name!r} has {len(versions)} version(s) but none has the alias {alias!r}; "
                    f"use --model models:/{name}/{latest}, or {hint}")
    return None


def prediction_table(region_ids: np.ndarray, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """region_id, one column per class, dominant class, its probability, entropy and normalised entropy."""
    table = pd.DataFrame(probs.astype(np.float64), columns=classes)
    table.insert(0, "region_id", region_ids.astype(np.int64))
    table[DOMINANT] = np.asarray(classes)[probs.argmax(1)]
    table[CONFIDENCE] = probs.max(1).astype(np.float64)
    p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
    table[ENTROPY] = -(p * np.log(p)).sum(1)
    table[ENTROPY_NORM] = table[ENTROPY] / np.log(len(classes))
    return table


def model_uri(config: Config) -> str:
    """The model ``predict`` scores with: ``predict.model``, else ``models:/<training.registered_model>@champion``."""
    return config.predict.model or f"models:/{config.training.registered_model}@champion"


def predict(config: Config, model_uri: str, table_out: Path, map_out: Path) -> tuple[pd.DataFrame, dict]:
    """Score every region of the work dir with the model; write the Parquet table into ``table_out``
    and ``predictions.geojson`` into ``map_out`` (the predict stage's staging dirs; the runner commits).

    The regions go through the model exactly as a REST or batch caller sends them: the region table
    (features and edge lists, :func:`landuse.serving.pyfunc.table_for_graph`) into the pyfunc.
    Returns the prediction table and what the manifests record (model URI, variant, features, classes).
    """
    from landuse.data.reader import load_graph
    from landuse.serving.pyfunc import table_for_graph
    from landuse.serving.region_table import RegionTableError

    model, spec = load_served_model(model_uri)
    try:
        graph = load_graph(config.tables_dir, classes=list(spec.classes), edges=spec.edge_sets)
    except ValueError as exc:
        raise ConfigError(f"--model {model_uri}: {str(exc).splitlines()[0]}") from None
    try:
        regions = table_for_graph(graph, spec)
    except RegionTableError as exc:
        raise ConfigError(f"--model {model_uri}: {config.tables_dir}: {exc}; rerun `landuse run assemble` with the "
                          "model's training.features, or train a model on these tables") from None
    table = score_table(model, regions, model_uri)
    write_predictions(config, table, table_out, map_out)
    return table, {"model_uri": model_uri, "variant": spec.variant, "features": list(spec.features),
                   "classes": list(spec.classes)}


def score_table(model, regions: pd.DataFrame, model_uri: str, params: dict | None = None) -> pd.DataFrame:
    """The pyfunc's prediction table for a region table; a one-line ConfigError when the table does not fit."""
    from mlflow.exceptions import MlflowException

    try:
        return model.predict(regions, params=params)
    except MlflowException as exc:
        raise ConfigError(f"--model {model_uri}: {exc.message.splitlines()[0]}") from None


def write_predictions(config: Config, table: pd.DataFrame, table_out: Path, map_out: Path) -> Path:
    """Write the prediction table (Parquet) into ``table_out`` and ``predictions.geojson`` (EPSG:4326,
    the regions of ``config`` joined with the table) into ``map_out``; returns the GeoJSON's path.

    Both are staging directories of a stage: the runner writes their manifests and commits them.
    """
    from landuse.spark.io import read_geoparquet, write_pandas
    from landuse.spark.schemas import REGION_ID, T_REGIONS

    write_pandas(table, table_out)
    regions = read_geoparquet(config, T_REGIONS, "regions")[[REGION_ID, "geometry"]]
    geo = regions.merge(table, on=REGION_ID, how="inner").to_crs("EPSG:4326")
    Path(map_out).mkdir(parents=True, exist_ok=True)
    geojson = Path(map_out) / GEOJSON_FILE
    geo.to_file(geojson, driver="GeoJSON")
    log.info("predict: %d regions -> %s, %s", len(table), table_out, geojson)
    return geojson
