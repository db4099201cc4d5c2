"""Trip adapters on tiny hand-written files: exact output, every bad row quarantined with its reason."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from landuse.config import SourceConfig
from landuse.ingest import IngestError, LonLatBox, read_trips
from landuse.spark.schemas import LOCATIONS_SCHEMA, REJECTS_SCHEMA, TRIPS_SCHEMA, check_schema
from tests.ingest.conftest import write

LONDON = LonLatBox(-0.6, 51.2, 0.4, 51.8)
NYC = LonLatBox(-74.3, 40.45, -73.65, 40.95)

TFL_HEADER = "Rental Id,Duration,Bike Id,End Date,EndStation Id,EndStation Name,Start Date,StartStation Id,StartStation Name"


def rejects_by_id(result, id_field: str) -> dict[str, str]:
    """Rejected trip rows (not location-table rows) as {value of id_field in the raw JSON: reason}."""
    out = {}
    for row in result.rejects.collect():
        if not row.reason.startswith("location_"):
            out[json.loads(row.raw)[id_field]] = row.reason
    return out


def check_tables(result) -> None:
    check_schema(result.trips, TRIPS_SCHEMA, "trips")
    check_schema(result.rejects, REJECTS_SCHEMA, "rejects")
    if result.locations is not None:
        check_schema(result.locations, LOCATIONS_SCHEMA, "locations")


@pytest.fixture(scope="module")
def tfl(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tfl")
    stations = write(
        tmp / "stations.csv",
        """
        id,commonName,lat,lon,nbDocks
        BikePoints_1,River Street,51.529163,-0.10997,19
        BikePoints_2,Phillimore Gardens,51.499606,-0.197574,37
        BikePoints_3,Christopher Street,51.521283,-0.084605,32
        BikePoints_4,No Coordinates,,,10
        BikePoints_5,Paris,48.85,2.35,10
        BikePoints_1,Duplicate of 1,51.5,-0.1,5
        BikePoints_6,Beyond the pole,95.0,-0.1,5
        ,No id,51.5,-0.1,5
        """,
    )
    trips = write(
        tmp / "trips.csv",
        f"""
        {TFL_HEADER}
        1,300,10,04/01/2015 00:05,2,Phillimore Gardens,04/01/2015 00:00,1,River Street
        2,300,10,04/01/2015 00:05,2,Phillimore Gardens,04/01/2015 00:00,1,River Street
        3,600,11,04/01/2015 10:10,1,River Street,04/01/2015 10:00,999,Nowhere
        4,600,11,04/01/2015 10:10,,,04/01/2015 10:00,1,River Street
        5,600,11,04/01/2015 10:10,4,No Coordinates,04/01/2015 10:00,1,River Street
        6,600,11,04/01/2015 10:10,1,River Street,04/01/2015 10:00,5,Paris
        7,600,11,04/01/2015 10:10,6,Beyond the pole,04/01/2015 10:00,2,Phillimore Gardens
        8,600,11,04/01/2015 10:10,2,Phillimore Gardens,31/02/2015 10:00,3,Christopher Street
        9,600,11,04/01/2015 10:10,2,Phillimore Gardens,1/2/2015 1:05,3,Christopher Street
        10,600,11,04/01/2015 10:10,2,Phillimore Gardens,,3,Christopher Street
        11,-60,11,04/01/2015 10:10,2,Phillimore Gardens,04/01/2015 10:00,3,Christopher Street
        12,600,11,04/01/2015 09:50,2,Phillimore Gardens,04/01/2015 10:00,3,Christopher Street
        13,abc,11,04/01/2015 10:10,2,Phillimore Gardens,04/01/2015 10:00,3,Christopher Street
        14,60,12,05/01/2015 08:01,3.0,Christopher Street,05/01/2015 08:00:30,"2",Phillimore Gardens
        15,60
        """,
    )
    source = SourceConfig("tfl_cycle_hire", trips, {"stations_path": str(stations)})
    return read_trips(spark, source, LONDON, name="bikes")


def test_tfl_every_bad_row_has_its_reason(tfl):
    assert rejects_by_id(tfl, "Rental Id") == {
        "3": "unknown_station",
        "4": "missing_key",
        "5": "null_coordinates",
        "6": "outside_extent",
        "7": "coordinates_out_of_range",
        "8": "unparsable_timestamp",
        "9": "unparsable_timestamp",
        "10": "missing_timestamp",
        "11": "negative_duration",
        "12": "negative_duration",
        "13": "invalid_duration",
        "15": "missing_key",
    }
    trips_summary, locations_summary = tfl.summaries()
    assert (trips_summary.rows_in, trips_summary.kept, trips_summary.rejected) == (15, 3, 12)
    assert trips_summary.by_reason["unparsable_timestamp"] == 2
    assert (locations_summary.rows_in, locations_summary.kept, locations_summary.rejected) == (8, 3, 5)
    assert locations_summary.by_reason == {
        "location_null_coordinates": 1,
        "location_outside_extent": 1,
        "location_duplicate_key": 1,
        "location_coordinates_out_of_range": 1,
        "location_missing_key": 1,
    }


def test_tfl_exact_output(tfl):
    check_tables(tfl)
    rows = sorted(tuple(r) for r in tfl.trips.collect())
    assert rows == [
        ("bikes", "1", "2", None, None, None, None, datetime(2015, 1, 4, 0, 0), 1),
        ("bikes", "1", "2", None, None, None, None, datetime(2015, 1, 4, 0, 0), 1),  # duplicates are kept
        ("bikes", "2", "3", None, None, None, None, datetime(2015, 1, 5, 8, 0, 30), 1),
    ]
    locations = sorted(tuple(r) for r in tfl.locations.collect())
    assert locations == [
        ("bikes", "1", -0.10997, 51.529163),
        ("bikes", "2", -0.197574, 51.499606),
        ("bikes", "3", -0.084605, 51.521283),
    ]
    assert not tfl.keys_are_regions
    raw = json.loads(next(r.raw for r in tfl.rejects.collect() if json.loads(r.raw).get("Rental Id") == "15"))
    assert raw["Rental Id"] == "15" and raw["Duration"] == "60" and raw["StartStation Id"] is None


def test_tfl_missing_required_column(spark, tmp_path):
    trips = write(tmp_path / "trips.csv", "Rental Id,Duration,StartStation Id,EndStation Id\n1,2,3,4")
    stations = write(tmp_path / "stations.csv", "id,commonName,lat,lon\n1,a,51.5,-0.1")
    with pytest.raises(IngestError) as err:
        read_trips(spark, SourceConfig("tfl_cycle_hire", trips, {"stations_path": str(stations)}))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{trips}: missing required column 'Start Date'")
    assert "(has: Rental Id, Duration, StartStation Id, EndStation Id)" in msg


def test_tfl_options_are_validated(spark, tmp_path):
    trips = write(tmp_path / "trips.csv", TFL_HEADER)
    with pytest.raises(IngestError, match=r"option 'stations_path' is required"):
        read_trips(spark, SourceConfig("tfl_cycle_hire", trips, {}))
    with pytest.raises(IngestError, match=r"unknown option 'station_file' \(allowed: .*stations_path"):
        read_trips(spark, SourceConfig("tfl_cycle_hire", trips, {"station_file": "x.csv"}))
    with pytest.raises(IngestError, match=r"option 'timestamp_format': timestamp format 'dd MMM yyyy': unsupported"):
        read_trips(spark, SourceConfig("tfl_cycle_hire", trips, {"stations_path": str(trips), "timestamp_format": "dd MMM yyyy"}))
    with pytest.raises(IngestError, match=r"option 'stations_path': file not found: .*nope.csv"):
        read_trips(spark, SourceConfig("tfl_cycle_hire", trips, {"stations_path": str(tmp_path / "nope.csv")}))


def test_unknown_adapter_lists_known_ones(spark, tmp_path):
    with pytest.raises(IngestError) as err:
        read_trips(spark, SourceConfig("divvy", tmp_path / "x.csv", {}))
    assert str(err.value) == (
        "unknown trip adapter 'divvy' (known: citibike, points_od, signaling_od, tfl_cycle_hire, tlc_taxi, zone_od)"
    )


def test_unreadable_and_missing_files(spark, tmp_path):
    with pytest.raises(IngestError, match=r"nope\.csv: file not found"):
        read_trips(spark, SourceConfig("zone_od", tmp_path / "nope.csv", {}))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(IngestError, match=r"empty\.csv: empty file \(no header line\)"):
        read_trips(spark, SourceConfig("zone_od", empty, {}))
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(IngestError, match=r"bin\.csv: unreadable \(UnicodeDecodeError"):
        read_trips(spark, SourceConfig("zone_od", binary, {}))


CITIBIKE_HEADER = (
    "ride_id,rideable_type,started_at,ended_at,start_station_name,start_station_id,end_station_name,"
    "end_station_id,start_lat,start_lng,end_lat,end_lng,member_casual"
)


def test_citibike_bad_coordinates(spark, tmp_path):
    path = write(
        tmp_path / "citibike.csv",
        f"""
        {CITIBIKE_HEADER}
        A,classic_bike,2024-09-06 16:30:38.511,2024-09-06 16:39:13.554,Vernon,6170.02,Driggs,5481.04,40.74232744,-73.95411749,40.72179134,-73.9504154,member
        B,electric_bike,2024-09-14 12:52:11.259,2024-09-14 13:23:47.516,,,,,40.8,-73.94,40.8,-73.94,casual
        C,classic_bike,2024-09-05 16:31:39.369,2024-09-06 17:31:19.967,Home St,8020.01,,,40.827629,-73.886659,,,casual
        D,classic_bike,2024-09-05 16:31:39.369,2024-09-06 17:31:19.967,Home St,8020.01,,,40.827629,-73.886659,NA,NA,casual
        E,classic_bike,2024-09-05 16:31:39.369,2024-09-06 17:31:19.967,Home St,8020.01,X,1,40.82x,-73.886659,40.8,-73.9,casual
        F,classic_bike,2024-09-05 16:31:39.369,2024-09-06 17:31:19.967,Home St,8020.01,X,1,40.8,-73.88,91.0,-73.9,casual
        G,classic_bike,2024-09-05 16:31:39.369,2024-09-06 17:31:19.967,Home St,8020.01,X,1,0,0,40.8,-73.9,casual
        H,classic_bike,2024-09-05 16:31:39.369,2024-09-06 17:31:19.967,Boston,1,X,1,42.36,-71.06,40.8,-73.9,casual
        I,classic_bike,yesterday,2024-09-06 17:31:19.967,Home St,8020.01,X,1,40.8,-73.88,40.8,-73.9,casual
        J,classic_bike,2024-09-06 17:31:19.967,2024-09-05 16:31:39.369,Home St,8020.01,X,1,40.8,-73.88,40.8,-73.9,casual
        K,classic_bike,2024-09-05 16:31:39.369,2024-09-06 17:31:19.967,Home St,8020.01,X,1,NaN,-73.88,40.8,-73.9,casual
        """,
    )
    result = read_trips(spark, SourceConfig("citibike", path, {}), NYC)
    check_tables(result)
    assert rejects_by_id(result, "ride_id") == {
        "C": "null_coordinates",
        "D": "null_coordinates",  # "NA" is a null marker
        "E": "unparsable_coordinates",
        "F": "coordinates_out_of_range",
        "G": "zero_coordinates",
        "H": "outside_extent",
        "I": "unparsable_timestamp",
        "J": "negative_duration",
        "K": "null_coordinates",
    }
    rows = sorted((tuple(r) for r in result.trips.collect()), key=str)
    assert rows == [
        ("citibike", "6170.02", "5481.04", -73.95411749, 40.74232744, -73.9504154, 40.72179134,
         datetime(2024, 9, 6, 16, 30, 38, 511000), 1),
        ("citibike", None, None, -73.94, 40.8, -73.94, 40.8, datetime(2024, 9, 14, 12, 52, 11, 259000), 1),
    ]
    (summary,) = result.summaries()
    assert (summary.rows_in, summary.kept, summary.rejected) == (11, 2, 9)


def test_citibike_legacy_layout(spark, tmp_path):
    path = write(
        tmp_path / "legacy.csv",
        """
        tripduration,starttime,stoptime,start station id,start station name,start station latitude,start station longitude,end station id,end station name,end station latitude,end station longitude,bikeid,usertype,birth year,gender
        695,9/1/2014 00:00:25,9/1/2014 00:11:59,327,Vesey Pl,40.7153379,-74.01658354,2002,Wythe Ave,40.71,-73.96,15084,Subscriber,1990,1
        """,
    )
    result = read_trips(spark, SourceConfig("citibike", path, {}))
    assert [tuple(r) for r in result.trips.collect()] == [
        ("citibike", "327", "2002", -74.01658354, 40.7153379, -73.96, 40.71, datetime(2014, 9, 1, 0, 0, 25), 1)
    ]


def test_points_od_bad_coordinates_counts_and_crs(spark, tmp_path):
    path = write(
        tmp_path / "od.csv",
        """
        id,o_lon,o_lat,d_lon,d_lat,start_time,n
        1,114.05,22.54,114.06,22.55,2023-05-01 08:00,3
        2,114.05,22.54,114.06,22.55,2023-05-01 08:00,3
        3,114.05,,114.06,22.55,2023-05-01 08:00,1
        4,114.05,22.54,181,22.55,2023-05-01 08:00,1
        5,114.05,22.54,114.06,22.55,2023-05-01 08:00,-2
        6,114.05,22.54,114.06,22.55,2023-05-01 08:00,2.5
        7,114.05,22.54,114.06,22.55,2023-05-01 08:00,
        8,114.05,22.54,114.06,22.55,not a time,1
        9,113.00,22.54,114.06,22.55,2023-05-01 08:00,1
        10,114.05,22.54,114.06,22.55,2023-05-01 08:00,4.0
        """,
    )
    shenzhen = LonLatBox(113.7, 22.4, 114.7, 22.9)
    result = read_trips(spark, SourceConfig("points_od", path, {"count_column": "n", "o_key_column": "id"}), shenzhen)
    check_tables(result)
    assert rejects_by_id(result, "id") == {
        "3": "null_coordinates",
        "4": "coordinates_out_of_range",
        "5": "negative_count",
        "6": "invalid_count",
        "7": "missing_count",
        "8": "unparsable_timestamp",
        "9": "outside_extent",
    }
    rows = sorted(tuple(r) for r in result.trips.collect())
    ts = datetime(2023, 5, 1, 8, 0)
    assert rows == [
        ("points_od", "1", None, 114.05, 22.54, 114.06, 22.55, ts, 3),
        ("points_od", "10", None, 114.05, 22.54, 114.06, 22.55, ts, 4),
        ("points_od", "2", None, 114.05, 22.54, 114.06, 22.55, ts, 3),
    ]


def test_points_od_projected_crs(spark, tmp_path):
    import pyproj

    to_utm = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32650", always_xy=True)
    ox, oy = to_utm.transform(114.05, 22.54)
    dx, dy = to_utm.transform(114.06, 22.55)
    path = write(tmp_path / "od.csv", f"x0,y0,x1,y1\n{ox},{oy},{dx},{dy}\n{ox},,{dx},{dy}")
    opts = {"o_lon_column": "x0", "o_lat_column": "y0", "d_lon_column": "x1", "d_lat_column": "y1", "crs": "EPSG:32650"}
    result = read_trips(spark, SourceConfig("points_od", path, opts))
    (row,) = result.trips.collect()
    assert row.o_lon == pytest.approx(114.05, abs=1e-9) and row.o_lat == pytest.approx(22.54, abs=1e-9)
    assert row.d_lon == pytest.approx(114.06, abs=1e-9) and row.d_lat == pytest.approx(22.55, abs=1e-9)
    assert row.start_ts is None and row['count'] == 1
    assert [r.reason for r in result.rejects.collect()] == ["null_coordinates"]
    with pytest.raises(IngestError, match=r"option crs: unknown CRS 'EPSG:999999'"):
        read_trips(spark, SourceConfig("points_od", path, {**opts, "crs": "EPSG:999999"}))


TLC_XY = (
    "VendorID,tpep_pickup_datetime,tpep_dropoff_datetime,passenger_count,trip_distance,pickup_x,pickup_y,"
    "RateCodeID,store_and_fwd_flag,dropoff_x,dropoff_y,payment_type,fare_amount"
)


def test_tlc_xy_needs_crs_and_converts(spark, tmp_path):
    path = write(
        tmp_path / "yellow.csv",
        f"""
        {TLC_XY}
        1,2015-01-26 08:08:32,2015-01-26 08:09:58,1,0.5,-8233823.86449,4977847.20568,1,N,-8234298.62336,4976963.61588,2,3.5
        1,2015-01-26 08:08:32,2015-01-26 08:09:58,1,0.5,bad,4977847.20568,1,N,-8234298.62336,4976963.61588,2,3.5
        """,
    )
    with pytest.raises(IngestError) as err:
        read_trips(spark, SourceConfig("tlc_taxi", path, {}))
    assert "pickup_x, pickup_y, dropoff_x, dropoff_y are projected x/y: set option crs (e.g. EPSG:3857)" in str(err.value)
    result = read_trips(spark, SourceConfig("tlc_taxi", path, {"crs": "EPSG:3857"}), NYC, name="yellow")
    check_tables(result)
    (row,) = result.trips.collect()
    assert row.o_lon == pytest.approx(-73.96569824219429, abs=1e-9)
    assert row.o_lat == pytest.approx(40.76572418211338, abs=1e-9)
    assert row.start_ts == datetime(2015, 1, 26, 8, 8, 32) and row.source == "yellow"
    assert [r.reason for r in result.rejects.collect()] == ["unparsable_coordinates"]


def test_tlc_lonlat_any_case(spark, tmp_path):
    path = write(
        tmp_path / "green.csv",
        """
        VendorID,lpep_pickup_datetime,Lpep_dropoff_datetime,Pickup_longitude,Pickup_latitude,Dropoff_longitude,Dropoff_latitude,Trip_type
        2,2015-07-15 23:46:11,2015-07-16 00:08:38,-73.95771789550781,40.72199630737305,-73.96131134033203,40.66412353515625,1.0
        2,2015-07-15 23:46:11,2015-07-16 00:08:38,0,0,0,0,1.0
        """,
    )
    result = read_trips(spark, SourceConfig("tlc_taxi", path, {}), NYC)
    assert [tuple(r) for r in result.trips.collect()] == [
        ("tlc_taxi", None, None, -73.95771789550781, 40.72199630737305, -73.96131134033203, 40.66412353515625,
         datetime(2015, 7, 15, 23, 46, 11), 1)
    ]
    assert [r.reason for r in result.rejects.collect()] == ["zero_coordinates"]


def _grid(tmp: Path, crs: str = "EPSG:32650", name: str = "grid.gpkg", id_column: str = "grid_id") -> Path:
    import geopandas as gpd
    from shapely.geometry import box

    x0, y0 = 805_000, 2_495_000  # Shenzhen, UTM 50N
    cells = [box(x0 + i * 250, y0, x0 + (i + 1) * 250, y0 + 250) for i in range(3)]
    gdf = gpd.GeoDataFrame({id_column: [101, 102, 103]}, geometry=cells, crs=crs)
    path = tmp / name
    gdf.to_file(path)
    return path


def test_signaling_od_zones_and_hours(spark, tmp_path):
    import pyproj

    zones = _grid(tmp_path)
    parts = tmp_path / "od"
    write(parts / "part-0.csv", "date,hour,o_grid,d_grid,count\n2023-05-01,8,101,102,12\n20230501,23,102,101,3\n2023-05-01,24,101,102,1")
    write(
        parts / "part-1.csv",
        "date,hour,o_grid,d_grid,count\n2023-05-01,9,101,999,1\n2023-05-01,9,,101,1\n2023-05-32,9,101,102,1\n"
        "2023-05-01,9,101,102,-4\n2023-05-01,9,101,102,1.5\n2023-05-01,,101,102,1\n2023-05-01,10,103.0,103,0",
    )
    write(parts / "_SUCCESS", "")
    result = read_trips(spark, SourceConfig("signaling_od", parts, {"zones_path": str(zones)}), name="sig")
    check_tables(result)
    rows = sorted(tuple(r) for r in result.trips.collect())
    assert rows == [
        ("sig", "101", "102", None, None, None, None, datetime(2023, 5, 1, 8), 12),
        ("sig", "102", "101", None, None, None, None, datetime(2023, 5, 1, 23), 3),
        ("sig", "103", "103", None, None, None, None, datetime(2023, 5, 1, 10), 0),
    ]
    reasons = sorted(r.reason for r in result.rejects.collect())
    assert reasons == sorted(
        ["unparsable_timestamp", "unknown_zone", "missing_key", "unparsable_timestamp", "negative_count",
         "invalid_count", "missing_timestamp"]
    )
    to_lonlat = pyproj.Transformer.from_crs("EPSG:32650", "EPSG:4326", always_xy=True)
    locations = {r.loc_key: (r.lon, r.lat) for r in result.locations.collect()}
    assert set(locations) == {"101", "102", "103"}
    for i, key in enumerate(["101", "102", "103"]):
        assert locations[key] == pytest.approx(to_lonlat.transform(805_125 + 250 * i, 2_495_125), abs=1e-9)
    trips_summary, locations_summary = result.summaries()
    assert (trips_summary.rows_in, trips_summary.kept, trips_summary.rejected) == (10, 3, 7)
    assert (locations_summary.rows_in, locations_summary.kept, locations_summary.rejected) == (3, 3, 0)


def test_signaling_zone_outside_extent_rejects_its_trips(spark, tmp_path):
    import pyproj

    zones = _grid(tmp_path)
    od = write(tmp_path / "od.csv", "date,hour,o_grid,d_grid,count\n2023-05-01,8,101,102,12\n2023-05-01,8,101,101,2")
    lon, lat = pyproj.Transformer.from_crs("EPSG:32650", "EPSG:4326", always_xy=True).transform(805_125, 2_495_125)
    box = LonLatBox(lon - 0.001, lat - 0.001, lon + 0.001, lat + 0.001)  # holds cell 101's centroid only
    result = read_trips(spark, SourceConfig("signaling_od", od, {"zones_path": str(zones)}), box)
    assert sorted(r.reason for r in result.rejects.collect()) == [
        "location_outside_extent", "location_outside_extent", "outside_extent",
    ]
    assert [(r.o_key, r.d_key, r["count"]) for r in result.trips.collect()] == [("101", "101", 2)]
    assert sorted(r.loc_key for r in result.locations.collect()) == ["101"]


def test_signaling_zone_file_problems(spark, tmp_path):
    od = write(tmp_path / "od.csv", "date,hour,o_grid,d_grid,count\n2023-05-01,8,101,102,12")
    zones = _grid(tmp_path, id_column="cell")
    with pytest.raises(IngestError, match=r"grid\.gpkg: missing id column 'grid_id' \(has: cell\)"):
        read_trips(spark, SourceConfig("signaling_od", od, {"zones_path": str(zones)}))
    bad_parts = tmp_path / "parts"
    write(bad_parts / "a.csv", "date,hour,o_grid,d_grid,count\n2023-05-01,8,101,102,12")
    write(bad_parts / "b.csv", "date,hour,origin,d_grid,count\n2023-05-01,8,101,102,12")
    with pytest.raises(IngestError, match=r"b\.csv: header differs from a\.csv"):
        read_trips(spark, SourceConfig("signaling_od", bad_parts, {"zones_path": str(zones), "zone_id_column": "cell"}))


def test_zone_od(spark, tmp_path):
    path = write(
        tmp_path / "od.csv",
        "o_region,d_region,trips\n0,0,740\n0,1,36\n1,,5\n1,2,-3\n2,1,2.5\n2,2,abc\n2.0,0,7\n 3 ,4,1e2",
    )
    result = read_trips(spark, SourceConfig("zone_od", path, {}), name="taxi")
    check_tables(result)
    assert result.keys_are_regions and result.locations is None
    rows = sorted(tuple(r) for r in result.trips.collect())
    assert rows == [
        ("taxi", "0", "0", None, None, None, None, None, 740),
        ("taxi", "0", "1", None, None, None, None, None, 36),
        ("taxi", "2", "0", None, None, None, None, None, 7),
    ]
    assert sorted(r.reason for r in result.rejects.collect()) == [
        "invalid_count", "invalid_count", "invalid_count", "missing_key", "negative_count",
    ]
    renamed = write(tmp_path / "od2.csv", "from,to,n\n5,6,1")
    opts = {"o_column": "from", "d_column": "to", "count_column": "n"}
    assert [(r.o_key, r.d_key, r["count"]) for r in read_trips(spark, SourceConfig("zone_od", renamed, opts)).trips.collect()] == [
        ("5", "6", 1)
    ]
    with pytest.raises(IngestError, match=r"missing required column \(option count_column\) 'trips' \(has: from, to, n\)"):
        read_trips(spark, SourceConfig("zone_od", renamed, {"o_column": "from", "d_column": "to"}))


def test_observed_result_counts_while_writing(spark, tfl):
    """One write of the kept rows counts rows read, kept and rejected; the lazy summaries agree."""
    done = tfl.observed()
    done.trips.write.format("noop").mode("overwrite").save()
    done.locations.write.format("noop").mode("overwrite").save()
    assert done.trip_split.counts() == (15, 3, 12)
    assert done.location_split.counts() == (8, 3, 5)
    rejects = done.rejects()
    assert rejects is not None
    by_reason: dict[str, int] = {}
    for row in rejects.collect():
        by_reason[row.reason] = by_reason.get(row.reason, 0) + 1
    assert [s.to_dict() for s in done.summaries(by_reason)] == [s.to_dict() for s in tfl.summaries()]
    with pytest.raises(IngestError, match=r"12 rows were tagged as rejected but 11 were written to the rejects"):
        done.summaries({**by_reason, "missing_key": by_reason["missing_key"] - 1})


def test_observed_result_without_rejects_needs_no_second_pass(spark, tmp_path):
    path = write(tmp_path / "od.csv", "o_region,d_region,trips\n0,0,740\n0,1,36")
    done = read_trips(spark, SourceConfig("zone_od", path, {}), name="taxi").observed()
    done.trips.write.format("noop").mode("overwrite").save()
    assert done.trip_split.counts() == (2, 2, 0)
    assert done.rejects() is None  # nothing rejected: the input is not read again
    (summary,) = done.summaries({})
    assert (summary.rows_in, summary.kept, summary.rejected) == (2, 2, 0)


def test_ingest_stage_accounts_for_every_row(spark, tmp_path):
    """The stage writes kept rows once, rejects only where there are any, and checks in = kept + rejected."""
    import pyarrow.parquet as pq

    from landuse.config import load_config
    from landuse.runner import StageContext
    from landuse.stages import ingest

    zones = _grid(tmp_path)
    clean = write(tmp_path / "sig.csv", "date,hour,o_grid,d_grid,count\n2023-05-01,8,101,102,12\n2023-05-01,9,102,103,2")
    dirty = write(tmp_path / "od.csv", "o_region,d_region,trips\n0,0,740\n0,1,36\n1,,5\n1,2,-3\n2,1,2.5")
    pois = write(
        tmp_path / "amap.csv",
        'id,name,type,typecode,location\nB1,a,餐饮服务;中餐厅;川菜,050102,"114.05,22.54"\nB2,b,,,"114.05,22.54"',
    )
    sources = {
        "sig": {"adapter": "signaling_od", "path": str(clean), "options": {"zones_path": str(zones)}},
        "taxi": {"adapter": "zone_od", "path": str(dirty)},
    }
    config_path = tmp_path / "conf.yaml"
    config_path.write_text(json.dumps({  # JSON is YAML
        "name": "stage-test", "work_dir": str(tmp_path / "work"), "study": {"extent": [113.0, 22.0, 121.0, 23.5]},
        "inputs": {"trips": sources, "pois": {"adapter": "amap_csv", "path": str(pois)}},
        # "taxi" keeps 2 of its 5 rows on purpose (this test is about the accounting of rejects), below
        # the default ingest.min_kept_fraction (0.5) that would fail the stage (tests/ingest/test_guards.py).
        "ingest": {"min_kept_fraction": 0.4},
    }))
    config = load_config(config_path)
    staged = {name: tmp_path / "staged" / name for name in ingest.outputs(config)}
    ctx = StageContext(config, staged, spark)
    ingest.STAGE.run(ctx)
    entries = {(e["source"], e["table"]): e for e in ctx.summary["ingest"]}
    assert {k: (e["rows_in"], e["kept"], e["rejected"]) for k, e in entries.items()} == {
        ("sig", "trips"): (2, 2, 0),
        ("sig", "locations"): (3, 3, 0),
        ("taxi", "trips"): (5, 2, 3),
        ("pois", "pois"): (2, 1, 1),
    }
    assert entries[("taxi", "trips")]["by_reason"] == {"invalid_count": 1, "missing_key": 1, "negative_count": 1}
    assert entries[("pois", "pois")]["by_reason"] == {"missing_category": 1}
    assert ctx.summary["sources"]["sig"] == {
        "adapter": "signaling_od", "keys_are_regions": False, "has_locations": True,
        # derived from the data (both trips on 2023-05-01), widened by a day each side
        "date_range": ["2023-04-30", "2023-05-02"], "date_range_rule": ctx.summary["sources"]["sig"]["date_range_rule"],
    }
    assert "date_range" not in ctx.summary["sources"]["taxi"]  # a zone OD table without times has no dates to check
    trips = spark.read.parquet(str(staged["trips"]))
    check_schema(trips, TRIPS_SCHEMA, "trips")
    assert sorted((r.source, r.o_key, r.d_key, r["count"]) for r in trips.collect()) == [
        ("sig", "101", "102", 12), ("sig", "102", "103", 2), ("taxi", "0", "0", 740), ("taxi", "0", "1", 36),
    ]
    assert pq.read_table(staged["rejects/sig"]).num_rows == 0  # a clean source: an empty rejects table
    taxi_rejects = spark.read.parquet(str(staged["rejects/taxi"])).collect()
    assert sorted(json.loads(r.raw)["trips"] for r in taxi_rejects) == ["-3", "2.5", "5"]
