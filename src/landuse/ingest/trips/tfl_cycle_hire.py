"""The ``tfl_cycle_hire`` trip adapter: TfL cycle-hire journey CSVs joined to the TfL station table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from landuse.ingest import validation as V
from landuse.ingest.files import read_delimited
from landuse.ingest.options import REQUIRED, Option
from landuse.ingest.trips.base import CSV_OPTIONS, TIME_OPTION, IngestResult, TripSource, register_trip_source
from landuse.ingest.trips.helpers import _CountSpec, _formats, _keyed_trips, _result, _TimeSpec, _validate_locations
from landuse.ingest.validation import LonLatBox

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@register_trip_source
class TflCycleHireTripSource(TripSource):
    """TfL cycle-hire journeys (``Rental Id, Duration, ..., Start Date, StartStation Id, ...``) + station table.

    Also reads the 2022+ layout (``Start station number``, ``Total duration (ms)``). Trips keep the
    station ids as keys (lon/lat null); ``locations`` is the station table (``id,commonName,lat,lon``;
    a ``BikePoints_`` prefix on ids is stripped to match the journey files).
    """

    adapter = "tfl_cycle_hire"
    options = CSV_OPTIONS + (
        Option("stations_path", "path", REQUIRED, "station table CSV id,commonName,lat,lon,nbDocks"),
        Option("station_id_column", "str", "id", "station table id column"),
        Option("station_lat_column", "str", "lat", "station table latitude column"),
        Option("station_lon_column", "str", "lon", "station table longitude column"),
        Option("station_id_prefix", "str", "BikePoints_", "prefix stripped from station-table ids"),
        TIME_OPTION,
    )
    formats = ("dd/MM/yyyy HH:mm", "dd/MM/yyyy HH:mm:ss")

    def _read(
        self, spark: SparkSession, path: Path, opts: dict[str, Any], extent: LonLatBox | None, name: str
    ) -> IngestResult:
        frame = read_delimited(spark, path, sep=opts["sep"], encoding=opts["encoding"])
        start = frame.require("Start Date")
        o_col = frame.require("StartStation Id", "Start station number")
        d_col = frame.require("EndStation Id", "End station number")
        end = frame.find("End Date")
        duration = frame.find("Duration", "Total duration (ms)")
        stations = read_delimited(spark, opts["stations_path"], encoding=opts["encoding"])
        for col in ("station_id_column", "station_lat_column", "station_lon_column"):
            stations.require(opts[col], what=f"column (option {col})")
        locs = _validate_locations(
            stations, opts["station_id_column"], opts["station_lon_column"], opts["station_lat_column"],
            extent, name, strip_prefix=opts["station_id_prefix"] or None,
        )
        split = _keyed_trips(
            frame, o_col, d_col, locs, V.UNKNOWN_STATION,
            _TimeSpec(start, end, _formats(opts["timestamp_format"], self.formats)),
            _CountSpec(duration=duration), name,
        )
        return _result(split, frame, name, locs=locs)
