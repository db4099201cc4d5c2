"""The ``points_od`` trip adapter: generic trips with origin/destination coordinate columns named by option."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from landuse.ingest.coords import check_crs
from landuse.ingest.files import read_delimited
from landuse.ingest.options import Option
from landuse.ingest.trips.base import CSV_OPTIONS, TIME_OPTION, IngestResult, TripSource, register_trip_source
from landuse.ingest.trips.helpers import _CountSpec, _formats, _pick, _point_trips, _result, _TimeSpec
from landuse.ingest.validation import LonLatBox

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@register_trip_source
class PointsOdTripSource(TripSource):
    """Generic trips: origin lon/lat, destination lon/lat, optional time, count and keys (columns by option).

    With option ``crs`` the coordinate columns are x/y in that CRS and are converted to lon/lat.
    """

    adapter = "points_od"
    options = CSV_OPTIONS + (
        Option("o_lon_column", "str", "o_lon", "origin longitude (or x) column"),
        Option("o_lat_column", "str", "o_lat", "origin latitude (or y) column"),
        Option("d_lon_column", "str", "d_lon", "destination longitude (or x) column"),
        Option("d_lat_column", "str", "d_lat", "destination latitude (or y) column"),
        Option("time_column", "str", None, "start time column (default: start_time/start_ts/time if present)"),
        Option("end_time_column", "str", None, "end time column (checked: not before the start)"),
        Option("count_column", "str", None, "trip count column (default: each row is one trip)"),
        Option("o_key_column", "str", None, "origin key column (kept as o_key)"),
        Option("d_key_column", "str", None, "destination key column (kept as d_key)"),
        Option("crs", "str", None, "CRS of the coordinate columns when not WGS84 lon/lat"),
        TIME_OPTION,
    )
    time_candidates = ("start_time", "start_ts", "time", "timestamp", "datetime")

    def _read(
        self, spark: SparkSession, path: Path, opts: dict[str, Any], extent: LonLatBox | None, name: str
    ) -> IngestResult:
        where = f"{path}: trip source {name!r} (adapter {self.adapter})"
        if opts["crs"] is not None:
            check_crs(opts["crs"], f"{where}: option crs")
        frame = read_delimited(spark, path, sep=opts["sep"], encoding=opts["encoding"])
        o_lon, o_lat, d_lon, d_lat = (
            frame.require(opts[k], what=f"column (option {k})")
            for k in ("o_lon_column", "o_lat_column", "d_lon_column", "d_lat_column")
        )
        start = _pick(frame, opts["time_column"], self.time_candidates, required=False)
        end = frame.require(opts["end_time_column"]) if opts["end_time_column"] else None
        o_key, d_key = (frame.require(opts[k]) if opts[k] else None for k in ("o_key_column", "d_key_column"))
        count = frame.require(opts["count_column"]) if opts["count_column"] else None
        split = _point_trips(
            frame, (o_lon, o_lat, d_lon, d_lat), opts["crs"], (o_key, d_key),
            _TimeSpec(start, end, _formats(opts["timestamp_format"])), _CountSpec(column=count), extent, name,
        )
        return _result(split, frame, name, timed=start is not None)
