"""Region graphs: queen contiguity and distance-decay edges.

Both are symmetric edge lists (each undirected pair written in both directions, no self loops),
computed with spatial indexes — a shapely STRtree for contiguity, a k-d tree over centroids for
distance decay — so the cost grows with the number of neighbouring pairs, never with n².
Results are small pandas DataFrames; :func:`adjacency_to_spark` / :func:`distance_decay_to_spark`
hand them to Spark with their declared schemas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import shapely
from pyspark.sql.types import DoubleType, LongType, StructField, StructType
from scipy.spatial import cKDTree

from landuse.spark.schemas import (
    CENTROID_X,
    CENTROID_Y,
    GEOMETRY,
    REGION_ID,
    T_ADJACENCY,
    T_DISTANCE_DECAY,
    check_schema,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

REGION_ID_A, REGION_ID_B = "region_id_a", "region_id_b"
SHARED_LENGTH_M = "shared_length_m"
DISTANCE_M = "distance_m"
WEIGHT = "weight"
WEIGHT_NORM = "weight_norm"

ADJACENCY_SCHEMA = StructType(
    [
        StructField(REGION_ID_A, LongType(), False),
        StructField(REGION_ID_B, LongType(), False),
        StructField(SHARED_LENGTH_M, DoubleType(), False),
    ]
)
DISTANCE_DECAY_SCHEMA = StructType(
    [
        StructField(REGION_ID_A, LongType(), False),
        StructField(REGION_ID_B, LongType(), False),
        StructField(DISTANCE_M, DoubleType(), False),
        StructField(WEIGHT, DoubleType(), False),
        StructField(WEIGHT_NORM, DoubleType(), False),
    ]
)


def _both_directions(a: np.ndarray, b: np.ndarray, **values: np.ndarray) -> pd.DataFrame:
    """Edges (a, b) with a < b written as (a, b) and (b, a), sorted by (a, b)."""
    out = pd.DataFrame(
        {
            REGION_ID_A: np.concatenate([a, b]).astype(np.int64),
            REGION_ID_B: np.concatenate([b, a]).astype(np.int64),
            **{k: np.concatenate([v, v]).astype(np.float64) for k, v in values.items()},
        }
    )
    return out.sort_values([REGION_ID_A, REGION_ID_B], kind="stable").reset_index(drop=True)


def queen_adjacency(
    regions: pd.DataFrame, id_column: str = REGION_ID, geometry_column: str = GEOMETRY
) -> pd.DataFrame:
    """Queen contiguity edges ``(region_id_a, region_id_b, shared_length_m)``.

    Two regions are neighbours when their closed polygons intersect: a shared edge, a shared
    corner only (``shared_length_m`` = 0), or an overlap (real partitions often overlap by
    slivers). ``shared_length_m`` is the length of the intersection of the two boundaries, in
    CRS units (metres for the canonical projected table). ``regions`` holds shapely geometries
    (a GeoDataFrame such as :func:`landuse.spatial.regions.regions_from_geodataframe` returns).
    """
    ids = regions[id_column].to_numpy(dtype=np.int64)
    geoms = np.asarray(regions[geometry_column].values, dtype=object)
    tree = shapely.STRtree(geoms)
    i, j = tree.query(geoms, predicate="intersects")
    keep = ids[i] < ids[j]  # each unordered pair once (also drops self pairs)
    i, j = i[keep], j[keep]
    boundaries = shapely.boundary(geoms)
    shared = shapely.length(shapely.intersection(boundaries[i], boundaries[j]))
    # A corner touch yields a point (length 0); lines are the shared edges.
    return _both_directions(ids[i], ids[j], **{SHARED_LENGTH_M: shared})


def distance_decay_weight(distance: np.ndarray, d_max: float, exponent: float = 1.5) -> np.ndarray:
    """The thesis's distance decay: ``w = ln((1 + d_max^e) / (1 + d^e))`` (e = 1.5): 0 at ``d_max``, largest near 0."""
    d = np.asarray(distance, dtype=np.float64)
    return np.log1p(d_max**exponent) - np.log1p(d**exponent)


def distance_decay_edges(
    regions: pd.DataFrame,
    radius_m: float,
    exponent: float = 1.5,
    id_column: str = REGION_ID,
    x_column: str = CENTROID_X,
    y_column: str = CENTROID_Y,
) -> pd.DataFrame:
    """Distance-decay edges between region centroids closer than ``radius_m`` (inclusive).

    Columns: ``region_id_a, region_id_b, distance_m, weight, weight_norm``. ``weight`` is
    :func:`distance_decay_weight` with ``d_max`` the largest centroid distance among the pairs
    within the radius (so the farthest pair gets weight 0); ``weight_norm`` divides each weight by
    its row sum over ``region_id_a`` (0 where that sum is 0). No self loops: the GCN operator adds
    the identity itself. Pairs come from ``cKDTree.query_pairs`` — no n×n distance matrix.
    """
    if not radius_m > 0:
        raise ValueError(f"radius_m must be > 0, got {radius_m}")
    ids = regions[id_column].to_numpy(dtype=np.int64)
    xy = np.column_stack([regions[x_column].to_numpy(float), regions[y_column].to_numpy(float)])
    pairs = cKDTree(xy).query_pairs(r=radius_m, output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    dist = np.hypot(xy[i, 0] - xy[j, 0], xy[i, 1] - xy[j, 1])
    d_max = float(dist.max()) if len(dist) else 0.0
    weight = distance_decay_weight(dist, d_max, exponent)
    edges = _both_directions(ids[i], ids[j], **{DISTANCE_M: dist, WEIGHT: weight})
    row_sum = edges.groupby(REGION_ID_A)[WEIGHT].transform("sum").to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        edges[WEIGHT_NORM] = np.where(row_sum > 0, edges[WEIGHT].to_numpy() / row_sum, 0.0)
    return edges


def adjacency_to_spark(spark: "SparkSession", edges: pd.DataFrame) -> "DataFrame":
    """Queen edges as a Spark DataFrame with ``ADJACENCY_SCHEMA``."""
    return _to_spark(spark, edges, ADJACENCY_SCHEMA, T_ADJACENCY)


def distance_decay_to_spark(spark: "SparkSession", edges: pd.DataFrame) -> "DataFrame":
    """Distance-decay edges as a Spark DataFrame with ``DISTANCE_DECAY_SCHEMA``."""
    return _to_spark(spark, edges, DISTANCE_DECAY_SCHEMA, T_DISTANCE_DECAY)


def _to_spark(spark: "SparkSession", edges: pd.DataFrame, schema: StructType, table: str) -> "DataFrame":
    pdf = edges[[f.name for f in schema.fields]]
    df = spark.createDataFrame(pdf, schema=schema)
    check_schema(df, schema, table)
    return df
