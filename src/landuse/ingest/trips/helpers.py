"""Shared building blocks of the trip adapters: columns, checks, location tables, keyed and point trips.

* :class:`_Columns` builds helper columns in three projections (texts, parsed values, derived
  values); :func:`_time_columns` / :func:`_count_columns` add the start time and trip count with
  their checks; :func:`_finish` tags each row with its first failing reason and projects the kept
  rows onto ``TRIPS_SCHEMA``.
* :func:`_validate_locations` validates a location table (stations, zone centroids);
  :func:`_zone_locations` makes one from zone polygons.
* :func:`_keyed_trips` (endpoints are keys of a location table) and :func:`_point_trips`
  (endpoints are coordinates) are the two trip shapes most adapters reduce to; :func:`_result`
  wraps a split as an :class:`~landuse.ingest.trips.base.IngestResult`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from landuse.ingest import validation as V
from landuse.ingest.coords import is_wgs84, to_lonlat
from landuse.ingest.files import RawFrame, frame_from_pandas
from landuse.ingest.trips.base import IngestResult
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
    TRIPS_SCHEMA,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession


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


class _Columns:
    """Helper columns built in three projections: input texts, values parsed from them, derived values.

    Each expression refers to the previous projection's columns by name, so every input column is
    cleaned once and every generated method stays small. (One projection with the whole parse
    tree inlined compiles to a method above the JVM's JIT size limit and runs interpreted, several
    times slower.)
    """

    def __init__(self) -> None:
        self.stages: tuple[dict[str, "Column"], ...] = ({}, {}, {})

    def _add(self, stage: int, name: str, expr: "Column") -> "Column":
        from pyspark.sql import functions as F

        self.stages[stage][name] = expr
        return F.col(name)

    def text(self, name: str, raw: "Column") -> "Column":
        """Cleaned input text (:func:`V.clean`) as column ``name``."""
        return self._add(0, name, V.clean(raw))

    def value(self, name: str, expr: "Column") -> "Column":
        """A value computed from texts."""
        return self._add(1, name, expr)

    def derived(self, name: str, expr: "Column") -> "Column":
        """A value computed from values."""
        return self._add(2, name, expr)

    def key(self, name: str, raw: "Column") -> "Column":
        """A location/region key (:func:`V.normalize_key`) as column ``name``."""
        return self.value(name, V.key_text(self.text(f"{name}_t", raw)))

    def apply(self, df: "DataFrame") -> "DataFrame":
        for stage in self.stages:
            if stage:
                df = df.withColumns(stage)
        return df


def _time_columns(frame: RawFrame, spec: _TimeSpec, cols: _Columns) -> Checks:
    """Column ``__ts`` (+ helpers) in ``cols`` and its checks: missing, unparsable, end before start."""
    from pyspark.sql import functions as F

    if spec.start is None:
        cols.value("__ts", F.lit(None).cast("timestamp"))
        return []
    text = cols.text("__ts_t", frame.col(spec.start))
    ts = cols.value("__ts", V.parse_timestamp(text, spec.formats))
    checks: Checks = [(V.MISSING_TIMESTAMP, text.isNull()), (V.UNPARSABLE_TIMESTAMP, ts.isNull())]
    if spec.end is not None:
        te = cols.value("__te", V.parse_timestamp(cols.text("__te_t", frame.col(spec.end)), spec.formats))
        checks.append((V.NEGATIVE_DURATION, te < ts))
    return checks


def _count_columns(frame: RawFrame, spec: _CountSpec, cols: _Columns) -> Checks:
    """Column ``__n`` (the trip count, 1 by default) in ``cols`` and checks: duration and count validity."""
    from pyspark.sql import functions as F

    checks: Checks = []
    if spec.duration is not None:
        text = cols.text("__dur_t", frame.col(spec.duration))
        dur = cols.value("__dur", V.parse_double(text))
        checks.append((V.INVALID_DURATION, text.isNotNull() & dur.isNull()))
        checks.append((V.NEGATIVE_DURATION, dur < 0))
    if spec.column is None:
        cols.value("__n", F.lit(1).cast("long"))
        return checks
    text = cols.text("__n_t", frame.col(spec.column))
    n = cols.value("__n", V.parse_integer(text))
    checks += [
        (V.MISSING_COUNT, text.isNull()),
        (V.COUNT_TOO_LARGE, V.huge_integer(text)),  # an integer beyond 64 bits is above any max_count
        (V.INVALID_COUNT, n.isNull()),
        (V.NEGATIVE_COUNT, n < 0),
    ]
    return checks


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


def _row_checks(frame: RawFrame, *texts: "Column") -> Checks:
    """Checks of the row as read, before any value check: extra fields, undecodable kept text."""
    checks: Checks = []
    extra = frame.extra_fields()
    if extra is not None:
        checks.append((V.EXTRA_FIELDS, extra))
    if texts:
        checks.append((V.UNDECODABLE_TEXT, V.undecodable(*texts)))
    return checks


def _finish(df: "DataFrame", frame: RawFrame, checks: Checks, name: str, *, keys: bool, lonlat: bool) -> V.Split:
    from pyspark.sql import functions as F

    texts = (F.col("__ok"), F.col("__dk")) if keys else ()
    split = V.split_rows(
        df, V.first_reason(_row_checks(frame, *texts) + list(checks)), _trip_columns(name, keys, lonlat),
        frame.raw_struct(), name, line=frame.line,
    )
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

    cols = _Columns()
    key = V.key_text(cols.text("__lk_t", frame.col(key_col)))
    if strip_prefix:
        key = F.regexp_replace(key, "^" + _java_quote(strip_prefix), "")
    cols.value("__lk", key)
    for short, col in (("__lx", lon_col), ("__ly", lat_col)):
        cols.value(short, V.parse_double(cols.text(f"{short}_t", frame.col(col))))
    cols.value("__ord", F.monotonically_increasing_id())
    df = cols.apply(frame.df)
    point = Endpoint(F.col("__lx_t"), F.col("__ly_t"), F.col("__lx"), F.col("__ly"), F.col("__lx"), F.col("__ly"))
    own = V.first_reason(
        [*_row_checks(frame, F.col("__lk")), (V.MISSING_KEY, F.col("__lk").isNull()), *V.coordinate_checks([point], extent)]
    )
    first = Window.partitionBy("__lk").orderBy(F.col("__own").isNotNull(), F.col("__ord"))
    df = df.withColumn("__own", own).withColumn("__rank", F.when(F.col("__lk").isNotNull(), F.row_number().over(first)))
    reason = F.coalesce(F.col("__own"), F.when(F.col("__rank") > 1, F.lit(V.DUPLICATE_KEY)))
    kept_cols = [F.lit(name).alias(SOURCE), F.col("__lk").alias(LOC_KEY), F.col("__lx").alias(LON), F.col("__ly").alias(LAT)]
    split = V.split_rows(
        df, reason, kept_cols, frame.raw_struct(), name, reason_prefix=V.LOCATION_PREFIX, line=frame.line
    )
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
    cols: _Columns | None = None,
    time_checks: Sequence[tuple["str | Column", "Column"]] = (),
) -> V.Split:
    """Trips whose endpoints are keys of ``locs``: unknown keys and unusable locations are rejected.

    ``time=None``: ``cols`` already defines ``__ts`` and ``time_checks`` validate it.
    """
    from pyspark.sql import functions as F

    cols = cols or _Columns()
    o_key, d_key = cols.key("__ok", frame.col(o_col)), cols.key("__dk", frame.col(d_col))
    if time is not None:
        time_checks = _time_columns(frame, time, cols)
    count_checks = _count_columns(frame, count, cols)
    df = cols.apply(frame.df)
    for end in ("o", "d"):
        lookup = F.broadcast(
            locs.status.select(
                F.col("__lk").alias(f"__{end}k_j"), F.col("__lstatus").alias(f"__{end}s"), F.lit(True).alias(f"__{end}f")
            )
        )
        df = df.join(lookup, F.col(f"__{end}k") == F.col(f"__{end}k_j"), "left")
    checks: Checks = [
        (V.MISSING_KEY, o_key.isNull() | d_key.isNull()),
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
    cols = _Columns()
    for short, col in zip(("__ox", "__oy", "__dx", "__dy"), coords):
        cols.value(short, V.parse_double(cols.text(f"{short}_t", frame.col(col))))
    if not convert:
        for short, lonlat in (("__ox", "__olon"), ("__oy", "__olat"), ("__dx", "__dlon"), ("__dy", "__dlat")):
            cols.derived(lonlat, F.col(short))
    for short, key in zip(("__ok", "__dk"), keys):
        if key:
            cols.key(short, frame.col(key))
        else:
            cols.value(short, F.lit(None).cast("string"))
    time_checks = _time_columns(frame, time, cols)
    count_checks = _count_columns(frame, count, cols)
    df = cols.apply(frame.df)
    if convert:
        df = to_lonlat(df, [("__ox", "__oy", "__olon", "__olat"), ("__dx", "__dy", "__dlon", "__dlat")], crs=crs)
    points = [
        Endpoint(F.col(f"__{e}x_t"), F.col(f"__{e}y_t"), F.col(f"__{e}x"), F.col(f"__{e}y"), F.col(f"__{e}lon"), F.col(f"__{e}lat"))
        for e in ("o", "d")
    ]
    checks = V.coordinate_checks(points, extent)
    return _finish(df, frame, checks + time_checks + count_checks, name, keys=True, lonlat=True)


def _zone_locations(
    spark: "SparkSession",
    zones_path: Path,
    id_column: str,
    crs: str | None,
    extent: LonLatBox | None,
    name: str,
    repair_tolerance: float,
) -> _Locations:
    """Zone polygons -> a location table of centroids (lon/lat), validated like stations.

    An invalid zone polygon that cannot be repaired within ``repair_tolerance`` fails the read
    (:func:`~landuse.ingest.polygons.read_polygons`, one line naming the zone).
    """
    import pandas as pd

    from landuse.ingest.files import value_text
    from landuse.ingest.polygons import centroids_lonlat, read_polygons

    gdf = read_polygons(
        zones_path, id_column=id_column, crs=crs, dissolve_duplicates=True, repair_tolerance=repair_tolerance
    )
    lon, lat = centroids_lonlat(gdf)
    table = pd.DataFrame({id_column: gdf[id_column].map(value_text).to_numpy(), LON: lon, LAT: lat})
    frame = frame_from_pandas(spark, table, label=str(zones_path))
    return _validate_locations(frame, id_column, LON, LAT, extent, name)


def _result(
    split: V.Split,
    frame: RawFrame,
    name: str,
    *,
    keys_are_regions: bool = False,
    locs: "_Locations | None" = None,
    timed: bool = True,
) -> IngestResult:
    if locs is None:
        return IngestResult(split, keys_are_regions, name, frame.label, frame.df, timed=timed)
    return IngestResult(
        split, keys_are_regions, name, frame.label, frame.df, locs.split, locs.frame.df, locs.frame.label, timed=timed
    )
