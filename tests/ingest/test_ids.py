"""Ids when the input has none or repeats them: POI row-number ids, duplicate POI ids quarantined,
regions numbered in file order (``id_column: row_number``, ``on_duplicate_id``), projected POI x/y."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import shapely

from landuse.config import Config, ConfigError, InputsConfig, SourceConfig, StudyConfig
from landuse.ingest import IngestError, read_pois
from landuse.manifest import read_manifest
from landuse.runner import run_stage
from landuse.spark.io import read_geoparquet
from landuse.spatial.regions import RegionsError, regions_from_geodataframe
from landuse.stages import STAGES
from tests.ingest.conftest import write

NY = "EPSG:32118"  # NAD83 / New York Long Island, metres
X0, Y0 = 300_000.0, 60_000.0
TO_LONLAT = pyproj.Transformer.from_crs(NY, "EPSG:4326", always_xy=True)


# --- POIs -----------------------------------------------------------------------------------


def test_poi_file_without_id_column_gets_row_number_ids(spark, tmp_path: Path) -> None:
    rows = [(X0 + 10 * i, Y0 + 7 * i, ["food", "shop", "school"][i % 3]) for i in range(12)]
    path = write(tmp_path / "pois.csv", "x,y,category\n" + "\n".join(f"{x},{y},{c}" for x, y, c in rows))
    source = SourceConfig("osm_pois", path, {"crs": NY, "category_columns": ["category"]})
    result = read_pois(spark, source, name="pois")
    pois = sorted(result.pois.collect(), key=lambda r: int(r.poi_id.split(":")[1]))
    assert [r.poi_id for r in pois] == [f"pois.csv:{i}" for i in range(12)]  # file order, from 0
    lon, lat = TO_LONLAT.transform(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]))
    np.testing.assert_allclose([r.lon for r in pois], lon, atol=1e-9)
    np.testing.assert_allclose([r.lat for r in pois], lat, atol=1e-9)
    assert [r.cat_l1 for r in pois] == [r[2] for r in rows]
    summary = result.summary().to_dict()
    assert (summary["rows_in"], summary["kept"], summary["rejected"]) == (12, 12, 0)
    assert summary["notes"] and summary["notes"][0].startswith("poi_id: row_number")
    # stable: the same ids on a second read, and with explicit x_column / y_column options
    again = read_pois(spark, SourceConfig("osm_pois", path, {"crs": NY, "x_column": "x", "y_column": "y",
                                                             "category_columns": "category"}), name="pois")
    assert sorted(r.poi_id for r in again.pois.collect()) == sorted(r.poi_id for r in pois)


def test_row_number_ids_follow_file_order_across_splits(spark, tmp_path: Path) -> None:
    """A directory of parts, each file split over several partitions: ids still count rows per file."""
    lines = "\n".join(f"{X0 + i},{Y0 + i},c{i % 5}" for i in range(3000))
    folder = tmp_path / "parts"
    write(folder / "part-a.csv", "easting,northing,kind\n" + lines)
    write(folder / "part-b.csv", "easting,northing,kind\n" + lines)
    before = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "8k")  # ~8 splits per file
    try:
        opts = {"crs": NY, "lon_column": "easting", "lat_column": "northing", "category_columns": ["kind"]}
        pois = read_pois(spark, SourceConfig("osm_pois", folder, opts), name="pois").pois.toPandas()
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", before)
    assert len(pois) == 6000 and pois["poi_id"].is_unique
    for part in ("part-a.csv", "part-b.csv"):
        mine = pois[pois["poi_id"].str.startswith(part + ":")]
        rows = mine["poi_id"].str.split(":").str[1].astype(int)
        assert sorted(rows) == list(range(3000))
        # row i lies at x0 + i: the id's row number is the row's position in the file
        lon, _ = TO_LONLAT.transform(X0 + rows.to_numpy(float), Y0 + rows.to_numpy(float))
        np.testing.assert_allclose(mine["lon"].to_numpy(), lon, atol=1e-9)


def test_duplicate_poi_ids_are_quarantined_keeping_the_first(spark, tmp_path: Path) -> None:
    path = write(
        tmp_path / "osm.csv",
        """
        osm_id,fclass,lon,lat
        1,cafe,-73.99,40.75
        2,bank,-73.98,40.75
        1,pub,-73.97,40.75
        3,park,,
        3,zoo,-73.96,40.75
        2,atm,-73.95,40.75
        """,
    )
    result = read_pois(spark, SourceConfig("osm_pois", path, {}), name="osm")
    kept = {r.poi_id: r.cat_l1 for r in result.pois.collect()}
    assert kept == {"1": "cafe", "2": "bank", "3": "zoo"}  # first usable row of each id
    rejects = sorted((json.loads(r.raw)["fclass"], r.reason) for r in result.rejects.collect())
    assert rejects == [("atm", "duplicate_id"), ("park", "null_coordinates"), ("pub", "duplicate_id")]
    summary = result.summary()
    assert (summary.rows_in, summary.kept, summary.rejected) == (6, 3, 3)
    assert summary.by_reason == {"duplicate_id": 2, "null_coordinates": 1}
    assert "notes" not in summary.to_dict()
    # id_column: row_number ignores the repeated ids and numbers the rows instead
    numbered = read_pois(spark, SourceConfig("osm_pois", path, {"id_column": "row_number"}), name="osm")
    assert sorted(r.poi_id for r in numbered.pois.collect()) == ["osm.csv:0", "osm.csv:1", "osm.csv:2",
                                                                "osm.csv:4", "osm.csv:5"]


def test_projected_coordinate_option_errors(spark, tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", f"x,y,category\n{X0},{Y0},food")
    with pytest.raises(IngestError, match=r"x_column/y_column need option crs"):
        read_pois(spark, SourceConfig("osm_pois", path, {"x_column": "x", "y_column": "y",
                                                         "category_columns": "category"}))
    with pytest.raises(IngestError, match=r"set both x_column and y_column"):
        read_pois(spark, SourceConfig("osm_pois", path, {"crs": NY, "x_column": "x", "category_columns": "category"}))
    with pytest.raises(IngestError, match=r"not both"):
        read_pois(spark, SourceConfig("osm_pois", path, {"crs": NY, "x_column": "x", "y_column": "y",
                                                         "lon_column": "x", "lat_column": "y"}))
    with pytest.raises(IngestError, match=r"x/y with option crs"):  # x/y without crs: the hint names crs
        read_pois(spark, SourceConfig("osm_pois", path, {"category_columns": "category"}))


# --- Regions --------------------------------------------------------------------------------


def squares(names: list[str | None] | None, n: int = 6) -> gpd.GeoDataFrame:
    cells = [shapely.box(X0 + 100 * i, Y0, X0 + 100 * (i + 1), Y0 + 100) for i in range(n)]
    data = {} if names is None else {"name": names}
    return gpd.GeoDataFrame(data, geometry=cells, crs=NY)


def test_regions_numbered_in_file_order() -> None:
    table = regions_from_geodataframe(squares(None), None, NY)
    assert table["region_id"].tolist() == list(range(6)) and table["source_id"].tolist() == [str(i) for i in range(6)]
    assert table["centroid_x"].tolist() == [X0 + 50 + 100 * i for i in range(6)]  # row i is file row i
    names = ["Elm", "Oak", "Elm", "Ash", "Oak", "Elm"]
    with pytest.raises(RegionsError, match=r"duplicate ids \(2 repeated, e.g. 'Elm', 'Oak'\).*on_duplicate_id: row_number"):
        regions_from_geodataframe(squares(names), "name", NY)
    table = regions_from_geodataframe(squares(names), "name", NY, on_duplicate_id="row_number")
    assert table["region_id"].tolist() == list(range(6)) and table["source_id"].tolist() == names
    # unique names still get their usual (sorted-text) ids
    unique = regions_from_geodataframe(squares(list("fedcba")), "name", NY, on_duplicate_id="row_number")
    assert unique.set_index("source_id")["region_id"].to_dict() == {c: i for i, c in enumerate("abcdef")}


def regions_config(tmp_path: Path, gdf: gpd.GeoDataFrame, **options) -> Config:
    path = tmp_path / "regions.gpkg"
    gdf.to_file(path)
    return Config(name="ids", work_dir=tmp_path / "work", study=StudyConfig(crs=NY),
                  inputs=InputsConfig(regions=SourceConfig("polygons", path, options)))


def test_regions_stage_without_id_column(tmp_path: Path) -> None:
    config = regions_config(tmp_path, squares(["Elm", "Oak", "Elm", "Ash", "Oak", "Elm"]))
    run_stage(STAGES["regions"], config)
    regions = read_geoparquet(config, "regions", "regions")
    assert regions["region_id"].tolist() == list(range(6))
    manifest = read_manifest(config.tables_dir / "regions")
    assert manifest["id_column"] == "row_number (no id column given)"
    assert manifest["adjacency_edges"] == 10  # 6 squares in a row: 5 shared edges, both directions


def test_regions_stage_duplicate_names(tmp_path: Path) -> None:
    names = ["Elm", "Oak", "Elm", "Ash", "Oak", "Elm"]
    config = regions_config(tmp_path, squares(names), id_column="name")
    with pytest.raises(RegionsError, match=r"regions\.gpkg: id column 'name' has duplicate ids .*id_column: row_number"):
        run_stage(STAGES["regions"], config)
    config = regions_config(tmp_path, squares(names), id_column="name", on_duplicate_id="row_number")
    run_stage(STAGES["regions"], config)
    regions = read_geoparquet(config, "regions", "regions")
    assert regions["source_id"].tolist() == names and regions["region_id"].tolist() == list(range(6))
    assert read_manifest(config.tables_dir / "regions")["id_column"].startswith("row_number (duplicate ids in 'name'")
    config = regions_config(tmp_path, squares(names), id_column="row_number")
    run_stage(STAGES["regions"], config, force=True)
    assert read_manifest(config.tables_dir / "regions")["id_column"] == "row_number"
    bad = regions_config(tmp_path, squares(names), id_column="name", on_duplicate_id="merge")
    with pytest.raises(ConfigError, match=r"on_duplicate_id: 'merge' is not one of error, row_number"):
        run_stage(STAGES["regions"], bad)
    missing = regions_config(tmp_path, squares(names), id_column="zone")
    with pytest.raises(ConfigError, match=r"has no column 'zone' \(has: name\); omit id_column"):
        run_stage(STAGES["regions"], missing)
