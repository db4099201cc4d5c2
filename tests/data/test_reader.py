"""load_graph: a Petastorm round trip of node_features + edge tables, and its error messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from landuse.data.reader import GraphData, load_graph
from landuse.data.tables import assemble_node_features, write_shards

CLASSES = ["a", "b", "c", "d"]
N = 57


def write_edges(directory: Path, frame: pd.DataFrame, parts: int = 1) -> None:
    directory.mkdir(parents=True)
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), parts)):
        pq.write_table(pa.Table.from_pandas(frame.iloc[chunk], preserve_index=False), directory / f"part-{i:05d}.parquet")
    (directory / "_manifest.json").write_text("{}")  # stage manifests sit beside the shards


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Random tables written like the pipeline does: node_features in 3 shards, three edge tables."""
    rng = np.random.default_rng(7)
    tables = tmp_path_factory.mktemp("tables")
    ids = rng.choice(np.arange(1000, 5000), N, replace=False)  # non-contiguous, unsorted
    poi_ids = rng.choice(ids, 40, replace=False)
    poi = pd.DataFrame({"region_id": poi_ids, "vector": list(rng.normal(size=(40, 6)).astype(np.float32)),
                        "has_pois": np.ones(40, bool)})
    geo = pd.DataFrame({"region_id": ids, "vector": list(rng.uniform(size=(N, 3)).astype(np.float32)),
                        "has_geo": np.ones(N, bool)})
    labelled = rng.choice(ids, 30, replace=False)
    shares = rng.dirichlet(np.ones(len(CLASSES)), 30)
    labels = pd.DataFrame({"region_id": labelled, **dict(zip(CLASSES, shares.T)), "coverage": rng.uniform(0.1, 1, 30)})
    table = assemble_node_features(ids, {"poi": poi, "geo": geo}, labels, CLASSES)
    write_shards(table, tables / "node_features", row_group_rows=7, shard_rows=20)

    def pairs(e: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.choice(ids, e), rng.choice(ids, e)

    a, b = pairs(80)
    write_edges(tables / "edges_adjacency", pd.DataFrame({"region_id_a": a, "region_id_b": b, "shared_length_m": rng.uniform(1, 500, 80)}), parts=2)
    o, d = pairs(120)
    write_edges(tables / "edges_flow", pd.DataFrame({"o_region": o, "d_region": d, "weight": rng.uniform(0, 9, 120)}))
    a2, b2 = pairs(50)
    write_edges(tables / "edges_distance_decay", pd.DataFrame({
        "region_id_a": a2, "region_id_b": b2, "distance_m": rng.uniform(0, 2000, 50),
        "weight": rng.uniform(0, 3, 50), "weight_norm": rng.uniform(0, 1, 50)}))
    return {"dir": tables, "table": table.to_pydict(), "edges": {"adjacency": (a, b), "flow": (o, d), "distance_decay": (a2, b2)},
            "weights": {"adjacency": "shared_length_m", "flow": "weight", "distance_decay": "weight"}}


@pytest.fixture(scope="module")
def graph(source: dict) -> GraphData:
    return load_graph(source["dir"], batch_size=16)


def test_nodes_round_trip_exactly(source: dict, graph: GraphData) -> None:
    expected = source["table"]
    assert graph.num_nodes == N and graph.classes == CLASSES
    assert graph.region_ids.dtype == torch.int64 and graph.region_ids.tolist() == expected["region_id"]
    assert set(graph.features) == set(graph.flags) == {"poi", "geo"}
    for modality, column, flag in (("poi", "h_poi", "has_pois"), ("geo", "h_geo", "has_geo")):
        assert graph.features[modality].dtype == torch.float32
        assert torch.equal(graph.features[modality], torch.tensor(expected[column], dtype=torch.float32))
        assert graph.flags[modality].dtype == torch.bool and graph.flags[modality].tolist() == expected[flag]
    assert graph.flags["poi"].sum() == 40
    assert torch.equal(graph.y, torch.tensor(expected["y"], dtype=torch.float32)) and graph.y.shape == (N, 4)
    assert graph.coverage.dtype == torch.float64 and graph.coverage.tolist() == expected["coverage"]
    assert graph.has_label.dtype == torch.bool and graph.has_label.tolist() == expected["has_label"]
    assert graph.has_label.sum() == 30


def test_edges_mapped_to_node_indices(source: dict, graph: GraphData) -> None:
    region_ids = np.array(source["table"]["region_id"])
    files = {"adjacency": "edges_adjacency", "flow": "edges_flow", "distance_decay": "edges_distance_decay"}
    assert set(graph.edges) == set(files)
    for name, table in files.items():
        edge_index, weight = graph.edges[name]
        assert edge_index.dtype == torch.int64 and weight.dtype == torch.float32
        # Reader order is not guaranteed: compare as sorted (source id, target id, weight) triples.
        got = sorted(zip(region_ids[edge_index[0]].tolist(), region_ids[edge_index[1]].tolist(), weight.tolist()))
        frame = pq.read_table(source["dir"] / table).to_pandas()
        a, b = source["edges"][name]
        want = sorted(zip(a.tolist(), b.tolist(), frame[source["weights"][name]].astype(np.float32).tolist()))
        assert got == want


def test_requested_subset_and_to(source: dict) -> None:
    graph = load_graph(source["dir"], classes=CLASSES, edges=["flow"])
    assert list(graph.edges) == ["flow"]
    moved = graph.to("cpu")
    assert torch.equal(moved.edges["flow"][0], graph.edges["flow"][0]) and moved.classes == CLASSES


def copy_tables(source: dict, dest: Path, names: list[str]) -> Path:
    import shutil

    for name in names:
        shutil.copytree(source["dir"] / name, dest / name)
    return dest


def test_missing_tables(source: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="table node_features not found .*run `landuse run assemble` first"):
        load_graph(tmp_path)
    tables = copy_tables(source, tmp_path, ["node_features", "edges_adjacency"])
    with pytest.raises(ValueError, match="table edges_flow not found .*run `landuse run assemble` first"):
        load_graph(tables, edges=["adjacency", "flow"])
    with pytest.raises(ValueError, match="table edges_distance_decay not found .*run `landuse run regions` first"):
        load_graph(tables, edges=["distance_decay"])
    assert list(load_graph(tables).edges) == ["adjacency"]  # edges=None: whatever exists
    with pytest.raises(ValueError, match="unknown edge sets \\['knn'\\]"):
        load_graph(tables, edges=["knn"])


def test_unknown_region_in_edges(source: dict, tmp_path: Path) -> None:
    tables = copy_tables(source, tmp_path, ["node_features"])
    known = source["table"]["region_id"][0]
    write_edges(tables / "edges_flow", pd.DataFrame({"o_region": [known, 999], "d_region": [known, known], "weight": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="table edges_flow: o_region 999 is not a region in node_features"):
        load_graph(tables, edges=["flow"])


def test_classes_checked(source: dict) -> None:
    with pytest.raises(ValueError, match="differ from the table's"):
        load_graph(source["dir"], classes=["x", "y", "z", "w"], edges=[])


def test_node_features_schema_metadata(source: dict) -> None:
    first = sorted((source["dir"] / "node_features").glob("*.parquet"))[0]
    assert json.loads(pq.read_schema(first).metadata[b"landuse.classes"]) == CLASSES
