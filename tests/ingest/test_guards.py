"""Ingest guards against silent data loss: tiny bad files through the real readers, stages and CLI.

Whole-source problems (nearly every row rejected, no data rows) fail ``landuse run ingest`` with
exit code 2 and one ``error:`` line; row-level problems land in the rejects with their reason, and
rows in = kept + rejected still holds.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import geopandas as gpd
import pyproj
import pytest
from shapely.geometry import Polygon, box

from landuse.cli import main
from landuse.config import SourceConfig
from landuse.ingest import read_pois, read_trips
from landuse.ingest.buildings import read_footprints
from landuse.ingest.guards import Guards
from landuse.ingest.polygons import read_landuse_codes
from landuse.ingest.validation import LonLatBox
from landuse.manifest import read_manifest
from tests.ingest.conftest import write

NYC = LonLatBox(-74.3, 40.45, -73.65, 40.95)
NY = "EPSG:32118"  # NAD83 / New York Long Island, metres
TO_NY = pyproj.Transformer.from_crs("EPSG:4326", NY, always_xy=True)
N = 2000  # rows of the whole-source cases (the audit's size)
CITIBIKE = "ride_id,started_at,ended_at,start_lng,start_lat,end_lng,end_lat"


def lonlat(i: int) -> tuple[float, float, float, float]:
    """Origin and destination lon/lat of trip ``i``, inside Manhattan."""
    return -73.99 + (i % 50) * 1e-4, 40.75 + (i % 37) * 1e-4, -73.98 + (i % 20) * 1e-4, 40.76 + (i % 17) * 1e-4


def config_file(tmp_path: Path, trips: dict | None = None, pois: dict | None = None, **extra) -> Path:
    """An ingest-only config (study.extent set, no regions) written as JSON, which is YAML."""
    path = tmp_path / "conf.yaml"
    body = {"name": "guards", "work_dir": str(tmp_path / "work"), "study": {"extent": [NYC.min_lon, NYC.min_lat,
                                                                                      NYC.max_lon, NYC.max_lat]},
            "inputs": {"trips": trips or {}, **({"pois": pois} if pois else {})},
            "spark": {"shuffle_partitions": 2}, **extra}  # the CLI reuses the test session: keep its settings
    path.write_text(json.dumps(body))
    return path


def run_cli(capsys, *argv: str) -> tuple[int, list[str]]:
    """``landuse run ...`` in process: (exit code, the stderr lines starting with ``error:``)."""
    code, errors, _ = run_cli_out(capsys, *argv)
    return code, errors


def run_cli_out(capsys, *argv: str) -> tuple[int, list[str], str]:
    """:func:`run_cli` plus stdout (``<stage>: ran|unchanged <output> -> <path>`` lines)."""
    capsys.readouterr()
    code = main(["run", *argv])
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line.startswith("error:")], captured.out


# --- whole sources: kept share ----------------------------------------------------------------


def swapped_latlon(tmp_path: Path) -> dict:
    rows = [f"r{i},2024-09-0{1 + i % 7} 08:00:00,2024-09-0{1 + i % 7} 08:20:00,{olat},{olon},{dlat},{dlon}"
            for i, (olon, olat, dlon, dlat) in enumerate(map(lonlat, range(N)))]
    return {"adapter": "citibike", "path": str(write(tmp_path / "bikes.csv", CITIBIKE + "\n" + "\n".join(rows)))}


def projected_rows() -> list[str]:
    """N trips as `start,ox,oy,dx,dy` with the ends in New York Long Island metres (EPSG:32118)."""
    rows = []
    for i in range(N):
        olon, olat, dlon, dlat = lonlat(i)
        (ox, dx), (oy, dy) = TO_NY.transform([olon, dlon], [olat, dlat])
        rows.append(f"2015-01-0{1 + i % 7} 08:00:00,{ox:.1f},{oy:.1f},{dx:.1f},{dy:.1f}")
    return rows


def wrong_crs(tmp_path: Path) -> dict:
    # x/y in New York Long Island metres, declared as Web Mercator: they land near (2.7 E, 0.5 N)
    rows = projected_rows()
    path = write(tmp_path / "taxi.csv", "pickup_datetime,pickup_x,pickup_y,dropoff_x,dropoff_y\n" + "\n".join(rows))
    return {"adapter": "tlc_taxi", "path": str(path), "options": {"crs": "EPSG:3857"}}


def xy_without_crs(tmp_path: Path) -> dict:
    # projected metres read as lon/lat degrees (no option crs): every coordinate is out of range
    rows = projected_rows()
    path = write(tmp_path / "od.csv", "start_time,o_lon,o_lat,d_lon,d_lat\n" + "\n".join(rows))
    return {"adapter": "points_od", "path": str(path)}


@pytest.mark.parametrize(
    ("make", "reason"),
    [(swapped_latlon, "outside_extent"), (wrong_crs, "outside_extent"), (xy_without_crs, "coordinates_out_of_range")],
    ids=["swapped-lat-lon", "wrong-crs", "xy-without-crs"],
)
def test_a_source_keeping_too_few_rows_fails_the_stage(spark, tmp_path, capsys, make, reason) -> None:
    source = make(tmp_path)
    conf = config_file(tmp_path, {"src": source})
    code, errors = run_cli(capsys, "ingest", "--config", str(conf))
    assert code == 2 and len(errors) == 1, errors
    assert errors[0] == (
        f"error: inputs.trips.src ({source['path']}): kept 0 of 2,000 rows (0.0% < ingest.min_kept_fraction 50%): "
        f"{reason} 2,000 — swapped lat/lon or a wrong crs? lower ingest.min_kept_fraction to accept"
    )
    assert read_manifest(tmp_path / "work" / "tables" / "trips") is None  # nothing committed
    # Lowering the threshold accepts the source: its rejects are committed, every row accounted for.
    code, errors = run_cli(capsys, "ingest", "--config", str(conf), "ingest.min_kept_fraction=0")
    assert code == 0 and not errors
    (entry,) = [e for e in read_manifest(tmp_path / "work" / "tables" / "trips")["ingest"] if e["table"] == "trips"]
    assert (entry["rows_in"], entry["kept"], entry["rejected"], entry["by_reason"]) == (N, 0, N, {reason: N})


# --- whole sources: no data rows ----------------------------------------------------------------


def test_header_only_trips_do_not_replace_the_good_table(spark, tmp_path, capsys) -> None:
    rows = "\n".join(f"2024-09-0{1 + i % 7} 08:00:00,{a},{b},{c},{d}" for i, (a, b, c, d) in enumerate(map(lonlat, range(20))))
    path = write(tmp_path / "od.csv", "start_time,o_lon,o_lat,d_lon,d_lat\n" + rows)
    conf = config_file(tmp_path, {"src": {"adapter": "points_od", "path": str(path)}})
    assert run_cli(capsys, "ingest", "--config", str(conf)) == (0, [])
    trips = tmp_path / "work" / "tables" / "trips"
    assert read_manifest(trips)["rows"] == 20
    write(path, "start_time,o_lon,o_lat,d_lon,d_lat")  # the same file, now header only
    code, errors = run_cli(capsys, "ingest", "--config", str(conf))
    assert (code, errors) == (2, [
        f"error: inputs.trips.src ({path}): no data rows (empty or header-only file); nothing was written — "
        "fix the file, or rerun with --force to accept an empty source"
    ])
    assert read_manifest(trips)["rows"] == 20  # the good table is still there
    assert run_cli(capsys, "ingest", "--config", str(conf), "--force") == (0, [])
    assert read_manifest(trips)["rows"] == 0  # the user asked for it


def test_header_only_pois_fail_unless_forced(spark, tmp_path, capsys) -> None:
    path = write(tmp_path / "pois.csv", "id,fclass,lon,lat")
    conf = config_file(tmp_path, pois={"adapter": "osm_pois", "path": str(path)})
    code, errors = run_cli(capsys, "ingest", "--config", str(conf))
    assert code == 2 and len(errors) == 1 and errors[0].startswith(f"error: inputs.pois ({path}): no data rows")
    assert read_manifest(tmp_path / "work" / "tables" / "pois") is None
    assert run_cli(capsys, "ingest", "--config", str(conf), "--force") == (0, [])
    (entry,) = read_manifest(tmp_path / "work" / "tables" / "pois")["ingest"][-1:]
    assert (entry["table"], entry["rows_in"], entry["kept"], entry["rejected"]) == ("pois", 0, 0, 0)


# --- row-level reasons ----------------------------------------------------------------------------


def reasons_of(result, field: str) -> dict[str, str]:
    """{value of ``field`` in a reject's raw JSON: its reason}."""
    return {json.loads(r.raw)[field]: r.reason for r in result.rejects.collect()}


def test_rows_with_extra_fields_are_rejected(spark, tmp_path) -> None:
    path = write(
        tmp_path / "od.csv",
        """
        id,start_time,o_lon,o_lat,d_lon,d_lat
        1,2024-09-01 08:00,-73.99,40.75,-73.98,40.76
        2,2024-09-01 08:00,-73.99,40.75,-73.98,40.76,stray
        3,2024-09-01 08:00,-73.99,40.75,-73.98,40.76,,
        4,"2024-09-01 08:00",-73.99,40.75,-73.98,"40.76"
        5,2024-09-01 08:00,-73.99,40.75,-73.98
        6,"a,b",-73.99,40.75,-73.98,40.76
        """,
    )
    result = read_trips(spark, SourceConfig("points_od", path, {}), NYC, name="src")
    assert reasons_of(result, "id") == {
        "2": "extra_fields", "3": "extra_fields",  # even when the extra fields are empty
        "5": "null_coordinates",  # a short row is padded, not an extra-fields row
        "6": "unparsable_timestamp",  # a quoted separator is not a field boundary
    }
    raw = {json.loads(r.raw)["id"]: json.loads(r.raw) for r in result.rejects.collect()}
    assert raw["2"]["_line"] == "2,2024-09-01 08:00,-73.99,40.75,-73.98,40.76,stray"  # nothing silently dropped
    assert "_line" not in raw["6"]
    (summary,) = result.summaries()
    assert (summary.rows_in, summary.kept, summary.rejected) == (6, 2, 4)


def dated_trips(tmp_path: Path) -> Path:
    """A week of good trips (400 a day) plus one in 1900 and one in 9999."""
    rows = [f"2024-09-{1 + d:02d} {h % 24:02d}:15:00,-73.99,40.75,-73.98,40.76" for d in range(7) for h in range(400)]
    rows += ["1900-01-01 08:00:00,-73.99,40.75,-73.98,40.76", "9999-12-31 08:00:00,-73.99,40.75,-73.98,40.76"]
    return write(tmp_path / "od.csv", "start_time,o_lon,o_lat,d_lon,d_lat\n" + "\n".join(rows))


def covered_days(trips) -> int:
    """The flows stage's covered days of these trips (source_flows counts the distinct start dates)."""
    from pyspark.sql import functions as F

    from landuse.features.flows import source_flows

    assigned = trips.withColumns({"o_region": F.lit(0).cast("long"), "d_region": F.lit(0).cast("long")})
    result = source_flows(assigned, 1)
    try:
        return result.summary.days
    finally:
        result.release()


def test_dates_outside_the_bulk_are_rejected(spark, tmp_path) -> None:
    source = SourceConfig("points_od", dated_trips(tmp_path), {})
    result = read_trips(spark, source, NYC, name="src")
    assert result.date_range == ("2024-08-31", "2024-09-08")  # the week, widened by a day each side
    assert sorted(reasons_of(result, "start_time").items()) == [
        ("1900-01-01 08:00:00", "date_out_of_range"), ("9999-12-31 08:00:00", "date_out_of_range"),
    ]
    (summary,) = result.summaries()
    assert (summary.rows_in, summary.kept, summary.rejected) == (2802, 2800, 2)
    assert covered_days(result.trips) == 7
    # Without the guard (a range admitting everything) the two stray dates stretch the week to 9 days.
    wide = Guards(date_range=(dt.date(1900, 1, 1), dt.date(9999, 12, 31)))
    assert covered_days(read_trips(spark, source, NYC, name="src", guards=wide).trips) == 9
    # An explicit ingest.date_range wins over the derived one.
    narrow = Guards(date_range=(dt.date(2024, 9, 2), dt.date(2024, 9, 6)))
    (summary,) = read_trips(spark, source, NYC, name="src", guards=narrow).summaries()
    assert (summary.kept, summary.by_reason) == (2000, {"date_out_of_range": 802})


def test_counts_above_max_count_are_rejected(spark, tmp_path) -> None:
    path = write(
        tmp_path / "od.csv",
        "o_region,d_region,trips\n0,1,740\n1,2,999999999999999999\n2,3,1000000000000000000\n3,4,1000000\n4,5,1000001",
    )
    result = read_trips(spark, SourceConfig("zone_od", path, {}), name="taxi")
    assert reasons_of(result, "trips") == {
        "999999999999999999": "count_too_large", "1000000000000000000": "count_too_large", "1000001": "count_too_large",
    }
    assert sorted(r["count"] for r in result.trips.collect()) == [740, 1_000_000]  # max_count itself is kept
    (summary,) = read_trips(spark, SourceConfig("zone_od", path, {}), name="taxi", guards=Guards(max_count=1e18)).summaries()
    assert (summary.rows_in, summary.kept, summary.by_reason) == (5, 4, {"count_too_large": 1})


def test_duplicate_poi_ids_through_the_stage(spark, tmp_path, capsys) -> None:
    path = write(
        tmp_path / "pois.csv",
        """
        id,fclass,lon,lat
        7,cafe,-73.99,40.75
        8,bank,-73.98,40.75
        7,cafe,-73.99,40.75
        7,pub,-73.97,40.75
        """,
    )
    conf = config_file(tmp_path, pois={"adapter": "osm_pois", "path": str(path)})
    assert run_cli(capsys, "ingest", "--config", str(conf)) == (0, [])
    pois = spark.read.parquet(str(tmp_path / "work" / "tables" / "pois")).collect()
    assert sorted((r.poi_id, r.cat_l1) for r in pois) == [("7", "cafe"), ("8", "bank")]  # counted once
    (entry,) = read_manifest(tmp_path / "work" / "tables" / "pois")["ingest"][-1:]
    assert (entry["rows_in"], entry["kept"], entry["rejected"], entry["by_reason"]) == (4, 2, 2, {"duplicate_id": 2})
    # The ingest: section is part of the stage's fingerprint: a changed setting reruns it.
    assert "ingest: unchanged pois" in run_cli_out(capsys, "ingest", "--config", str(conf))[2]
    assert "ingest: ran pois" in run_cli_out(capsys, "ingest", "--config", str(conf), "ingest.max_count=5")[2]


def test_undecodable_bytes_are_rejected(spark, tmp_path) -> None:
    pois = tmp_path / "pois.csv"
    pois.write_bytes(
        b"id,name,fclass,lon,lat\n"
        b"1,Caf\xc3\xa9,cafe,-73.99,40.75\n"  # valid UTF-8
        b"2,Bank,b\xffank,-73.98,40.75\n"  # a category with a byte invalid in UTF-8
        b"3,Caf\xe9,cafe,-73.97,40.75\n"  # a Latin-1 name in a UTF-8 file
    )
    result = read_pois(spark, SourceConfig("osm_pois", pois, {}), NYC, name="pois")
    assert {r.poi_id: r.cat_l1 for r in result.pois.collect()} == {"1": "cafe"}
    assert reasons_of(result, "id") == {"2": "undecodable_text", "3": "undecodable_text"}
    summary = result.summary()
    assert (summary.rows_in, summary.kept, summary.rejected) == (3, 1, 2)
    # Declared as Latin-1 every byte decodes: nothing is rejected for its text.
    latin = read_pois(spark, SourceConfig("osm_pois", pois, {"encoding": "latin1"}), NYC, name="pois")
    assert latin.summary().rejected == 0
    trips = tmp_path / "od.csv"
    trips.write_bytes(b"o_region,d_region,trips\n0,1,5\n1\xfe,2,5\n")
    result = read_trips(spark, SourceConfig("zone_od", trips, {}), name="taxi")
    assert [r.reason for r in result.rejects.collect()] == ["undecodable_text"]


# --- polygons -------------------------------------------------------------------------------------

BOWTIE = Polygon([(300_000, 60_000), (300_200, 60_200), (300_200, 60_000), (300_000, 60_200)])


def test_bowtie_region_fails_the_regions_stage(spark, tmp_path, capsys) -> None:
    cells = [box(300_000 + 200 * i, 60_300, 300_200 + 200 * i, 60_500) for i in range(3)]
    path = tmp_path / "regions.gpkg"
    gpd.GeoDataFrame({"zone": ["a", "b", "c", "d"]}, geometry=[*cells, BOWTIE], crs=NY).to_file(path)
    conf = tmp_path / "regions.yaml"
    conf.write_text(json.dumps({"name": "bowtie", "work_dir": str(tmp_path / "work"), "study": {"crs": NY},
                                "spark": {"shuffle_partitions": 2},
                                "inputs": {"regions": {"adapter": "polygons", "path": str(path),
                                                       "options": {"id_column": "zone"}}}}))
    code, errors = run_cli(capsys, "regions", "--config", str(conf))
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith(f"error: {path}: row 3: invalid polygon (Self-intersection")
    assert "make_valid would change by 100% of its area (> ingest.polygon_repair_tolerance 1%)" in errors[0]
    assert read_manifest(tmp_path / "work" / "tables" / "regions") is None
    # Accepting any area change repairs it (both lobes): the stage reruns because the setting changed.
    code, errors = run_cli(capsys, "regions", "--config", str(conf), "ingest.polygon_repair_tolerance=1")
    assert (code, errors) == (0, [])
    assert read_manifest(tmp_path / "work" / "tables" / "regions")["regions"] == 4
    out = run_cli_out(capsys, "regions", "--config", str(conf), "ingest.polygon_repair_tolerance=1",
                      "ingest.min_kept_fraction=0.1")[2]
    assert "regions: unchanged regions" in out  # min_kept_fraction is not the regions stage's business


@pytest.mark.parametrize("stage", ["regions", "labels", "buildings", "ingest"])
def test_polygon_repair_tolerance_reruns_the_polygon_stages(tmp_path, stage) -> None:
    from landuse.config import load_config
    from landuse.stages import STAGES

    conf = config_file(tmp_path)

    def config_hash(*overrides: str) -> str:
        return load_config(conf, list(overrides)).section_hash(*STAGES[stage].config_keys)

    assert config_hash("ingest.polygon_repair_tolerance=0.5") != config_hash("ingest.polygon_repair_tolerance=0.2")
    if stage != "ingest":  # the ingest stage depends on the whole section, the polygon stages on the tolerance
        assert config_hash("ingest.min_kept_fraction=0.1") == config_hash("ingest.min_kept_fraction=0.9")


def test_bowtie_landuse_polygon_and_footprint_are_rejected(tmp_path) -> None:
    square = box(300_000, 60_300, 300_100, 60_400)
    path = tmp_path / "landuse.gpkg"
    gpd.GeoDataFrame({"code": ["0701", "0701"]}, geometry=[square, BOWTIE], crs=NY).to_file(path)
    mapping = write(tmp_path / "map.csv", "code,name,landuse_class\n0701,urban residential,residential")
    result = read_landuse_codes(path, "code", mapping)
    assert len(result.polygons) == 1 and result.rejects["reason"].tolist() == ["invalid_geometry"]
    summary = result.summary()
    assert (summary.rows_in, summary.kept, summary.rejected) == (2, 1, 1)
    assert read_landuse_codes(path, "code", mapping, repair_tolerance=1.0).summary().rejected == 0

    footprints = tmp_path / "buildings.gpkg"
    gpd.GeoDataFrame({"h": [10.0, 12.0]}, geometry=[square, BOWTIE], crs=NY).to_file(footprints)
    result = read_footprints(SourceConfig("footprints", footprints, {}), NY)
    assert len(result.buildings) == 1 and result.rejects["reason"].tolist() == ["invalid_geometry"]
    summary = result.summary()
    assert (summary.rows_in, summary.kept, summary.rejected) == (2, 1, 1)
