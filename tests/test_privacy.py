"""privacy.share_raw = false (the default): raw trip rows (table ``trips``) and the rejects' raw rows
(``raw`` of tables/rejects/*) appear in nothing exported — the HTML report, MLflow artifacts, params,
metrics and tags. Marker strings are planted in a kept trip and in a rejected row of a small city's
input, the ingest stage runs, the markers are shown to be in the work dir's tables, and then every
exported file (the report directory, the MLflow artifact store and the tracking database holding
params, metrics and tags) is scanned for them.

Audit (landuse 0.x): the report reads only stage manifests (counts, rejects by reason — reasons are
fixed strings written by the validators, never row values), MLflow gets the redacted config, the
node_features manifest, dataset lineage (paths, fingerprints, schemas) and the models; nothing reads
rows of ``trips``; the report reads the first rejected rows of each source only with
``privacy.share_raw: true`` (the user's opt-in, last test), and this test keeps it that way.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

TRIP_MARKER = "PRIVTRIPMARK7731"
REJECT_MARKER = "PRIVREJECTMARK4409"


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _holding(paths: list[Path], marker: str) -> list[str]:
    needle = marker.encode()
    return [str(p) for p in paths if needle in p.read_bytes()]


@pytest.fixture(scope="module")
def city(spark, tmp_path_factory):
    """A small city's work dir after ingest, with markers planted in a kept trip and a rejected row."""
    from landuse.config import load_config
    from landuse.manifest import write_manifest
    from landuse.runner import StageContext
    from landuse.stages import ingest
    from tests.report.test_report import make_work_dir

    tmp = tmp_path_factory.mktemp("privacy")
    trips = tmp / "od.csv"
    trips.write_text("o_region,d_region,trips\n"
                     f"{TRIP_MARKER},0,740\n0,1,36\n1,2,12\n2,1,9\n"
                     f"1,{REJECT_MARKER},-3\n")  # the last row: negative_count, its raw row carries the marker
    config_path = tmp / "conf.yaml"
    config_path.write_text(json.dumps({
        "name": "privacy-test", "work_dir": str(tmp / "work"), "study": {"extent": [113.0, 22.0, 121.0, 23.5]},
        "inputs": {"trips": {"taxi": {"adapter": "zone_od", "path": str(trips)}}},
    }))
    config = load_config(config_path)
    assert config.privacy.share_raw is False
    staged = {name: tmp / "staged" / name for name in ingest.outputs(config)}
    ctx = StageContext(config, staged, spark)
    ingest.STAGE.run(ctx)
    make_work_dir(config.work_dir, optional=False)  # regions + predictions for the report
    for name, path in staged.items():
        shutil.copytree(path, config.tables_dir / name, dirs_exist_ok=True)
    write_manifest(config.tables_dir / "trips", {"stage": "ingest", **ctx.summary})
    return config


def test_markers_are_in_the_tables(city) -> None:
    tables = _files(city.tables_dir)
    assert _holding(tables, TRIP_MARKER), "the planted trip did not reach the trips table"
    assert _holding(tables, REJECT_MARKER), "the planted reject did not reach tables/rejects"


def test_nothing_exported_carries_a_raw_row(city) -> None:
    import mlflow

    from landuse.report.html import build_report, log_report
    from landuse.training.tracking import log_config, log_lineage, setup_mlflow

    report = build_report(city, city.driver_dir / "report").path
    run_id = log_report(city, report)
    setup_mlflow(city)
    manifests = {"trips": json.loads((city.tables_dir / "trips" / "_manifest.json").read_text())}
    with mlflow.start_run(run_name="privacy"):
        log_config(city)
        log_lineage({"trips": city.tables_dir / "trips"}, manifests)
        mlflow.log_dict(manifests["trips"], "inputs/trips_manifest.json")
    client = mlflow.MlflowClient()
    assert client.get_run(run_id).data.tags["kind"] == "report"
    exported = _files(report.parent) + _files(city.driver_dir / "mlartifacts")
    assert any(p.name == "report.html" for p in exported)
    store = Path(city.mlflow_uri.removeprefix("sqlite:///"))
    assert store.is_file()
    exported.append(store)  # params, metrics and tags live in the tracking database
    for marker in (TRIP_MARKER, REJECT_MARKER):
        assert _holding(exported, marker) == [], f"{marker} leaked into an export"
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    for run in runs:
        values = [*run.data.params.values(), *run.data.tags.values(), *map(str, run.data.metrics)]
        assert not any(TRIP_MARKER in v or REJECT_MARKER in v for v in values)


def test_share_raw_true_shows_sample_rejected_rows_in_the_report(city) -> None:
    """privacy.share_raw: true is the user's opt-in: the report then shows the first rejected rows."""
    import dataclasses

    from landuse.config import PrivacyConfig
    from landuse.report.html import build_report

    withheld = build_report(city, city.driver_dir / "report").path.read_text()
    assert REJECT_MARKER not in withheld and "Raw rejected rows are not shown (privacy.share_raw: false)" in withheld
    shared = build_report(dataclasses.replace(city, privacy=PrivacyConfig(share_raw=True)),
                          city.driver_dir / "shared").path.read_text()
    assert "Sample rejected rows (privacy.share_raw: true)" in shared and REJECT_MARKER in shared
    assert TRIP_MARKER not in shared  # kept trips are never shown, only rejected rows
