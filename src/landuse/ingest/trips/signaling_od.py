"""The ``signaling_od`` trip adapter: hourly mobile-signaling OD counts between zones of a zone/grid layer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from landuse.ingest import validation as V
from landuse.ingest.files import read_delimited
from landuse.ingest.options import REQUIRED, Option
from landuse.ingest.trips.base import CSV_OPTIONS, IngestResult, TripSource, register_trip_source
from landuse.ingest.trips.helpers import Checks, _Columns, _CountSpec, _formats, _keyed_trips, _result, _zone_locations
from landuse.ingest.validation import LonLatBox

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@register_trip_source
class SignalingOdTripSource(TripSource):
    """Hourly mobile-signaling OD counts (``date,hour,o_grid,d_grid,count``) + zone/grid polygons.

    Trips keep zone ids as keys with ``start_ts`` = date + hour and the count; ``locations`` are
    the zone centroids (computed in metres, given in lon/lat).
    """

    adapter = "signaling_od"
    options = CSV_OPTIONS + (
        Option("zones_path", "path", REQUIRED, "zone/grid polygons (gpkg, shp, GeoJSON, GeoParquet)"),
        Option("zone_id_column", "str", "grid_id", "zone id column in zones_path"),
        Option("zones_crs", "str", None, "CRS of zones_path when the file has none"),
        Option("date_column", "str", "date", "date column"),
        Option("hour_column", "str", "hour", "hour-of-day column (0-23)"),
        Option("o_column", "str", "o_grid", "origin zone id column"),
        Option("d_column", "str", "d_grid", "destination zone id column"),
        Option("count_column", "str", "count", "trip count column"),
        Option("date_format", "str_list", None, "date pattern(s), e.g. yyyyMMdd; ISO dates always accepted"),
    )
    date_formats = ("yyyyMMdd", "yyyy/MM/dd")

    def _read(
        self, spark: SparkSession, path: Path, opts: dict[str, Any], extent: LonLatBox | None, name: str
    ) -> IngestResult:
        from pyspark.sql import functions as F

        frame = read_delimited(spark, path, sep=opts["sep"], encoding=opts["encoding"])
        cols = {k: frame.require(opts[k], what=f"column (option {k})") for k in
                ("date_column", "hour_column", "o_column", "d_column", "count_column")}
        locs = _zone_locations(
            spark, opts["zones_path"], opts["zone_id_column"], opts["zones_crs"], extent, name,
            self.guards.polygon_repair_tolerance,
        )
        formats = _formats(opts["date_format"], self.date_formats)
        # start_ts = date + hour; an hour outside 0-23 makes the timestamp unparsable.
        time = _Columns()
        date_t = time.text("__date_t", frame.col(cols["date_column"]))
        hour_t = time.text("__hour_t", frame.col(cols["hour_column"]))
        hour = time.value("__hour", V.parse_integer(hour_t))
        date = time.value("__date", V.parse_timestamp(date_t, formats))
        ts = time.derived("__ts", F.when(hour.between(0, 23), F.timestamp_seconds(date.cast("long") + hour * 3600)))
        time_checks: Checks = [
            (V.MISSING_TIMESTAMP, date_t.isNull() | hour_t.isNull()),
            (V.UNPARSABLE_TIMESTAMP, ts.isNull()),
        ]
        split = _keyed_trips(
            frame, cols["o_column"], cols["d_column"], locs, V.UNKNOWN_ZONE, None,
            _CountSpec(column=cols["count_column"]), name, cols=time, time_checks=time_checks,
        )
        return _result(split, frame, name, locs=locs)
