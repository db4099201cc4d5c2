"""node_features assembly, sharding, the manifest summary and flow edges."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from landuse.data.tables import CLASSES_KEY, assemble_node_features, flow_edges, node_manifest, write_shards

CLASSES = ["a", "b", "c"]
IDS = np.array([30, 10, 20, 40], dtype=np.int64)


def modality(ids: list[int], vectors: list, flags: list[bool], flag: str) -> pd.DataFrame:
    return pd.DataFrame({"region_id": ids, "vector": [None if v is None else np.asarray(v, np.float32) for v in vectors], flag: flags})


@pytest.fixture()
def inputs() -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    # 20 is flagged present but has no vector: it counts as absent.
    poi = modality([30, 10, 20], [[3, 3], [1, 1], None], [True, True, True], "has_pois")
    # 40 is in the table but flagged absent, with a value that must not survive.
    image = modality([40, 20, 10, 30], [[9, 9, 9], [2, 2, 2], [1, 1, 1], [3, 3, 3]], [False, True, True, True], "has_image")
    labels = pd.DataFrame({"region_id": [40, 10], "a": [0.5, 1.0], "b": [0.5, 0.0], "c": [0.0, 0.0], "coverage": [0.8, 0.0]})
    return {"poi": poi, "image": image}, labels


def test_assemble_sorted_aligned_and_flagged(inputs) -> None:
    modalities, labels = inputs
    table = assemble_node_features(IDS, modalities, labels, CLASSES)
    assert table.column_names == ["region_id", "h_poi", "has_pois", "h_img", "has_image", "y", "coverage", "has_label"]
    assert str(table.schema.field("h_poi").type) == "list<item: float>"
    cols = table.to_pydict()
    assert cols["region_id"] == [10, 20, 30, 40]
    assert cols["h_poi"] == [[1, 1], [0, 0], [3, 3], [0, 0]]
    assert cols["has_pois"] == [True, False, True, False]
    assert cols["h_img"] == [[1, 1, 1], [2, 2, 2], [3, 3, 3], [0, 0, 0]]
    assert cols["has_image"] == [True, True, True, False]
    assert cols["y"] == [[1, 0, 0], [0, 0, 0], [0, 0, 0], [0.5, 0.5, 0]]
    np.testing.assert_allclose(cols["coverage"], [0.0, 0.0, 0.0, 0.8])
    assert cols["has_label"] == [False, False, False, True]  # coverage 0 means unlabelled
    assert json.loads(table.schema.metadata[CLASSES_KEY]) == CLASSES


def test_assemble_without_labels_or_modalities() -> None:
    cols = assemble_node_features(IDS, {}, None, CLASSES).to_pydict()
    assert list(cols) == ["region_id", "y", "coverage", "has_label"]
    assert cols["y"] == [[0, 0, 0]] * 4 and not any(cols["has_label"])


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (modality([10, 10], [[1], [1]], [True, True], "has_pois"), "modality poi: duplicate region ids, e.g. 10"),
        (modality([10, 99], [[1], [1]], [True, True], "has_pois"), "modality poi: 1 region ids not among the regions, e.g. 99"),
        (modality([10, 20], [[1], [1, 2]], [True, True], "has_pois"), "modality poi: vectors must all have one length"),
        (pd.DataFrame({"region_id": [10], "vector": [[1.0]]}), "modality poi: missing columns \\['has_pois'\\]"),
    ],
)
def test_assemble_errors(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        assemble_node_features(IDS, {"poi": frame}, None, CLASSES)


def test_assemble_id_errors() -> None:
    with pytest.raises(ValueError, match="regions: duplicate region ids, e.g. 10"):
        assemble_node_features(np.array([10, 20, 10]), {}, None, CLASSES)
    labels = pd.DataFrame({"region_id": [77], "a": [1.0], "b": [0.0], "c": [0.0], "coverage": [1.0]})
    with pytest.raises(ValueError, match="labels: 1 region ids not among the regions, e.g. 77"):
        assemble_node_features(IDS, {}, labels, CLASSES)
    with pytest.raises(ValueError, match="labels: missing columns \\['c'\\]"):
        assemble_node_features(IDS, {}, labels.drop(columns="c"), CLASSES)
    with pytest.raises(ValueError, match="modality name 'so-und'"):
        assemble_node_features(IDS, {"so-und": labels}, None, CLASSES)
    with pytest.raises(ValueError, match=r"modality sound: missing columns \['has_sound', 'vector'\]"):
        assemble_node_features(IDS, {"sound": labels}, None, CLASSES)


def test_any_modality_name_round_trips_with_its_layout() -> None:
    from landuse.data.tables import table_modalities

    ids = np.array([1, 2, 3])
    frame = pd.DataFrame({"region_id": ids, "vector": [[1.0, 2.0]] * 3, "has_dgi": [True, False, True]})
    geo = pd.DataFrame({"region_id": ids, "vector": [[0.5]] * 3, "has_geo": True})
    table = assemble_node_features(ids, {"geo": geo, "dgi": frame}, None, CLASSES)
    assert table_modalities(table.schema) == {"geo": ("h_geo", "has_geo"), "dgi": ("h_dgi", "has_dgi")}
    assert table.column("has_dgi").to_pylist() == [True, False, True]
    assert table.column("h_dgi").to_pylist()[1] == [0.0, 0.0]


def test_write_shards_sizes(tmp_path: Path) -> None:
    ids = np.arange(23, dtype=np.int64) * 3
    geo = modality(list(ids), [[float(i), 1.0] for i in ids], [True] * 23, "has_geo")
    table = assemble_node_features(ids, {"geo": geo}, None, CLASSES)
    files = write_shards(table, tmp_path / "node_features", row_group_rows=4, shard_rows=10)
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    metas = [pq.read_metadata(f) for f in files]
    assert [m.num_rows for m in metas] == [10, 10, 3]
    assert [[m.row_group(i).num_rows for i in range(m.num_row_groups)] for m in metas] == [[4, 4, 2], [4, 4, 2], [3]]
    assert json.loads(pq.read_schema(files[1]).metadata[CLASSES_KEY]) == CLASSES
    assert pq.read_table(tmp_path / "node_features").to_pydict() == table.to_pydict()
    empty = write_shards(table.slice(0, 0), tmp_path / "empty", 4, 10)
    assert len(empty) == 1 and pq.read_metadata(empty[0]).num_rows == 0


def test_node_manifest(inputs) -> None:
    modalities, labels = inputs
    summary = node_manifest(assemble_node_features(IDS, modalities, labels, CLASSES), CLASSES)
    assert json.loads(json.dumps(summary)) == {
        "regions": 4,
        "labelled": 1,
        "classes": CLASSES,
        "modalities": {
            "poi": {"column": "h_poi", "dim": 2, "flag": "has_pois", "regions": 2},
            "image": {"column": "h_img", "dim": 3, "flag": "has_image", "regions": 3},
        },
    }


def test_flow_edges_filter_and_sum(spark) -> None:
    rows = [
        ("bike", 1, 2, 10, 5, 2.0, False),
        ("taxi", 1, 2, 20, 5, 4.0, False),
        ("taxi", 1, 2, 5, 5, 1.0, False),
        ("taxi", 2, 2, 5, 5, 1.0, True),
        ("bike", 3, 1, 5, 5, 1.0, False),
    ]
    flows = spark.createDataFrame(rows, "source string, o_region int, d_region int, trips long, days int, daily_avg double, is_diagonal boolean")
    taxi = flow_edges(flows, "taxi", "daily_avg")
    assert [(f.name, f.dataType.simpleString()) for f in taxi.schema.fields] == [
        ("o_region", "bigint"), ("d_region", "bigint"), ("weight", "double")]
    assert sorted(map(tuple, taxi.collect())) == [(1, 2, 5.0), (2, 2, 1.0)]  # the diagonal stays
    every = flow_edges(flows, None, "trips")
    assert sorted(map(tuple, every.collect())) == [(1, 2, 35.0), (2, 2, 5.0), (3, 1, 5.0)]
    assert flow_edges(flows, "metro", "trips").count() == 0
    with pytest.raises(ValueError, match="weight column 'flow'"):
        flow_edges(flows, None, "flow")
