"""POI adapters on tiny hand-written files: exact canonical output and quarantined bad rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from landuse.config import SourceConfig
from landuse.ingest import IngestError, LonLatBox, read_pois
from landuse.ingest.coords import gcj02_to_wgs84, wgs84_to_gcj02
from landuse.spark.schemas import POIS_SCHEMA, REJECTS_SCHEMA, check_schema
from tests.ingest.conftest import write

SHENZHEN = LonLatBox(113.7, 22.4, 114.7, 22.9)


def collect(result, id_field: str):
    check_schema(result.pois, POIS_SCHEMA, "pois")
    check_schema(result.rejects, REJECTS_SCHEMA, "rejects")
    pois = sorted(tuple(r) for r in result.pois.collect())
    rejects = {json.loads(r.raw)[id_field]: r.reason for r in result.rejects.collect()}
    return pois, rejects


def test_amap_csv(spark, tmp_path):
    path = write(
        tmp_path / "amap.csv",
        """
        id,name,type,typecode,location
        B001,川菜馆,餐饮服务;中餐厅;四川菜(川菜),050102,"114.05,22.54"
        B002,商场,购物服务;商场;购物中心|餐饮服务;快餐厅;快餐厅,060101|050301,"114.06, 22.55"
        B003,无坐标,餐饮服务;中餐厅;中餐厅,050100,
        B004,坏坐标,餐饮服务;中餐厅;中餐厅,050100,"114.05;22.54"
        B005,北京,餐饮服务;中餐厅;中餐厅,050100,"116.40,39.90"
        B006,无类别,,,"114.05,22.54"
        ,无编号,餐饮服务,050000,"114.05,22.54"
        B008,大类,生活服务,070000,"114.07,22.56"
        """,
    )
    result = read_pois(spark, SourceConfig("amap_csv", path, {}), SHENZHEN)
    pois, rejects = collect(result, "name")
    assert pois == [
        ("amap_csv", "B001", 114.05, 22.54, "餐饮服务", "中餐厅", "四川菜(川菜)"),
        ("amap_csv", "B002", 114.06, 22.55, "购物服务", "商场", "购物中心"),
        ("amap_csv", "B008", 114.07, 22.56, "生活服务", None, None),
    ]
    assert rejects == {
        "无坐标": "null_coordinates",
        "坏坐标": "unparsable_coordinates",
        "北京": "outside_extent",
        "无类别": "missing_category",
        "无编号": "missing_id",
    }
    summary = result.summary()
    assert (summary.rows_in, summary.kept, summary.rejected) == (8, 3, 5)

    codes = read_pois(spark, SourceConfig("amap_csv", path, {"category_source": "typecode"}), SHENZHEN)
    levels = {r.poi_id: (r.cat_l1, r.cat_l2, r.cat_l3) for r in codes.pois.collect()}
    assert levels == {"B001": ("05", "0501", "050102"), "B002": ("06", "0601", "060101"), "B008": ("07", "0700", "070000")}


def test_amap_gcj02_conversion(spark, tmp_path):
    lon, lat = np.array([114.05]), np.array([22.54])
    glon, glat = wgs84_to_gcj02(lon, lat)
    # The GCJ-02 offset in Shenzhen is a few hundred metres.
    assert 0.002 < abs(glon[0] - lon[0]) + abs(glat[0] - lat[0]) < 0.01
    back_lon, back_lat = gcj02_to_wgs84(glon, glat)
    assert abs(back_lon[0] - lon[0]) < 1e-7 and abs(back_lat[0] - lat[0]) < 1e-7  # ~1 cm
    path = write(
        tmp_path / "amap.csv",
        f'id,name,type,typecode,location\nB1,x,餐饮服务;中餐厅;中餐厅,050100,"{glon[0]:.10f},{glat[0]:.10f}"',
    )
    result = read_pois(spark, SourceConfig("amap_csv", path, {"coordinate_system": "gcj02"}))
    (row,) = result.pois.collect()
    assert row.lon == pytest.approx(114.05, abs=1e-7) and row.lat == pytest.approx(22.54, abs=1e-7)


def test_os_pointx(spark, tmp_path):
    import pyproj

    path = write(
        tmp_path / "pointx.csv",
        """
        ref_no|name|pointx_class|groupname|categoryname|classname|feature_easting|feature_northing
        1001|The Pub|01020034|Accommodation, eating and drinking|Eating and drinking|Pubs, bars and inns|530000|180000
        1002|No place|01020034|Accommodation, eating and drinking|Eating and drinking|Pubs, bars and inns||180000
        1003|Far east|01020034|Accommodation, eating and drinking|Eating and drinking|Pubs, bars and inns|9e9|180000
        """,
    )
    result = read_pois(spark, SourceConfig("os_pointx", path, {}))
    pois, rejects = collect(result, "ref_no")
    lon, lat = pyproj.Transformer.from_crs("EPSG:27700", "EPSG:4326", always_xy=True).transform(530000, 180000)
    (poi,) = pois
    assert poi[:2] == ("os_pointx", "1001")
    assert poi[2] == pytest.approx(lon, abs=1e-9) and poi[3] == pytest.approx(lat, abs=1e-9)
    assert poi[4:] == ("Accommodation, eating and drinking", "Eating and drinking", "Pubs, bars and inns")
    assert rejects == {"1002": "null_coordinates", "1003": "coordinates_out_of_range"}

    no_header = write(tmp_path / "pointx_nohdr.csv", "1001|Pub|01020034|A|B|C|530000|180000")
    codes = read_pois(spark, SourceConfig("os_pointx", no_header, {"header": False, "category_source": "codes"}))
    assert [(r.poi_id, r.cat_l1, r.cat_l2, r.cat_l3) for r in codes.pois.collect()] == [("1001", "01", "0102", "01020034")]


def test_nyc_commonplace_sample(spark, tmp_path):
    path = write(
        tmp_path / "commonplace.csv",
        """
        the_geom,COMPLEXID,SAFTYPE,SEGMENTID,SOS,PLACEID,FACI_DOM,BIN,BOROUGH,CREATED,MODIFIED,FACILITY_T,SOURCE,B7SC,PRI_ADD,NAME
        POINT (-73.81678346994171 40.78815244048363),0,N,179357,2,1031297,8,0,4,x,y,6,DCP,40074101,0,14 AV OV BELT
        POINT (-73.96605142096708 40.76184410906476),0,,36272,2,11197,3,1043357,1,x,y,3,NYPD,,1034856,"CINEMA 1, 2  & 3 THEATRES"
        POINT EMPTY,0,,36272,2,11198,3,1043357,1,x,y,3,NYPD,,1034856,EMPTY ONE
        POINT (-73.9 40.7),0,,36272,2,11199,,1043357,1,x,y,,NYPD,,1034856,NO TYPE
        """,
    )
    result = read_pois(spark, SourceConfig("nyc_commonplace", path, {}))
    pois, rejects = collect(result, "PLACEID")
    assert pois == [
        ("nyc_commonplace", "1031297", -73.81678346994171, 40.78815244048363, "6", "6:8", None),
        ("nyc_commonplace", "11197", -73.96605142096708, 40.76184410906476, "3", "3:3", None),
    ]
    assert rejects == {"11198": "unparsable_coordinates", "11199": "missing_category"}


def test_osm_csv_and_geojson(spark, tmp_path):
    import geopandas as gpd
    from shapely.geometry import Point, box

    path = write(tmp_path / "osm.csv", "osm_id,code,fclass,name,lon,lat\n10,2301,restaurant,A,114.05,22.54\n11,2301,,B,114.05,22.54")
    pois, rejects = collect(read_pois(spark, SourceConfig("osm_pois", path, {})), "osm_id")
    assert pois == [("osm_pois", "10", 114.05, 22.54, "restaurant", None, None)]
    assert rejects == {"11": "missing_category"}

    gdf = gpd.GeoDataFrame(
        {"osm_id": [20, 21], "fclass": ["school", "park"]},
        geometry=[Point(805_000, 2_495_000), box(805_000, 2_495_000, 805_100, 2_495_100)],
        crs="EPSG:32650",
    )
    geojson = tmp_path / "osm.geojson"
    gdf.to_file(geojson, driver="GeoJSON")
    result = read_pois(spark, SourceConfig("osm_pois", geojson, {}), name="osm")
    pois, rejects = collect(result, "osm_id")
    expected = gdf.set_geometry(gdf.geometry.representative_point()).to_crs("EPSG:4326")
    assert [p[:2] + p[4:5] for p in pois] == [("osm", "20", "school"), ("osm", "21", "park")]
    for poi, point in zip(pois, expected.geometry):
        assert poi[2] == pytest.approx(point.x, abs=1e-9) and poi[3] == pytest.approx(point.y, abs=1e-9)
    assert rejects == {}
    parquet = tmp_path / "osm.parquet"
    gdf.to_parquet(parquet)  # GeoParquet: GeoPandas on the driver, or Spark on the executors with Sedona
    from_parquet, _ = collect(read_pois(spark, SourceConfig("osm_pois", parquet, {}), name="osm"), "osm_id")
    assert from_parquet == pois


def test_generic_column_options_and_parquet(spark, tmp_path):
    import pandas as pd

    table = pd.DataFrame({"pid": ["p1", "p2"], "x": [114.05, None], "y": [22.54, 22.5], "top": ["food", "shop"], "sub": ["tea", None]})
    path = tmp_path / "pois.parquet"
    table.to_parquet(path)
    opts = {"id_column": "pid", "lon_column": "x", "lat_column": "y", "category_columns": ["top", "sub"]}
    pois, rejects = collect(read_pois(spark, SourceConfig("osm_pois", path, opts)), "pid")
    assert pois == [("osm_pois", "p1", 114.05, 22.54, "food", "tea", None)]
    assert rejects == {"p2": "null_coordinates"}


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_poi_errors(spark, tmp_path):
    path = write(tmp_path / "osm.csv", "osm_id,fclass,x,y\n1,a,1,2")
    with pytest.raises(IngestError, match=r"osm\.csv: no coordinate columns: expected one of lon/lat, lng/lat, .*\(has: osm_id, fclass, x, y\)"):
        read_pois(spark, SourceConfig("osm_pois", path, {}))
    with pytest.raises(IngestError, match=r"unknown POI adapter 'yelp' \(known: amap_csv, nyc_commonplace, os_pointx, osm_pois\)"):
        read_pois(spark, SourceConfig("yelp", path, {}))
    with pytest.raises(IngestError, match=r"option 'coordinate_system' must be one of wgs84, gcj02, got 'bd09'"):
        read_pois(spark, SourceConfig("amap_csv", path, {"coordinate_system": "bd09"}))
    with pytest.raises(IngestError, match=r"missing required column \(option id_column\) 'ref'"):
        read_pois(spark, SourceConfig("osm_pois", path, {"id_column": "ref", "lon_column": "x", "lat_column": "y"}))
    shp_dir = tmp_path / "noprj"
    shp_dir.mkdir()
    import geopandas as gpd
    from shapely.geometry import Point

    gpd.GeoDataFrame({"osm_id": [1], "fclass": ["a"]}, geometry=[Point(1, 2)]).to_file(shp_dir / "p.shp")
    with pytest.raises(IngestError, match=r"p\.shp: no CRS in the file .*set option crs, e.g. EPSG:4326"):
        read_pois(spark, SourceConfig("osm_pois", shp_dir / "p.shp", {}))


@pytest.mark.sedona
def test_geoparquet_is_read_by_spark_with_sedona(spark, tmp_path, monkeypatch):
    """With Sedona, GeoParquet POIs are scanned by Spark (no driver-side table) and give the driver path's POIs."""
    import geopandas as gpd
    from shapely.geometry import LineString, MultiPolygon, Point, box

    import landuse.ingest.pois as pois_module
    from tests.spatial.helpers import executed_plan, require_sedona

    require_sedona(spark)
    gdf = gpd.GeoDataFrame(
        {
            "osm_id": [30, 31, 32, 33, 34, 35, 36],
            "fclass": ["school", "park", "river", "cafe", "bar", "shop", "pub"],
            "height": [1.5, None, 2.0, 3.0, 4.0, 5.0, 6.0],
        },
        geometry=[  # UTM 50N metres around (114.05 E, 22.54 N), inside SHENZHEN
            Point(196_569.478693534, 2_495_595.510243887),
            box(196_000, 2_495_000, 196_100, 2_495_100),
            LineString([(197_000, 2_496_000), (197_300, 2_496_050)]),
            None,
            Point(),
            MultiPolygon([box(198_000, 2_497_000, 198_050, 2_497_010), box(198_100, 2_497_000, 198_200, 2_497_100)]),
            Point(1.0, 1.0),  # (112.5 E, 0 N): outside SHENZHEN
        ],
        crs="EPSG:32650",
    )
    single = tmp_path / "pois.parquet"
    gdf.to_parquet(single)
    parts = tmp_path / "parts.parquet"
    parts.mkdir()
    gdf.iloc[:4].to_parquet(parts / "part-0.parquet")
    gdf.iloc[4:].to_parquet(parts / "part-1.parquet")

    def read(path, options=None):
        return read_pois(spark, SourceConfig("osm_pois", path, options or {}), SHENZHEN, name="osm")

    on_executors = {path: read(path) for path in (single, parts)}
    plan = executed_plan(on_executors[single].raw)
    assert "geoparquet" in plan.lower() and "LocalTableScan" not in plan and "ExistingRDD" not in plan, plan
    monkeypatch.setattr(pois_module, "_sedona_registered", lambda _spark: False)
    for path, result in on_executors.items():
        pois, rejects = collect(result, "osm_id")
        assert (pois, rejects) == collect(read(path), "osm_id"), path  # the driver path, bit for bit
        assert [p[1] for p in pois] == ["30", "31", "32", "35"]
        assert rejects == {"33": "null_coordinates", "34": "null_coordinates", "36": "outside_extent"}
    monkeypatch.undo()

    no_crs = tmp_path / "no_crs.parquet"
    gdf.set_crs(None, allow_override=True).to_parquet(no_crs)
    with pytest.raises(IngestError, match=r"no_crs\.parquet: no CRS in the file .*set option crs"):
        read(no_crs)
    assert collect(read(no_crs, {"crs": "EPSG:32650"}), "osm_id") == collect(on_executors[single], "osm_id")
