"""Canonical regions table, grids, Voronoi regions, Spark round trip, real mh-180."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import shapely

from landuse.spark.schemas import REGIONS_SCHEMA
from landuse.spatial.regions import (
    RegionsError,
    from_spark,
    grid_regions,
    regions_from_geodataframe,
    to_spark,
    voronoi_regions,
)
from tests.spatial.helpers import CRS

SQUARE = shapely.box(0, 0, 100, 100)
BOWTIE = shapely.Polygon([(200, 0), (300, 100), (300, 0), (200, 100)])  # self-intersecting: invalid


def _gdf(ids, geoms, crs=CRS) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"id": ids}, geometry=list(geoms), crs=crs)


def test_integer_ids_kept_and_columns_computed() -> None:
    table = regions_from_geodataframe(_gdf([42, 7], [SQUARE, shapely.box(100, 0, 300, 50)]), "id", CRS)
    assert list(table.columns) == [f.name for f in REGIONS_SCHEMA.fields]
    assert table["region_id"].tolist() == [7, 42]  # sorted by id
    assert table["source_id"].tolist() == ["7", "42"]
    assert table["area_m2"].tolist() == pytest.approx([10_000.0, 10_000.0])
    assert table.loc[1, ["centroid_x", "centroid_y"]].tolist() == pytest.approx([50.0, 50.0])
    lon, lat = pyproj.Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(50.0, 50.0)
    assert table.loc[1, ["lon", "lat"]].tolist() == pytest.approx([lon, lat])
    assert table.crs == pyproj.CRS(CRS)


def test_string_ids_dense_ranked_and_integer_strings_parsed() -> None:
    ranked = regions_from_geodataframe(_gdf(["b", "a", "c"], [SQUARE] * 3), "id", CRS)
    assert dict(zip(ranked["source_id"], ranked["region_id"])) == {"a": 0, "b": 1, "c": 2}
    parsed = regions_from_geodataframe(_gdf(["10", "3"], [SQUARE] * 2), "id", CRS)
    assert parsed["region_id"].tolist() == [3, 10]
    padded = regions_from_geodataframe(_gdf(["010", "3"], [SQUARE] * 2), "id", CRS)  # "010" would not round-trip
    assert dict(zip(padded["source_id"], padded["region_id"])) == {"010": 0, "3": 1}
    floats = regions_from_geodataframe(_gdf([2.0, 5.0], [SQUARE] * 2), "id", CRS)
    assert floats["region_id"].tolist() == [2, 5] and floats["source_id"].tolist() == ["2", "5"]


def test_invalid_geometry_repaired_and_multipolygon_kept() -> None:
    multi = shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(5, 5, 7, 7)])
    table = regions_from_geodataframe(_gdf([1, 2], [BOWTIE, multi]), "id", CRS)
    assert table.geometry.is_valid.all()
    assert table.loc[0, "area_m2"] == pytest.approx(5000.0)  # two triangles of the bowtie
    assert table.loc[1, "geometry"].geom_type == "MultiPolygon"
    assert table.loc[1, "area_m2"] == pytest.approx(5.0)


def test_reprojects_from_wgs84() -> None:
    lonlat = shapely.box(114.0, 22.5, 114.01, 22.51)
    table = regions_from_geodataframe(_gdf([1], [lonlat], crs="EPSG:4326"), "id", CRS)
    assert 1.0e6 < table.loc[0, "area_m2"] < 1.3e6  # ~1.03 km × 1.11 km
    assert table.loc[0, "lon"] == pytest.approx(114.005, abs=1e-4)


@pytest.mark.parametrize(
    "gdf, crs, message",
    [
        (gpd.GeoDataFrame({"id": [1]}, geometry=[SQUARE]), CRS, "no CRS"),
        (_gdf([1], [SQUARE]), "EPSG:4326", "not projected"),
        (_gdf([1, 1], [SQUARE, SQUARE]), CRS, "duplicate"),
        (_gdf([1, None], [SQUARE, SQUARE]), CRS, "null"),
        (_gdf([1], [shapely.LineString([(0, 0), (1, 1)])]), CRS, "no polygonal geometry"),
    ],
)
def test_bad_inputs_fail_clearly(gdf: gpd.GeoDataFrame, crs: str, message: str) -> None:
    with pytest.raises(RegionsError, match=message):
        regions_from_geodataframe(gdf, "id", crs)
    with pytest.raises(RegionsError, match="no id column"):
        regions_from_geodataframe(_gdf([1], [SQUARE]), "zone", CRS)


def test_grid_is_row_major_from_the_south_west() -> None:
    grid = grid_regions((1000.0, 2000.0, 1030.0, 2020.0), 10.0, CRS)
    assert len(grid) == 6  # 3 columns × 2 rows
    assert grid["region_id"].tolist() == list(range(6))
    cell4 = grid.loc[grid["region_id"] == 4, "geometry"].iloc[0]
    assert cell4.bounds == (1010.0, 2010.0, 1020.0, 2020.0)  # row 1, col 1
    assert grid.loc[4, ["row", "col"]].tolist() == [1, 1]
    overhang = grid_regions((0.0, 0.0, 25.0, 10.0), 10.0, CRS)
    assert len(overhang) == 3 and overhang.total_bounds.tolist() == [0.0, 0.0, 30.0, 10.0]


def test_voronoi_regions_follow_seed_order() -> None:
    seeds = np.array([[10.0, 10.0], [90.0, 10.0], [50.0, 90.0]])
    cells = voronoi_regions(seeds, (0, 0, 100, 100), CRS)
    assert cells["region_id"].tolist() == [0, 1, 2]
    assert shapely.contains_xy(np.asarray(cells.geometry.values), seeds[:, 0], seeds[:, 1]).all()
    assert cells.area.sum() == pytest.approx(10_000.0)


def test_spark_round_trip(spark, voronoi_table: gpd.GeoDataFrame) -> None:
    df = to_spark(spark, voronoi_table)
    assert df.schema == REGIONS_SCHEMA
    back = from_spark(df, CRS)
    assert back["region_id"].tolist() == voronoi_table["region_id"].tolist()
    assert back.geometry.geom_equals_exact(voronoi_table.geometry, tolerance=0).all()
    assert np.allclose(back["area_m2"], voronoi_table["area_m2"], rtol=0, atol=0)


def test_mh180_real_regions(mh180: gpd.GeoDataFrame) -> None:
    assert len(mh180) == 180
    assert mh180["region_id"].tolist() == list(range(180))
    assert mh180.crs == pyproj.CRS("EPSG:32118")
    assert mh180.geometry.is_valid.all()
    assert (mh180["area_m2"] > 1e4).all()
    assert 50e6 < mh180["area_m2"].sum() < 53e6  # the partition covers ~51.3 km² of Manhattan
    assert mh180["lon"].between(-74.03, -73.90).all() and mh180["lat"].between(40.68, 40.88).all()
