"""Spatial-join engines in Spark: builtin vs GeoPandas (always), builtin vs Sedona (with jars)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest

from landuse.spark.session import sedona_available
from landuse.spatial.engines import (
    BuiltinJoinEngine,
    SedonaJoinEngine,
    SpatialJoinError,
    assign_distinct_locations,
    assign_lonlat,
    make_engine,
    project_points,
)
from landuse.spatial.regions import to_spark
from tests.spatial.helpers import CRS, probe_points, sjoin_reference


@pytest.fixture(scope="module")
def probes(voronoi_table: gpd.GeoDataFrame) -> pd.DataFrame:
    """Random points (some outside), every shared vertex, and null / NaN coordinates; with duplicates."""
    x, y = probe_points(voronoi_table, 3000, seed=11)
    frame = pd.DataFrame({"pid": np.arange(len(x), dtype=np.int64), "x": x, "y": y, "tag": "p"})
    frame.loc[5, "x"] = np.nan
    frame.loc[6, "y"] = None
    duplicate = frame.iloc[[10, 10]].assign(pid=[len(x), len(x) + 1])  # identical rows are both kept
    return pd.concat([frame, duplicate], ignore_index=True)


def _region_of(result: pd.DataFrame) -> np.ndarray:
    return result.sort_values("pid")["region_id"].fillna(-1).to_numpy(dtype=np.int64)


def test_builtin_matches_geopandas(spark, voronoi_table: gpd.GeoDataFrame, probes: pd.DataFrame) -> None:
    regions = to_spark(spark, voronoi_table)
    points = spark.createDataFrame(probes).repartition(3)
    out = BuiltinJoinEngine(cells_per_region=64).assign_points(points, regions, "x", "y")
    assert out.columns == ["pid", "x", "y", "tag", "region_id"]
    assert dict(out.dtypes)["region_id"] == "bigint"
    result = out.toPandas()
    assert len(result) == len(probes)  # rows are never dropped
    expected = sjoin_reference(voronoi_table, probes["x"].to_numpy(float), probes["y"].to_numpy(float))
    got = _region_of(result)
    assert (got == expected).all(), f"{int((got != expected).sum())} differences"
    assert (got == -1).sum() > 100 and got[5] == -1 and got[6] == -1
    assert (result.sort_values("pid")["tag"] == "p").all()


def test_builtin_keep_columns(spark, voronoi_table: gpd.GeoDataFrame, probes: pd.DataFrame) -> None:
    regions = to_spark(spark, voronoi_table)
    points = spark.createDataFrame(probes)
    engine = BuiltinJoinEngine()
    only = engine.assign_points(points, regions, "x", "y", "r", keep_columns=["pid"])
    assert only.columns == ["pid", "r"]
    result = only.toPandas().sort_values("pid")
    expected = sjoin_reference(voronoi_table, probes["x"].to_numpy(float), probes["y"].to_numpy(float))
    assert (result["r"].fillna(-1).to_numpy(dtype=np.int64) == expected).all()
    assert engine.assign_points(points, regions, "x", "y", keep_columns=[]).columns == ["region_id"]


def test_builtin_rejects_bad_columns(spark, voronoi_table: gpd.GeoDataFrame) -> None:
    regions = to_spark(spark, voronoi_table)
    points = spark.createDataFrame(pd.DataFrame({"x": [1.0], "y": [2.0], "region_id": [1]}))
    with pytest.raises(SpatialJoinError, match="already exists"):
        BuiltinJoinEngine().assign_points(points, regions, "x", "y")
    with pytest.raises(SpatialJoinError, match="missing column"):
        BuiltinJoinEngine().assign_points(points, regions, "lon", "y", out_col="r")
    with pytest.raises(SpatialJoinError, match="missing column"):
        BuiltinJoinEngine().assign_points(points, regions, "x", "y", out_col="r", keep_columns=["nope"])


def test_make_engine_follows_session(spark) -> None:
    expected = SedonaJoinEngine if sedona_available(spark) else BuiltinJoinEngine
    assert isinstance(make_engine(spark), expected)


def test_project_points_and_distinct_locations(spark, voronoi_table: gpd.GeoDataFrame) -> None:
    to_lonlat = pyproj.Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    # Station "a" at a region centroid, "b" far outside, "c" only with null coordinates,
    # "a" again at a second place (the smallest lon/lat wins), plus a row with a null key.
    cx, cy = voronoi_table.loc[3, ["centroid_x", "centroid_y"]]
    lon_a, lat_a = to_lonlat.transform(cx, cy)
    lon_b, lat_b = to_lonlat.transform(-5000.0, -5000.0)
    stations = pd.DataFrame(
        {
            "station": ["a", "b", "c", "a", None],
            "lon": [lon_a, lon_b, None, lon_a + 1.0, lon_a],
            "lat": [lat_a, lat_b, None, lat_a, lat_a],
        }
    )
    df = spark.createDataFrame(stations)
    projected = project_points(df, "lon", "lat", CRS, "x", "y").toPandas()
    x, y = pyproj.Transformer.from_crs("EPSG:4326", CRS, always_xy=True).transform(stations["lon"], stations["lat"])
    assert np.allclose(projected["x"].iloc[[0, 1, 3]], np.asarray(x)[[0, 1, 3]], rtol=0, atol=0)
    assert projected["x"].isna().tolist() == [False, False, True, False, False]

    regions = to_spark(spark, voronoi_table)
    engine = BuiltinJoinEngine()
    located = assign_distinct_locations(engine, df, regions, "station", "lon", "lat", CRS).toPandas()
    got = dict(zip(located["station"], located["region_id"]))
    assert set(got) == {"a", "b", "c"}
    assert got["a"] == voronoi_table.loc[3, "region_id"]
    assert pd.isna(got["b"]) and pd.isna(got["c"])

    trips = assign_lonlat(engine, df, regions, "lon", "lat", CRS, out_col="o_region").toPandas()
    assert trips.columns.tolist() == ["station", "lon", "lat", "o_region"]
    assert trips["o_region"].iloc[0] == voronoi_table.loc[3, "region_id"]


@pytest.mark.sedona
def test_builtin_matches_sedona(spark, voronoi_table: gpd.GeoDataFrame, probes: pd.DataFrame) -> None:
    if not sedona_available(spark):
        pytest.skip("needs Sedona jars: set SEDONA_JARS")
    regions = to_spark(spark, voronoi_table)
    points = spark.createDataFrame(probes)
    builtin = BuiltinJoinEngine().assign_points(points, regions, "x", "y").toPandas()
    sedona = SedonaJoinEngine().assign_points(points, regions, "x", "y").toPandas()
    assert len(sedona) == len(probes)
    assert (_region_of(builtin) == _region_of(sedona)).all()
