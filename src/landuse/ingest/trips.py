"""Trip sources: one adapter per raw trip format, all producing the canonical trips table.

Each adapter is a :class:`TripSource` registered under a name used in config
(``inputs.trips.<name>.adapter``). ``read`` returns an :class:`IngestResult`:

* ``trips`` (``TRIPS_SCHEMA``) — one of three shapes:
  endpoints as WGS84 lon/lat (``locations`` is None; ``o_key``/``d_key`` may carry the source's
  own station ids for information); or endpoint keys referencing ``locations`` (stations, zone
  centroids; the trips' lon/lat are null — join the distinct locations, then the trips by key);
  or, with ``keys_are_regions``, keys that are already region ids (pre-aggregated OD tables);
* ``locations`` (``LOCATIONS_SCHEMA``) — the valid rows of the source's location table, if any;
* ``rejects`` (``REJECTS_SCHEMA``) — every rejected row with its first failing reason and the
  original row as JSON; rows of the location table carry reasons prefixed ``location_``.

Rows are validated by Spark expressions only; the result is lazy (nothing is counted until
:meth:`IngestResult.summaries`). Duplicate trips are kept: they are legitimate repeated journeys.
Timestamps are wall-clock times as written in the source, stored as if UTC (the session zone).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from landuse.ingest import validation as V
from landuse.ingest.coords import check_crs, is_wgs84, to_lonlat
from landuse.ingest.errors import IngestError
from landuse.ingest.files import RawFrame, frame_from_pandas, read_delimited, show_names
from landuse.ingest.registry import AdapterRegistry
from landuse.ingest.options import REQUIRED, Option, parse_options
from landuse.ingest.quarantine import IngestSummary
from landuse.ingest.validation import Endpoint, LonLatBox
from landuse.spark.schemas import (
    COUNT,
    D_KEY,
    D_LAT,
    D_LON,
    LAT,
    LOC_KEY,
    LOCATIONS_SCHEMA,
    LON,
    O_KEY,
    O_LAT,
    O_LON,
    SOURCE,
    START_TS,
    T_LOCATIONS,
    T_TRIPS,
    TRIPS_SCHEMA,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from landuse.config import SourceConfig


@dataclass(frozen=True)
class IngestResult:
    """What a trip source yields (see the module docstring); lazy Spark DataFrames.

    ``raw`` / ``raw_locations`` are the rows as read and ``reasons`` / ``location_reasons`` the
    reason of every row (null = kept): :meth:`summaries` counts them to prove in = kept + rejected.
    """

    trips: "DataFrame"
    locations: "DataFrame | None"
    rejects: "DataFrame"
    keys_are_regions: bool
    name: str  # the source's name (the ``source`` column)
    path: str
    raw: "DataFrame"
    reasons: "DataFrame"
    raw_locations: "DataFrame | None" = None
    location_reasons: "DataFrame | None" = None
    locations_path: str | None = None

    def summaries(self) -> list[IngestSummary]:
        """Row accounting for the trips (and location) table, checked: in = kept + rejected."""
        out = [_summary(self.name, T_TRIPS, self.path, self.raw, self.reasons)]
        if self.raw_locations is not None and self.location_reasons is not None:
            out.append(
                _summary(self.name, T_LOCATIONS, self.locations_path or self.path, self.raw_locations, self.location_reasons)
            )
        return [s.check() for s in out]


def _summary(name: str, table: str, path: str, raw: "DataFrame", reasons: "DataFrame") -> IngestSummary:
    kept, by_reason = V.tally_reasons(reasons)
    return IngestSummary(name, table, path, raw.count(), kept, sum(by_reason.values()), by_reason)


def _result(
    split: V.Split, frame: RawFrame, name: str, *, keys_are_regions: bool = False, locs: "_Locations | None" = None
) -> IngestResult:
    if locs is None:
        return IngestResult(
            split.kept, None, split.rejects, keys_are_regions, name, frame.label, frame.df, split.reasons
        )
    return IngestResult(
        split.kept, locs.split.kept, split.rejects.unionByName(locs.split.rejects), keys_are_regions, name,
        frame.label, frame.df, split.reasons, locs.frame.df, locs.split.reasons, locs.frame.label,
    )


CSV_OPTIONS = (
    Option("sep", "str", ",", "field delimiter"),
    Option("encoding", "str", "utf-8", "text encoding"),
)
TIME_OPTION = Option(
    "timestamp_format", "str_list", None,
    "datetime pattern(s) tried in order, e.g. 'dd/MM/yyyy HH:mm'; ISO text is always accepted",
)


class TripSource(ABC):
    """A raw trip format. Subclasses set ``adapter`` and ``options`` and implement ``_read``."""

    adapter: ClassVar[str]
    options: ClassVar[tuple[Option, ...]] = ()

    def read(
        self,
        spark: "SparkSession",
        source: "SourceConfig",
        extent: LonLatBox | None = None,
        *,
        name: str | None = None,
    ) -> IngestResult:
        """Read and validate ``source`` (``name`` fills the ``source`` column; default: the adapter)."""
        name = name or self.adapter
        where = f"{source.path}: trip source {name!r} (adapter {self.adapter})"
        opts = parse_options(source.options, self.options, where)
        for key in ("timestamp_format", "date_format"):
            for fmt in opts.get(key) or ():
                try:
                    V.format_to_regex(fmt)
                except IngestError as exc:
                    raise IngestError(f"{where}: option {key!r}: {exc}") from None
        return self._read(spark, Path(source.path), opts, extent, name)

    @abstractmethod
    def _read(
        self, spark: "SparkSession", path: Path, opts: dict[str, Any], extent: LonLatBox | None, name: str
    ) -> IngestResult:
        """Adapter-specific reading; ``opts`` are validated with defaults filled in."""


TRIP_SOURCES: AdapterRegistry[TripSource] = AdapterRegistry("trip")
register_trip_source = TRIP_SOURCES.register


def trip_source(adapter: str) -> TripSource:
    """The trip source registered as ``adapter``; :class:`IngestError` listing the known ones."""
    return TRIP_SOURCES.create(adapter)


def read_trips(
    spark: "SparkSession", source: "SourceConfig", extent: LonLatBox | None = None, *, name: str | None = None
) -> IngestResult:
    """Read a trip source with the adapter named in its config."""
    return trip_source(source.adapter).read(spark, source, extent, name=name)


# ------------------------------------------------------------------------------------------
# Shared building blocks
# ------------------------------------------------------------------------------------------


def _formats(given: Sequence[str] | None, defaults: Sequence[str | None] = ()) -> tuple[str | None, ...]:
    """Patterns to try in order; ISO text (None) always last."""
    formats: list[str | None] = list(given) if given else list(defaults)
    return tuple(formats) + ((None,) if None not in formats else ())


def _pick(frame: RawFrame, override: str | None, candidates: Sequence[str], required: bool = True) -> str | None:
    """The column for one role: the option when given (must exist), else the first candidate present."""
    if override:
        return frame.require(override)
    found = frame.find(*candidates)
    if found is None and required:
        frame.require(candidates[0], *candidates[1:])
    return found


@dataclass(frozen=True)
class _TimeSpec:
    start: str | None  # column names (original); None: no timestamp in this source
    end: str | None = None
    formats: tuple[str | None, ...] = (None,)


@dataclass(frozen=True)
class _CountSpec:
    column: str | None = None  # None: every row is one trip
    duration: str | None = None  # duration column (any unit), checked for negative values


Checks = list[tuple["str | Column", "Column"]]


def _time_columns(frame: RawFrame, spec: _TimeSpec) -> tuple[dict[str, "Column"], Checks]:
    """Columns ``__ts`` (+ helpers) and their checks: missing, unparsable, end before start."""
    from pyspark.sql import functions as F

    if spec.start is None:
        return {"__ts": F.lit(None).cast("timestamp")}, []
    text = V.clean(frame.col(spec.start))
    cols = {"__ts_t": text, "__ts": V.parse_timestamp(text, spec.formats)}
    checks: Checks = [
        (V.MISSING_TIMESTAMP, F.col("__ts_t").isNull()),
        (V.UNPARSABLE_TIMESTAMP, F.col("__ts").isNull()),
    ]
    if spec.end is not None:
        cols["__te"] = V.parse_timestamp(V.clean(frame.col(spec.end)), spec.formats)
        checks.append((V.NEGATIVE_DURATION, F.col("__te") < F.col("__ts")))
    return cols, checks


def _count_columns(frame: RawFrame, spec: _CountSpec) -> tuple[dict[str, "Column"], Checks]:
    """Column ``__n`` (the trip count, 1 by default) and checks: duration and count validity."""
    from pyspark.sql import functions as F

    cols: dict[str, "Column"] = {}
    checks: Checks = []
    if spec.duration is not None:
        text = V.clean(frame.col(spec.duration))
        cols.update({"__dur_t": text, "__dur": V.parse_double(text)})
        checks.append((V.INVALID_DURATION, F.col("__dur_t").isNotNull() & F.col("__dur").isNull()))
        checks.append((V.NEGATIVE_DURATION, F.col("__dur") < 0))
    if spec.column is None:
        cols["__n"] = F.lit(1).cast("long")
        return cols, checks
    text = V.clean(frame.col(spec.column))
    cols.update({"__n_t": text, "__n": V.parse_integer(text)})
    checks += [
        (V.MISSING_COUNT, F.col("__n_t").isNull()),
        (V.INVALID_COUNT, F.col("__n").isNull()),
        (V.NEGATIVE_COUNT, F.col("__n") < 0),
    ]
    return cols, checks


def _trip_columns(name: str, keys: bool, lonlat: bool) -> list["Column"]:
    from pyspark.sql import functions as F

    def opt(col: str, flag: bool, kind: str) -> "Column":
        return F.col(col) if flag else F.lit(None).cast(kind)

    return [
        F.lit(name).alias(SOURCE),
        opt("__ok", keys, "string").alias(O_KEY),
        opt("__dk", keys, "string").alias(D_KEY),
        opt("__olon", lonlat, "double").alias(O_LON),
        opt("__olat", lonlat, "double").alias(O_LAT),
        opt("__dlon", lonlat, "double").alias(D_LON),
        opt("__dlat", lonlat, "double").alias(D_LAT),
        F.col("__ts").alias(START_TS),
        F.col("__n").alias(COUNT),
    ]


def _finish(df: "DataFrame", frame: RawFrame, checks: Checks, name: str, *, keys: bool, lonlat: bool) -> V.Split:
    split = V.split_rows(df, V.first_reason(checks), _trip_columns(name, keys, lonlat), frame.raw_struct(), name)
    return split.conformed(TRIPS_SCHEMA)


@dataclass(frozen=True)
class _Locations:
    """A validated location table: the split, and a key -> status table for lookups."""

    frame: RawFrame
    split: V.Split  # kept = LOCATIONS_SCHEMA rows
    status: "DataFrame"  # __lk (unique), __lstatus (null = usable)


def _validate_locations(
    frame: RawFrame,
    key_col: str,
    lon_col: str,
    lat_col: str,
    extent: LonLatBox | None,
    name: str,
    strip_prefix: str | None = None,
) -> _Locations:
    """Validate a location table (stations, zone centroids) with its key, lon and lat columns.

    Duplicate keys: the first usable row (file order) is kept, later ones are rejected
    (``location_duplicate_key``) so that a lookup never multiplies trips.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    key = V.normalize_key(frame.col(key_col))
    if strip_prefix:
        key = F.regexp_replace(key, "^" + _java_quote(strip_prefix), "")
    x_t, y_t = V.clean(frame.col(lon_col)), V.clean(frame.col(lat_col))
    df = frame.df.withColumns(
        {
            "__lk": key, "__lx_t": x_t, "__ly_t": y_t, "__lx": V.parse_double(x_t), "__ly": V.parse_double(y_t),
            "__ord": F.monotonically_increasing_id(),
        }
    )
    point = Endpoint(F.col("__lx_t"), F.col("__ly_t"), F.col("__lx"), F.col("__ly"), F.col("__lx"), F.col("__ly"))
    own = V.first_reason([(V.MISSING_KEY, F.col("__lk").isNull())] + V.coordinate_checks([point], extent))
    first = Window.partitionBy("__lk").orderBy(F.col("__own").isNotNull(), F.col("__ord"))
    df = df.withColumn("__own", own).withColumn("__rank", F.when(F.col("__lk").isNotNull(), F.row_number().over(first)))
    reason = F.coalesce(F.col("__own"), F.when(F.col("__rank") > 1, F.lit(V.DUPLICATE_KEY)))
    kept_cols = [F.lit(name).alias(SOURCE), F.col("__lk").alias(LOC_KEY), F.col("__lx").alias(LON), F.col("__ly").alias(LAT)]
    split = V.split_rows(df, reason, kept_cols, frame.raw_struct(), name, reason_prefix=V.LOCATION_PREFIX)
    status = df.filter(F.col("__rank") == 1).select("__lk", F.col("__own").alias("__lstatus"))
    return _Locations(frame, split.conformed(LOCATIONS_SCHEMA), status)


def _java_quote(text: str) -> str:
    return "\\Q" + text + "\\E"


def _keyed_trips(
    frame: RawFrame,
    o_col: str,
    d_col: str,
    locs: _Locations,
    unknown_reason: str,
    time: _TimeSpec | None,
    count: _CountSpec,
    name: str,
    *,
    extra: Mapping[str, "Column"] | None = None,
    time_checks: Checks = (),  # type: ignore[assignment]
) -> V.Split:
    """Trips whose endpoints are keys of ``locs``: unknown keys and unusable locations are rejected.

    ``time=None``: ``extra`` defines ``__ts`` and ``time_checks`` validate it.
    """
    from pyspark.sql import functions as F

    cols: dict[str, "Column"] = {"__ok": V.normalize_key(frame.col(o_col)), "__dk": V.normalize_key(frame.col(d_col))}
    checks: Checks = []
    if time is not None:
        time_cols, time_checks = _time_columns(frame, time)
        cols.update(time_cols)
    count_cols, count_checks = _count_columns(frame, count)
    cols.update(count_cols)
    cols.update(extra or {})
    df = frame.df.withColumns(cols)
    for end in ("o", "d"):
        lookup = F.broadcast(
            locs.status.select(
                F.col("__lk").alias(f"__{end}k_j"), F.col("__lstatus").alias(f"__{end}s"), F.lit(True).alias(f"__{end}f")
            )
        )
        df = df.join(lookup, F.col(f"__{end}k") == F.col(f"__{end}k_j"), "left")
    checks = [
        (V.MISSING_KEY, F.col("__ok").isNull() | F.col("__dk").isNull()),
        (unknown_reason, F.col("__of").isNull() | F.col("__df").isNull()),
        (F.col("__os"), F.col("__os").isNotNull()),
        (F.col("__ds"), F.col("__ds").isNotNull()),
    ]
    return _finish(df, frame, checks + list(time_checks) + count_checks, name, keys=True, lonlat=False)


def _point_trips(
    frame: RawFrame,
    coords: tuple[str, str, str, str],
    crs: str | None,
    keys: tuple[str | None, str | None],
    time: _TimeSpec,
    count: _CountSpec,
    extent: LonLatBox | None,
    name: str,
) -> V.Split:
    """Trips with coordinate columns (o_x, o_y, d_x, d_y) in ``crs`` (None: WGS84 lon/lat)."""
    from pyspark.sql import functions as F

    convert = crs is not None and not is_wgs84(crs)
    cols: dict[str, "Column"] = {}
    for short, col in zip(("__ox", "__oy", "__dx", "__dy"), coords):
        text = V.clean(frame.col(col))
        cols.update({f"{short}_t": text, short: V.parse_double(text)})
    if not convert:
        cols.update({"__olon": cols["__ox"], "__olat": cols["__oy"], "__dlon": cols["__dx"], "__dlat": cols["__dy"]})
    o_key, d_key = keys
    cols["__ok"] = V.normalize_key(frame.col(o_key)) if o_key else F.lit(None).cast("string")
    cols["__dk"] = V.normalize_key(frame.col(d_key)) if d_key else F.lit(None).cast("string")
    time_cols, time_checks = _time_columns(frame, time)
    count_cols, count_checks = _count_columns(frame, count)
    df = frame.df.withColumns({**cols, **time_cols, **count_cols})
    if convert:
        df = to_lonlat(df, [("__ox", "__oy", "__olon", "__olat"), ("__dx", "__dy", "__dlon", "__dlat")], crs=crs)
    points = [
        Endpoint(F.col(f"__{e}x_t"), F.col(f"__{e}y_t"), F.col(f"__{e}x"), F.col(f"__{e}y"), F.col(f"__{e}lon"), F.col(f"__{e}lat"))
        for e in ("o", "d")
    ]
    checks = V.coordinate_checks(points, extent)
    return _finish(df, frame, checks + time_checks + count_checks, name, keys=True, lonlat=True)


def _zone_locations(
    spark: "SparkSession", zones_path: Path, id_column: str, crs: str | None, extent: LonLatBox | None, name: str
) -> _Locations:
    """Zone polygons -> a location table of centroids (lon/lat), validated like stations."""
    import pandas as pd

    from landuse.ingest.files import value_text
    from landuse.ingest.polygons import centroids_lonlat, read_polygons

    gdf = read_polygons(zones_path, id_column=id_column, crs=crs, dissolve_duplicates=True)
    lon, lat = centroids_lonlat(gdf)
    table = pd.DataFrame({id_column: gdf[id_column].map(value_text).to_numpy(), LON: lon, LAT: lat})
    frame = frame_from_pandas(spark, table, label=str(zones_path))
    return _validate_locations(frame, id_column, LON, LAT, extent, name)


# ------------------------------------------------------------------------------------------
# Adapters
# ------------------------------------------------------------------------------------------


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

    def _read(self, spark, path, opts, extent, name):  # type: ignore[no-untyped-def]
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

    def _read(self, spark, path, opts, extent, name):  # type: ignore[no-untyped-def]
        frame = read_delimited(spark, path, sep=opts["sep"], encoding=opts["encoding"])
        layout = next((lay for lay in self.layouts if all(frame.find(c) for c in lay[:6])), None)
        if layout is None:
            for col in self.layouts[0]:
                frame.require(col)
        start, end, olon, olat, dlon, dlat, okey, dkey = layout  # type: ignore[misc]
        split = _point_trips(
            frame, (frame.require(olon), frame.require(olat), frame.require(dlon), frame.require(dlat)), None,
            (frame.find(okey), frame.find(dkey)),
            _TimeSpec(frame.require(start), frame.require(end), _formats(opts["timestamp_format"], self.formats)),
            _CountSpec(), extent, name,
        )
        return _result(split, frame, name)


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

    def _read(self, spark, path, opts, extent, name):  # type: ignore[no-untyped-def]
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
            coords = tuple(frame.require(c) for c in overrides)
        elif all(frame.find(c) for c in self.lonlat) or all(frame.find(c) for c in self.lonlat_2009):
            names = self.lonlat if all(frame.find(c) for c in self.lonlat) else self.lonlat_2009
            coords = tuple(frame.require(c) for c in names)
        elif all(frame.find(c) for c in self.xy):
            if crs is None:
                raise IngestError(
                    f"{where}: columns {', '.join(self.xy)} are projected x/y: set option crs (e.g. EPSG:3857)"
                )
            coords = tuple(frame.require(c) for c in self.xy)
        elif all(frame.find(c) for c in self.zone_ids):
            return self._zone_trips(spark, frame, opts, time, extent, name, where, path)
        else:
            raise IngestError(
                f"{frame.label}: no coordinate columns: expected {'/'.join(self.lonlat)}, {'/'.join(self.xy)} "
                f"(with option crs) or {'/'.join(self.zone_ids)} (with option zones_path) "
                f"(has: {show_names(frame.columns)})"
            )
        split = _point_trips(frame, coords, crs, (None, None), time, _CountSpec(), extent, name)  # type: ignore[arg-type]
        return _result(split, frame, name)

    def _zone_trips(self, spark, frame, opts, time, extent, name, where, path):  # type: ignore[no-untyped-def]
        if opts["zones_path"] is None:
            raise IngestError(f"{where}: records have PULocationID/DOLocationID: set option zones_path (taxi zones)")
        locs = _zone_locations(spark, opts["zones_path"], opts["zone_id_column"], opts["zones_crs"], extent, name)
        split = _keyed_trips(
            frame, frame.require(self.zone_ids[0]), frame.require(self.zone_ids[1]), locs, V.UNKNOWN_ZONE,
            time, _CountSpec(), name,
        )
        return _result(split, frame, name, locs=locs)


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

    def _read(self, spark, path, opts, extent, name):  # type: ignore[no-untyped-def]
        from pyspark.sql import functions as F

        frame = read_delimited(spark, path, sep=opts["sep"], encoding=opts["encoding"])
        cols = {k: frame.require(opts[k], what=f"column (option {k})") for k in
                ("date_column", "hour_column", "o_column", "d_column", "count_column")}
        locs = _zone_locations(spark, opts["zones_path"], opts["zone_id_column"], opts["zones_crs"], extent, name)
        formats = _formats(opts["date_format"], self.date_formats)
        # start_ts = date + hour; an hour outside 0-23 makes the timestamp unparsable.
        date_t = V.clean(frame.col(cols["date_column"]))
        hour_t = V.clean(frame.col(cols["hour_column"]))
        hour = V.parse_integer(hour_t)
        hour_ok = hour.between(0, 23)
        date = V.parse_timestamp(date_t, formats)
        ts = F.when(hour_ok, F.timestamp_seconds(date.cast("long") + hour * 3600))
        time_checks: Checks = [
            (V.MISSING_TIMESTAMP, date_t.isNull() | hour_t.isNull()),
            (V.UNPARSABLE_TIMESTAMP, F.col("__ts").isNull()),
        ]
        split = _keyed_trips(
            frame, cols["o_column"], cols["d_column"], locs, V.UNKNOWN_ZONE, None,
            _CountSpec(column=cols["count_column"]), name, extra={"__ts": ts}, time_checks=time_checks,
        )
        return _result(split, frame, name, locs=locs)


@register_trip_source
class ZoneOdTripSource(TripSource):
    """Pre-aggregated OD counts between regions (``o_region, d_region, trips``), e.g. the NYC 180×180 table.

    Keys are region ids already (``keys_are_regions``); there is no location table.
    """

    adapter = "zone_od"
    options = CSV_OPTIONS + (
        Option("o_column", "str", "o_region", "origin region id column"),
        Option("d_column", "str", "d_region", "destination region id column"),
        Option("count_column", "str", "trips", "trip count column"),
        Option("time_column", "str", None, "optional period start column"),
        TIME_OPTION,
    )

    def _read(self, spark, path, opts, extent, name):  # type: ignore[no-untyped-def]
        from pyspark.sql import functions as F

        frame = read_delimited(spark, path, sep=opts["sep"], encoding=opts["encoding"])
        o_col = frame.require(opts["o_column"], what="column (option o_column)")
        d_col = frame.require(opts["d_column"], what="column (option d_column)")
        n_col = frame.require(opts["count_column"], what="column (option count_column)")
        t_col = frame.require(opts["time_column"]) if opts["time_column"] else None
        time_cols, time_checks = _time_columns(frame, _TimeSpec(t_col, None, _formats(opts["timestamp_format"])))
        count_cols, count_checks = _count_columns(frame, _CountSpec(column=n_col))
        df = frame.df.withColumns(
            {
                "__ok": V.normalize_key(frame.col(o_col)), "__dk": V.normalize_key(frame.col(d_col)),
                **time_cols, **count_cols,
            }
        )
        checks: Checks = [(V.MISSING_KEY, F.col("__ok").isNull() | F.col("__dk").isNull())]
        split = _finish(df, frame, checks + time_checks + count_checks, name, keys=True, lonlat=False)
        return _result(split, frame, name, keys_are_regions=True)


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

    def _read(self, spark, path, opts, extent, name):  # type: ignore[no-untyped-def]
        where = f"{path}: trip source {name!r} (adapter {self.adapter})"
        if opts["crs"] is not None:
            check_crs(opts["crs"], f"{where}: option crs")
        frame = read_delimited(spark, path, sep=opts["sep"], encoding=opts["encoding"])
        coords = tuple(
            frame.require(opts[k], what=f"column (option {k})")
            for k in ("o_lon_column", "o_lat_column", "d_lon_column", "d_lat_column")
        )
        start = _pick(frame, opts["time_column"], self.time_candidates, required=False)
        end = frame.require(opts["end_time_column"]) if opts["end_time_column"] else None
        keys = tuple(frame.require(opts[k]) if opts[k] else None for k in ("o_key_column", "d_key_column"))
        count = frame.require(opts["count_column"]) if opts["count_column"] else None
        split = _point_trips(
            frame, coords, opts["crs"], keys,  # type: ignore[arg-type]
            _TimeSpec(start, end, _formats(opts["timestamp_format"])), _CountSpec(column=count), extent, name,
        )
        return _result(split, frame, name)


def adapter_options(adapter: str) -> Mapping[str, Option]:
    """The declared options of a trip adapter (for docs and ``landuse`` help output)."""
    return {opt.name: opt for opt in trip_source(adapter).options}
