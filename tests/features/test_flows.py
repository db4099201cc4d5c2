"""OD flow aggregation: counts, daily averages, diagonal flag, time filters, suppression, summary."""

from __future__ import annotations

from datetime import datetime

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from landuse.features.flows import (
    NO_DAYS,
    TRIPS,
    FlowSummary,
    filter_time,
    flows_from_cells,
    od_cells,
    source_flows,
    suppress_small_cells,
)
from landuse.spark.schemas import COUNT, D_REGION, O_REGION, START_TS

# Reference implementations (two passes over the trips, as the stage did before source_flows):
# the one-pass results must equal them.


def covered_days(trips: DataFrame) -> int:
    """Number of distinct calendar dates (UTC) among the trips' start times (0 when none)."""
    row = trips.where(F.col(START_TS).isNotNull()).agg(F.countDistinct(F.to_date(START_TS)).alias("d")).first()
    return int(row["d"] or 0) if row else 0


def od_flows(trips: DataFrame, days: int) -> DataFrame:
    """Aggregate assigned trips into (o_region, d_region, trips, days, daily_avg, is_diagonal)."""
    if days <= 0:
        raise ValueError(NO_DAYS)
    return flows_from_cells(od_cells(trips.where(F.col(O_REGION).isNotNull() & F.col(D_REGION).isNotNull())), days)


def summarise(trips: DataFrame, flows: DataFrame, days: int, min_count: int) -> FlowSummary:
    """Totals for the manifest: one aggregation over trips, one over flows.

    (The flows stage uses :func:`source_flows`, which gets the same figures without a second
    aggregation over trips.)
    """
    t = trips.agg(
        F.coalesce(F.sum(COUNT), F.lit(0)).alias("all"),
        F.coalesce(
            F.sum(F.when(F.col(O_REGION).isNotNull() & F.col(D_REGION).isNotNull(), F.col(COUNT))), F.lit(0)
        ).alias("assigned"),
    ).first()
    small = F.col(TRIPS) < max(min_count, 1)
    f = flows.agg(
        F.count(F.lit(1)).alias("cells"),
        F.coalesce(F.sum(F.when(small, 1)), F.lit(0)).alias("cells_small"),
        F.coalesce(F.sum(F.when(small, F.col(TRIPS))), F.lit(0)).alias("trips_small"),
    ).first()
    trips_in, assigned = int(t["all"]), int(t["assigned"])
    return FlowSummary(
        trips_in=trips_in,
        trips_assigned=assigned,
        trips_unassigned=trips_in - assigned,
        days=days,
        cells=int(f["cells"]),
        cells_suppressed=int(f["cells_small"]) if min_count > 1 else 0,
        trips_suppressed=int(f["trips_small"]) if min_count > 1 else 0,
    )



COLS = "source string, o_region long, d_region long, start_ts timestamp, count long"


@pytest.fixture()
def trips(spark):
    rows = [
        # Monday 2019-07-01
        ("s", 1, 2, datetime(2019, 7, 1, 8, 5), 1),
        ("s", 1, 2, datetime(2019, 7, 1, 8, 40), 1),
        ("s", 2, 1, datetime(2019, 7, 1, 18, 0), 1),
        ("s", 1, 1, datetime(2019, 7, 1, 12, 0), 3),  # diagonal
        ("s", 1, None, datetime(2019, 7, 1, 9, 0), 2),  # destination in no region
        # Saturday 2019-07-06
        ("s", 1, 2, datetime(2019, 7, 6, 23, 30), 1),
        ("s", None, None, datetime(2019, 7, 6, 1, 0), 1),
    ]
    return spark.createDataFrame(rows, COLS)


def as_dict(df) -> dict[tuple[int, int], tuple]:
    return {(r.o_region, r.d_region): (r.trips, r.days, r.daily_avg, r.is_diagonal) for r in df.collect()}


def test_counts_daily_average_and_diagonal(trips) -> None:
    days = covered_days(trips)
    assert days == 2
    flows = as_dict(od_flows(trips, days))
    assert flows == {
        (1, 2): (3, 2, 1.5, False),
        (2, 1): (1, 2, 0.5, False),
        (1, 1): (3, 2, 1.5, True),
    }


def test_summary_counts_unassigned_trips(trips) -> None:
    flows = od_flows(trips, 2)
    summary = summarise(trips, flows, 2, min_count=1)
    assert summary.trips_in == 10
    assert summary.trips_assigned == 7
    assert summary.trips_unassigned == 3
    assert summary.trips_in == summary.trips_assigned + summary.trips_unassigned
    assert summary.cells == 3 and summary.cells_suppressed == 0


def test_hour_window_and_day_type(trips) -> None:
    morning = filter_time(trips, hours=(7, 10))
    assert as_dict(od_flows(morning, 1)) == {(1, 2): (2, 1, 2.0, False)}
    night = filter_time(trips, hours=(22, 2))  # wraps midnight
    assert sorted(r.start_ts.hour for r in night.collect()) == [1, 23]
    weekend = filter_time(trips, day_type="weekend")
    assert as_dict(od_flows(weekend, covered_days(weekend))) == {(1, 2): (1, 1, 1.0, False)}
    weekday = filter_time(trips, day_type="weekday")
    assert covered_days(weekday) == 1


def test_small_cell_suppression(trips) -> None:
    flows = od_flows(trips, 2)
    kept = as_dict(suppress_small_cells(flows, 2))
    assert set(kept) == {(1, 2), (1, 1)}
    summary = summarise(trips, flows, 2, min_count=2)
    assert summary.cells_suppressed == 1 and summary.trips_suppressed == 1


def test_days_must_be_positive(trips) -> None:
    with pytest.raises(ValueError, match="days must be positive"):
        od_flows(trips, 0)


@pytest.mark.parametrize("min_count", [1, 2])
def test_source_flows_equals_separate_aggregations(trips, min_count) -> None:
    result = source_flows(trips, min_count, days=2)
    try:
        assert as_dict(result.flows) == as_dict(suppress_small_cells(od_flows(trips, 2), min_count))
        assert result.summary == summarise(trips, od_flows(trips, 2), 2, min_count)
    finally:
        result.release()


def test_source_flows_reads_the_trips_once(spark, trips) -> None:
    """The flows table and its summary come from one aggregation: every trip row is read once."""
    import pandas as pd

    rows_read = spark.sparkContext.accumulator(0)

    def count_rows(batches):
        for batch in batches:
            rows_read.add(len(batch))
            yield batch

    counted = trips.mapInPandas(count_rows, trips.schema)
    result = source_flows(counted, min_count=2)  # the covered days are counted in the same pass
    table = result.flows.toPandas()
    result.release()
    # The old path (covered_days, summarise, od_flows and the write) read them four times.
    assert rows_read.value == 7
    assert result.summary.days == 2 and set(table.days) == {2}
    assert result.summary.trips_in == 10 and result.summary.cells_suppressed == 1
    assert sorted(zip(table.o_region, table.d_region)) == [(1, 1), (1, 2)]
    assert isinstance(table, pd.DataFrame)


def test_source_flows_days(spark, trips) -> None:
    undated = trips.withColumn("start_ts", F.lit(None).cast("timestamp"))
    result = source_flows(undated, 1, default_days=31)  # an undated OD table: flows.days
    try:
        assert result.summary.days == 31 and {r.days for r in result.flows.collect()} == {31}
    finally:
        result.release()
    with pytest.raises(ValueError, match="days must be positive"):
        source_flows(undated, 1)
    with pytest.raises(ValueError, match="days must be positive"):
        source_flows(trips, 1, days=0)
