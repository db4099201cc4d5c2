"""OD flow aggregation: counts, daily averages, diagonal flag, time filters, suppression, summary."""

from __future__ import annotations

from datetime import datetime

import pytest
from pyspark.sql import functions as F

from landuse.features.flows import (
    covered_days,
    filter_time,
    od_flows,
    source_flows,
    summarise,
    suppress_small_cells,
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
