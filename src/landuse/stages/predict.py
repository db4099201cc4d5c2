"""Stage ``predict``: per-region predicted distributions from the registered champion (landuse.serving.predict).

Scores every region of the work dir (``node_features`` and the edge lists, read by
:func:`landuse.data.reader.load_graph`) with the MLflow model ``predict.model`` (default
``models:/<training.registered_model>@champion``) and writes ``tables/predictions`` (Parquet) and
``<driver_dir>/maps/predictions/predictions.geojson`` (EPSG:4326). The model is resolved through the
registry for the fingerprint (:func:`model_record`: version, run, sha256 record of its artifacts),
so registering a new champion (or moving the alias) reruns predict, and everything downstream of it
(monitor, report); an unchanged champion on unchanged tables is skipped. Reads the experiments'
outputs when present (``optional_upstream``), so a retrained model reruns it too.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from landuse.config import Config
from landuse.runner import Stage, StageContext, no_spark
from landuse.serving.predict import GEOJSON_FILE, MAP_OUTPUT, T_PREDICTIONS, model_uri

log = logging.getLogger(__name__)

def outputs(config: Config) -> dict:
    """``tables/predictions`` and ``<driver_dir>/maps/predictions/`` (the GeoJSON)."""
    from landuse.spark.io import table_path

    return {T_PREDICTIONS: table_path(config, T_PREDICTIONS), MAP_OUTPUT: config.driver_dir / "maps" / "predictions"}


def _sha(text: str | None) -> str | None:
    return hashlib.sha256(text.encode("utf-8")).hexdigest() if text is not None else None


def model_record(config: Config) -> dict[str, Any]:
    """What the model URI resolves to now: ``{"uri", "version", "run_id", "artifacts_sha256"}``.

    ``artifacts_sha256`` is the sha256 of the record of the model's artifact digests that
    :mod:`landuse.serving.integrity` stores (model version tag ``artifact_sha256``, or the run tag of
    a ``runs:/`` / logged-model URI). When the registry has no such model (or cannot be asked) the
    version is None: the fingerprint then differs from any scored run, and the stage's run fails with
    the one-line error naming what to run.
    """
    from landuse.serving.integrity import _ALIASED, _LOGGED, _PINNED, _RUNS, VERSION_TAG, joined_tag, run_tag

    uri = model_uri(config).rstrip("/")
    record: dict[str, Any] = {"uri": uri, "version": None}
    try:
        from mlflow.tracking import MlflowClient

        from landuse.training.tracking import setup_mlflow

        setup_mlflow(config)
        client = MlflowClient()
        aliased, pinned = _ALIASED.fullmatch(uri), _PINNED.fullmatch(uri)
        logged, runs = _LOGGED.fullmatch(uri), _RUNS.fullmatch(uri)
        if match := aliased or pinned:
            name = match[1]
            version = (client.get_model_version_by_alias(name, match[2]) if aliased
                       else client.get_model_version(name, match[2]))
            record.update(version=str(version.version), run_id=version.run_id,
                          artifacts_sha256=_sha(joined_tag(version.tags, VERSION_TAG)))
        elif logged or runs:
            if logged:
                import mlflow

                model = mlflow.get_logged_model(logged[1])
                run_id, name = model.source_run_id, model.name
            else:
                assert runs is not None, "not a logged-model URI, so a runs:/ one"
                run_id, name = runs[1], runs[2]
            tags = client.get_run(run_id).data.tags if run_id else {}
            record.update(version=run_id, run_id=run_id, artifacts_sha256=_sha(joined_tag(tags, run_tag(name))))
    except Exception as exc:  # noqa: BLE001 - no such model / registry unreachable: the run says it in one line
        log.debug("predict: cannot resolve %s (%s: %s)", uri, type(exc).__name__, exc)
        record["version"] = None
    return record


@no_spark  # the pyfunc on pandas tables; no Spark session
def run(ctx: StageContext) -> None:
    """Score the regions with the model; write the table and the GeoJSON into the staging dirs."""
    from landuse.serving.predict import predict
    from landuse.training.tracking import setup_mlflow

    config = ctx.config
    setup_mlflow(config)
    table, meta = predict(config, model_uri(config), ctx.out(T_PREDICTIONS), ctx.out(MAP_OUTPUT))
    ctx.summary.update(meta, regions=len(table), geojson=GEOJSON_FILE,
                       dominant_classes={str(k): int(v) for k, v in table["dominant_class"].value_counts().items()})


STAGE = Stage(
    name="predict",
    description="per-region predicted distributions, dominant class and mixed-use entropy from the registered "
                "champion (predict.model) -> tables/predictions, maps/predictions/predictions.geojson",
    run=run,
    outputs=outputs,
    config_keys=("predict", "training.registered_model"),
    upstream=("regions", "assemble"),  # node_features and edges (load_graph); the regions' geometry (GeoJSON)
    # a retrained / re-registered model reruns predict; names not registered (yet) are skipped by the runner
    optional_upstream=("train", "ablation", "fusion", "tune", "transfer"),
    extra=model_record,
    group="report",
)
