"""Guards of the ingest stage against silent data loss (config section ``ingest:``).

* **Kept share** — a trip or POI source keeping less than ``ingest.min_kept_fraction`` of its rows
  fails the stage with one line naming the source, its file, kept/in counts and the dominant reject
  reasons with a hint (:func:`check_kept_share`). Location tables (stations, zones) are not checked
  on their own: a bad location table shows up as rejected trips.
* **Empty source** — a source with no data rows (e.g. a header-only file) fails the stage unless
  the run was forced (``--force``), which logs a warning instead (:func:`check_not_empty`).
* **Dates** — a trip whose start falls outside ``ingest.date_range`` ([first, last], whole days,
  inclusive) is rejected as ``date_out_of_range``. When ``date_range`` is null the range is derived
  per source from the bulk of its data, on Spark (:func:`derive_date_range`): the 0.1th and 99.9th
  percentiles of the start dates of the rows that passed every other check (``approxQuantile``,
  relative error 1e-4), widened by one day on each side. A handful of stray dates (1900, 9999)
  therefore never stretches the covered days; a source whose stray dates exceed 0.1% of its rows
  needs an explicit ``ingest.date_range``. Sources without timestamps (zone OD tables without a
  time column) are not subject to it.
* **Counts** — a trip-count field above ``ingest.max_count`` is rejected as ``count_too_large``.
* **Polygons** — an invalid polygon is repaired with ``make_valid`` only when that changes its area
  by at most ``ingest.polygon_repair_tolerance`` (relative); otherwise it is rejected as
  ``invalid_geometry`` (:mod:`landuse.ingest.polygons`).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from landuse.config import IngestConfig
from landuse.ingest.errors import IngestError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from landuse.ingest.quarantine import IngestSummary

log = logging.getLogger(__name__)

DATE_QUANTILES = (0.001, 0.999)  # the bulk of a source's start dates (derived date range)
DATE_QUANTILE_ERROR = 1e-4  # approxQuantile's relative error: well inside the 0.1% tails
DATE_MARGIN_DAYS = 1  # the derived range is widened by this many days on each side
_DEFAULTS = IngestConfig()  # the one place the defaults are written
DEFAULT_REPAIR_TOLERANCE = _DEFAULTS.polygon_repair_tolerance  # for direct callers of the polygon readers

# A hint per dominant reject reason, for the kept-share error.
HINTS: Mapping[str, str] = {
    "outside_extent": "swapped lat/lon or a wrong crs?",
    "coordinates_out_of_range": "swapped lat/lon or a wrong crs?",
    "zero_coordinates": "swapped lat/lon or a wrong crs?",
    "null_coordinates": "wrong coordinate columns?",
    "unparsable_coordinates": "wrong coordinate columns or sep?",
    "missing_timestamp": "wrong time column?",
    "unparsable_timestamp": "set option timestamp_format?",
    "unknown_station": "do the trips' station ids match the station table?",
    "unknown_zone": "do the trips' zone ids match the zone table?",
    "missing_key": "wrong key columns?",
    "extra_fields": "wrong sep, or unquoted separators inside fields?",
    "undecodable_text": "wrong option encoding?",
    "date_out_of_range": "set ingest.date_range?",
    "count_too_large": "raise ingest.max_count?",
    "duplicate_id": "set option id_column (or row_number)?",
    "missing_id": "set option id_column (or row_number)?",
    "missing_category": "set option category_columns?",
}


@dataclass(frozen=True)
class Guards:
    """The ``ingest:`` settings the readers need (defaults = :class:`~landuse.config.IngestConfig`'s)."""

    min_kept_fraction: float = _DEFAULTS.min_kept_fraction
    date_range: tuple[dt.date, dt.date] | None = None  # None: derived per source (module docstring)
    max_count: float = _DEFAULTS.max_count
    polygon_repair_tolerance: float = DEFAULT_REPAIR_TOLERANCE

    @classmethod
    def from_config(cls, cfg: IngestConfig) -> "Guards":
        """From the config section (dates parsed; the config has validated them)."""
        days = None
        if cfg.date_range is not None:
            first, last = (dt.date.fromisoformat(str(d)) for d in cfg.date_range)
            days = (first, last)
        return cls(cfg.min_kept_fraction, days, float(cfg.max_count), cfg.polygon_repair_tolerance)


def derive_date_range(days: "DataFrame", column: str) -> tuple[dt.date, dt.date] | None:
    """The derived date range of one source (module docstring), or None when no row has a date.

    ``days``: one row per dated trip, ``column`` its start date as days since 1970-01-01. One
    Spark job (``approxQuantile``); only the two quantiles reach the driver.
    """
    quantiles = days.approxQuantile(column, list(DATE_QUANTILES), DATE_QUANTILE_ERROR)
    if len(quantiles) != 2 or any(math.isnan(q) for q in quantiles):
        return None
    epoch = dt.date(1970, 1, 1)
    first = epoch + dt.timedelta(days=int(quantiles[0]) - DATE_MARGIN_DAYS)
    last = epoch + dt.timedelta(days=int(quantiles[1]) + DATE_MARGIN_DAYS)
    return first, last


def source_label(key: str, path: str) -> str:
    """``inputs.trips.bikes (data/trips.csv)``: the config key and file of a source, for messages."""
    return f"{key} ({path})"


def check_not_empty(summary: "IngestSummary", label: str, force: bool) -> None:
    """:class:`IngestError` for a source with no data rows, unless ``force`` (then a warning)."""
    if summary.rows_in > 0:
        return
    message = f"{label}: no data rows (empty or header-only file)"
    if force:
        log.warning("%s; continuing with an empty %s table (--force)", message, summary.table)
        return
    raise IngestError(f"{message}; nothing was written — fix the file, or rerun with --force to accept an empty source")


def check_kept_share(summary: "IngestSummary", label: str, min_kept_fraction: float) -> None:
    """:class:`IngestError` when a source keeps less than ``min_kept_fraction`` of its rows (none: no check)."""
    if summary.rows_in == 0:
        return  # an empty source is check_not_empty's
    share = summary.kept / summary.rows_in
    if share >= min_kept_fraction:
        return
    ranked = sorted(summary.by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
    reasons = ", ".join(f"{reason} {n:,}" for reason, n in ranked[:3])
    hint = HINTS.get(ranked[0][0].removeprefix("location_"), "") if ranked else ""
    raise IngestError(
        f"{label}: kept {summary.kept:,} of {summary.rows_in:,} rows ({share:.1%} < ingest.min_kept_fraction "
        f"{min_kept_fraction * 100:g}%): {reasons or 'no reason recorded'} — "
        f"{hint + ' ' if hint else ''}lower ingest.min_kept_fraction to accept"
    )
