"""The ``zone_od`` trip adapter: pre-aggregated OD counts whose keys are already region ids."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from landuse.ingest import validation as V
from landuse.ingest.files import read_delimited
from landuse.ingest.options import Option
from landuse.ingest.trips.base import CSV_OPTIONS, TIME_OPTION, IngestResult, TripSource, register_trip_source
from landuse.ingest.trips.helpers import (
    Checks,
    _Columns,
    _count_columns,
    _CountSpec,
    _finish,
    _formats,
    _result,
    _time_columns,
    _TimeSpec,
)
from landuse.ingest.validation import LonLatBox

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


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

    def _read(
        self, spark: SparkSession, path: Path, opts: dict[str, Any], extent: LonLatBox | None, name: str
    ) -> IngestResult:
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
