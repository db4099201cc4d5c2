"""The ``tlc_taxi`` trip adapter: NYC TLC trip records with lon/lat, projected x/y or taxi-zone ids."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from landuse.ingest import validation as V
from landuse.ingest.coords import check_crs
from landuse.ingest.errors import IngestError
from landuse.ingest.files import RawFrame, read_delimited, show_names
from landuse.ingest.options import Option
from landuse.ingest.trips.base import CSV_OPTIONS, TIME_OPTION, IngestResult, TripSource, register_trip_source
from landuse.ingest.trips.helpers import (
    _CountSpec,
    _formats,
    _keyed_trips,
    _pick,
    _point_trips,
    _result,
    _TimeSpec,
    _zone_locations,
)
from landuse.ingest.validation import LonLatBox

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@register_trip_source
class TlcTaxiTripSource(TripSource):
    """NYC TLC trip records: lon/lat columns, x/y in a stated CRS, or pickup/drop-off zone ids.

    * ``pickup_longitude, pickup_latitude, dropoff_longitude, dropoff_latitude`` (any case; yellow
      and green 2009–2016) — WGS84;
    * ``pickup_x, pickup_y, dropoff_x, dropoff_y`` (or the column options) with option ``crs``;
    * ``PULocationID, DOLocationID`` (2016+) with option ``zones_path`` (taxi zones) — keys + centroids.

    The pickup time column is ``tpep_pickup_datetime`` / ``lpep_pickup_datetime`` / ``pickup_datetime``.
    (0, 0) coordinates, TLC's "no GPS fix", are rejected as ``zero_coordinates``.
    """

    adapter = "tlc_taxi"
    options = CSV_OPTIONS + (
        Option("crs", "str", None, "CRS of x/y columns, e.g. EPSG:3857 (default: lon/lat)"),
        Option("pickup_x_column", "str", None, "pickup x / longitude column"),
        Option("pickup_y_column", "str", None, "pickup y / latitude column"),
        Option("dropoff_x_column", "str", None, "drop-off x / longitude column"),
        Option("dropoff_y_column", "str", None, "drop-off y / latitude column"),
        Option("pickup_time_column", "str", None, "pickup datetime column"),
        Option("dropoff_time_column", "str", None, "drop-off datetime column"),
        Option("zones_path", "path", None, "taxi zone polygons, for PULocationID/DOLocationID records"),
        Option("zone_id_column", "str", "LocationID", "zone id column in zones_path"),
        Option("zones_crs", "str", None, "CRS of zones_path when the file has none"),
        TIME_OPTION,
    )
    pickup_times = ("tpep_pickup_datetime", "lpep_pickup_datetime", "pickup_datetime", "Trip_Pickup_DateTime")
    dropoff_times = ("tpep_dropoff_datetime", "lpep_dropoff_datetime", "dropoff_datetime", "Trip_Dropoff_DateTime")
    lonlat = ("pickup_longitude", "pickup_latitude", "dropoff_longitude", "dropoff_latitude")
    lonlat_2009 = ("Start_Lon", "Start_Lat", "End_Lon", "End_Lat")
    xy = ("pickup_x", "pickup_y", "dropoff_x", "dropoff_y")
    zone_ids = ("PULocationID", "DOLocationID")

    def _read(
        self, spark: SparkSession, path: Path, opts: dict[str, Any], extent: LonLatBox | None, name: str
    ) -> IngestResult:
        where = f"{path}: trip source {name!r} (adapter {self.adapter})"
        frame = read_delimited(spark, path, sep=opts["sep"], encoding=opts["encoding"])
        time = _TimeSpec(
            _pick(frame, opts["pickup_time_column"], self.pickup_times),
            _pick(frame, opts["dropoff_time_column"], self.dropoff_times, required=False),
            _formats(opts["timestamp_format"]),
        )
        overrides = [opts[f"{e}_{a}_column"] for e in ("pickup", "dropoff") for a in ("x", "y")]
        crs = opts["crs"]
        if crs is not None:
            check_crs(crs, f"{where}: option crs")
        if any(overrides):
            if not all(overrides):
                raise IngestError(f"{where}: set all four of pickup_x/pickup_y/dropoff_x/dropoff_y_column or none")
            coords = _require4(frame, overrides)
        elif all(frame.find(c) for c in self.lonlat) or all(frame.find(c) for c in self.lonlat_2009):
            names = self.lonlat if all(frame.find(c) for c in self.lonlat) else self.lonlat_2009
            coords = _require4(frame, names)
        elif all(frame.find(c) for c in self.xy):
            if crs is None:
                raise IngestError(
                    f"{where}: columns {', '.join(self.xy)} are projected x/y: set option crs (e.g. EPSG:3857)"
                )
            coords = _require4(frame, self.xy)
        elif all(frame.find(c) for c in self.zone_ids):
            return self._zone_trips(spark, frame, opts, time, extent, name, where, path)
        else:
            raise IngestError(
                f"{frame.label}: no coordinate columns: expected {'/'.join(self.lonlat)}, {'/'.join(self.xy)} "
                f"(with option crs) or {'/'.join(self.zone_ids)} (with option zones_path) "
                f"(has: {show_names(frame.columns)})"
            )
        split = _point_trips(frame, coords, crs, (None, None), time, _CountSpec(), extent, name)
        return _result(split, frame, name)

    def _zone_trips(self, spark, frame, opts, time, extent, name, where, path):
        if opts["zones_path"] is None:
            raise IngestError(f"{where}: records have PULocationID/DOLocationID: set option zones_path (taxi zones)")
        locs = _zone_locations(
            spark, opts["zones_path"], opts["zone_id_column"], opts["zones_crs"], extent, name,
            self.guards.polygon_repair_tolerance,
        )
        split = _keyed_trips(
            frame, frame.require(self.zone_ids[0]), frame.require(self.zone_ids[1]), locs, V.UNKNOWN_ZONE,
            time, _CountSpec(), name,
        )
        return _result(split, frame, name, locs=locs)


def _require4(frame: RawFrame, names: Sequence[str]) -> tuple[str, str, str, str]:
    """The original names of four required columns (x/y or lon/lat of pickup, then dropoff)."""
    a, b, c, d = (frame.require(name) for name in names)
    return a, b, c, d
