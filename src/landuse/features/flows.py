"""Origin–destination flows between regions.

Input: canonical trips with their endpoints already assigned to regions (``o_region``/``d_region``,
NULL where an endpoint fell in no region). Output: one row per (o_region, d_region) with the trip
count, the number of covered days and the daily average; the diagonal (intra-region trips) is kept
and flagged. Trips with an unassigned endpoint never vanish: they are counted in the summary.
:func:`source_flows` aggregates the trips once (:func:`od_cells`, unassigned cells included) and
derives both the table and its summary from that aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from landuse.spark.schemas import COUNT, D_REGION, O_REGION, START_TS

TRIPS = "trips"
DAILY_AVG = "daily_avg"
DAYS = "days"
IS_DIAGONAL = "is_diagonal"

DayType = Literal["all", "weekday", "weekend"]


NO_DAYS = "od_flows: days must be positive (no dated trips and no flows.days configured)"


@dataclass(frozen=True)
class FlowSummary:
    """Trip totals behind a flows table: in = assigned + unassigned; suppressed cells counted."""

    trips_in: int
    trips_assigned: int
    trips_unassigned: int
    days: int
    cells: int
    cells_suppressed: int
    trips_suppressed: int

    def as_dict(self) -> dict[str, int]:
        """Plain dict for manifests and logs."""
        return dict(self.__dict__)


def filter_time(trips: DataFrame, hours: tuple[int, int] | None = None, day_type: DayType = "all") -> DataFrame:
    """Keep trips whose start hour is in ``[hours[0], hours[1])`` and whose day matches ``day_type``.

    Rows without a timestamp (pre-aggregated OD tables) pass only when no time filter is asked for.
    """
    out = trips
    if hours is not None:
        start, end = hours
        hour = F.hour(F.col(START_TS))
        # A window may wrap midnight, e.g. (22, 6).
        cond = (hour >= start) & (hour < end) if start < end else (hour >= start) | (hour < end)
        out = out.where(cond)
    if day_type != "all":
        weekend = F.dayofweek(F.col(START_TS)).isin(1, 7)  # Spark: 1 = Sunday, 7 = Saturday
        out = out.where(weekend if day_type == "weekend" else ~weekend)
    return out


def od_cells(trips: DataFrame) -> DataFrame:
    """Trips summed per ``(o_region, d_region)``, unassigned endpoints (NULL) included: the one aggregation over trips.

    Everything the flows stage reports derives from these cells: the flows table
    (:func:`flows_from_cells`) and its summary (:func:`summarise_cells`). They are OD-pair sized.
    """
    return trips.groupBy(O_REGION, D_REGION).agg(F.sum(COUNT).cast("long").alias(TRIPS))


def flows_from_cells(cells: DataFrame, days: int) -> DataFrame:
    """(o_region, d_region, trips, days, daily_avg, is_diagonal) from :func:`od_cells` (assigned cells only)."""
    if days <= 0:
        raise ValueError(NO_DAYS)
    return (
        cells.where(F.col(O_REGION).isNotNull() & F.col(D_REGION).isNotNull())
        .withColumn(DAYS, F.lit(days).cast("int"))
        .withColumn(DAILY_AVG, F.col(TRIPS) / F.lit(float(days)))
        .withColumn(IS_DIAGONAL, F.col(O_REGION) == F.col(D_REGION))
    )


def suppress_small_cells(flows: DataFrame, min_count: int) -> DataFrame:
    """Drop OD cells with fewer than ``min_count`` trips from an exported table (privacy, k-anonymity style).

    ``min_count <= 1`` keeps everything. Suppressed totals are reported by :func:`summarise_cells`.
    """
    return flows if min_count <= 1 else flows.where(F.col(TRIPS) >= min_count)


def summarise_cells(cells: DataFrame, days: int, min_count: int) -> FlowSummary:
    """The flow totals for the manifest from :func:`od_cells` alone: one small aggregation over the cells."""
    assigned = F.col(O_REGION).isNotNull() & F.col(D_REGION).isNotNull()
    small = assigned & (F.col(TRIPS) < max(min_count, 1))
    row = cells.agg(
        F.coalesce(F.sum(TRIPS), F.lit(0)).alias("all"),
        F.coalesce(F.sum(F.when(assigned, F.col(TRIPS))), F.lit(0)).alias("assigned"),
        F.count(F.when(assigned, 1)).alias("cells"),
        F.count(F.when(small, 1)).alias("cells_small"),
        F.coalesce(F.sum(F.when(small, F.col(TRIPS))), F.lit(0)).alias("trips_small"),
    ).first()
    assert row is not None  # a global aggregation has exactly one row
    trips_in, trips_assigned = int(row["all"]), int(row["assigned"])
    return FlowSummary(
        trips_in=trips_in,
        trips_assigned=trips_assigned,
        trips_unassigned=trips_in - trips_assigned,
        days=days,
        cells=int(row["cells"]),
        cells_suppressed=int(row["cells_small"]) if min_count > 1 else 0,
        trips_suppressed=int(row["trips_small"]) if min_count > 1 else 0,
    )


@dataclass(frozen=True)
class SourceFlows:
    """One source's flows table and summary, both from one aggregation over its trips.

    ``cells`` (:func:`od_cells`) is persisted: the summary's action computes it, writing ``flows``
    reads it back; call :meth:`release` once ``flows`` is written.
    """

    flows: DataFrame  # exported: small cells suppressed
    summary: FlowSummary
    cells: DataFrame

    def release(self) -> None:
        """Drop the persisted cells."""
        self.cells.unpersist()


def source_flows(assigned: DataFrame, min_count: int, days: int | None = None, default_days: int = 0) -> SourceFlows:
    """Flows (small cells suppressed) and their summary from assigned trips, reading the trips once.

    ``days``: the covered days; None counts the distinct dates of the trips' start times during
    the same pass (a Spark observation on the aggregation's input), falling back to
    ``default_days`` when no trip is dated. ``ValueError`` when there are no days.
    """
    import uuid

    from pyspark import StorageLevel
    from pyspark.sql import Observation

    dates = None
    if days is None:
        # The set of dates is idempotent, so a retried task cannot change the count.
        dates = Observation(f"flow_days_{uuid.uuid4().hex}")
        assigned = assigned.observe(dates, F.size(F.collect_set(F.to_date(F.col(START_TS)))).alias("days"))
    elif days <= 0:
        raise ValueError(NO_DAYS)
    cells = od_cells(assigned).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        summary = summarise_cells(cells, days or 1, min_count)  # computes the cells (and the dates)
        if dates is not None:
            days = int(dates.get["days"] or 0) or default_days  # the summary's action has run
            if days <= 0:
                raise ValueError(NO_DAYS)
            summary = replace(summary, days=days)
    except BaseException:
        cells.unpersist()
        raise
    # summary.days: the given days, or those observed above
    return SourceFlows(suppress_small_cells(flows_from_cells(cells, summary.days), min_count), summary, cells)
