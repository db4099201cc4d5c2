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

Rows are validated by Spark expressions only (no Python UDF); each row is tagged with its reason
once, and kept rows, rejects and reasons are lazy views of the tagged rows — nothing is cached or
counted until asked (:meth:`IngestResult.summaries`, or :meth:`IngestResult.observed`, with which
the ingest stage validates and writes a source in one pass and counts it while writing) — except
the derived date range (:mod:`landuse.ingest.guards`): a timed source without ``ingest.date_range``
costs one ``approxQuantile`` job when read. Duplicate trips are kept: they are legitimate repeated
journeys.

Besides the adapter's own checks, every source rejects rows with more fields than the header
(``extra_fields``, checked first), keys holding undecodable bytes (``undecodable_text``), counts
above ``ingest.max_count`` (``count_too_large``) and start times outside the date range
(``date_out_of_range``, checked last).
Timestamps are wall-clock times as written in the source, stored as if UTC (the session zone).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from landuse.ingest import validation as V
from landuse.ingest.coords import check_crs, is_wgs84, to_lonlat
from landuse.ingest.errors import IngestError
from landuse.ingest.files import RawFrame, frame_from_pandas, read_delimited, show_names
from landuse.ingest.guards import Guards, derive_date_range
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

    ``split`` / ``location_split`` tag every row read with its reason (null = kept); ``trips``,
    ``locations``, ``rejects`` are views of them. ``raw`` / ``raw_locations`` are the rows as read.
    :meth:`summaries` counts them (several small actions, for tests and notebooks);
    :meth:`observed` gives the ingest stage frames that count themselves while they are written.
    """

    split: V.Split
    keys_are_regions: bool
    name: str  # the source's name (the ``source`` column)
    path: str
    raw: "DataFrame"
    location_split: V.Split | None = None
    raw_locations: "DataFrame | None" = None
    locations_path: str | None = None
    timed: bool = True  # the trips carry start times (a zone OD table without a time column does not)
    date_range: tuple[str, str] | None = None  # [first, last] start dates accepted (ISO); None: not checked
    date_range_rule: str | None = None  # "ingest.date_range" or how it was derived (for the manifest)

    @property
    def trips(self) -> "DataFrame":
        """Kept trips (``TRIPS_SCHEMA``)."""
        return self.split.kept

    @property
    def locations(self) -> "DataFrame | None":
        """Kept locations (``LOCATIONS_SCHEMA``), or None when the source has no location table."""
        return None if self.location_split is None else self.location_split.kept

    @property
    def rejects(self) -> "DataFrame":
        """Every rejected trip and location row (``REJECTS_SCHEMA``)."""
        if self.location_split is None:
            return self.split.rejects
        return self.split.rejects.unionByName(self.location_split.rejects)

    @property
    def reasons(self) -> "DataFrame":
        """The reason of every trip row read (null = kept)."""
        return self.split.reasons

    @property
    def location_reasons(self) -> "DataFrame | None":
        """The reason of every location row read (null = kept), or None."""
        return None if self.location_split is None else self.location_split.reasons

    def summaries(self) -> list[IngestSummary]:
        """Row accounting for the trips (and location) table, checked: in = kept + rejected."""
        out = [_summary(self.name, T_TRIPS, self.path, self.raw, self.split)]
        if self.raw_locations is not None and self.location_split is not None:
            out.append(
                _summary(self.name, T_LOCATIONS, self.locations_path or self.path, self.raw_locations, self.location_split)
            )
        return [s.check() for s in out]

    def observed(self) -> "ObservedResult":
        """Frames for writing, each counting itself during its write (see :class:`ObservedResult`)."""
        locations = None if self.location_split is None else self.location_split.observed()
        return ObservedResult(self, self.split.observed(), locations)


@dataclass(frozen=True)
class ObservedResult:
    """An :class:`IngestResult` prepared for one-pass writing.

    Write ``trips`` (and ``locations``) first: those writes read and validate the input once and
    count rows read, kept and rejected as they go (Spark observations, no extra pass). Then
    :meth:`rejects` is the rejected rows of only those tables that have any (a source without
    rejects costs no second pass), and :meth:`summaries` checks in = kept + rejected, with the
    rejects counted by reason from the rejects table as written.
    """

    result: IngestResult
    trip_split: V.ObservedSplit
    location_split: V.ObservedSplit | None

    @property
    def trips(self) -> "DataFrame":
        return self.trip_split.kept

    @property
    def locations(self) -> "DataFrame | None":
        return None if self.location_split is None else self.location_split.kept

    def _tables(self) -> list[tuple[str, str, V.ObservedSplit]]:
        r = self.result
        out = [(T_TRIPS, r.path, self.trip_split)]
        if self.location_split is not None:
            out.append((T_LOCATIONS, r.locations_path or r.path, self.location_split))
        return out

    def rejects(self) -> "DataFrame | None":
        """Rejected rows of the tables that have any (call after writing the kept rows); None: no rejects."""
        parts = [split.rejects for _, _, split in self._tables() if split.counts()[2] > 0]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])

    def summaries(self, by_reason: Mapping[str, int]) -> list[IngestSummary]:
        """Checked accounting per table; ``by_reason``: the written rejects counted by reason.

        Location-table reasons carry the ``location_`` prefix, trip reasons never do.
        """
        out = []
        for table, path, split in self._tables():
            rows, kept, rejected = split.counts()
            mine = {
                r: n for r, n in by_reason.items() if r.startswith(V.LOCATION_PREFIX) == (table == T_LOCATIONS)
            }
            summary = IngestSummary(self.result.name, table, path, rows, kept, sum(mine.values()), mine)
            if sum(mine.values()) != rejected:
                raise IngestError(
                    f"{path}: source {self.result.name!r} {table}: {rejected} rows were tagged as rejected "
                    f"but {sum(mine.values())} were written to the rejects"
                )
            out.append(summary.check())
        return out


def _summary(name: str, table: str, path: str, raw: "DataFrame", split: V.Split) -> IngestSummary:
    kept, by_reason = split.tally()
    return IngestSummary(name, table, path, raw.count(), kept, sum(by_reason.values()), by_reason)


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


def _guarded(result: IngestResult, guards: Guards) -> IngestResult:
    """``result`` with the count and date guards applied to rows that passed every other check.

    ``count_too_large``: a count above ``guards.max_count`` (sources with a count column).
    ``date_out_of_range``: a start date outside ``guards.date_range``, or, when that is None, the
    range derived from the bulk of the source's dates (one ``approxQuantile`` job; see
    :mod:`landuse.ingest.guards`). Both only tag rows still kept, so each row keeps one reason.
    """
    from pyspark.sql import functions as F

    tagged = result.split.tagged
    kept = F.col(V.REASON_COL).isNull()
    if "__n_t" in tagged.columns:  # the source has a count column (else every row counts 1)
        too_large = kept & (F.col("__n") > F.lit(guards.max_count))
        tagged = tagged.withColumn(V.REASON_COL, F.when(too_large, F.lit(V.COUNT_TOO_LARGE)).otherwise(F.col(V.REASON_COL)))
    date_range, rule = None, None
    if result.timed:
        if guards.date_range is not None:
            date_range, rule = guards.date_range, "ingest.date_range"
        else:
            day = F.datediff(F.to_date(F.col("__ts")), F.lit("1970-01-01")).cast("double")
            dated = tagged.where(F.col(V.REASON_COL).isNull() & F.col("__ts").isNotNull()).select(day.alias("__day"))
            date_range = derive_date_range(dated, "__day")
            rule = "derived: 0.1th-99.9th percentile of the start dates, widened by 1 day each side"
        if date_range is not None:
            first, last = date_range
            start = F.to_date(F.col("__ts"))
            outside = F.col(V.REASON_COL).isNull() & ((start < F.lit(first)) | (start > F.lit(last)))
            tagged = tagged.withColumn(
                V.REASON_COL, F.when(outside, F.lit(V.DATE_OUT_OF_RANGE)).otherwise(F.col(V.REASON_COL))
            )
    split = replace(result.split, tagged=tagged)
    days = None if date_range is None else (date_range[0].isoformat(), date_range[1].isoformat())
    return replace(result, split=split, date_range=days, date_range_rule=rule if days else None)


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
    guards: Guards = Guards()  # set by read(); adapters read polygon_repair_tolerance from it

    def read(
        self,
        spark: "SparkSession",
        source: "SourceConfig",
        extent: LonLatBox | None = None,
        *,
        name: str | None = None,
        guards: Guards | None = None,
    ) -> IngestResult:
        """Read and validate ``source`` (``name`` fills the ``source`` column; default: the adapter).

        ``guards``: the ``ingest:`` settings (default: :class:`~landuse.ingest.guards.Guards`'s defaults).
        """
        name = name or self.adapter
        self.guards = guards or Guards()
        where = f"{source.path}: trip source {name!r} (adapter {self.adapter})"
        opts = parse_options(source.options, self.options, where)
        for key in ("timestamp_format", "date_format"):
            for fmt in opts.get(key) or ():
                try:
                    V.format_to_regex(fmt)
                except IngestError as exc:
                    raise IngestError(f"{where}: option {key!r}: {exc}") from None
        return _guarded(self._read(spark, Path(source.path), opts, extent, name), self.guards)

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
    spark: "SparkSession",
    source: "SourceConfig",
    extent: LonLatBox | None = None,
    *,
    name: str | None = None,
    guards: Guards | None = None,
) -> IngestResult:
    """Read a trip source with the adapter named in its config (``guards``: see :meth:`TripSource.read`)."""
    return trip_source(source.adapter).read(spark, source, extent, name=name, guards=guards)


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
    time_checks: Checks = (),  # type: ignore[assignment]
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
    checks = [
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
        locs = _zone_locations(
            spark, opts["zones_path"], opts["zone_id_column"], opts["zones_crs"], extent, name,
            self.guards.polygon_repair_tolerance,
        )
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
        frame = read_delimited(spark, path, sep=opts["sep"], encoding=opts["encoding"])
        o_col = frame.require(opts["o_column"], what="column (option o_column)")
        d_col = frame.require(opts["d_column"], what="column (option d_column)")
        n_col = frame.require(opts["count_column"], what="column (option count_column)")
        t_col = frame.require(opts["time_column"]) if opts["time_column"] else None
        cols = _Columns()
        o_key, d_key = cols.key("__ok", frame.col(o_col)), cols.key("__dk", frame.col(d_col))
        time_checks = _time_columns(frame, _TimeSpec(t_col, None, _formats(opts["timestamp_format"])), cols)
        count_checks = _count_columns(frame, _CountSpec(column=n_col), cols)
        df = cols.apply(frame.df)
        checks: Checks = [(V.MISSING_KEY, o_key.isNull() | d_key.isNull())]
        split = _finish(df, frame, checks + time_checks + count_checks, name, keys=True, lonlat=False)
        return _result(split, frame, name, keys_are_regions=True, timed=t_col is not None)


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
        return _result(split, frame, name, timed=start is not None)


def adapter_options(adapter: str) -> Mapping[str, Option]:
    """The declared options of a trip adapter (for docs and ``landuse`` help output)."""
    return {opt.name: opt for opt in trip_source(adapter).options}
