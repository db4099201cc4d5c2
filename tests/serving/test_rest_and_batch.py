"""The registered region model behind MLflow's real scoring server and in the Spark batch job.

On the tiny polygons+POIs city of ``tests/training/test_sparse_city.py``: ``landuse pipeline``, then
``landuse run train`` of a model that needs adjacency AND distance-decay edges and the ``labels``
column (GCN_dd with label and spatial lags), then ``landuse run predict``. Then:

* ``landuse run serve`` (a subprocess: the artifacts verified, then ``mlflow models serve``, local env) answers ``/invocations`` with the region table
  as ``dataframe_records`` exactly as ``landuse run predict`` scored it (1e-6, same region ids), and
  refuses a table of the wrong feature width with HTTP 400 and the model's one-line message;
* the region table built on Spark equals the driver's; ``landuse run score`` (``spark_udf``, one
  Arrow batch) writes scores equal to the REST answer, and leaves the session's Arrow batch size as it was.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from landuse.config import load_config
from landuse.manifest import read_manifest
from tests.training.test_sparse_city import CLASSES, write_city

# needs adjacency (label and spatial lags) and distance-decay edges (GCN_dd) and the labels column
TRAIN = ["training.variant=GCN_dd", "training.label_lag=true", "training.spatial_lag=1", "training.epochs=20"]
MODEL = "models:/landuse-hgcn@champion"
OUTPUTS = [*CLASSES, "confidence", "entropy", "entropy_norm"]
SERVER_START_S = 120  # measured ~10 s here; generous for a loaded machine
TELEMETRY = {"DO_NOT_TRACK": "true", "SCARF_NO_ANALYTICS": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}


@pytest.fixture(scope="module")
def city(spark, tmp_path_factory):
    """(config path, config, the region model's spec): pipeline, train and predict through the entry points."""
    import mlflow

    from landuse.entrypoints.pipeline import main as pipeline_main
    from landuse.entrypoints.predict import main as predict_main
    from landuse.entrypoints.train import main as train_main
    from landuse.serving.pyfunc import load_region_model

    root = tmp_path_factory.mktemp("rest-city")
    path = write_city(root)
    for name, step in (("pipeline", lambda: pipeline_main(["--config", str(path)])),
                       ("train", lambda: train_main(["--config", str(path), *TRAIN])),
                       ("predict", lambda: predict_main(["--config", str(path)]))):
        started = time.monotonic()
        assert step() == 0, name
        print(f"{name}: {time.monotonic() - started:.1f} s")
    config = load_config(path)
    mlflow.set_tracking_uri(config.mlflow_uri)
    _, spec = load_region_model(MODEL)
    assert spec.edge_sets == ("adjacency", "distance_decay") and spec.label_lag
    return path, config, spec


@pytest.fixture(scope="module")
def region_table(city) -> pd.DataFrame:
    """Every region as the model's region table, built on the driver (what predict scored)."""
    from landuse.data.reader import load_graph
    from landuse.serving.pyfunc import table_for_graph

    _, config, spec = city
    return table_for_graph(load_graph(config.tables_dir, classes=list(spec.classes), edges=spec.edge_sets), spec)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(city, tmp_path_factory):
    """The base URL of ``mlflow models serve`` for the champion; the server's process group is killed after."""
    path, config, _ = city
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    # the CLI execs `uvicorn` through bash: the venv's bin must be on PATH, or it exits 127
    env = {**os.environ, **TELEMETRY, "MLFLOW_TRACKING_URI": config.mlflow_uri, "MLFLOW_REGISTRY_URI": config.mlflow_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    # `landuse run serve`: the registered version's artifacts verified (sha256, loader), then MLflow's server
    cmd = [sys.executable, "-m", "landuse.cli", "run", "serve", "--config", str(path), "--model", MODEL,
           "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow models serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - started > SERVER_START_S:
                pytest.fail(f"mlflow models serve not ready after {SERVER_START_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        print(f"mlflow models serve ready in {time.monotonic() - started:.1f} s")
        yield url
    finally:
        # the CLI's uvicorn runs as a child: end the whole session group this test started
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def invoke(url: str, table: pd.DataFrame, params: dict | None = None) -> tuple[int, dict]:
    """POST the table as ``dataframe_records`` to /invocations; (HTTP status, JSON answer)."""
    from landuse.serving.region_table import as_records

    body = {"dataframe_records": as_records(table), **({"params": params} if params else {})}
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def rest_scores(server, region_table) -> pd.DataFrame:
    status, answer = invoke(server, region_table)
    assert status == 200, answer
    return pd.DataFrame(answer["predictions"])


def assert_same_scores(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Same region ids, distributions and statistics to 1e-6, same dominant class."""
    got, want = (t.sort_values("region_id").reset_index(drop=True) for t in (got, want))
    assert got["region_id"].tolist() == want["region_id"].tolist()
    np.testing.assert_allclose(got[OUTPUTS].to_numpy(float), want[OUTPUTS].to_numpy(float), atol=1e-6, rtol=0)
    assert got["dominant_class"].tolist() == want["dominant_class"].tolist()


def test_rest_answers_as_predict_scored(city, rest_scores) -> None:
    _, config, _ = city
    predicted = pq.read_table(config.tables_dir / "predictions").to_pandas()
    assert len(predicted) == 60
    assert list(rest_scores.columns) == ["region_id", *CLASSES, "dominant_class", "confidence", "entropy", "entropy_norm"]
    assert_same_scores(rest_scores, predicted)


def test_rest_refuses_a_wrong_feature_width_in_one_line(city, server, region_table) -> None:
    _, _, spec = city
    width = spec.layout[0]["width"]
    status, answer = invoke(server, region_table.assign(h_poi=[v[:5] for v in region_table["h_poi"]]))
    assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE"
    # MLflow's server prefixes the model's message with "Failed to predict data '<the whole input
    # DataFrame>'. \nError: "; the model's refusal is the last line, whole
    last = answer["message"].splitlines()[-1]
    assert last == (f"Error: region table: region 0: column 'h_poi' has 5 values; the model's feature layout "
                    f"expects {width} (poi)")
    # a subset without its neighbours: refused, then scored when asked to drop them
    status, answer = invoke(server, region_table.iloc[:3])
    assert status == 400 and "which is not a row of the table" in answer["message"].splitlines()[-1]
    status, answer = invoke(server, region_table.iloc[:3], {"unknown_neighbours": "drop"})
    assert status == 200 and [r["region_id"] for r in answer["predictions"]] == region_table["region_id"][:3].tolist()


def test_region_table_on_spark_equals_the_drivers(spark, city, region_table) -> None:
    from landuse.serving.batch import region_table_spark

    _, config, spec = city
    built = region_table_spark(spark, config, spec).toPandas().sort_values("region_id").reset_index(drop=True)
    assert list(built.columns) == list(region_table.columns)
    assert built["region_id"].tolist() == region_table["region_id"].tolist()
    assert (built["has_pois"] == region_table["has_pois"]).all()
    for column in ("h_poi", "labels"):
        for got, want in zip(built[column], region_table[column]):
            np.testing.assert_array_equal(np.asarray(got, float), want)
    # the driver lists a region's neighbours in edge-table order, Spark sorted by id: compare as sets of
    # pairs; the driver's weights went through float32 (load_graph), as the model reads both
    for ids, weights in (("adjacent", None), ("decay_to", "decay_weight")):
        for i in range(len(built)):
            pairs = [sorted(zip(t[ids][i].tolist(),
                                np.asarray(t[weights][i] if weights else t[ids][i], np.float32).tolist()))
                     for t in (built, region_table)]
            assert pairs[0] == pairs[1], (ids, i)
            assert list(built[ids][i]) == sorted(built[ids][i])


def test_score_job_equals_rest(spark, city, rest_scores, capsys) -> None:
    from pyspark.sql import functions as F

    from landuse.entrypoints.score import main as score_main
    from landuse.serving.batch import ARROW_BATCH_KEY, region_table_spark
    from landuse.spark.io import read_spark

    path, config, spec = city
    before = spark.conf.get(ARROW_BATCH_KEY)
    assert score_main(["--config", str(path)]) == 0
    assert spark.conf.get(ARROW_BATCH_KEY) == before  # raised for the one scoring call only
    assert "score: 60 regions from models:/landuse-hgcn@champion (models:/landuse-hgcn/1)" in capsys.readouterr().out
    out = config.tables_dir / "predictions_batch"
    scored = read_spark(spark, out).toPandas()
    assert_same_scores(scored, rest_scores)
    manifest = read_manifest(out)
    assert manifest["stage"] == "score" and manifest["rows"] == 60 and manifest["variant"] == spec.variant

    # a table that does not fit: exit 2 with the model's one line (not a Spark stack trace)
    bad = config.work_dir / "bad_regions"
    region_table_spark(spark, config, spec).withColumn("h_poi", F.slice("h_poi", 1, 5)).write.parquet(str(bad))
    assert score_main(["--config", str(path), "--input", str(bad), "--output", str(config.work_dir / "never")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(r"error: --model models:/landuse-hgcn/1: region table: region \d+: column 'h_poi' has 5 "
                        rf"values; the model's feature layout expects {spec.layout[0]['width']} \(poi\)", last), last
    assert not (config.work_dir / "never").exists()
