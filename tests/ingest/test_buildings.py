"""Building footprints (adapter ``footprints``): formats, options, rejects accounting, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, Point, box

from landuse.config import SourceConfig
from landuse.features.morphology import BUILDING_ID, BUILDING_TYPE, FLOORS, HEIGHT
from landuse.ingest.buildings import (
    AREA_BELOW_MIN,
    INVALID_COORDINATES,
    INVALID_HEIGHT,
    INVALID_LEVELS,
    MISSING_ID,
    footprint_frame,
    read_footprints,
)
from landuse.ingest.errors import IngestError
from landuse.ingest.polygons import NOT_POLYGON, NULL_GEOMETRY
from landuse.spark.schemas import GEOMETRY, RAW, REASON, SOURCE

UTM50 = "EPSG:32650"
X0, Y0 = 805_000.0, 2_495_000.0


def source(path: Path, **options) -> SourceConfig:
    return SourceConfig(adapter="footprints", path=path, options=options)


def footprints(crs: str | None = UTM50, n: int = 3, **columns) -> gpd.GeoDataFrame:
    """``n`` 10 m × 20 m footprints 50 m apart (UTM 50N metres)."""
    geoms = [box(X0 + 50 * i, Y0, X0 + 50 * i + 10, Y0 + 20) for i in range(n)]
    return gpd.GeoDataFrame(columns or {"name": [f"b{i}" for i in range(n)]}, geometry=geoms, crs=crs)


@pytest.mark.parametrize("suffix", ["geojson", "gpkg", "parquet"])
def test_formats_reprojected_to_the_study_crs(tmp_path: Path, suffix: str) -> None:
    gdf = footprints(osm_id=[11, 12, 13], height=[9.5, None, 30.0]).to_crs("EPSG:4326")
    path = tmp_path / f"buildings.{suffix}"
    gdf.to_parquet(path) if suffix == "parquet" else gdf.to_file(path)
    result = read_footprints(source(path, id_column="osm_id", height_column="height"), UTM50)
    out = result.buildings
    assert out[BUILDING_ID].tolist() == ["11", "12", "13"]
    geoms = shapely.from_wkb(out[GEOMETRY].to_numpy())
    np.testing.assert_allclose(shapely.area(geoms), 200.0, rtol=1e-6)  # back in metres
    np.testing.assert_allclose(shapely.bounds(geoms)[0], [X0, Y0, X0 + 10, Y0 + 20], atol=1e-3)
    np.testing.assert_array_equal(out[HEIGHT].to_numpy(), [9.5, np.nan, 30.0])
    np.testing.assert_array_equal(out[FLOORS].to_numpy(), [3.0, np.nan, 10.0])  # round(height / 3 m)
    assert result.has_height and out[BUILDING_TYPE].isna().all()
    assert result.summary().to_dict() == {"source": "buildings", "table": "buildings", "path": str(path),
                                          "rows_in": 3, "kept": 3, "rejected": 0, "by_reason": {}}
    assert footprint_frame(result, UTM50).crs.to_epsg() == 32650


def test_rejects_are_accounted_with_reasons(tmp_path: Path) -> None:
    good = box(X0, Y0, X0 + 10, Y0 + 10)
    rows = [
        ("a", good, "12", "4"),  # kept: height 12
        ("b", None, "10", None),  # null geometry
        ("c", Point(X0, Y0), "10", None),  # not a polygon
        ("d", LineString([(X0, Y0), (X0, Y0 + 5)]), "10", None),  # not a polygon
        ("e", box(X0, Y0, X0 + 2, Y0 + 2), "10", None),  # 4 m² < min_area_m2 = 5
        ("f", good, "-3", None),  # negative height
        ("g", good, "tall", None),  # non-numeric height
        ("h", good, None, "abc"),  # non-numeric levels
        ("i", good, None, "-1"),  # negative levels
        ("j", good, None, "5"),  # kept: height from levels, 15 m
        ("k", good, "", None),  # kept: empty height = unknown
        (None, good, "7", None),  # null id
        ("m", shapely.Polygon(), "7", None),  # empty geometry
        ("n", good, "inf", None),  # non-finite height
    ]
    gdf = gpd.GeoDataFrame({"id": [r[0] for r in rows], "h": [r[2] for r in rows], "lv": [r[3] for r in rows],
                            "kind": ["house"] * len(rows)}, geometry=[r[1] for r in rows], crs=UTM50)
    path = tmp_path / "buildings.parquet"
    gdf.to_parquet(path)
    result = read_footprints(source(path, id_column="id", height_column="h", levels_column="lv", type_column="kind"),
                             UTM50, min_area_m2=5.0)
    summary = result.summary()
    assert summary.rows_in == len(rows) == summary.kept + summary.rejected
    assert result.buildings[BUILDING_ID].tolist() == ["a", "j", "k"]
    np.testing.assert_array_equal(result.buildings[HEIGHT].to_numpy(), [12.0, 15.0, np.nan])
    np.testing.assert_array_equal(result.buildings[FLOORS].to_numpy(), [4.0, 5.0, np.nan])
    assert result.buildings[BUILDING_TYPE].tolist() == ["house"] * 3
    assert summary.by_reason == {NULL_GEOMETRY: 2, NOT_POLYGON: 2, AREA_BELOW_MIN: 1, INVALID_HEIGHT: 3,
                                 INVALID_LEVELS: 2, MISSING_ID: 1}
    rejects = result.rejects
    assert list(rejects.columns) == [SOURCE, REASON, RAW] and set(rejects[SOURCE]) == {"buildings"}
    by_id = {json.loads(raw)["id"]: reason for raw, reason in zip(rejects[RAW], rejects[REASON])}
    assert by_id == {"b": NULL_GEOMETRY, "c": NOT_POLYGON, "d": NOT_POLYGON, "e": AREA_BELOW_MIN,
                     "f": INVALID_HEIGHT, "g": INVALID_HEIGHT, "h": INVALID_LEVELS, "i": INVALID_LEVELS,
                     None: MISSING_ID, "m": NULL_GEOMETRY, "n": INVALID_HEIGHT}
    raw_g = json.loads(rejects[RAW][rejects[REASON] == INVALID_HEIGHT].iloc[1])
    assert raw_g["h"] == "tall" and raw_g["geometry"].startswith("POLYGON")


def test_unprojectable_footprint_is_rejected(tmp_path: Path) -> None:
    # latitude beyond the pole: no finite UTM coordinates
    gdf = gpd.GeoDataFrame({"name": ["ok", "bad"]}, geometry=[box(114.0, 22.5, 114.0002, 22.5002),
                                                                 box(114.0, 95.0, 114.0002, 95.0002)], crs="EPSG:4326")
    path = tmp_path / "b.parquet"
    gdf.to_parquet(path)
    result = read_footprints(source(path), UTM50)
    assert result.summary().by_reason == {INVALID_COORDINATES: 1} and len(result.buildings) == 1


def test_defaults_row_number_ids_no_heights_and_notes(tmp_path: Path) -> None:
    path = tmp_path / "b.gpkg"
    footprints().to_file(path)
    result = read_footprints(source(path), UTM50)
    assert result.buildings[BUILDING_ID].tolist() == ["0", "1", "2"]
    assert not result.has_height and result.buildings[HEIGHT].isna().all()
    assert any("row numbers" in note for note in result.notes)
    assert any("height features" in note and "are 0" in note for note in result.notes)


def test_levels_only_give_height(tmp_path: Path) -> None:
    path = tmp_path / "b.geojson"
    footprints(storeys=[2, None, 10]).to_file(path)
    result = read_footprints(source(path, levels_column="storeys"), UTM50)
    np.testing.assert_array_equal(result.buildings[HEIGHT].to_numpy(), [6.0, np.nan, 30.0])
    np.testing.assert_array_equal(result.buildings[FLOORS].to_numpy(), [2.0, np.nan, 10.0])
    assert result.has_height and any("levels x 3 m" in note for note in result.notes)


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_crs_option_for_a_file_without_one(tmp_path: Path) -> None:
    path = tmp_path / "nocrs.parquet"
    footprints(crs=None).to_parquet(path)
    with pytest.raises(IngestError, match=r"nocrs\.parquet: no CRS in the file .*set option crs"):
        read_footprints(source(path), UTM50)
    result = read_footprints(source(path, crs=UTM50), UTM50)
    assert len(result.buildings) == 3


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_missing_configured_column_lists_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "b.geojson"
    footprints(osm_id=[1, 2, 3], levels=[1, 2, 3]).to_file(path)
    with pytest.raises(IngestError) as err:
        read_footprints(source(path, height_column="height_m"), UTM50)
    assert one_line(err) == f"{path}: missing height column 'height_m' (option height_column; has: osm_id, levels)"
    with pytest.raises(IngestError, match=r"missing id column 'id' \(option id_column; has: osm_id, levels\)"):
        read_footprints(source(path, id_column="id"), UTM50)


def test_whole_file_problems_are_one_line_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.geojson"
    garbage.write_text("{ this is not json")
    with pytest.raises(IngestError) as err:
        read_footprints(source(garbage), UTM50)
    assert one_line(err).startswith(f"{garbage}: unreadable as a vector file (")

    missing = tmp_path / "nope.gpkg"
    with pytest.raises(IngestError) as err:
        read_footprints(source(missing), UTM50)
    assert one_line(err) == f"{missing}: file not found"

    empty = tmp_path / "empty.parquet"
    footprints().iloc[:0].to_parquet(empty)
    with pytest.raises(IngestError) as err:
        read_footprints(source(empty), UTM50)
    assert one_line(err) == f"{empty}: no footprints (the file has 0 rows)"

    ok = tmp_path / "ok.parquet"
    footprints().to_parquet(ok)
    with pytest.raises(IngestError, match=r"unknown option 'heigth_column' \(allowed: crs, height_column, id_column"):
        read_footprints(source(ok, heigth_column="h"), UTM50)
    with pytest.raises(IngestError, match=r"unknown buildings adapter 'osm' \(known: footprints\)"):
        read_footprints(SourceConfig(adapter="osm", path=ok), UTM50)
    with pytest.raises(IngestError, match=r"study.crs 'EPSG:4326' is not projected"):
        read_footprints(source(ok), "EPSG:4326")
