"""A city with polygons and POIs only (no trips, no imagery) trains out of the box.

The test writes a tiny city: 60 square blocks in EPSG:32118 (metres) whose names repeat and which
have no id column, carrying land-use proportions for 3 classes; one POI CSV in the same CRS with
x/y columns and no id column (median 4 POIs per block). A YAML config under 30 lines drives
``landuse pipeline``, ``landuse run ablation`` (the flow variants skipped), ``landuse run predict``
and ``landuse run report`` through the entry points' ``main(argv)``; then ``train`` falls back to a
runnable variant, and failing variants are recorded without losing the others.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
import torch

from landuse.config import load_config
from landuse.constants import HGCN_VARIANTS
from landuse.data.reader import GraphData
from landuse.manifest import read_manifest
from landuse.training import experiments as E

CRS = "EPSG:32118"
X0, Y0, CELL, COLS, ROWS = 300_000.0, 60_000.0, 200.0, 10, 6
CLASSES = ("residential", "commercial", "green")
POI_KINDS = {"residential": ("home", "school"), "commercial": ("shop", "food", "office"), "green": ("park",)}


def flow_variants(variants) -> list[str]:
    """The variants with a flow head (in / out / avg operators): they cannot run without trips."""
    from landuse.training.protocol import needed_operators

    return [v for v in variants if needed_operators([v]) & {"in", "out", "avg"}]


CONFIG = """\
name: sparse_city
work_dir: {root}/work
study: {{crs: "EPSG:32118"}}
labels: {{classes: [residential, commercial, green]}}
embeddings:
  poi: {{epochs: 5, min_pois: 2, workers: 1}}
spark: {{shuffle_partitions: 2}}
training: {{epochs: 30, splits: 2, progress: false}}
inputs:
  regions:
    adapter: polygons
    path: {root}/blocks.gpkg
  pois:
    adapter: osm_pois
    path: {root}/pois.csv
    options: {{crs: "EPSG:32118", x_column: x, y_column: y, category_columns: [category]}}
  landuse:
    adapter: landuse_proportions
    path: {root}/blocks.gpkg
    options:
      proportion_columns: {{lu_res: residential, lu_com: commercial, lu_green: green}}
"""


def write_city(root: Path) -> Path:
    """The blocks (GeoPackage), the POIs (CSV) and the config; returns the config path."""
    rng = np.random.default_rng(3)
    n = COLS * ROWS
    cells = [shapely.box(X0 + CELL * (i % COLS), Y0 + CELL * (i // COLS),
                         X0 + CELL * (i % COLS + 1), Y0 + CELL * (i // COLS + 1)) for i in range(n)]
    shares = rng.dirichlet([0.4, 0.4, 0.4], size=n)
    names = [f"Block {'ABCDEF'[i % 6]}" for i in range(n)]  # six names, each used ten times
    gpd.GeoDataFrame({"name": names, "lu_res": shares[:, 0], "lu_com": shares[:, 1], "lu_green": shares[:, 2]},
                     geometry=cells, crs=CRS).to_file(root / "blocks.gpkg")
    lines = ["x,y,category"]
    for i, cell in enumerate(cells):
        x0, y0, _, _ = cell.bounds
        for _ in range(rng.poisson(4)):
            kind = CLASSES[rng.choice(3, p=shares[i])]
            lines.append(f"{x0 + rng.uniform(1, CELL - 1):.2f},{y0 + rng.uniform(1, CELL - 1):.2f},"
                         f"{rng.choice(POI_KINDS[kind])}")
    lines.append(",,shop")  # no coordinates: quarantined, still counted
    (root / "pois.csv").write_text("\n".join(lines) + "\n")
    config = root / "sparse_city.yaml"
    config.write_text(CONFIG.format(root=root))
    assert len(config.read_text().splitlines()) < 30
    return config


@pytest.fixture(scope="module")
def city(spark, tmp_path_factory) -> tuple[Path, object]:
    from landuse.entrypoints.pipeline import main as pipeline_main

    root = tmp_path_factory.mktemp("sparse-city")
    path = write_city(root)
    assert pipeline_main(["--config", str(path)]) == 0
    return path, load_config(path)


def runs_of(config, name_prefix: str):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=config.mlflow_uri)
    experiment = client.get_experiment_by_name(config.mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    return client, [r for r in runs if r.info.run_name.startswith(name_prefix)]


def test_pipeline_numbers_regions_and_pois(city) -> None:
    _, config = city
    regions = pq.read_table(config.tables_dir / "regions").to_pandas().sort_values("region_id")
    assert regions["region_id"].tolist() == list(range(60))
    assert regions["source_id"].tolist() == [str(i) for i in range(60)]
    assert read_manifest(config.tables_dir / "regions")["id_column"] == "row_number (no id column given)"
    (entry,) = [e for e in read_manifest(config.tables_dir / "pois")["ingest"] if e["table"] == "pois"]
    assert entry["rows_in"] == entry["kept"] + entry["rejected"] and entry["by_reason"] == {"null_coordinates": 1}
    assert entry["notes"][0].startswith("poi_id: row_number")
    pois = pq.read_table(config.tables_dir / "pois").to_pandas()
    assert pois["poi_id"].str.match(r"^pois\.csv:\d+$").all() and pois["poi_id"].is_unique
    counts = read_manifest(config.tables_dir / "poi_counts")
    assert counts["pois_assigned"] == entry["kept"]  # every POI lies in a block
    assert not (config.tables_dir / "edges_flow").exists()
    labels = pq.read_table(config.tables_dir / "labels").to_pandas()
    assert len(labels) == 60 and np.allclose(labels[list(CLASSES)].sum(axis=1), 1.0)


def test_ablation_skips_flow_variants_then_predict_and_report(city, capsys) -> None:
    from landuse.entrypoints.ablation import main as ablation_main
    from landuse.entrypoints.predict import main as predict_main
    from landuse.entrypoints.report import main as report_main

    path, config = city
    variants = list(config.training.variants)  # the default list (the 14 thesis variants)
    flow = flow_variants(variants)
    assert ablation_main(["--config", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "Not trained:" in printed
    assert f"- {', '.join(flow)}: skipped — needs flow edges (no trips)" in printed
    table = E.read_results_csv(config.work_dir / "results/ablation/ablation.csv")
    assert table["variant"].tolist() == variants
    status = table.set_index("variant")["status"]
    assert (status[["None", "GCN_adj", "GCN_dd"]] == "ok").all() and (status[flow] == "skipped").all()
    assert set(status[status == "ok"].index) == set(variants) - set(flow)
    skipped = table[table["status"] == "skipped"]
    assert (skipped["reason"] == "needs flow edges (no trips)").all() and (skipped["splits"] == 0).all()
    assert skipped["kl"].isna().all() and skipped["rank"].isna().all()
    ok = table[table["status"] == "ok"]
    assert sorted(ok["rank"].astype(int)) == list(range(1, len(ok) + 1)) and (ok["splits"] == 2).all()

    client, (parent,) = runs_of(config, "ablation:")
    assert parent.info.status == "FINISHED" and "failed_variants" not in parent.data.tags
    assert set(parent.data.tags["skipped_variants"].split(", ")) == set(flow)
    # training.variant (Adj-Tri-GCN) cannot run: the best runnable variant by validation KL is registered
    best = ok.sort_values("val_kl").iloc[0]["variant"]
    assert parent.data.tags["registered_variant"] == best
    assert parent.data.tags["registered_because"].startswith("training.variant Adj-Tri-GCN cannot run (needs flow edges")
    version = client.get_model_version_by_alias(config.training.registered_model, "champion")
    assert version.tags["variant"] == best and "registered_because" in version.tags

    capsys.readouterr()
    assert predict_main(["--config", str(path)]) == 0
    printed = capsys.readouterr().out
    predictions = pq.read_table(config.tables_dir / "predictions").to_pandas()
    assert len(predictions) == 60 and np.allclose(predictions[list(CLASSES)].sum(axis=1), 1.0, atol=1e-5)
    manifest = read_manifest(config.tables_dir / "predictions")
    assert manifest["variant"] == best and manifest["extra"]["version"] == str(version.version)
    geojson = config.work_dir / "maps" / "predictions" / "predictions.geojson"
    assert f"predict: 60 regions from models:/{config.training.registered_model}@champion -> " \
           f"{config.tables_dir / 'predictions'} and {geojson}" in printed and "dominant classes: " in printed
    # the same champion on the same tables: skipped, nothing rewritten, the same summary printed
    before = geojson.stat().st_mtime_ns
    assert predict_main(["--config", str(path)]) == 0
    again = capsys.readouterr().out
    assert "predict: unchanged predictions ->" in again and f"version {version.version} and tables unchanged" in again
    assert [line for line in again.splitlines() if line.startswith("dominant classes")] == \
        [line for line in printed.splitlines() if line.startswith("dominant classes")]
    assert geojson.stat().st_mtime_ns == before

    assert report_main(["--config", str(path), "--no-mlflow"]) == 0
    page = config.work_dir / "report" / "report.html"
    html = page.read_text()
    assert "Tri-GCN" in html and "GCN_dd" in html
    before = page.stat().st_mtime_ns
    capsys.readouterr()
    assert report_main(["--config", str(path), "--no-mlflow"]) == 0
    assert f"report: unchanged report -> {page.parent}" in capsys.readouterr().out
    assert page.stat().st_mtime_ns == before


def test_train_falls_back_to_a_runnable_variant(city, caplog) -> None:
    from landuse.entrypoints.train import main as train_main

    path, config = city
    assert train_main(["--config", str(path)]) == 0
    table = E.read_results_csv(config.work_dir / "results/train/train.csv")
    assert table["variant"].tolist() == ["GCN_adj"] and table["status"].tolist() == ["ok"]
    _, (parent,) = runs_of(config, "train:")
    assert parent.data.tags["variant_fallback"] == ("training.variant Adj-Tri-GCN cannot run: needs flow edges "
                                                    "(no trips); trained GCN_adj instead")
    assert "trained GCN_adj instead" in caplog.text


def test_an_ensemble_with_label_lag_registers_and_predicts(city, capsys) -> None:
    """training.ensemble + label_lag: the registered region model rebuilds the ensemble and its input
    (the labels column of the region table)."""
    import mlflow

    from landuse.entrypoints.predict import main as predict_main
    from landuse.entrypoints.train import main as train_main
    from landuse.serving.pyfunc import load_region_model

    path, config = city
    extra = ["training.variant=SAGE_adj2", "training.ensemble=2", "training.label_lag=true",
             "training.registered_model=sparse-ensemble", "mlflow.experiment=ensemble"]
    assert train_main(["--config", str(path), *extra]) == 0
    mlflow.set_tracking_uri(config.mlflow_uri)
    _, spec = load_region_model("models:/sparse-ensemble@champion")
    assert spec.variant == "SAGE_adj2" and spec.label_lag and spec.network["ensemble"] == 2
    assert predict_main(["--config", str(path), *extra]) == 0
    predictions = pq.read_table(config.tables_dir / "predictions").to_pandas()
    assert len(predictions) == 60 and np.allclose(predictions[list(CLASSES)].sum(axis=1), 1.0, atol=1e-5)


def test_failed_variants_are_recorded_and_the_others_kept(city, monkeypatch) -> None:
    from landuse.entrypoints.ablation import main as ablation_main

    path, config = city
    real = E.run_protocol

    def flaky(graph, variant, *args, **kwargs):
        if variant == "GCN_dd":
            raise RuntimeError("boom\nsecond line")
        return real(graph, variant, *args, **kwargs)

    monkeypatch.setattr(E, "run_protocol", flaky)
    args = ["--config", str(path), "--force", "training.variants=[None,GCN_dd,GCN_adj,GCN_in]"]
    assert ablation_main(args) == 0
    table = E.read_results_csv(config.work_dir / "results/ablation/ablation.csv").set_index("variant")
    assert table["status"].to_dict() == {"None": "ok", "GCN_dd": "failed", "GCN_adj": "ok", "GCN_in": "skipped"}
    assert table.loc["GCN_dd", "reason"] == "RuntimeError: boom"
    assert "- GCN_dd: failed — RuntimeError: boom" in (config.work_dir / "results/ablation/ablation.md").read_text()
    _, runs = runs_of(config, "ablation:")
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags["failed_variants"] == "GCN_dd:P"
    failed_child = runs_of(config, "GCN_dd:P")[1][0]  # the newest GCN_dd nested run
    assert failed_child.info.status == "FAILED" and failed_child.data.tags["error"] == "RuntimeError: boom"

    # with a failed variant the results are committed but not reused: the next run retries it
    from landuse.manifest import read_manifest

    assert read_manifest(config.work_dir / "results/ablation")["complete"] is False

    # every variant failing: non-zero exit, the committed table kept, the failed run's rows beside it, the parent run FAILED
    monkeypatch.setattr(E, "run_protocol", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("all down")))
    assert ablation_main(args) == 2
    table = E.read_results_csv(config.work_dir / "results/ablation.incomplete/ablation.csv")
    assert table["status"].tolist() == ["failed", "failed", "failed", "skipped"]
    assert E.read_results_csv(config.work_dir / "results/ablation/ablation.csv")["status"].tolist() == \
        ["ok", "failed", "ok", "skipped"]
    assert runs_of(config, "ablation:")[1][0].info.status == "FAILED"


def test_rows_are_written_as_each_variant_finishes(city, monkeypatch) -> None:
    """An interrupted ablation leaves the finished variants' rows on disk (and no reusable run record):
    called directly, in its results dir; as a stage, in ``results/ablation.incomplete`` beside the
    committed results."""
    _, config = city
    real = E.run_protocol

    def interrupted(graph, variant, *args, **kwargs):
        if variant == "GCN_adj":
            raise KeyboardInterrupt
        return real(graph, variant, *args, **kwargs)

    monkeypatch.setattr(E, "run_protocol", interrupted)
    cfg = load_config(config_path(config), ["training.variants=[None,GCN_in,GCN_adj,GCN_dd]"])
    with pytest.raises(KeyboardInterrupt):
        E.run_experiment(cfg, "ablation")
    out = config.work_dir / "results/ablation"
    table = E.read_results_csv(out / "ablation.csv")
    assert table["variant"].tolist() == ["None", "GCN_in"] and table["status"].tolist() == ["ok", "skipped"]
    assert "| None |" in (out / "ablation.md").read_text() and not (out / "run.json").exists()

    from landuse.runner import run_stage
    from landuse.stages import STAGES

    with pytest.raises(KeyboardInterrupt):
        run_stage(STAGES["ablation"], cfg, STAGES, force=True)
    aside = config.work_dir / "results/ablation.incomplete"
    assert E.read_results_csv(aside / "ablation.csv")["variant"].tolist() == ["None", "GCN_in"]
    assert not (aside / "run.json").exists()


def config_path(config) -> Path:
    return Path(str(config.work_dir)).parent / "sparse_city.yaml"


def test_variant_blockers_on_edge_sets() -> None:
    def graph(*edge_sets: str, empty: tuple[str, ...] = ()) -> GraphData:
        edges = {name: (torch.zeros((2, 0 if name in empty else 3), dtype=torch.long), torch.ones(3))
                 for name in edge_sets}
        return GraphData(torch.arange(4), {}, {}, torch.zeros(4, 3), torch.ones(4, dtype=torch.bool),
                         torch.ones(4, dtype=torch.float64), edges, list(CLASSES))

    assert len(flow_variants(HGCN_VARIANTS)) == 11  # the count: 11 of the 14 need trips
    full = graph("adjacency", "distance_decay", "flow")
    assert all(reason is None for reason in E.runnable_variants(full, HGCN_VARIANTS).values())
    assert E.choose_variant(full, "Adj-Tri-GCN") == ("Adj-Tri-GCN", None)
    sparse = graph("adjacency", "distance_decay")
    blocked = E.runnable_variants(sparse, HGCN_VARIANTS)
    assert [v for v, why in blocked.items() if why is None] == ["None", "GCN_adj", "GCN_dd"]
    assert blocked["Adj-Tri-GCN"] == "needs flow edges (no trips)"
    assert E.choose_variant(sparse, "Tri-GCN") == (
        "GCN_adj", "training.variant Tri-GCN cannot run: needs flow edges (no trips); trained GCN_adj instead")
    assert E.choose_variant(sparse, "GCN_dd") == ("GCN_dd", None)
    assert E.choose_variant(graph(), "Adj-Tri-GCN")[0] == "None"
    assert E.variant_blocker(graph("adjacency", "flow", empty=("flow",)), "GCN_in") == \
        "needs flow edges (no flows between regions)"
    assert E.variant_blocker(graph("flow"), "Adj-Bi-GCN_in") == \
        "needs adjacency edges (no edges_adjacency table; run `landuse run regions`)"


def write_footprints(root: Path) -> Path:
    """Building footprints for the blocks (GeoPackage in EPSG:32118, heights, no id column): dense small
    houses where residential, large tall blocks where commercial, almost nothing in green blocks."""
    rng = np.random.default_rng(5)
    blocks = gpd.read_file(root / "blocks.gpkg")
    shapes, heights = [], []
    for _, block in blocks.iterrows():
        x0, y0, _, _ = block.geometry.bounds
        for _kind, count, size, height in (("res", int(12 * block["lu_res"]), 12, 9), ("com", int(4 * block["lu_com"]), 40, 60)):
            for _ in range(count):
                x, y = x0 + rng.uniform(5, CELL - size - 5), y0 + rng.uniform(5, CELL - size - 5)
                shapes.append(shapely.box(x, y, x + size, y + size * rng.uniform(0.6, 1.0)))
                heights.append(height * rng.uniform(0.7, 1.3))
    path = root / "buildings.gpkg"
    gpd.GeoDataFrame({"height": heights}, geometry=shapes, crs=CRS).to_file(path)
    return path


def test_benchmark_landuse_then_footprints_added(city, capsys) -> None:
    """benchmark-landuse runs on the polygons+POIs city; adding a footprint file (three config lines)
    adds the building modality end to end."""
    from landuse.entrypoints.benchmark_landuse import main as benchmark_main
    from landuse.entrypoints.pipeline import main as pipeline_main

    path, config = city
    quick = ["benchmark.repeats=2", "benchmark.probe_epochs=5", "benchmark.probe_hidden=32",
             "benchmark.variants=[None,GCN_adj,SAGE_adj2,GCN_in]"]
    assert benchmark_main(["--config", str(path), "--no-mlflow", *quick]) == 0
    out = capsys.readouterr().out
    assert "GCN_in skipped: needs flow edges (no trips)" in out
    assert out.strip().splitlines()[-1].startswith("best_model=")

    root = path.parent
    write_footprints(root)
    with_buildings = root / "with_buildings.yaml"
    # a user's own embedding too (bring your own): ids as the regions' own ids, one unknown id, one repeat
    lines = ["region_id,e0,e1"] + [f"{i},{i % 7},{(i * 3) % 5}" for i in range(60)] + ["999,1,1", "5,0,0"]
    (root / "mine.csv").write_text("\n".join(lines) + "\n")
    with_buildings.write_text(path.read_text().replace("work_dir: " + str(root / "work"), "work_dir: " + str(root / "work_b"))
                              + "  buildings:\n    adapter: footprints\n"
                              + f"    path: {root / 'buildings.gpkg'}\n    options: {{height_column: height}}\n"
                              + f"  embeddings: {{mine: {{path: {root / 'mine.csv'}}}}}\n")
    assert len(with_buildings.read_text().splitlines()) < 30
    assert pipeline_main(["--config", str(with_buildings)]) == 0
    config_b = load_config(with_buildings)
    manifest = read_manifest(config_b.tables_dir / "building_features")
    assert manifest["regions_with_buildings"] > 40
    assert benchmark_main(["--config", str(with_buildings), "--no-mlflow", *quick,
                           "benchmark.feature_sets=[poi, building, poi+building]", "benchmark.model_features=[poi+building]"]) == 0
    node = read_manifest(config_b.tables_dir / "node_features")
    assert node["external_embeddings"]["mine"] == {"rows_in": 62, "kept": 60, "rejected": 2, "dim": 2,
                                                   "by_reason": {"unknown_region": 1, "duplicate_id": 1}}
    assert set(node["modalities"]) >= {"poi", "geo", "poi_counts", "poi_tfidf", "poi_density", "poi_text", "building", "mine"}
    assert len(pq.read_table(config_b.tables_dir / "embedding_rejects").to_pandas()) == 2
    table = E.read_results_csv(config_b.work_dir / "results/benchmark_landuse/results.csv").set_index("model")
    assert {"building", "poi+building", "SAGE_adj2 [poi+building]"} <= set(table.index)
    assert (table.loc[["building", "poi+building"], "status"] == "ok").all()


def test_two_feature_sets_leave_two_champions_one_per_key(city) -> None:
    """Registrations under different feature sets never compete: each key has its own champion, and the
    plain `champion` stays with the key that claimed it; lineage and embedding models are on the runs."""
    import mlflow

    from landuse.data.reader import load_graph
    from landuse.entrypoints.train import main as train_main
    from landuse.training.tracking import champion_alias, champions

    path, config = city
    modalities = list(load_graph(config.tables_dir, edges=()).features)
    assert "poi" in modalities and len(modalities) > 1
    other = next(m for m in modalities if m != "poi")
    common = ["training.variant=GCN_adj", "training.registered_model=sparse-keys", "mlflow.experiment=keys", "--force"]
    for features in ("[poi]", f"[poi,{other}]", "[poi]"):
        assert train_main(["--config", str(path), f"training.features={features}", *common]) == 0
    rows = {tuple(row["parts"]["features"]): row for row in champions("sparse-keys")}
    assert set(rows) == {("poi",), ("poi", other)}
    client = mlflow.MlflowClient(tracking_uri=config.mlflow_uri)
    for row in rows.values():
        version = client.get_model_version_by_alias("sparse-keys", champion_alias(row["key"]))
        assert version.tags["comparability_key"] == row["key"]
    # the two [poi] versions share a key: its champion is the better of them
    poi_versions = [v for v in client.search_model_versions("name = 'sparse-keys'")
                    if v.tags["comparability_key"] == rows[("poi",)]["key"]]
    best = min(poi_versions, key=lambda v: (float(v.tags["val_kl"]), int(v.version)))
    assert str(rows[("poi",)]["version"]) == str(best.version)
    assert rows[("poi",)]["champion"] and not rows[("poi", other)]["champion"]
    # lineage: the run that logged the champion's parent logged its input tables with their fingerprints
    run = client.get_run(best.tags["run_id"])
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    names = {d.dataset.name: d.dataset.digest for d in parent.inputs.dataset_inputs}
    assert names["node_features"] == read_manifest(config.tables_dir / "node_features")["fingerprint"][:36]
    assert {"regions", "labels", "edges_adjacency"} <= set(names)
    logged = mlflow.search_logged_models(experiment_ids=[parent.info.experiment_id], output_format="list")
    assert "embedding_poi_doc2vec" in {m.name for m in logged if m.source_run_id == parent.info.run_id}
