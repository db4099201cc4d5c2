"""The publishing stages ``predict`` and ``monitor`` through the runner, on hand-written work dirs (no Spark).

``predict``'s fingerprint follows the registered champion (``extra``: version, run, sha256 record of
its artifacts): unchanged champion and tables → skipped; a new champion → rerun; no registered model
→ one-line error. ``monitor`` writes its table, rejects and ``maps/monitoring/`` through the runner,
is skipped when unchanged, reruns on a new prediction, and reports bad ``inputs.planned`` options in
one line. (The report stage: tests/report/test_report.py; the real model end to end:
tests/training/test_sparse_city.py and tests/stages/test_pipeline_e2e.py.)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import geopandas as gpd
import pyarrow.parquet as pq
import pytest
import shapely

from landuse.config import Config, load_config
from landuse.manifest import read_manifest, write_manifest
from landuse.runner import StageContext, no_spark, output_paths, run_stage
from landuse.stages import STAGES
from tests.report.test_report import CELL, SIDE, make_work_dir

NAME = "publishing-test"


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def fake_upstream(config: Config, *stages: str) -> None:
    """A committed manifest (with a fingerprint) in every output of ``stages`` that has none yet."""
    for name in stages:
        for out in output_paths(STAGES[name], config).values():
            if read_manifest(out) is None:
                write_manifest(_mkdir(out), {"stage": name, "fingerprint": f"{name}-1"})


@pytest.fixture()
def tracked(tmp_path: Path, repo_root: Path, monkeypatch):
    """A config on a hand-written work dir with its own MLflow store (nothing registered yet)."""
    import mlflow

    monkeypatch.chdir(repo_root)
    work = tmp_path / "work"
    make_work_dir(work, optional=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.create_experiment("publishing", artifact_location=(tmp_path / "artifacts").as_uri())
    overrides = [f"work_dir={work}", f"mlflow.tracking_uri={uri}", "mlflow.experiment=publishing",
                 f"training.registered_model={NAME}"]
    config = load_config(repo_root / "conf/synthetic_shenzhen.yaml", overrides, check_inputs=False)
    fake_upstream(config, "regions", "assemble")
    yield config, overrides
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def register(config: Config, digests: dict[str, str]) -> str:
    """A model version of NAME carrying an artifact sha256 record, made the champion; returns its version."""
    from mlflow.tracking import MlflowClient

    from landuse.serving.integrity import version_tags

    client = MlflowClient(config.mlflow_uri, registry_uri=config.mlflow_uri)
    if not client.search_registered_models(f"name = '{NAME}'"):
        client.create_registered_model(NAME)
    version = client.create_model_version(NAME, source=(Path(config.work_dir) / "model").as_uri(),
                                          tags=version_tags(digests))
    client.set_registered_model_alias(NAME, "champion", version.version)
    return str(version.version)


def test_a_new_champion_reruns_predict(tracked) -> None:
    from landuse.stages.predict import STAGE, model_record

    config, _ = tracked
    assert model_record(config) == {"uri": f"models:/{NAME}@champion", "version": None}
    calls: list[str] = []

    @no_spark
    def scored(ctx: StageContext) -> None:  # stands in for the pyfunc: the runner's skip logic is under test
        calls.append(model_record(ctx.config)["version"])
        (ctx.out("predictions") / "part-0.txt").write_text(str(len(calls)))
        (ctx.out("predictions_map") / "predictions.geojson").write_text("{}")

    registry = {**STAGES, "predict": dataclasses.replace(STAGE, run=scored)}
    v1 = register(config, {"MLmodel": "a" * 64})
    record = model_record(config)
    assert record["version"] == v1 == "1" and len(record["artifacts_sha256"]) == 64
    assert run_stage(registry["predict"], config, registry).status == "ran"
    assert read_manifest(config.tables_dir / "predictions")["extra"] == record
    assert run_stage(registry["predict"], config, registry).status == "unchanged"
    register(config, {"MLmodel": "b" * 64})  # a new champion: version 2
    assert run_stage(registry["predict"], config, registry).status == "ran"
    assert run_stage(registry["predict"], config, registry).status == "unchanged"
    assert calls == ["1", "2"]
    # a pinned version in predict.model is followed the same way (config key and extra)
    pinned = dataclasses.replace(config, predict=dataclasses.replace(config.predict, model=f"models:/{NAME}/1"))
    assert model_record(pinned)["version"] == "1"
    assert run_stage(registry["predict"], pinned, registry).status == "ran" and calls[-1] == "1"


def test_predict_without_a_registered_model_is_one_line(tracked, capsys) -> None:
    from landuse.entrypoints.predict import main

    config, overrides = tracked
    assert main(["--config", "conf/synthetic_shenzhen.yaml", *overrides]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(errors) == 1, err[-2000:]
    assert f"no model is registered as '{NAME}'" in errors[0] and "landuse run train" in errors[0]
    assert main(["--config", "conf/synthetic_shenzhen.yaml", *overrides, "--model", "models:/other/3"]) == 2
    assert "no model is registered as 'other'" in capsys.readouterr().err


def write_plan(path: Path) -> None:
    """A plan over the 5 x 5 test grid: residential on the left half, green space right, one unknown class."""
    x0, y0 = 200_000.0, 2_490_000.0
    width = SIDE * CELL
    gpd.GeoDataFrame({"planned_class": ["residential", "green_space", "airport"]},
                     geometry=[shapely.box(x0, y0, x0 + width / 2, y0 + width),
                               shapely.box(x0 + width / 2, y0, x0 + width, y0 + width / 2),
                               shapely.box(x0 + width / 2, y0 + width / 2, x0 + width, y0 + width)],
                     crs="EPSG:32650").to_file(path, driver="GPKG")


def test_monitor_stage_writes_maps_and_skips_when_unchanged(tracked, tmp_path: Path, capsys) -> None:
    from landuse.entrypoints.monitor import main

    config, overrides = tracked
    plan = tmp_path / "plan.gpkg"
    write_plan(plan)
    fake_upstream(config, "predict")  # the maps/predictions output beside the hand-written predictions
    argv = ["--config", "conf/synthetic_shenzhen.yaml", *overrides, f"inputs.planned.path={plan}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    maps = config.work_dir / "maps" / "monitoring"
    table = config.tables_dir / "monitoring"
    assert ("monitor: " in out and "planned regions depart from the plan (threshold 0.5) -> "
            f"{table}, {maps / 'monitoring_deviations.png'}, {maps / 'monitoring.geojson'}" in out)
    assert f"monitor: ran monitoring_map -> {maps}" in out
    assert (maps / "monitoring_deviations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    geo = json.loads((maps / "monitoring.geojson").read_text())
    flags = pq.read_table(table).to_pandas()
    assert len(geo["features"]) == len(flags) == SIDE * SIDE
    rejects = pq.read_table(config.tables_dir / "rejects" / "planned").to_pandas()
    assert rejects["reason"].tolist() == ["unknown_class"]
    manifest = read_manifest(table)
    assert manifest["stage"] == "monitor" and manifest["rejected_plan_rows"] == 1 and manifest["rows"] == SIDE * SIDE
    assert not (config.work_dir / "monitoring.geojson").exists()  # no longer beside the work dir's tables

    before = (maps / "monitoring.geojson").stat().st_mtime_ns
    assert main(argv) == 0
    assert f"monitor: unchanged monitoring -> {table}" in capsys.readouterr().out
    assert (maps / "monitoring.geojson").stat().st_mtime_ns == before
    predictions = config.tables_dir / "predictions"  # predict reran (a new champion): monitor reruns
    write_manifest(predictions, {**read_manifest(predictions), "fingerprint": "predict-2"})
    assert main(argv) == 0
    assert f"monitor: ran monitoring -> {table}" in capsys.readouterr().out

    for bad, expected in (("inputs.planned.options.colour=x", "inputs.planned.options.colour: unknown option"),
                          ("inputs.planned.adapter=polygons", "inputs.planned.adapter: 'polygons' is not planned_polygons"),
                          ("inputs.planned.options.class_column=", "inputs.planned.options.class_column: required")):
        assert main([*argv, bad]) == 2, bad
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and expected in errors[0], (bad, errors)
