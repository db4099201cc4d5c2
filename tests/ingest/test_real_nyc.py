"""Adapters on the real NYC files in ../shared/data/nyc_manhattan (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from landuse.config import SourceConfig
from landuse.ingest import IngestError, LonLatBox, read_pois, read_trips
from landuse.spark.schemas import POIS_SCHEMA, TRIPS_SCHEMA, check_schema

NYC_BOX = LonLatBox(-74.3, 40.45, -73.65, 40.95)  # the five boroughs
MANHATTAN = LonLatBox(-74.02, 40.70, -73.91, 40.88)  # mh-180 bounds


def accounting(result) -> tuple[int, int, int, dict[str, int]]:
    (summary, *_) = result.summaries()
    return summary.rows_in, summary.kept, summary.rejected, dict(summary.by_reason)


def test_citibike_sample(spark, nyc: Path):
    result = read_trips(spark, SourceConfig("citibike", nyc / "trips/citibike_2024-09_sample10k.csv", {}), NYC_BOX)
    check_schema(result.trips, TRIPS_SCHEMA, "trips")
    # Two rows carry "NA" end coordinates (trips never docked); nothing else is wrong.
    assert accounting(result) == (10_000, 9_998, 2, {"null_coordinates": 2})


def test_yellow_2015_01_epsg3857_sample(spark, nyc: Path):
    from pyspark.sql import functions as F

    path = nyc / "trips/yellow_2015-01_sample10k_epsg3857.csv"
    result = read_trips(spark, SourceConfig("tlc_taxi", path, {"crs": "EPSG:3857"}), NYC_BOX, name="yellow")
    trips = result.trips
    inside = MANHATTAN.contains(F.col("o_lon"), F.col("o_lat")) & MANHATTAN.contains(F.col("d_lon"), F.col("d_lat"))
    row = trips.agg(F.count(F.lit(1)).alias("n"), F.sum(inside.cast("int")).alias("inside")).first()
    assert row.n == 10_000
    assert row.inside / row.n > 0.95  # the sample is Manhattan trips (99.7% inside)
    assert accounting(result) == (10_000, 10_000, 0, {})


@pytest.mark.parametrize(
    "name, expected",
    [
        ("yellow_tripdata_2015-07_sample200.csv", (200, 197, 3, {"zero_coordinates": 3})),
        ("green_tripdata_2015-07_sample200.csv", (200, 200, 0, {})),
    ],
)
def test_tlc_2015_07_samples(spark, nyc: Path, name, expected):
    result = read_trips(spark, SourceConfig("tlc_taxi", nyc / "trips" / name, {}), NYC_BOX)
    assert accounting(result) == expected


def test_taxi_od_as_zone_od(spark, nyc: Path):
    from pyspark.sql import functions as F

    result = read_trips(spark, SourceConfig("zone_od", nyc / "flows/taxi_od_2015-07_mh180.csv", {}), name="taxi_od")
    assert result.keys_are_regions
    row = result.trips.agg(
        F.count(F.lit(1)).alias("cells"), F.sum("count").alias("trips"), F.countDistinct("o_key").alias("origins")
    ).first()
    assert (row.cells, row.trips, row.origins) == (30_037, 9_332_740, 180)
    assert accounting(result) == (30_037, 30_037, 0, {})


def test_commonplace_pois(spark, nyc: Path):
    result = read_pois(spark, SourceConfig("nyc_commonplace", nyc / "poi/nyc_commonplace_poi_2019.csv", {}), NYC_BOX)
    check_schema(result.pois, POIS_SCHEMA, "pois")
    summary = result.summary()
    assert summary.rows_in == 19_883 == summary.kept + summary.rejected
    assert summary.kept == 19_883
    manhattan = read_pois(spark, SourceConfig("nyc_commonplace", nyc / "poi/nyc_commonplace_poi_2019.csv", {}), MANHATTAN)
    in_box = manhattan.summary()
    assert in_box.rows_in == 19_883 == in_box.kept + in_box.rejected
    assert set(in_box.by_reason) == {"outside_extent"} and 4_000 < in_box.kept < 8_000


def test_tlc_zone_id_records_with_taxi_zones(spark, nyc: Path, tmp_path):
    path = tmp_path / "fhv.csv"
    path.write_text(
        "VendorID,tpep_pickup_datetime,tpep_dropoff_datetime,PULocationID,DOLocationID\n"
        "1,2019-01-01 00:10:00,2019-01-01 00:20:00,4,56\n"  # 56: a zone stored as two rows, merged
        "1,2019-01-01 00:10:00,2019-01-01 00:20:00,264,4\n"  # 264: 'unknown' zone, not in the file
        "1,2019-01-01 00:10:00,2019-01-01 00:20:00,,4\n"
    )
    zones = str(nyc / "regions/taxi_zones/taxi_zones.shp")
    result = read_trips(spark, SourceConfig("tlc_taxi", path, {"zones_path": zones}))
    assert [(r.o_key, r.d_key) for r in result.trips.collect()] == [("4", "56")]
    assert sorted(r.reason for r in result.rejects.collect()) == ["missing_key", "unknown_zone"]
    with pytest.raises(IngestError, match=r"PULocationID/DOLocationID: set option zones_path"):
        read_trips(spark, SourceConfig("tlc_taxi", path, {}))
