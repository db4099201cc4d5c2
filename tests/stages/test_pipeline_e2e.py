"""End to end through the stage runner: synthetic tiny (both profiles) and the real NYC config.

Checks the issue's acceptance figures: labels equal the generator's truth (≤ 1e-6), every row is
accounted for (in = kept + rejected; trips in = assigned + unassigned), a second run skips every
stage, and the NYC mh-180 label table has 180 rows summing to 1 where covered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from landuse.config import load_config
from landuse.data.reader import load_graph
from landuse.constants import LANDUSE_CLASSES
from landuse.manifest import read_manifest
from landuse.runner import plan, run_pipeline
from landuse.stages import STAGES


def table(config, name: str) -> pd.DataFrame:
    return pq.read_table(config.tables_dir / name).to_pandas()


@pytest.fixture(scope="module", params=["london", "shenzhen"])
def synthetic_run(request, spark, tmp_path_factory, repo_root: Path, monkeypatch_module):
    monkeypatch_module.chdir(repo_root)  # configs use repo-relative paths (conf/classmaps/...)
    work = tmp_path_factory.mktemp(f"e2e-{request.param}")
    config = load_config(
        repo_root / f"conf/synthetic_{request.param}.yaml",
        [f"work_dir={work}", "synth.scale=tiny", "spark.shuffle_partitions=2"],
    )
    results = run_pipeline(config, STAGES, until="assemble")
    return request.param, config, results


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_all_stages_ran(synthetic_run) -> None:
    _, _, results = synthetic_run
    # the data stages; pretrain only runs when H_img comes from the encoder (embeddings.image.source)
    assert [(r.name, r.status) for r in results] == [(name, "disabled" if name == "pretrain" else "ran")
                                                     for name in plan(STAGES, "assemble")]


def test_labels_equal_ground_truth(synthetic_run) -> None:
    _, config, _ = synthetic_run
    labels = table(config, "labels").set_index("region_id").sort_index()
    truth = pd.read_csv(config.synth.dir / "truth/region_landuse.csv").set_index("region_id").sort_index()
    assert list(labels.index) == list(truth.index)
    err = np.abs(labels[list(LANDUSE_CLASSES)].to_numpy() - truth[list(LANDUSE_CLASSES)].to_numpy()).max()
    assert err <= 1e-6
    assert np.abs(labels["coverage"].to_numpy() - truth["coverage"].to_numpy()).max() <= 1e-6
    covered = labels["coverage"] > 0
    np.testing.assert_allclose(labels.loc[covered, list(LANDUSE_CLASSES)].sum(axis=1), 1.0, atol=1e-9)


def test_rows_accounted_for(synthetic_run) -> None:
    profile, config, _ = synthetic_run
    synth = read_manifest(config.synth.dir, "manifest.json")
    ingest = read_manifest(config.tables_dir / "trips")
    for entry in ingest["ingest"]:
        assert entry["rows_in"] == entry["kept"] + entry["rejected"]
    trips_entry = next(e for e in ingest["ingest"] if e["table"] == "trips")
    assert trips_entry["rows_in"] == synth["counts"]["trip_rows"]
    flows = read_manifest(config.tables_dir / "flows")["flows"]
    (summary,) = flows.values()
    assert summary["trips_in"] == summary["trips_assigned"] + summary["trips_unassigned"]
    assert summary["trips_in"] == synth["counts"]["trips"]
    assert summary["trips_assigned"] == int(table(config, "flows")["trips"].sum())
    assert summary["days"] == 7
    pois = read_manifest(config.tables_dir / "poi_counts")
    assert pois["pois_in"] == synth["counts"]["pois"]
    counts = table(config, "poi_counts")
    assert int(counts.loc[counts["level"] == 1, "n_pois"].sum()) == pois["pois_assigned"]


def test_regions_and_edges(synthetic_run) -> None:
    profile, config, _ = synthetic_run
    regions = table(config, "regions")
    synth = read_manifest(config.synth.dir, "manifest.json")
    assert len(regions) == synth["counts"]["regions"]
    adj = table(config, "edges_adjacency")
    pairs = set(zip(adj["region_id_a"], adj["region_id_b"]))
    assert all((b, a) in pairs for a, b in pairs)
    if profile == "shenzhen":  # interior grid cells have exactly 8 queen neighbours
        assert adj.groupby("region_id_a").size().max() == 8


def test_second_run_skips_everything(synthetic_run) -> None:
    _, config, _ = synthetic_run
    again = run_pipeline(config, STAGES, until="assemble")
    assert {r.name: r.status for r in again} == {name: "disabled" if name == "pretrain" else "unchanged"
                                                 for name in plan(STAGES, "assemble")}


def test_nyc_manhattan_stages(spark, shared_data: Path, repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(repo_root)
    config = load_config(
        repo_root / "conf/nyc_manhattan.yaml",
        [f"work_dir={tmp_path}", f"vars.data_root={shared_data / 'nyc_manhattan'}", "spark.shuffle_partitions=2"],
    )
    results = run_pipeline(config, STAGES, until="assemble")
    assert {r.name: r.status for r in results}["labels"] == "ran"
    labels = table(config, "labels")
    assert len(labels) == 180 and sorted(labels["region_id"]) == list(range(180))
    classes = list(config.labels.classes)
    covered = labels["coverage"] > 0
    assert covered.all()
    np.testing.assert_allclose(labels.loc[covered, classes].sum(axis=1), 1.0, atol=1e-9)
    flows = read_manifest(config.tables_dir / "flows")["flows"]
    # The July-2015 taxi OD table: every cell is between mh-180 ids, so all 9.33M trips are assigned.
    assert flows["taxi_od"]["trips_unassigned"] == 0
    assert 9.3e6 < flows["taxi_od"]["trips_in"] < 9.4e6
    assert flows["taxi_od"]["days"] == 31
    for summary in flows.values():
        assert summary["trips_in"] == summary["trips_assigned"] + summary["trips_unassigned"]
    assert read_manifest(config.tables_dir / "poi_counts")["pois_assigned"] == 5103
    assert len(table(config, "regions")) == 180
    # H_img from the single-band temperature raster: it covers 117 regions fully (data README), 125 in part
    image = table(config, "image_features")
    assert len(image) == 180 and all(len(v) == 5 for v in image["vector"])  # lst: mean, std, p10, p50, p90
    assert (image["coverage"] > 0.95).sum() >= 117  # pixel-centre rule: fully covered regions read ~0.98-1.0
    means = np.array([v[0] for v in image.loc[image["has_image"], "vector"]])
    assert 20 < means.min() and means.max() < 50  # degrees Celsius on a July afternoon
    graph = load_graph(config.tables_dir, classes=classes)
    assert graph.num_nodes == 180 and set(graph.features) == {"poi", "image", "geo", "flow", "poi_counts", "poi_tfidf",
                                                              "poi_density", "poi_text"}
    assert int(graph.has_label.sum()) == 180 and set(graph.edges) == {"adjacency", "flow", "distance_decay"}
    flow_manifest = read_manifest(config.tables_dir / "edges_flow")
    assert flow_manifest["flow_edges"] == len(table(config, "edges_flow"))  # taxi_od cells only


def test_embedding_tables_cover_every_region(synthetic_run) -> None:
    _, config, _ = synthetic_run
    regions = table(config, "regions")
    for name, flag, dim in (("flow_embeddings", "has_flow", 64), ("poi_embeddings", "has_pois", 72),
                            ("image_features", "has_image", 50), ("geo_features", "has_geo", 26)):
        emb = table(config, name)
        assert sorted(emb["region_id"]) == sorted(regions["region_id"])
        assert all(len(v) == dim for v in emb["vector"])
        assert emb[flag].mean() > 0.5
        assert all(not np.any(v) for v in emb.loc[~emb[flag], "vector"])  # flagged rows: zero vectors
        assert all(np.any(v) for v in emb.loc[emb[flag], "vector"])


def test_node_features_match_source_tables(synthetic_run) -> None:
    _, config, _ = synthetic_run
    graph = load_graph(config.tables_dir, classes=list(LANDUSE_CLASSES))
    regions = table(config, "regions").sort_values("region_id")
    assert graph.region_ids.tolist() == regions["region_id"].tolist()
    labels = table(config, "labels").set_index("region_id").loc[regions["region_id"]]
    np.testing.assert_allclose(graph.y.numpy(), labels[list(LANDUSE_CLASSES)].to_numpy(), atol=1e-6)
    assert graph.has_label.tolist() == (labels["coverage"] > 0).tolist()
    image = table(config, "image_features").set_index("region_id").loc[regions["region_id"]]
    np.testing.assert_array_equal(graph.features["image"].numpy(), np.vstack(image["vector"]))
    adjacency = table(config, "edges_adjacency")
    assert graph.edges["adjacency"][0].shape[1] == len(adjacency)
    manifest = read_manifest(config.tables_dir / "node_features")
    assert manifest["classes"] == list(LANDUSE_CLASSES) and manifest["modalities"]["geo"]["dim"] == 26


FRESH_PROCESS_CHECK = """
import json, sys, mlflow, torch
from landuse.data.reader import load_graph
from landuse.serving.pyfunc import load_region_model, table_for_graph
from landuse.training.metrics import kl_loss
uri, tables, name = sys.argv[1], sys.argv[2], sys.argv[3]
mlflow.set_tracking_uri(uri); mlflow.set_registry_uri(uri)
model, spec = load_region_model(f"models:/{name}@champion")
version = mlflow.MlflowClient().get_model_version_by_alias(name, "champion")
split = mlflow.artifacts.load_dict(f"runs:/{version.tags['run_id']}/model_split.json")
graph = load_graph(tables, classes=list(spec.classes), edges=spec.edge_sets)
probs = torch.tensor(model.predict(table_for_graph(graph, spec))[list(spec.classes)].to_numpy(), dtype=torch.float32)
val = torch.as_tensor(split["val"])
print(json.dumps({"kl": kl_loss(torch.log(probs[val]), graph.y[val]).item(), "logged": float(version.tags["val_kl"])}))
"""


def test_pretrain_command_resumes_and_feeds_assemble(synthetic_run, repo_root: Path, capsys) -> None:
    """``landuse run pretrain`` on the tiny city: checkpoints, resume, MLflow, image_embeddings, then
    ``assemble`` with ``embeddings.image.source=encoder`` takes H_img from it."""
    import mlflow

    from landuse.entrypoints.pretrain import main as pretrain_main
    from landuse.runner import run_pipeline
    from landuse.pretraining.image_embeddings import PRETRAIN_CONFIG_KEYS

    profile, base, _ = synthetic_run
    conf = str(repo_root / f"conf/synthetic_{profile}.yaml")
    overrides = [f"work_dir={base.work_dir}", "synth.scale=tiny", "spark.shuffle_partitions=2"]
    # its own MLflow experiment: the training test below counts the runs of the default one
    common = ["--config", conf, *overrides, "mlflow.experiment=pretrain-e2e", "embeddings.image.source=encoder",
              "--batch-size", "16"]
    assert pretrain_main([*common, "--epochs", "2"]) == 0
    (ckpt_dir,) = (base.work_dir / "checkpoints" / "pretrain").iterdir()  # one directory per set of settings
    ckpts = sorted(p.name for p in ckpt_dir.glob("epoch-*.pt"))
    assert ckpts == ["epoch-0001.pt", "epoch-0002.pt"]
    assert pretrain_main([*common, "--epochs", "3"]) == 0  # resumes: only epoch 3 is trained
    assert "3 epoch(s)" in capsys.readouterr().out
    # other augmentation settings cannot continue these checkpoints; bad values are one-line errors
    # (the default directory follows the settings, so this only happens with an explicit --checkpoint-dir)
    assert pretrain_main([*common, "--epochs", "4", "--jitter-gain", "0.2", "--checkpoint-dir", str(ckpt_dir)]) == 2
    assert "other settings" in capsys.readouterr().err
    assert pretrain_main([*common, "--band-dropout", "1.5"]) == 2
    assert "pretrain.band_dropout: must be a probability in [0, 1], got 1.5" in capsys.readouterr().err
    # the manifest records the hash of the settings that wrote it (flags are pretrain.* overrides)
    ran = load_config(conf, overrides + ["mlflow.experiment=pretrain-e2e", "embeddings.image.source=encoder",
                                         "pretrain.batch_size=16", "pretrain.epochs=3"])
    manifest = read_manifest(base.tables_dir / "image_embeddings")
    assert manifest["config_hash"] == ran.section_hash(*PRETRAIN_CONFIG_KEYS)

    emb = table(base, "image_embeddings")
    assert sorted(emb["region_id"]) == sorted(table(base, "regions")["region_id"])
    assert emb["has_image"].sum() > 0.9 * len(emb) and len(emb["vector"].iloc[0]) == 64
    runs = mlflow.MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("pretrain-e2e").experiment_id],
        filter_string="attributes.run_name = 'pretrain-smallcnn' and attributes.status = 'FINISHED'")
    assert len(runs) == 2  # the refused resume is marked FAILED, not FINISHED
    assert all(r.data.params["augment_gain"] == "0.05" and r.data.metrics["pretrain_loss"] > 0 for r in runs)

    encoder_config = load_config(repo_root / f"conf/synthetic_{profile}.yaml",
                                 overrides + ["embeddings.image.source=encoder"])
    run_pipeline(encoder_config, STAGES, only=["assemble"])
    from landuse.data.reader import load_graph

    graph = load_graph(encoder_config.tables_dir, classes=list(encoder_config.labels.classes), edges=())
    assert graph.features["image"].shape[1] == 64
    assert run_pipeline(encoder_config, STAGES, only=["assemble"])[-1].status == "unchanged"
    # a changed pretrain setting: the next pretrain writes another config_hash, and assemble reruns
    assert pretrain_main([*common, "--epochs", "1", "--lr", "0.01", "--checkpoint-dir",
                          str(base.work_dir / "checkpoints" / "pretrain-lr"), "--no-track"]) == 0
    assert read_manifest(base.tables_dir / "image_embeddings")["config_hash"] != manifest["config_hash"]
    assert run_pipeline(encoder_config, STAGES, only=["assemble"])[-1].status == "ran"
    run_pipeline(base, STAGES, only=["assemble"])  # back to band statistics for the tests below


def test_training_tracking_registry_predict(synthetic_run, repo_root: Path) -> None:
    import json
    import subprocess
    import sys

    import mlflow

    from landuse.entrypoints.predict import main as predict_main
    from landuse.training.experiments import run_experiment

    profile, base, _ = synthetic_run
    overrides = [f"work_dir={base.work_dir}", "synth.scale=tiny", "spark.shuffle_partitions=2", "training.splits=2",
                 "training.epochs=40", "training.progress=false", "training.variants=[None,GCN_adj,Adj-Tri-GCN]",
                 "training.features=[poi,image,geo]"]
    config = load_config(repo_root / f"conf/synthetic_{profile}.yaml", overrides)
    frame, md_path, model = run_experiment(config, "ablation")
    assert frame["variant"].tolist() == ["None", "GCN_adj", "Adj-Tri-GCN"]
    assert sorted(frame["rank"]) == [1, 2, 3] and (frame["splits"] == 2).all()
    assert (frame["kl"] > 0).all() and ((frame["cosine"] > 0) & (frame["cosine"] <= 1)).all()
    assert "| Adj-Tri-GCN |" in md_path.read_text()
    per_class = pd.read_csv(md_path.parent / "per_class_errors.csv")
    assert per_class["class"].tolist() == list(LANDUSE_CLASSES)
    assert model["champion"] and model["version"] == "1"

    # MLflow: one parent run, one nested run per variant, the model registered under the alias
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(config.mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 3
    assert parents[0].data.params["training.epochs"] == "40"
    hgcn = next(r for r in children if r.data.tags["variant"] == "Adj-Tri-GCN")
    assert len(client.get_metric_history(hgcn.info.run_id, "mean_val_kl")) == 40

    # the registered model in a fresh process reproduces the logged validation KL
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS_CHECK, config.mlflow_uri, str(config.tables_dir),
                          config.training.registered_model], capture_output=True, text=True, check=True)
    check = json.loads(out.stdout.strip().splitlines()[-1])
    assert abs(check["kl"] - check["logged"]) <= 1e-5

    # `train` registers under a key of its own (another experiment): champion of that key, while
    # plain `champion` stays with the ablation's key; a worse train model then moves nothing
    from landuse.training.tracking import champion_alias, champions

    name = config.training.registered_model
    _, _, second = run_experiment(config, "train")
    assert second["version"] == "2" and second["champion"] and second["comparability_key"] != model["comparability_key"]
    worse = load_config(repo_root / f"conf/synthetic_{profile}.yaml", overrides + ["training.epochs=1"])
    _, _, third = run_experiment(worse, "train")
    assert third["version"] == "3" and not third["champion"] and third["comparability_key"] == second["comparability_key"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(name, champion_alias(second["comparability_key"])).version) == "2"
    assert {row["key"] for row in champions(name)} == {model["comparability_key"], second["comparability_key"]}

    # prediction from the champion: distributions, dominant class, entropy; Parquet + GeoJSON
    code = predict_main(["--config", str(repo_root / f"conf/synthetic_{profile}.yaml"), *overrides])
    assert code == 0
    pred = table(config, "predictions")
    assert len(pred) == len(table(config, "regions"))
    np.testing.assert_allclose(pred[list(LANDUSE_CLASSES)].sum(axis=1), 1.0, atol=1e-5)
    assert set(pred["dominant_class"]) <= set(LANDUSE_CLASSES)
    assert ((pred["entropy_norm"] >= 0) & (pred["entropy_norm"] <= 1 + 1e-9)).all()
    geojson = json.loads((config.work_dir / "maps" / "predictions" / "predictions.geojson").read_text())
    assert len(geojson["features"]) == len(pred)

    # planned vs actual from the champion's predictions, then the HTML report over everything
    from landuse.entrypoints.monitor import main as monitor_main
    from landuse.entrypoints.report import main as report_main
    from landuse.monitoring.planned import precision_recall

    assert monitor_main(["--config", str(repo_root / f"conf/synthetic_{profile}.yaml"), *overrides]) == 0
    flags = table(config, "monitoring")
    assert sorted(flags["region_id"]) == sorted(pred["region_id"])
    truth = pd.read_csv(config.synth.dir / "truth/planned_deviations.csv")
    scores = precision_recall(flags, truth)
    assert scores["tp"] + scores["fn"] == int(truth["deviation"].sum())
    assert (config.work_dir / "maps" / "monitoring" / "monitoring_deviations.png").stat().st_size > 0
    assert report_main(["--config", str(repo_root / f"conf/synthetic_{profile}.yaml"), *overrides]) == 0
    html = (config.work_dir / "report" / "report.html").read_text()
    assert "Adj-Tri-GCN" in html and "data:image/png;base64," in html
