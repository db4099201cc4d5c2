"""Parsing helpers, options, extents and the quarantine bookkeeping."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pyarrow.parquet as pq
import pytest

from landuse.ingest import IngestError, IngestSummary, LonLatBox, format_summaries, rejects_path, write_rejects
from landuse.ingest.options import REQUIRED, Option, parse_options
from landuse.ingest.validation import format_to_regex, parse_integer, parse_timestamp
from landuse.spark.schemas import REJECTS_SCHEMA


def test_format_to_regex():
    regex, replacement = format_to_regex("dd/MM/yyyy HH:mm")
    assert regex == r"^(\d{2})/(\d{2})/(\d{4})\s+(\d{2}):(\d{2})$"
    assert replacement == "$3-$2-$1 $4:$5:00"
    assert format_to_regex("yyyyMMdd")[1] == "$1-$2-$3 00:00:00"
    assert format_to_regex("yyyy-MM-dd'T'HH:mm:ss.SSS")[1] == "$1-$2-$3 $4:$5:$6.$7"
    with pytest.raises(IngestError, match=r"timestamp format 'MMM d, yyyy': unsupported or repeated pattern 'MMM'"):
        format_to_regex("MMM d, yyyy")
    with pytest.raises(IngestError, match=r"needs a year"):
        format_to_regex("HH:mm")


def test_parse_timestamp_and_integer(spark):
    from pyspark.sql import functions as F

    texts = ["04/01/2015 00:05", "4/1/2015 0:05", "31/02/2015 10:00", "2015-01-04 00:05:07", "20150104", None, "x"]
    df = spark.createDataFrame([(t,) for t in texts], "t string")
    formats = ("dd/MM/yyyy HH:mm", "yyyyMMdd", None)
    counts = ["12", "+3", "12.0", "-4", "2.5", "abc", "99999999999999999999", None]
    cf = spark.createDataFrame([(c,) for c in counts], "c string")
    parsed = [r[0] for r in df.select(parse_timestamp(F.col("t"), formats)).collect()]
    assert parsed == [datetime(2015, 1, 4, 0, 5), None, None, datetime(2015, 1, 4, 0, 5, 7), datetime(2015, 1, 4), None, None]
    assert [r[0] for r in cf.select(parse_integer(F.col("c"))).collect()] == [12, 3, 12, -4, None, None, None, None]


def test_options():
    declared = (Option("a", "str", "x"), Option("b", "int", REQUIRED, "how many"), Option("c", "str_list", None))
    assert parse_options({"b": 2, "c": "one"}, declared, "src") == {"a": "x", "b": 2, "c": ("one",)}
    with pytest.raises(IngestError, match=r"^src: option 'b' is required \(how many\)$"):
        parse_options({}, declared, "src")
    with pytest.raises(IngestError, match=r"^src: option 'b' must be an integer, got 'two'$"):
        parse_options({"b": "two"}, declared, "src")
    with pytest.raises(IngestError, match=r"^src: unknown option 'd' \(allowed: a, b, c\)$"):
        parse_options({"b": 1, "d": 1}, declared, "src")


def test_lonlat_box():
    box = LonLatBox.from_bounds((-74.02, 40.70, -73.91, 40.88), buffer_deg=0.01)
    assert box == LonLatBox(-74.03, 40.69, -73.9, 40.89) or box.min_lon == pytest.approx(-74.03)
    with pytest.raises(IngestError, match=r"is not a valid lon/lat box"):
        LonLatBox(10, 0, 5, 1)


def test_summary_check_and_line():
    ok = IngestSummary("bikes", "trips", "trips.csv", 10, 7, 3, {"unknown_station": 2, "missing_key": 1})
    assert ok.check() is ok
    line = format_summaries([ok])
    assert "bikes" in line and "in           10 = kept            7 + rejected          3" in line
    assert line.endswith("(unknown_station 2, missing_key 1)")
    with pytest.raises(IngestError, match=r"trips\.csv: source 'bikes' trips: 10 rows in but 7 kept \+ 2 rejected = 9"):
        IngestSummary("bikes", "trips", "trips.csv", 10, 7, 2, {"missing_key": 2}).check()
    with pytest.raises(IngestError, match=r"rejects by reason sum to 1, not 3"):
        IngestSummary("bikes", "trips", "trips.csv", 10, 7, 3, {"missing_key": 1}).check()


def test_write_rejects_spark_and_pandas(spark, tmp_path):
    target = rejects_path(tmp_path / "tables", "bikes")
    assert target == tmp_path / "tables" / "rejects" / "bikes"
    df = spark.createDataFrame([("bikes", "missing_key", '{"a":1}')], REJECTS_SCHEMA)
    write_rejects(df, target)
    assert spark.read.parquet(str(target)).collect()[0].reason == "missing_key"
    pdf = pd.DataFrame({"source": ["lu"], "reason": ["unmapped_code"], "raw": ['{"DLBM":"9999"}']})
    write_rejects(pdf, tmp_path / "rejects" / "lu")
    table = pq.read_table(tmp_path / "rejects" / "lu")
    assert table.column_names == ["source", "reason", "raw"] and table.num_rows == 1
