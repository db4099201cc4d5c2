"""Prediction with a registered (or any logged) model: distributions, dominant class, mixed-use entropy."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from landuse.config import Config, ConfigError

log = logging.getLogger(__name__)
T_PREDICTIONS = "predictions"
DOMINANT = "dominant_class"
CONFIDENCE = "confidence"
ENTROPY = "entropy"  # Shannon entropy (nats) of the predicted distribution: a mixed-use index
ENTROPY_NORM = "entropy_norm"  # entropy / ln(C), in [0, 1]


def load_served_model(model_uri: str):
    """The model and its metadata (variant, features, classes, num_nodes) from an MLflow model URI."""
    import mlflow

    try:
        info = mlflow.models.get_model_info(model_uri)
        model = mlflow.pytorch.load_model(model_uri, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types; report one line
        missing = registered_model_missing(model_uri)
        if missing:
            raise ConfigError(f"--model {model_uri}: {missing}") from None
        raise ConfigError(f"--model {model_uri}: cannot load the model ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    meta = info.metadata or {}
    if "features" not in meta or "classes" not in meta:
        raise ConfigError(f"--model {model_uri}: not a landuse model (no features/classes metadata)")
    return model, meta


def registered_model_missing(model_uri: str) -> str | None:
    """For ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` URIs whose name or alias is not in the
    registry: a one-line explanation naming what to run; None otherwise (or when it cannot tell)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if not model_uri.startswith("models:/"):
        return None
    ref = model_uri.removeprefix("models:/")
    name, alias = (ref.split("@", 1) + [None])[:2] if "@" in ref else (ref.split("/", 1)[0], None)
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


def predict(config: Config, model_uri: str) -> tuple[pd.DataFrame, Path, Path]:
    """Run the model on the assembled node features; write Parquet (tables/predictions) and GeoJSON."""
    import torch

    from landuse.data.reader import load_graph
    from landuse.spark.io import read_geoparquet, write_pandas
    from landuse.spark.schemas import REGION_ID, T_REGIONS
    from landuse.training.protocol import model_input, with_label_lag

    model, meta = load_served_model(model_uri)
    spatial_lag = int(meta.get("spatial_lag") or 0)
    label_lag = bool(meta.get("label_lag", False))
    graph = load_graph(config.tables_dir, classes=meta["classes"],
                       edges=("adjacency",) if spatial_lag or label_lag else ())
    if meta.get("num_nodes") not in (None, graph.num_nodes):
        raise ConfigError(f"--model {model_uri}: trained on a graph of {meta['num_nodes']} regions, "
                          f"but {config.tables_dir} has {graph.num_nodes}; predict on the graph it was trained on")
    # the model's input as in training (models logged before presence flags existed: features only)
    x = model_input(graph, meta["features"], bool(meta.get("presence", False)), spatial_lag)
    if label_lag:  # every labelled region informs its neighbours (a region's own label never enters its input)
        x = with_label_lag(x, graph, np.flatnonzero(graph.has_label.numpy()))
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=-1).numpy()
    table = prediction_table(graph.region_ids.numpy(), probs, list(meta["classes"]))
    out = config.tables_dir / T_PREDICTIONS
    from landuse.manifest import commit_dir, staging_dir, write_manifest

    staged = staging_dir(out)
    write_pandas(table, staged)
    write_manifest(staged, {"stage": "predict", "model_uri": model_uri, "rows": len(table), **{k: meta[k] for k in meta}})
    commit_dir(staged, out)
    regions = read_geoparquet(config, T_REGIONS, "regions")[[REGION_ID, "geometry"]]
    geo = regions.merge(table, on=REGION_ID, how="inner").to_crs("EPSG:4326")
    geojson = config.driver_dir / "predictions.geojson"
    geo.to_file(geojson, driver="GeoJSON")
    log.info("predict: %d regions -> %s, %s", len(table), out, geojson)
    return table, out, geojson
