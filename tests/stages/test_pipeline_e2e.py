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
from landuse.constants import LANDUSE_CLASSES
from landuse.manifest import read_manifest
from landuse.runner import run_pipeline
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
    results = run_pipeline(config, STAGES)
    return request.param, config, results


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_all_stages_ran(synthetic_run) -> None:
    _, _, results = synthetic_run
    assert [(r.name, r.status) for r in results] == [(name, "ran") for name in STAGES]


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
    again = run_pipeline(config, STAGES)
    assert {r.status for r in again} == {"unchanged"}


def test_nyc_manhattan_stages(spark, shared_data: Path, repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(repo_root)
    config = load_config(
        repo_root / "conf/nyc_manhattan.yaml",
        [f"work_dir={tmp_path}", f"vars.data_root={shared_data / 'nyc_manhattan'}", "spark.shuffle_partitions=2"],
    )
    results = run_pipeline(config, STAGES)
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


def test_embedding_tables_cover_every_region(synthetic_run) -> None:
    _, config, _ = synthetic_run
    regions = table(config, "regions")
    for name, flag, dim in (("flow_embeddings", "has_flow", 64), ("poi_embeddings", "has_pois", 72)):
        emb = table(config, name)
        assert sorted(emb["region_id"]) == sorted(regions["region_id"])
        assert all(len(v) == dim for v in emb["vector"])
        assert emb[flag].mean() > 0.5
        assert all(not np.any(v) for v in emb.loc[~emb[flag], "vector"])  # flagged rows: zero vectors
        assert all(np.any(v) for v in emb.loc[emb[flag], "vector"])
