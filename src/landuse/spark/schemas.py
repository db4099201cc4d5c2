"""Canonical table schemas, declared once and checked between stages.

Geometry travels between Spark stages as WKB (``geometry`` binary column) in the run's projected
CRS (metres); lon/lat columns are always WGS84 degrees. Region ids are 64-bit integers; a source's
own id is kept as ``source_id`` (string).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql.types import (
    BinaryType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

# --- table names (directories under <work_dir>/tables/) ---
T_REGIONS = "regions"
T_ADJACENCY = "edges_adjacency"
T_DISTANCE_DECAY = "edges_distance_decay"
T_TRIPS = "trips"  # canonical trips, all sources
T_LOCATIONS = "locations"  # distinct referenced locations (stations, zones) per source
T_POIS = "pois"
T_LANDUSE = "landuse_polygons"
T_REJECTS = "rejects"  # rejects/<source>/
T_FLOWS = "flows"
T_POI_REGIONS = "poi_regions"
T_POI_COUNTS = "poi_counts"
T_LABELS = "labels"

# --- column names ---
REGION_ID = "region_id"
SOURCE_ID = "source_id"
GEOMETRY = "geometry"  # WKB, projected CRS
CENTROID_X = "centroid_x"
CENTROID_Y = "centroid_y"
LON = "lon"
LAT = "lat"
AREA_M2 = "area_m2"
SOURCE = "source"
O_KEY, D_KEY = "o_key", "d_key"  # location keys (station / zone ids) when trips reference them
O_LON, O_LAT, D_LON, D_LAT = "o_lon", "o_lat", "d_lon", "d_lat"
START_TS = "start_ts"
COUNT = "count"
LOC_KEY = "loc_key"
POI_ID = "poi_id"
CATEGORY_PREFIX = "cat_l"  # cat_l1, cat_l2, cat_l3: category token per hierarchy level
REASON = "reason"  # rejects: why the row was rejected
RAW = "raw"  # rejects: the original row, as JSON text
O_REGION, D_REGION = "o_region", "d_region"

REGIONS_SCHEMA = StructType(
    [
        StructField(REGION_ID, LongType(), False),
        StructField(SOURCE_ID, StringType(), False),
        StructField(GEOMETRY, BinaryType(), False),
        StructField(CENTROID_X, DoubleType(), False),
        StructField(CENTROID_Y, DoubleType(), False),
        StructField(LON, DoubleType(), False),
        StructField(LAT, DoubleType(), False),
        StructField(AREA_M2, DoubleType(), False),
    ]
)

TRIPS_SCHEMA = StructType(
    [
        StructField(SOURCE, StringType(), False),
        StructField(O_KEY, StringType(), True),
        StructField(D_KEY, StringType(), True),
        StructField(O_LON, DoubleType(), True),
        StructField(O_LAT, DoubleType(), True),
        StructField(D_LON, DoubleType(), True),
        StructField(D_LAT, DoubleType(), True),
        StructField(START_TS, TimestampType(), True),
        StructField(COUNT, LongType(), False),
    ]
)

LOCATIONS_SCHEMA = StructType(
    [
        StructField(SOURCE, StringType(), False),
        StructField(LOC_KEY, StringType(), False),
        StructField(LON, DoubleType(), False),
        StructField(LAT, DoubleType(), False),
    ]
)

POIS_SCHEMA = StructType(
    [
        StructField(SOURCE, StringType(), False),
        StructField(POI_ID, StringType(), False),
        StructField(LON, DoubleType(), False),
        StructField(LAT, DoubleType(), False),
        StructField(f"{CATEGORY_PREFIX}1", StringType(), False),
        StructField(f"{CATEGORY_PREFIX}2", StringType(), True),
        StructField(f"{CATEGORY_PREFIX}3", StringType(), True),
    ]
)

REJECTS_SCHEMA = StructType(
    [
        StructField(SOURCE, StringType(), False),
        StructField(REASON, StringType(), False),
        StructField(RAW, StringType(), True),
    ]
)


class SchemaError(ValueError):
    """A table does not match its declared schema."""


def check_schema(df: "DataFrame", expected: StructType, table: str) -> None:
    """Raise :class:`SchemaError` naming the table and first missing / mistyped column."""
    actual = {f.name: f.dataType for f in df.schema.fields}
    for f in expected.fields:
        if f.name not in actual:
            raise SchemaError(f"table {table}: missing column {f.name!r} (has: {', '.join(actual)})")
        if actual[f.name] != f.dataType:
            raise SchemaError(
                f"table {table}: column {f.name!r} is {actual[f.name].simpleString()}, "
                f"expected {f.dataType.simpleString()}"
            )
