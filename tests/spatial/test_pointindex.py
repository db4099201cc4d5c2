"""The builtin engine's point index against GeoPandas sjoin + the smallest-region_id rule."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely

from landuse.spatial.pointindex import NO_REGION, RegionPointIndex
from landuse.spatial.regions import grid_regions
from tests.spatial.helpers import CRS, probe_points, sjoin_reference


@pytest.mark.parametrize("cells_per_region", [4, 64, 1600])
def test_matches_geopandas_on_voronoi(voronoi_table: gpd.GeoDataFrame, cells_per_region: int) -> None:
    x, y = probe_points(voronoi_table, 20_000, seed=1)
    index = RegionPointIndex(voronoi_table["region_id"], voronoi_table.geometry.values, cells_per_region=cells_per_region)
    expected = sjoin_reference(voronoi_table, x, y)
    got = index.assign(x, y)
    assert (got == expected).all(), f"{int((got != expected).sum())} differences"
    assert (got == NO_REGION).sum() > 1000  # points outside every region are kept, with no region
    assert (index.assign_exact(x, y) == expected).all()


def test_shared_edges_and_vertices_go_to_the_smallest_id() -> None:
    grid = grid_regions((0.0, 0.0, 30.0, 30.0), 10.0, CRS)  # 3×3, 10 m cells
    grid["region_id"] = [80, 30, 50, 70, 20, 60, 40, 10, 90]  # so position order ≠ id order
    index = RegionPointIndex(grid["region_id"], grid.geometry.values, cells_per_region=16)
    points = {
        (10.0, 5.0): 30,  # edge between 80 and 30
        (20.0, 15.0): 20,  # edge between 20 and 60
        (10.0, 10.0): 20,  # vertex shared by 80, 30, 70, 20
        (20.0, 20.0): 10,  # vertex shared by 20, 60, 10, 90
        (0.0, 0.0): 80,  # outer corner: one region
        (30.0, 30.0): 90,
        (5.0, 5.0): 80,  # interiors
        (25.0, 25.0): 90,
        (30.000001, 15.0): NO_REGION,  # just outside
        (-1.0, -1.0): NO_REGION,
    }
    xy = np.array(list(points))
    x = np.concatenate([xy[:, 0], [np.nan, 5.0, np.inf]])
    y = np.concatenate([xy[:, 1], [5.0, np.nan, 5.0]])
    expected = np.array(list(points.values()) + [NO_REGION] * 3)
    assert index.assign(x, y).tolist() == expected.tolist()
    assert sjoin_reference(grid, xy[:, 0], xy[:, 1]).tolist() == list(points.values())


def test_points_on_every_grid_line() -> None:
    """Many points exactly on shared edges (grid lines) and vertices of a 20×20 grid."""
    grid = grid_regions((100.0, 200.0, 300.0, 400.0), 10.0, CRS)
    rng = np.random.default_rng(3)
    grid["region_id"] = rng.permutation(len(grid)) + 1
    lines = 100.0 + 10.0 * rng.integers(0, 21, 3000)
    along = rng.uniform(150.0, 450.0, 3000)
    x = np.concatenate([lines, along - 50.0, 100.0 + 10.0 * rng.integers(0, 21, 500)])
    y = np.concatenate([along + 50.0, lines + 100.0, 200.0 + 10.0 * rng.integers(0, 21, 500)])
    index = RegionPointIndex(grid["region_id"], grid.geometry.values, cells_per_region=9)
    assert (index.assign(x, y) == sjoin_reference(grid, x, y)).all()


def test_overlaps_holes_and_multipolygons() -> None:
    ring = shapely.box(0, 0, 100, 100).difference(shapely.box(40, 40, 60, 60))  # a hole
    big = shapely.box(-50, -50, 150, 150)  # overlaps everything
    islands = shapely.MultiPolygon([shapely.box(45, 45, 50, 50), shapely.box(200, 200, 210, 210)])
    regions = gpd.GeoDataFrame({"region_id": [5, 9, 3]}, geometry=[ring, big, islands], crs=CRS)
    x, y = probe_points(regions, 5000, seed=4)
    index = RegionPointIndex(regions["region_id"], regions.geometry.values, cells_per_region=50)
    expected = sjoin_reference(regions, x, y)
    assert (index.assign(x, y) == expected).all()
    # (55, 55): in the hole, inside "big" only; (50, 50): corner of an island square → 3 < 9
    probes = np.array([55.0, 50.0, 47.0, 10.0, 205.0])
    assert index.assign(probes, probes).tolist() == [9, 3, 3, 5, 3]


def test_degenerate_inputs() -> None:
    empty = RegionPointIndex(np.array([], dtype=np.int64), np.array([], dtype=object))
    assert empty.assign(np.array([1.0]), np.array([1.0])).tolist() == [NO_REGION]
    one = RegionPointIndex([4], [shapely.box(0, 0, 1, 1000)])  # thin extent
    assert one.assign(np.array([0.5, 2.0, 1.0]), np.array([999.0, 5.0, 0.0])).tolist() == [4, NO_REGION, 4]
    with pytest.raises(ValueError, match="unique"):
        RegionPointIndex([1, 1], [shapely.box(0, 0, 1, 1)] * 2)


def test_lookup_with_negative_ids() -> None:
    grid = grid_regions((0.0, 0.0, 20.0, 10.0), 10.0, CRS)
    index = RegionPointIndex([-1, -5], grid.geometry.values)
    ids, found = index.lookup(np.array([5.0, 10.0, 15.0, 50.0]), np.array([5.0, 5.0, 5.0, 5.0]))
    assert found.tolist() == [True, True, True, False]
    assert ids[found].tolist() == [-1, -5, -5]  # the shared edge goes to -5 < -1
