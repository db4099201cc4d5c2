"""The ``citibike`` trip adapter: Citi Bike trip CSVs (current and 2013–2021 layouts), lon/lat per trip."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from landuse.ingest.files import read_delimited
from landuse.ingest.trips.base import CSV_OPTIONS, TIME_OPTION, IngestResult, TripSource, register_trip_source
from landuse.ingest.trips.helpers import _CountSpec, _formats, _point_trips, _result, _TimeSpec
from landuse.ingest.validation import LonLatBox

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@register_trip_source
class CitiBikeTripSource(TripSource):
    """Citi Bike trip CSV, current layout (``ride_id, ..., start_lat, start_lng, ...``) or 2013–2021 layout.

    Trips carry lon/lat; keys are the station ids when present (dockless e-bike trips have none,
    which is not an error).
    """

    adapter = "citibike"
    options = CSV_OPTIONS + (TIME_OPTION,)
    formats = ("M/d/yyyy HH:mm:ss", "M/d/yyyy HH:mm")
    layouts = (
        ("started_at", "ended_at", "start_lng", "start_lat", "end_lng", "end_lat", "start_station_id", "end_station_id"),
        (
            "starttime", "stoptime", "start station longitude", "start station latitude",
            "end station longitude", "end station latitude", "start station id", "end station id",
        ),
    )

    def _read(
        self, spark: SparkSession, path: Path, opts: dict[str, Any], extent: LonLatBox | None, name: str
    ) -> IngestResult:
        frame = read_delimited(spark, path, sep=opts["sep"], encoding=opts["encoding"])
        layout = next((lay for lay in self.layouts if all(frame.find(c) for c in lay[:6])), None)
        if layout is None:
            for col in self.layouts[0]:
                frame.require(col)  # raises at the first missing column of the current layout
            raise AssertionError("unreachable: a column of the current layout is missing")
        start, end, olon, olat, dlon, dlat, okey, dkey = layout
        split = _point_trips(
            frame, (frame.require(olon), frame.require(olat), frame.require(dlon), frame.require(dlat)), None,
            (frame.find(okey), frame.find(dkey)),
            _TimeSpec(frame.require(start), frame.require(end), _formats(opts["timestamp_format"], self.formats)),
            _CountSpec(), extent, name,
        )
        return _result(split, frame, name)
