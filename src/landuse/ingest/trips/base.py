"""Trip sources: one adapter per raw trip format, all producing the canonical trips table.

This module holds what every adapter shares: the result types (:class:`IngestResult`,
:class:`ObservedResult`), the :class:`TripSource` base class, the common options, the count and
date guards applied after an adapter's own checks, and the registry :data:`TRIP_SOURCES`. The
column-building helpers the adapters use are in :mod:`landuse.ingest.trips.helpers`, each adapter
is in its own module named after it (``citibike.py`` for ``adapter: citibike``), and
:func:`~landuse.ingest.trips.read_trips` is in :mod:`landuse.ingest.trips.reading`.

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
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from landuse.ingest import validation as V
from landuse.ingest.errors import IngestError
from landuse.ingest.guards import Guards, derive_date_range
from landuse.ingest.options import Option, parse_options
from landuse.ingest.quarantine import IngestSummary
from landuse.ingest.registry import AdapterRegistry
from landuse.ingest.validation import LonLatBox
from landuse.spark.schemas import T_LOCATIONS, T_TRIPS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

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
