"""Spatial-join engines in Spark: builtin vs GeoPandas (always), Sedona vs builtin and GeoPandas (jars installed)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest

from landuse.spark.session import sedona_available, session_engine
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
from tests.spatial.helpers import (
    CRS,
    executed_plan,
    probe_points,
    require_sedona,
    shuffles_or_aggregates,
    sjoin_reference,
)


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
    expected = SedonaJoinEngine if session_engine(spark) == "sedona" else BuiltinJoinEngine
    assert isinstance(make_engine(spark), expected)
    assert session_engine(spark) == ("sedona" if sedona_available(spark) else "builtin")


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
    require_sedona(spark)
    regions = to_spark(spark, voronoi_table)
    points = spark.createDataFrame(probes.assign(x=probes["x"].where(probes["pid"] != 7, np.inf)))
    builtin = BuiltinJoinEngine().assign_points(points, regions, "x", "y").toPandas()
    out = SedonaJoinEngine().assign_points(points, regions, "x", "y")
    assert out.columns == ["pid", "x", "y", "tag", "region_id"]
    assert dict(out.dtypes)["region_id"] == "bigint"
    sedona = out.toPandas()
    assert len(sedona) == len(probes)  # rows are never dropped, nor duplicated
    assert (_region_of(builtin) == _region_of(sedona)).all()
    expected = sjoin_reference(voronoi_table, probes["x"].to_numpy(float), probes["y"].to_numpy(float))
    expected[7] = -1  # x = inf above
    assert (_region_of(sedona) == expected).all()
    assert (_region_of(sedona)[[5, 6, 7]] == -1).all()
    assert (sedona.sort_values("pid")["tag"] == "p").all()


@pytest.mark.sedona
def test_sedona_keep_columns_and_errors(spark, voronoi_table: gpd.GeoDataFrame, probes: pd.DataFrame) -> None:
    require_sedona(spark)
    regions = to_spark(spark, voronoi_table)
    points = spark.createDataFrame(probes)
    engine = SedonaJoinEngine()
    only = engine.assign_points(points, regions, "x", "y", "r", keep_columns=["pid"])
    assert only.columns == ["pid", "r"]
    result = only.toPandas().sort_values("pid")
    expected = sjoin_reference(voronoi_table, probes["x"].to_numpy(float), probes["y"].to_numpy(float))
    assert (result["r"].fillna(-1).to_numpy(dtype=np.int64) == expected).all()
    assert engine.assign_points(points, regions, "x", "y", keep_columns=[]).columns == ["region_id"]
    bad = spark.createDataFrame(pd.DataFrame({"x": [1.0], "y": [2.0], "region_id": [1]}))
    with pytest.raises(SpatialJoinError, match="already exists"):
        engine.assign_points(bad, regions, "x", "y")
    with pytest.raises(SpatialJoinError, match="missing column"):
        engine.assign_points(bad, regions, "lon", "y", out_col="r")


@pytest.mark.sedona
def test_sedona_plan_is_a_broadcast_index_join_without_shuffle(
    spark, tmp_path, voronoi_table: gpd.GeoDataFrame, probes: pd.DataFrame
) -> None:
    """The point side is read and joined in place: no Exchange, no Aggregate, one join node."""
    require_sedona(spark)
    path = str(tmp_path / "points")
    spark.createDataFrame(probes).repartition(3).write.parquet(path)
    points = spark.read.parquet(path)
    out = SedonaJoinEngine().assign_points(points, to_spark(spark, voronoi_table), "x", "y")
    plan = executed_plan(out)
    assert "BroadcastIndexJoin" in plan and "LeftOuter" in plan, plan
    assert shuffles_or_aggregates(plan) == [], plan
    assert out.count() == len(probes)


@pytest.mark.sedona
def test_sedona_ties_on_duplicate_rows_and_overlaps(spark) -> None:
    """Two rows with one id, a polygon covering others with a larger and a smaller id: one row per point."""
    import shapely

    geoms = [shapely.box(0, 0, 10, 10), shapely.box(10, 0, 20, 10), shapely.box(5, 0, 15, 10), shapely.box(0, 0, 10, 10)]
    table = gpd.GeoDataFrame({"region_id": [4, 2, 9, 4]}, geometry=geoms, crs=CRS)
    rows = pd.DataFrame({"region_id": table["region_id"], "geometry": list(shapely.to_wkb(np.asarray(geoms)))})
    regions = spark.createDataFrame(rows)
    x = np.array([1.0, 5.0, 7.5, 10.0, 12.0, 15.0, 16.0, 25.0, 0.0])
    y = np.array([5.0, 5.0, 0.0, 10.0, 5.0, 5.0, 5.0, 5.0, 0.0])
    points = spark.createDataFrame(pd.DataFrame({"pid": np.arange(len(x)), "x": x, "y": y}))
    got = _region_of(SedonaJoinEngine().assign_points(points, regions, "x", "y").toPandas())
    assert got.tolist() == [4, 4, 4, 2, 2, 2, 2, -1, 4]
    assert (got == sjoin_reference(table, x, y)).all()
    distinct = spark.createDataFrame(rows.iloc[:3])  # the builtin index needs unique ids; row 4 repeats row 1
    builtin = _region_of(BuiltinJoinEngine().assign_points(points, distinct, "x", "y").toPandas())
    assert (got == builtin).all()


@pytest.mark.sedona
def test_sedona_ties_with_holes_multipolygons_and_overlaps(spark) -> None:
    """A region filling another's hole, a multipolygon touching it twice, an overlapping box."""
    import shapely

    from landuse.spatial.engines import tie_pieces

    ring = shapely.Polygon(shapely.box(0, 0, 30, 30).exterior.coords, [shapely.box(10, 10, 20, 20).exterior.coords])
    geoms = [
        shapely.MultiPolygon([shapely.box(30, 0, 40, 10), shapely.box(-10, 20, 0, 30)]),  # id 0
        ring,  # id 1
        shapely.box(10, 10, 20, 20),  # id 2: fills the hole of 1
        shapely.box(20, 20, 40, 40),  # id 3: overlaps 1
    ]
    ids = np.arange(4, dtype=np.int64)
    pieces = [None if w is None else shapely.from_wkb(w) for w in tie_pieces(ids, list(shapely.to_wkb(np.asarray(geoms))))]
    assert pieces[0] is None  # nothing has a smaller id
    assert set(shapely.get_type_id(shapely.get_parts(pieces[1]))) == {1}  # 1 only touches 0: edges of 0
    assert set(shapely.get_type_id(shapely.get_parts(pieces[2]))) == {1}  # 2 touches 1's hole: its edges
    assert shapely.get_type_id(shapely.get_parts(pieces[3])).tolist().count(3) == 1  # 3 overlaps 1: all of 1

    table = gpd.GeoDataFrame({"region_id": ids}, geometry=geoms, crs=CRS)
    regions = spark.createDataFrame(pd.DataFrame({"region_id": ids, "geometry": list(shapely.to_wkb(np.asarray(geoms)))}))
    x = np.array([10.0, 15.0, 5.0, 30.0, 0.0, 25.0, 35.0, 20.0, 40.0, 50.0, 30.0, 20.0])
    y = np.array([15.0, 15.0, 5.0, 5.0, 25.0, 25.0, 35.0, 20.0, 5.0, 50.0, 20.0, 30.0])
    points = spark.createDataFrame(pd.DataFrame({"pid": np.arange(len(x)), "x": x, "y": y}))
    got = _region_of(SedonaJoinEngine().assign_points(points, regions, "x", "y").toPandas())
    assert got.tolist() == [1, 2, 1, 0, 0, 1, 3, 1, 0, -1, 1, 1]
    assert (got == sjoin_reference(table, x, y)).all()
    assert (got == _region_of(BuiltinJoinEngine().assign_points(points, regions, "x", "y").toPandas())).all()
