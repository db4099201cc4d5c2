"""``landuse run predict --regions NEW.gpkg``: regions that were not in the training run are embedded with
the training run's fitted models (POI Doc2Vec inferred, flow as the area-weighted mean of the training
regions' vectors, location in the training extent, the rest per region) and scored by the registered
pyfunc, in a derived work dir that a second call reuses.

One synthetic Shenzhen (tiny) is built and trained once; then the training regions file itself
(every modality as in training; H_poi close, H_flow equal), a coarser partition (2 x 2 blocks of
cells, new ids) and bad inputs go through the entry point.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely

from landuse.config import load_config
from landuse.constants import LANDUSE_CLASSES

CONFIG = "conf/synthetic_shenzhen.yaml"
# poi (Doc2Vec), geo, flow (Word2Vec), image statistics and poi_tfidf (region-set dependent): every kind of modality
FEATURES = "training.features=[poi,geo,flow,image,poi_tfidf]"
FAST = ["synth.scale=tiny", "spark.shuffle_partitions=2", "training.splits=2", "training.epochs=40",
        "training.progress=false", "embeddings.image.patches=false", FEATURES]
CLASSES = list(LANDUSE_CLASSES)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory, repo_root: Path, monkeypatch_module):
    """(argv prefix, training config): the tiny city through the pipeline and `landuse run train`."""
    from landuse.entrypoints.train import main as train_main
    from landuse.runner import run_pipeline
    from landuse.stages import STAGES

    monkeypatch_module.chdir(repo_root)  # configs use repo-relative paths (conf/classmaps/...)
    work = tmp_path_factory.mktemp("new-regions")
    overrides = [f"work_dir={work}", *FAST]
    config = load_config(repo_root / CONFIG, overrides)
    run_pipeline(config, STAGES, until="assemble")
    argv = ["--config", CONFIG, *overrides]
    assert train_main(argv) == 0
    return argv, config


def test_flow_of_a_new_region_is_the_area_weighted_mean_of_the_training_regions_it_overlaps() -> None:
    from landuse.features.word2vec import overlap_flow_table

    # training: three unit squares in a row; the middle one has no flow
    train = shapely.box(np.arange(3.0), 0.0, np.arange(3.0) + 1, 1.0)
    vectors = np.array([[1.0, 0.0], [5.0, 5.0], [0.0, 1.0]])
    new = [shapely.box(0, 0, 1, 1),  # equal to training region 10
           shapely.box(0.5, 0, 2.5, 1),  # half of 10, all of 11 (no flow), half of 12
           shapely.box(0.25, 0, 1, 1),  # inside 10
           shapely.box(1, 0, 2, 1),  # equal to 11 (no flow), touching 10 and 12
           shapely.box(7, 7, 8, 8)]  # outside every training region
    table = overlap_flow_table(np.array([4, 3, 2, 1, 0]), new, np.array([10, 11, 12]), train, vectors,
                               np.array([True, False, True]))
    got = table.set_index("region_id")
    assert got.index.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(got.loc[4, "vector"], [1.0, 0.0])
    np.testing.assert_allclose(got.loc[3, "vector"], [0.5, 0.5])  # equal shares of 10 and 12, normalised
    np.testing.assert_allclose(got.loc[3, "flow_overlap"], 0.5)  # half of it lies in regions with flow
    np.testing.assert_array_equal(got.loc[2, "vector"], [1.0, 0.0])
    assert got["has_flow"].tolist() == [False, False, True, True, True]
    assert not np.stack(got.loc[[0, 1], "vector"]).any()


def test_tours_are_inferred_one_region_at_a_time(tmp_path: Path) -> None:
    """infer_corpus: a region's vector does not depend on the other lines; unseen-only tours get none."""
    from landuse.features.doc2vec import PoiModel, fit_doc2vec, infer_corpus

    rng = np.random.default_rng(0)
    words = ["shop", "home", "park", "office", "school"]
    corpus = tmp_path / "tours.txt"
    corpus.write_text("".join(" ".join(rng.choice(words, 12)) + "\n" for _ in range(30)))
    model = PoiModel(fit_doc2vec(corpus, dim=8, epochs=5, workers=1, seed=3), np.arange(30))
    lines = {7: "shop home park", 3: "office office school", 5: "unseen%20kind"}
    first, second = tmp_path / "a", tmp_path / "b"
    for directory, order in ((first, [7, 3, 5]), (second, [3, 7])):
        directory.mkdir()
        (directory / "part-00000").write_text("".join(f"{r}\t{lines[r]}\n" for r in order) + "9\t\n")
    ids, counts, table = infer_corpus(model, first, seed=42)
    assert ids.tolist() == [7, 3, 5] and counts.tolist() == [3, 3, 1]
    assert table["region_id"].tolist() == [3, 7]  # region 5 knows no token: no vector
    _, _, again = infer_corpus(model, second, seed=42)
    for a, b in zip(table["vector"], again["vector"]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(table["vector"].iloc[1], model.infer(["shop", "home", "park"], seed=42))


def predict(argv: list[str], capsys, *extra: str) -> tuple[int, str, str]:
    from landuse.entrypoints.predict import main as predict_main

    capsys.readouterr()
    rc = predict_main([*argv, *extra])
    out, err = capsys.readouterr()
    return rc, out, err


def work_dir_of(out: str) -> Path:
    line = next(line for line in out.splitlines() if line.startswith("work dir of the new regions: "))
    return Path(line.removeprefix("work dir of the new regions: ").split(" (stages run")[0])


def node_features(tables: Path) -> pd.DataFrame:
    return pq.read_table(tables / "node_features").to_pandas().sort_values("region_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def same_regions(trained, tmp_path_factory):
    """The training regions file itself (as a GeoPackage of its own) through ``predict --regions``
    (module scope, so its stdout is captured here rather than by the function-scoped capsys)."""
    argv, config = trained
    path = tmp_path_factory.mktemp("regions") / "training_regions.gpkg"
    gpd.read_file(config.inputs.regions.path).to_file(path, driver="GPKG")
    from contextlib import redirect_stdout
    from io import StringIO

    from landuse.entrypoints.predict import main as predict_main

    buffer = StringIO()
    started = time.perf_counter()
    with redirect_stdout(buffer):
        rc = predict_main([*argv, "--regions", str(path)])
    seconds = time.perf_counter() - started
    assert rc == 0
    return path, buffer.getvalue(), seconds


def test_training_regions_get_the_training_features(trained, same_regions, capsys) -> None:
    argv, config = trained
    _, out, seconds = same_regions
    derived = work_dir_of(out)
    assert derived.parent == config.driver_dir / "new_regions" and derived.name.startswith("training_regions-")
    train, new = node_features(config.tables_dir), node_features(derived / "tables")
    assert train["region_id"].tolist() == new["region_id"].tolist()
    vectors = [c for c in train.columns if c.startswith("h_")]
    flags = [c for c in train.columns if c.startswith("has_")]
    for column in [*vectors, *flags, "y", "coverage"]:
        if column == "h_poi":
            continue
        a, b = np.stack(train[column].to_numpy()), np.stack(new[column].to_numpy())
        assert np.array_equal(a, b), column  # flow too: a region overlapping only itself gets its own vector
    # H_poi is inferred, not looked up: close to the trained vector, not equal
    a, b = np.stack(train["h_poi"].to_numpy()), np.stack(new["h_poi"].to_numpy())
    has = train["has_pois"].to_numpy()
    assert (new["has_pois"].to_numpy() == has).all()
    cosine = (a[has] * b[has]).sum(1) / (np.linalg.norm(a[has], axis=1) * np.linalg.norm(b[has], axis=1))

    # the model's distributions: the training graph (plain predict) against the same regions via --regions
    rc, _, err = predict(argv, capsys)
    assert rc == 0, err
    base = pq.read_table(config.tables_dir / "predictions").to_pandas().set_index("region_id").sort_index()
    ours = pq.read_table(derived / "tables" / "predictions").to_pandas().set_index("region_id").sort_index()
    assert base.index.tolist() == ours.index.tolist()
    diff = np.abs(base[CLASSES].to_numpy() - ours[CLASSES].to_numpy())
    agree = float((base["dominant_class"] == ours["dominant_class"]).mean())
    print(f"\n[new regions = training regions] {len(base)} regions in {seconds:.0f} s; H_poi cosine(inferred, trained) "
          f"mean {cosine.mean():.4f} min {cosine.min():.4f}; |p - p_train| mean {diff.mean():.5f} max {diff.max():.5f}; "
          f"dominant class agrees on {agree:.1%}")
    assert diff.mean() < 0.05
    manifest = json.loads((derived / "tables" / "poi_embeddings" / "_manifest.json").read_text())
    assert manifest["mode"].startswith("inferred") and manifest["training_table"] == str(config.tables_dir / "poi_embeddings")
    assert "scored with the training vocabulary and idf: poi_tfidf" in out


def blocks(config, target: Path) -> gpd.GeoDataFrame:
    """The training cells merged in 2 x 2 blocks, ids ``block_id`` 5000 + block number (not training ids)."""
    cells = gpd.read_file(config.inputs.regions.path).to_crs(config.study.crs)
    size = float(np.sqrt(cells.geometry.area.median()))
    x0, y0 = cells.total_bounds[:2]
    col = np.floor((cells.geometry.centroid.x - x0) / (2 * size)).astype(int)
    row = np.floor((cells.geometry.centroid.y - y0) / (2 * size)).astype(int)
    cells["block"] = row * 10_000 + col
    merged = cells.dissolve(by="block", as_index=False)[["block", "geometry"]]
    merged["block_id"] = 5000 + np.arange(len(merged))
    merged["cells"] = cells.groupby("block").size().loc[merged["block"]].to_numpy()
    merged[["block_id", "cells", "geometry"]].to_file(target, driver="GPKG")
    return cells.merge(merged[["block", "block_id"]], on="block")


def test_a_coarser_partition_is_embedded_and_scored(trained, tmp_path, capsys) -> None:
    argv, config = trained
    path = tmp_path / "blocks.gpkg"
    cells = blocks(config, path)
    n_blocks = cells["block_id"].nunique()
    rc, out, err = predict(argv, capsys, "--regions", str(path), "--regions-id-column", "block_id")
    assert rc == 0, err
    derived = work_dir_of(out)
    table = pq.read_table(derived / "tables" / "predictions").to_pandas()
    assert len(table) == n_blocks and sorted(table["region_id"]) == sorted(cells["block_id"].unique())
    np.testing.assert_allclose(table[CLASSES].sum(axis=1), 1.0, atol=1e-5)
    geojson = derived / "maps" / "predictions" / "predictions.geojson"
    features = json.loads(geojson.read_text())["features"]
    assert len(features) == n_blocks and {f["properties"]["region_id"] for f in features} == set(table["region_id"])
    assert str(geojson) in out

    # H_flow of a block of four equal cells, all with flow: the mean of their training vectors
    flow = pq.read_table(config.tables_dir / "flow_embeddings").to_pandas().set_index("region_id")
    new_flow = pq.read_table(derived / "tables" / "flow_embeddings").to_pandas().set_index("region_id")
    cells["has_flow"] = flow.loc[cells["grid_id"].astype(np.int64), "has_flow"].to_numpy()
    full = cells.groupby("block_id").filter(lambda g: len(g) == 4 and g["has_flow"].all())
    checked = 0
    for block_id, group in list(full.groupby("block_id"))[:5]:
        expected = np.stack(flow.loc[group["grid_id"].astype(np.int64), "vector"].to_numpy()).astype(np.float64).mean(0)
        np.testing.assert_allclose(new_flow.loc[block_id, "vector"], expected, rtol=1e-5, atol=1e-6)
        checked += 1
    assert checked > 0
    assert not new_flow.loc[~new_flow.index.isin(cells.loc[cells["has_flow"], "block_id"]), "has_flow"].any()

    kl_line = next((line for line in out.splitlines() if line.startswith("KL on the ")), "no labelled new regions")
    print(f"\n[2 x 2 blocks] {n_blocks} new regions from {len(cells)} cells; {kl_line}")


def test_bad_regions_files_are_one_line_errors(trained, tmp_path, capsys) -> None:
    argv, config = trained
    cells = gpd.read_file(config.inputs.regions.path)
    no_id = tmp_path / "no_id.gpkg"
    cells.rename(columns={"grid_id": "cell"}).to_file(no_id, driver="GPKG")
    points = tmp_path / "points.gpkg"
    cells.set_geometry(cells.geometry.centroid).to_file(points, driver="GPKG")
    cases = {
        (str(tmp_path / "missing.gpkg"),): "file not found",
        (str(no_id),): "no id column 'grid_id'",
        (str(points),): "expected Polygon/MultiPolygon",
        (str(no_id), "--regions-id-column", "nope"): "no id column 'nope'",
    }
    for extra, message in [*cases.items(), (("--regions-id-column", "grid_id"), "--regions-id-column: only with")]:
        rc, _, err = predict(argv, capsys, *(extra if extra[0].startswith("--") else ("--regions", *extra)))
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert rc == 2 and "Traceback" not in err, (extra, err)
        assert len(errors) == 1 and message in errors[0], err
    # refused before any stage ran: no derived work dir for a bad file
    assert not list((config.driver_dir / "new_regions").glob("no_id-*"))
    assert not list((config.driver_dir / "new_regions").glob("points-*"))


def test_a_second_call_reuses_the_derived_work_dir(trained, same_regions, capsys) -> None:
    argv, _ = trained
    path, first_out, first_seconds = same_regions
    derived = work_dir_of(first_out)
    before = pq.read_table(derived / "tables" / "predictions").to_pandas()
    started = time.perf_counter()
    rc, out, err = predict(argv, capsys, "--regions", str(path))
    seconds = time.perf_counter() - started
    assert rc == 0, err
    assert work_dir_of(out) == derived
    assert "stages run: none, all unchanged" in out
    after = pq.read_table(derived / "tables" / "predictions").to_pandas()
    pd.testing.assert_frame_equal(before, after)
    print(f"\n[second call] {seconds:.1f} s (first: {first_seconds:.0f} s)")
    assert seconds < first_seconds
