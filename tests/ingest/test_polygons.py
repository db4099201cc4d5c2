"""Polygon readers: formats, CRS and id checks, land-use class mapping and proportions."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import LineString, Polygon, box

from landuse.ingest import (
    IngestError,
    read_class_mapping,
    read_landuse_codes,
    read_landuse_proportions,
    read_polygons,
)
from tests.ingest.conftest import write


def squares(crs: str | None = "EPSG:32650", **columns) -> gpd.GeoDataFrame:
    x0, y0 = 805_000, 2_495_000
    n = len(next(iter(columns.values())))
    geoms = [box(x0 + i * 100, y0, x0 + (i + 1) * 100, y0 + 100) for i in range(n)]
    return gpd.GeoDataFrame(columns, geometry=geoms, crs=crs)


@pytest.mark.parametrize("suffix", ["gpkg", "shp", "geojson", "parquet"])
def test_read_polygons_formats(tmp_path, suffix):
    gdf = squares(region=[7, 8])
    path = tmp_path / f"regions.{suffix}"
    gdf.to_parquet(path) if suffix == "parquet" else gdf.to_file(path)
    out = read_polygons(path, id_column="region")
    assert list(out["region"]) == [7, 8]
    assert out.crs.to_epsg() == 32650
    assert out.geometry.area.round(6).tolist() == [10_000.0, 10_000.0]


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_read_polygons_errors(tmp_path):
    gdf = squares(crs=None, region=[1, 2])
    gdf.to_file(tmp_path / "nocrs.shp")
    with pytest.raises(IngestError) as err:
        read_polygons(tmp_path / "nocrs.shp", id_column="region")
    assert str(err.value) == (
        f"{tmp_path / 'nocrs.shp'}: no CRS in the file (no .prj / CRS metadata); set option crs, e.g. EPSG:4326"
    )
    assert read_polygons(tmp_path / "nocrs.shp", id_column="region", crs="EPSG:32650").crs.to_epsg() == 32650
    with pytest.raises(IngestError, match=r"nocrs\.shp: option crs: unknown CRS 'EPSG:999999'"):
        read_polygons(tmp_path / "nocrs.shp", crs="EPSG:999999")
    with pytest.raises(IngestError, match=r"nocrs\.shp: missing id column 'grid_id' \(has: region\)"):
        read_polygons(tmp_path / "nocrs.shp", id_column="grid_id", crs="EPSG:32650")
    squares(region=[1, 1]).to_file(tmp_path / "dup.gpkg")
    with pytest.raises(IngestError, match=r"dup\.gpkg: duplicate id 1 in column 'region' \(1 duplicated ids\)"):
        read_polygons(tmp_path / "dup.gpkg", id_column="region")
    garbage = tmp_path / "garbage.gpkg"
    garbage.write_bytes(b"this is not a geopackage")
    with pytest.raises(IngestError) as err:
        read_polygons(garbage)
    assert str(err.value).startswith(f"{garbage}: unreadable as a vector file (") and "\n" not in str(err.value)
    with pytest.raises(IngestError, match=r"missing\.gpkg: file not found"):
        read_polygons(tmp_path / "missing.gpkg")
    lines = gpd.GeoDataFrame({"region": [1]}, geometry=[LineString([(0, 0), (1, 1)])], crs="EPSG:4326")
    lines.to_file(tmp_path / "lines.geojson")
    with pytest.raises(IngestError, match=r"lines\.geojson: row 0 \(id 1\): LineString geometry, expected Polygon"):
        read_polygons(tmp_path / "lines.geojson", id_column="region")


def test_invalid_polygons_are_repaired_within_the_tolerance(tmp_path):
    # A square whose closing edge crosses its first one: a tiny twisted lobe at one corner.
    twisted = Polygon([(0, 0), (10, 0), (10, 10), (0, 10), (0.1, -0.1)])
    assert not twisted.is_valid
    gdf = gpd.GeoDataFrame({"region": [1]}, geometry=[twisted], crs="EPSG:32650")
    gdf.to_file(tmp_path / "twisted.gpkg")
    out = read_polygons(tmp_path / "twisted.gpkg", id_column="region")
    assert out.geometry.is_valid.all() and out.geometry.area.iloc[0] == pytest.approx(100.0, rel=0.01)
    # A bow-tie: its lobes cancel in the written area (0), make_valid doubles it -> refused by default
    # (tests/ingest/test_guards.py), repaired when the tolerance allows any change.
    bowtie = Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])
    gpd.GeoDataFrame({"region": [1]}, geometry=[bowtie], crs="EPSG:32650").to_file(tmp_path / "bowtie.gpkg")
    with pytest.raises(IngestError, match=r"bowtie\.gpkg: row 0 \(id 1\): invalid polygon \(Self-intersection"):
        read_polygons(tmp_path / "bowtie.gpkg", id_column="region")
    out = read_polygons(tmp_path / "bowtie.gpkg", id_column="region", repair_tolerance=1.0)
    assert out.geometry.is_valid.all() and out.geometry.area.iloc[0] == pytest.approx(2.0)


MAPPING = """
code,name,landuse_class
0101,paddy field,non_construction
0701,urban residential,residential
05,commercial and service,commercial
"""


def test_class_mapping_validation(tmp_path):
    good = read_class_mapping(write(tmp_path / "map.csv", MAPPING))
    assert list(good["code"]) == ["0101", "0701", "05"]  # leading zeros kept
    bad = write(tmp_path / "bad.csv", "code,name,landuse_class\n0101,x,farmland")
    with pytest.raises(IngestError, match=r"bad\.csv: row 2: code '0101': unknown landuse_class 'farmland' \(allowed: commercial"):
        read_class_mapping(bad)
    dup = write(tmp_path / "dup.csv", "code,name,landuse_class\n01,x,commercial\n01,y,residential")
    with pytest.raises(IngestError, match=r"dup\.csv: duplicate code '01'"):
        read_class_mapping(dup)
    nocol = write(tmp_path / "nocol.csv", "code,class\n01,x")
    with pytest.raises(IngestError, match=r"nocol\.csv: missing required column 'name' \(has: code, class\)"):
        read_class_mapping(nocol)


def test_landuse_codes_mapping_and_unmapped_rejects(tmp_path, caplog):
    mapping = write(tmp_path / "map.csv", MAPPING)
    gdf = squares(DLBM=["0101", "0701", "0508", "9999", None, "0701"], BSM=["a", "b", "c", "d", "e", "f"])
    path = tmp_path / "landuse.gpkg"
    gdf.to_file(path)
    result = read_landuse_codes(path, "DLBM", mapping, id_column="BSM")
    assert result.polygons[["source_id", "landuse_code", "landuse_class"]].values.tolist() == [
        ["a", "0101", "non_construction"],
        ["b", "0701", "residential"],
        ["f", "0701", "residential"],
    ]
    assert result.polygons.crs.to_epsg() == 32650
    assert result.unmapped == {"0508": 1, "9999": 1}
    assert "2 polygon(s) with 2 code(s) missing from" in caplog.text and "'0508' (1)" in caplog.text
    reasons = dict(zip(result.rejects["raw"].map(lambda r: json.loads(r)["BSM"]), result.rejects["reason"]))
    assert reasons == {"c": "unmapped_code", "d": "unmapped_code", "e": "missing_code"}
    assert json.loads(result.rejects["raw"].iloc[0])["geometry"].startswith("POLYGON ((")
    summary = result.summary()
    assert (summary.rows_in, summary.kept, summary.rejected) == (6, 3, 3)
    assert summary.by_reason == {"unmapped_code": 2, "missing_code": 1}

    prefix = read_landuse_codes(path, "DLBM", mapping, match="prefix")
    assert prefix.polygons["landuse_class"].tolist() == ["non_construction", "residential", "commercial", "residential"]
    assert prefix.unmapped == {"9999": 1}
    with pytest.raises(IngestError, match=r"landuse\.gpkg: missing column 'LANDUSE' \(has: DLBM, BSM\)"):
        read_landuse_codes(path, "LANDUSE", mapping)


def test_landuse_numeric_codes_match_text(tmp_path):
    mapping = write(tmp_path / "map.csv", "code,name,landuse_class\n101,x,commercial\n2,y,residential")
    path = tmp_path / "lu.shp"
    squares(LANDUSE=[101.0, 2.0]).to_file(path)
    result = read_landuse_codes(path, "LANDUSE", mapping)
    assert result.polygons["landuse_code"].tolist() == ["101", "2"]
    assert result.polygons["landuse_class"].tolist() == ["commercial", "residential"]


def test_landuse_proportions(tmp_path):
    gdf = squares(tract=["t1", "t2", "t3", "t4"], lu_a=[0.25, 0.0, 0.7, -0.1], lu_b=[0.75, 0.0, 0.6, 0.5])
    path = tmp_path / "tracts.gpkg"
    gdf.to_file(path)
    result = read_landuse_proportions(path, ["lu_a", "lu_b"], id_column="tract")
    assert result.polygons[["source_id", "lu_a", "lu_b"]].values.tolist() == [["t1", 0.25, 0.75], ["t2", 0.0, 0.0]]
    assert result.rejects["reason"].tolist() == ["invalid_proportions", "invalid_proportions"]
    with pytest.raises(IngestError, match=r"tracts\.gpkg: missing column 'lu_c'"):
        read_landuse_proportions(path, ["lu_a", "lu_c"])


def test_real_nyc_polygons(nyc: Path):
    mh180 = read_polygons(nyc / "regions/mh180/mh-180.shp", id_column="region_id")
    assert len(mh180) == 180 and mh180.crs.to_epsg() == 4326
    with pytest.raises(IngestError, match=r"taxi_zones\.shp: duplicate id 56 in column 'LocationID' \(2 duplicated ids\)"):
        read_polygons(nyc / "regions/taxi_zones/taxi_zones.shp", id_column="LocationID")
    zones = read_polygons(nyc / "regions/taxi_zones/taxi_zones.shp", id_column="LocationID", dissolve_duplicates=True)
    assert len(zones) == 260 and zones["LocationID"].is_unique and zones.crs.to_epsg() == 2263
    columns = ["lu_residential", "lu_mixed_comm_office", "lu_industrial", "lu_transport_public_parking", "lu_open_vacant"]
    tracts = read_landuse_proportions(nyc / "landuse/nyc_ct2020_landuse5.gpkg", columns, id_column="BoroCT2020")
    summary = tracts.summary()
    assert (summary.rows_in, summary.kept, summary.rejected) == (2325, 2325, 0)
    assert tracts.polygons.crs.to_epsg() == 32118
    assert list(tracts.polygons.columns) == ["source_id", *columns, "geometry"]
