"""Differential tests on the synthetic cities: the Sedona engine assigns exactly as the builtin one and GeoPandas.

Regions: the tiny and small Shenzhen (250 m grid: 4-way shared vertices, long shared edges) and
London (Voronoi) cities, plus overlapping extras (a disc over many cells with the smallest id, a
box with the largest id, exact copies of two cells with a smaller and a larger id). Points:
random over and beyond the extent, every vertex, points exactly on every edge (the edge's
midpoint and quarter points; exact on the grid's axis-parallel edges), and null / NaN / ±inf
coordinates.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from landuse.spark.schemas import GEOMETRY, REGION_ID
from landuse.spatial.engines import BuiltinJoinEngine, SedonaJoinEngine
from tests.spatial.helpers import require_sedona, sjoin_reference

pytestmark = pytest.mark.sedona
CITIES = [("shenzhen", "tiny"), ("london", "tiny"), ("shenzhen", "small"), ("london", "small")]


def with_overlaps(regions: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """``region_id`` + geometry of the city's regions plus four overlapping extras."""
    base = regions[[REGION_ID, GEOMETRY]]
    ids = base[REGION_ID].to_numpy()
    xmin, ymin, xmax, ymax = base.total_bounds
    width = xmax - xmin
    centre = shapely.Point(xmin + 0.4 * width, ymin + 0.4 * (ymax - ymin))
    extras = gpd.GeoDataFrame(
        {
            REGION_ID: [ids.min() - 1, ids.max() + 1, ids.min() - 2, ids.max() + 2],
            GEOMETRY: [
                centre.buffer(0.15 * width),  # smallest id: wins wherever it lies
                shapely.box(xmin + 0.6 * width, ymin + 0.1 * width, xmin + 0.8 * width, ymin + 0.3 * width),
                base.geometry.iloc[len(base) // 3],  # an exact copy that wins against the original
                base.geometry.iloc[2 * len(base) // 3],  # an exact copy that loses against it
            ],
        },
        geometry=GEOMETRY,
        crs=base.crs,
    )
    return pd.concat([base, extras], ignore_index=True)


def city_points(regions: gpd.GeoDataFrame, n_random: int, seed: int) -> pd.DataFrame:
    """Random points (10% margin beyond the extent), vertices, on-edge points, and bad coordinates."""
    rng = np.random.default_rng(seed)
    xmin, ymin, xmax, ymax = regions.total_bounds
    pad = 0.1 * (xmax - xmin)
    random = rng.uniform((xmin - pad, ymin - pad), (xmax + pad, ymax + pad), (n_random, 2))
    rings = shapely.get_rings(np.asarray(regions.geometry.values, dtype=object))
    on_edges = [random]
    for ring in rings:
        xy = shapely.get_coordinates(ring)
        a, b = xy[:-1], xy[1:]
        on_edges += [a] + [a + t * (b - a) for t in (0.25, 0.5, 0.75)]
    xy = np.unique(np.vstack(on_edges), axis=0)
    bad = np.array([[np.nan, ymin], [xmin, np.nan], [np.inf, ymin], [xmin, -np.inf], [np.nan, np.nan]])
    frame = pd.DataFrame({"x": np.r_[xy[:, 0], bad[:, 0]], "y": np.r_[xy[:, 1], bad[:, 1]]})
    frame.loc[len(frame)] = [None, ymin]
    frame.insert(0, "pid", np.arange(len(frame), dtype=np.int64))
    return frame


@pytest.mark.parametrize(("profile", "scale"), CITIES)
def test_sedona_equals_builtin_and_geopandas_on_synthetic_city(spark, city_regions, profile: str, scale: str) -> None:
    require_sedona(spark)
    regions = with_overlaps(city_regions(profile, scale))
    points = city_points(regions, 20_000, seed=3)
    regions_df = spark.createDataFrame(
        pd.DataFrame({REGION_ID: regions[REGION_ID], GEOMETRY: list(shapely.to_wkb(np.asarray(regions.geometry)))})
    )
    points_df = spark.createDataFrame(points).repartition(4)
    result = {}
    for engine in (BuiltinJoinEngine(), SedonaJoinEngine()):
        out = engine.assign_points(points_df, regions_df, "x", "y", keep_columns=["pid"]).toPandas()
        assert len(out) == len(points) and out["pid"].is_unique, engine.name
        result[engine.name] = out.sort_values("pid")[REGION_ID].fillna(-1).to_numpy(dtype=np.int64)
    expected = sjoin_reference(regions, points["x"].to_numpy(float), points["y"].to_numpy(float))
    expected[~np.isfinite(points[["x", "y"]].to_numpy(float)).all(axis=1)] = -1
    for name, got in result.items():
        differ = np.flatnonzero(got != expected)
        assert len(differ) == 0, f"{name}: {len(differ)} of {len(points)} differ, e.g. {points.iloc[differ[:5]]}"
    # The probes do exercise the rules: ties on shared vertices/edges, overlaps, outside and bad points.
    hits = gpd.sjoin(gpd.GeoDataFrame(geometry=gpd.points_from_xy(points["x"], points["y"]), crs=regions.crs),
                     regions, predicate="intersects")
    per_point = hits.groupby(level=0).size()
    assert (per_point >= 2).sum() > 1000 and (per_point >= 4).sum() > 10
    assert (expected == -1).sum() > 1000
