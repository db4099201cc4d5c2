"""Queen contiguity and distance-decay edges: hand-worked cases and the real mh-180 partition."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from landuse.spatial.adjacency import (
    ADJACENCY_SCHEMA,
    DISTANCE_DECAY_SCHEMA,
    adjacency_to_spark,
    distance_decay_edges,
    distance_decay_to_spark,
    queen_adjacency,
)
from landuse.spatial.regions import grid_regions
from tests.spatial.helpers import CRS

# 3×3 grid of 10 m cells, ids row-major from the south-west:
#   6 7 8
#   3 4 5
#   0 1 2
SHARED_EDGES = [(0, 1), (1, 2), (3, 4), (4, 5), (6, 7), (7, 8), (0, 3), (3, 6), (1, 4), (4, 7), (2, 5), (5, 8)]
CORNERS = [(0, 4), (1, 3), (1, 5), (2, 4), (3, 7), (4, 6), (4, 8), (5, 7)]


def _as_dict(edges: pd.DataFrame) -> dict[tuple[int, int], float]:
    rows = edges[["region_id_a", "region_id_b", "shared_length_m"]].itertuples(index=False)
    return {(int(a), int(b)): float(w) for a, b, w in rows}


def test_queen_adjacency_on_3x3_grid() -> None:
    grid = grid_regions((0.0, 0.0, 30.0, 30.0), 10.0, CRS)
    got = _as_dict(queen_adjacency(grid))
    expected = {}
    for a, b in SHARED_EDGES:
        expected[(a, b)] = expected[(b, a)] = 10.0
    for a, b in CORNERS:
        expected[(a, b)] = expected[(b, a)] = 0.0
    assert got == expected  # 40 directed edges: symmetric, no self loops


def test_queen_adjacency_uses_region_ids_not_positions() -> None:
    grid = grid_regions((0.0, 0.0, 20.0, 10.0), 10.0, CRS)
    grid["region_id"] = [50, 7]
    edges = queen_adjacency(grid)
    assert edges[["region_id_a", "region_id_b"]].values.tolist() == [[7, 50], [50, 7]]


def test_distance_decay_hand_computed() -> None:
    centroids = pd.DataFrame({"region_id": [10, 11, 12], "centroid_x": [0.0, 3.0, 0.0], "centroid_y": [0.0, 0.0, 4.0]})
    # radius 5 (inclusive): all three pairs, distances 3, 4, 5; d_max = 5.
    # w(3) = ln((1+5^1.5)/(1+3^1.5)) = ln(12.18034/6.19615) = 0.675895; w(4) = ln(12.18034/9) = 0.302599; w(5) = 0
    edges = distance_decay_edges(centroids, radius_m=5.0).set_index(["region_id_a", "region_id_b"])
    assert len(edges) == 6
    assert edges.loc[(10, 11), "distance_m"] == pytest.approx(3.0)
    assert edges.loc[(10, 11), "weight"] == pytest.approx(0.6758946, abs=1e-6)
    assert edges.loc[(10, 12), "weight"] == pytest.approx(0.3025986, abs=1e-6)
    assert edges.loc[(11, 12), "weight"] == pytest.approx(0.0, abs=1e-12)
    assert edges.loc[(12, 11), "weight"] == pytest.approx(0.0, abs=1e-12)
    # row 10: 0.675895 / (0.675895 + 0.302599) = 0.690750
    assert edges.loc[(10, 11), "weight_norm"] == pytest.approx(0.6907505, abs=1e-6)
    assert edges.loc[(10, 12), "weight_norm"] == pytest.approx(0.3092495, abs=1e-6)
    assert edges.loc[(11, 10), "weight_norm"] == pytest.approx(1.0)  # 11's only non-zero neighbour
    # radius 4.5: pairs at 3 and 4 only; d_max = 4 → w(3) = ln(9/6.19615) = 0.373296, w(4) = 0
    small = distance_decay_edges(centroids, radius_m=4.5).set_index(["region_id_a", "region_id_b"])
    assert sorted(small.index) == [(10, 11), (10, 12), (11, 10), (12, 10)]
    assert small.loc[(11, 10), "weight"] == pytest.approx(0.3732961, abs=1e-6)
    assert small.loc[(12, 10), "weight_norm"] == 0.0  # its only weight is 0: row sum 0 → 0


def test_edges_to_spark(spark) -> None:
    grid = grid_regions((0.0, 0.0, 20.0, 10.0), 10.0, CRS)
    grid["centroid_x"], grid["centroid_y"] = grid.centroid.x, grid.centroid.y
    adjacency = adjacency_to_spark(spark, queen_adjacency(grid))
    decay = distance_decay_to_spark(spark, distance_decay_edges(grid, radius_m=20.0))
    assert adjacency.schema == ADJACENCY_SCHEMA and decay.schema == DISTANCE_DECAY_SCHEMA
    assert adjacency.count() == 2 and decay.count() == 2


def test_mh180_adjacency_symmetric_without_islands(mh180: gpd.GeoDataFrame) -> None:
    edges = queen_adjacency(mh180)
    pairs = set(zip(edges["region_id_a"], edges["region_id_b"]))
    assert all((b, a) in pairs for a, b in pairs)
    assert not any(a == b for a, b in pairs)
    degree = edges.groupby("region_id_a").size().reindex(range(180), fill_value=0)
    islands = int((degree == 0).sum())
    assert islands == 0  # measured: every mh-180 region touches another (1016 directed edges)
    assert len(edges) == 1016
    assert (edges["shared_length_m"] >= 0).all()
    assert (edges["shared_length_m"] > 0).mean() > 0.8  # most neighbours share an edge, some only a corner
    decay = distance_decay_edges(mh180, radius_m=1500.0)
    row_sums = decay.groupby("region_id_a")["weight_norm"].sum()
    assert np.allclose(row_sums[row_sums > 0], 1.0)
