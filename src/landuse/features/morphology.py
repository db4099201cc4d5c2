"""Building morphology: per-building shape descriptors and per-region aggregates (H_bld).

Per building (pure functions on shapely / numpy arrays, projected CRS in metres):

* ``area`` (m²) and ``perimeter`` (m, every ring);
* ``compactness`` = 4πA / P² (1 for a disc, π/4 for a square, lower for long or ragged shapes);
* ``elongation`` = 1 − short / long side of the minimum rotated rectangle (0 square, 0.75 for 4:1);
* ``orientation`` = angle of that rectangle's long side from the x axis (east), counter-clockwise,
  in degrees modulo 90, in [0, 90) — street grids make it cluster, so its entropy is informative.

Per region (:data:`FEATURE_NAMES`, in this order): building count, log1p count, density per km²,
built-up share (Σ footprint area / region area, clipped to [0, 1]), mean / median / p90 / std of
ln(area), mean compactness, mean elongation, orientation entropy (histogram of orientations with
``bins`` equal bins over [0, 90), Shannon entropy / ln(bins), so in [0, 1]), and from the buildings
with a known height: mean / max / std height and the floor-area ratio (Σ area · floors / region
area; floors = the levels value, else round(height / 3 m), at least 1). Without height data the
last four are 0. Standard deviations are population (ddof 0); a region with no building has the
zero vector.

On Spark (:func:`region_building_features`): footprints (WKB in the study CRS) get their
descriptors and a representative point (the centroid, or ``point_on_surface`` when the centroid
falls outside a concave footprint) per Arrow batch (``mapInArrow``), are assigned to the
region containing that point by the session's point-join engine (:mod:`landuse.spatial.engines`),
and are aggregated per region with ``groupBy(region_id mod buckets).applyInPandas`` (each call
aggregates the regions of its bucket) — per-building rows never reach the driver; only one vector
per region is written.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import shapely
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DoubleType,
    FloatType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from landuse.spark.schemas import AREA_M2, GEOMETRY, REGION_ID

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from landuse.spatial.engines import SpatialJoinEngine

VECTOR = "vector"
HAS_BUILDING = "has_building"
FLOOR_HEIGHT_M = 3.0  # storey height: height = levels × 3 m when only levels are known, floors = height / 3 m

FEATURE_NAMES: tuple[str, ...] = (
    "count",
    "log1p_count",
    "density_per_km2",
    "built_up_share",
    "log_area_mean",
    "log_area_median",
    "log_area_p90",
    "log_area_std",
    "compactness_mean",
    "elongation_mean",
    "orientation_entropy",
    "height_mean",
    "height_max",
    "height_std",
    "floor_area_ratio",
)
HEIGHT_FEATURES: tuple[str, ...] = ("height_mean", "height_max", "height_std", "floor_area_ratio")

# Canonical building table (driver -> Spark): one row per kept footprint.
BUILDING_ID = "building_id"
HEIGHT = "height"  # metres, NaN / null when unknown
FLOORS = "floors"  # storeys, NaN / null when unknown
BUILDING_TYPE = "building_type"
BUILDINGS_SCHEMA = StructType(
    [
        StructField(BUILDING_ID, StringType(), False),
        StructField(GEOMETRY, BinaryType(), False),
        StructField(HEIGHT, DoubleType(), True),
        StructField(FLOORS, DoubleType(), True),
        StructField(BUILDING_TYPE, StringType(), True),
    ]
)

# Per-building descriptor columns produced on the executors.
B_AREA, B_PERIMETER = "b_area", "b_perimeter"
COMPACTNESS, ELONGATION, ORIENTATION = "compactness", "elongation", "orientation"
POINT_X, POINT_Y = "__bx", "__by"
DESCRIPTOR_COLUMNS: tuple[str, ...] = (B_AREA, B_PERIMETER, COMPACTNESS, ELONGATION, ORIENTATION, HEIGHT, FLOORS)
DESCRIPTORS_SCHEMA = StructType(
    [StructField(c, DoubleType(), True) for c in DESCRIPTOR_COLUMNS]
    + [StructField(POINT_X, DoubleType(), True), StructField(POINT_Y, DoubleType(), True)]
)

BUILDING_FEATURES_SCHEMA = StructType(
    [
        StructField(REGION_ID, LongType(), False),
        StructField(VECTOR, ArrayType(FloatType(), False), False),
        StructField(HAS_BUILDING, BooleanType(), False),
    ]
)
_AGGREGATE_SCHEMA = StructType(
    [StructField(REGION_ID, LongType(), False), StructField(VECTOR, ArrayType(FloatType(), False), False)]
)


# --------------------------------------------------------------------------------------------
# Per building
# --------------------------------------------------------------------------------------------


def shape_descriptors(geometries: Any) -> dict[str, np.ndarray]:
    """``area``, ``perimeter``, ``compactness``, ``elongation``, ``orientation`` per (multi)polygon.

    Null or empty geometries give 0 everywhere; a degenerate (zero-area) rectangle gives elongation
    and orientation 0.
    """
    geoms = np.asarray(geometries, dtype=object)
    area = np.nan_to_num(shapely.area(geoms).astype(np.float64))
    perimeter = np.nan_to_num(shapely.length(geoms).astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        compactness = np.where(perimeter > 0, 4.0 * math.pi * area / perimeter**2, 0.0)
    elongation, orientation = rectangle_axes(geoms)
    return {"area": area, "perimeter": perimeter, "compactness": compactness,
            "elongation": elongation, "orientation": orientation}


def rectangle_axes(geometries: Any) -> tuple[np.ndarray, np.ndarray]:
    """(elongation, orientation in degrees mod 90) from each geometry's minimum rotated rectangle."""
    geoms = np.asarray(geometries, dtype=object)
    n = len(geoms)
    elongation = np.zeros(n, dtype=np.float64)
    orientation = np.zeros(n, dtype=np.float64)
    if n == 0:
        return elongation, orientation
    usable = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    envelopes = np.full(n, None, dtype=object)
    envelopes[usable] = shapely.oriented_envelope(geoms[usable])
    is_rect = np.zeros(n, dtype=bool)
    is_rect[usable] = shapely.get_type_id(envelopes[usable]) == 3  # Polygon (a line or point when degenerate)
    if not is_rect.any():
        return elongation, orientation
    rings = shapely.get_exterior_ring(envelopes[is_rect])
    coords, index = shapely.get_coordinates(rings, return_index=True)
    starts = np.searchsorted(index, np.arange(len(rings)))
    p0, p1, p2 = coords[starts], coords[starts + 1], coords[starts + 2]
    e1, e2 = p1 - p0, p2 - p1
    l1, l2 = np.hypot(e1[:, 0], e1[:, 1]), np.hypot(e2[:, 0], e2[:, 1])
    longer = np.where((l1 >= l2)[:, None], e1, e2)
    long_side, short_side = np.maximum(l1, l2), np.minimum(l1, l2)
    with np.errstate(divide="ignore", invalid="ignore"):
        elong = np.where(long_side > 0, 1.0 - short_side / long_side, 0.0)
    angle = np.degrees(np.arctan2(longer[:, 1], longer[:, 0]))
    # rounding first folds 89.999999999 (float noise of an axis-aligned rectangle) onto 0
    orient = np.mod(np.round(angle, 9), 90.0)
    elongation[is_rect] = np.clip(elong, 0.0, 1.0)
    orientation[is_rect] = np.where(long_side > 0, orient, 0.0)
    return elongation, orientation


def representative_xy(geometries: Any) -> tuple[np.ndarray, np.ndarray]:
    """The point that places a footprint in a region: its centroid, or — when the centroid falls
    outside the footprint (concave or multi-part shapes) — shapely's ``point_on_surface``.
    NaN for null / empty geometries."""
    geoms = np.asarray(geometries, dtype=object)
    x = np.full(len(geoms), np.nan)
    y = np.full(len(geoms), np.nan)
    usable = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    if not usable.any():
        return x, y
    g = geoms[usable]
    centroid = shapely.centroid(g)
    cx, cy = shapely.get_x(centroid), shapely.get_y(centroid)
    outside = ~shapely.contains_xy(g, cx, cy)
    if outside.any():
        inner = shapely.point_on_surface(g[outside])
        cx[outside], cy[outside] = shapely.get_x(inner), shapely.get_y(inner)
    x[usable], y[usable] = cx, cy
    return x, y


def floors_from_height(height: np.ndarray) -> np.ndarray:
    """Storeys from a height in metres: round(height / 3 m), at least 1; NaN where the height is."""
    height = np.asarray(height, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(height), np.maximum(1.0, np.round(height / FLOOR_HEIGHT_M)), np.nan)


# --------------------------------------------------------------------------------------------
# Per region
# --------------------------------------------------------------------------------------------


def orientation_entropy(orientation: np.ndarray, bins: int) -> float:
    """Shannon entropy of the orientation histogram (``bins`` equal bins over [0, 90)) / ln(bins).

    0 when every building points the same way (or there are fewer than two), 1 when orientations
    are spread evenly over the bins.
    """
    orientation = np.asarray(orientation, dtype=np.float64)
    orientation = orientation[np.isfinite(orientation)]
    if orientation.size < 2 or bins < 2:
        return 0.0
    idx = np.clip(np.floor(np.mod(orientation, 90.0) / (90.0 / bins)).astype(np.int64), 0, bins - 1)
    p = np.bincount(idx, minlength=bins) / orientation.size
    p = p[p > 0]
    return float(np.clip(-(p * np.log(p)).sum() / math.log(bins), 0.0, 1.0))


def region_vector(
    area: np.ndarray,
    compactness: np.ndarray,
    elongation: np.ndarray,
    orientation: np.ndarray,
    height: np.ndarray | None,
    floors: np.ndarray | None,
    region_area_m2: float,
    bins: int,
) -> np.ndarray:
    """The :data:`FEATURE_NAMES` vector (float64) of the buildings of one region.

    ``height`` / ``floors`` hold NaN where unknown; ``None`` (no height data configured) leaves the
    height features at 0. Floors missing where a height is known come from :func:`floors_from_height`.
    """
    out = np.zeros(len(FEATURE_NAMES), dtype=np.float64)
    area = np.asarray(area, dtype=np.float64)
    n = area.size
    if n == 0:
        return out
    region_area = float(region_area_m2) if region_area_m2 and np.isfinite(region_area_m2) else 0.0
    log_area = np.log(np.maximum(area, 1e-12))
    out[0] = n
    out[1] = math.log1p(n)
    out[2] = n / (region_area / 1e6) if region_area > 0 else 0.0
    out[3] = float(np.clip(area.sum() / region_area, 0.0, 1.0)) if region_area > 0 else 0.0
    out[4] = log_area.mean()
    out[5] = np.median(log_area)
    out[6] = np.percentile(log_area, 90)
    out[7] = log_area.std()
    out[8] = np.mean(compactness)
    out[9] = np.mean(elongation)
    out[10] = orientation_entropy(orientation, bins)
    if height is not None:
        height = np.asarray(height, dtype=np.float64)
        known = np.isfinite(height)
        if known.any():
            h = height[known]
            fl = np.full(n, np.nan) if floors is None else np.asarray(floors, dtype=np.float64).copy()
            derived = floors_from_height(height)
            fl = np.where(np.isfinite(fl), fl, derived)
            out[11] = h.mean()
            out[12] = h.max()
            out[13] = h.std()
            usable = known & np.isfinite(fl)
            out[14] = float((area[usable] * fl[usable]).sum() / region_area) if region_area > 0 else 0.0
    return out


def aggregate_sorted(frame: pd.DataFrame, bins: int, has_height: bool) -> pd.DataFrame:
    """region_id, vector (float32) for every region present in ``frame``: descriptor rows with their
    ``region_id`` and the ``area_m2`` of that region (one call handles many regions, vectorised slices)."""
    if frame.empty:
        return pd.DataFrame({REGION_ID: pd.Series([], dtype="int64"), VECTOR: pd.Series([], dtype=object)})
    frame = frame.sort_values(REGION_ID, kind="stable")
    ids = frame[REGION_ID].to_numpy(np.int64)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    region_area = frame[AREA_M2].to_numpy(np.float64)
    columns = {c: frame[c].to_numpy(np.float64, na_value=np.nan) for c in DESCRIPTOR_COLUMNS}
    vectors = []
    for lo, hi in zip(starts, ends):
        vectors.append(region_vector(
            columns[B_AREA][lo:hi], columns[COMPACTNESS][lo:hi], columns[ELONGATION][lo:hi],
            columns[ORIENTATION][lo:hi], columns[HEIGHT][lo:hi] if has_height else None,
            columns[FLOORS][lo:hi] if has_height else None, region_area[lo], bins,
        ).astype(np.float32))
    return pd.DataFrame({REGION_ID: ids[starts], VECTOR: vectors})


# --------------------------------------------------------------------------------------------
# Spark
# --------------------------------------------------------------------------------------------


def building_descriptors(buildings: "DataFrame") -> "DataFrame":
    """Footprints (``geometry`` WKB, ``height``, ``floors``) → :data:`DESCRIPTORS_SCHEMA`, per Arrow batch."""
    g_idx, h_idx, f_idx = 0, 1, 2  # positions in the selection below

    def describe(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            geoms = shapely.from_wkb(batch.column(g_idx).to_numpy(zero_copy_only=False))
            d = shape_descriptors(geoms)
            x, y = representative_xy(geoms)
            columns = [d["area"], d["perimeter"], d["compactness"], d["elongation"], d["orientation"]]
            arrays = [pa.array(c, type=pa.float64()) for c in columns]
            arrays += [batch.column(h_idx).cast(pa.float64()), batch.column(f_idx).cast(pa.float64())]
            bad = ~(np.isfinite(x) & np.isfinite(y))
            arrays += [pa.array(x, mask=bad, type=pa.float64()), pa.array(y, mask=bad, type=pa.float64())]
            yield pa.RecordBatch.from_arrays(arrays, names=DESCRIPTORS_SCHEMA.fieldNames())

    return buildings.select(GEOMETRY, HEIGHT, FLOORS).mapInArrow(describe, DESCRIPTORS_SCHEMA)


def assign_buildings(buildings: "DataFrame", regions: "DataFrame", engine: "SpatialJoinEngine") -> "DataFrame":
    """Descriptors plus ``region_id`` (NULL outside every region) of each footprint's representative point."""
    described = building_descriptors(buildings)
    return engine.assign_points(described, regions.select(REGION_ID, GEOMETRY), POINT_X, POINT_Y,
                                keep_columns=list(DESCRIPTOR_COLUMNS))


def region_building_features(
    buildings: "DataFrame",
    regions: "DataFrame",
    engine: "SpatialJoinEngine",
    bins: int,
    has_height: bool,
    buckets: int | None = None,
) -> "DataFrame":
    """:data:`BUILDING_FEATURES_SCHEMA`: one row per region of ``regions`` (region_id, geometry, area_m2).

    Regions without a building get ``has_building`` False and a zero vector; footprints outside
    every region are left out (count them with :func:`assign_buildings` when needed). The
    aggregation groups by ``region_id`` mod ``buckets`` (default: the session's shuffle
    partitions) and each ``applyInPandas`` call aggregates all regions of its bucket with numpy —
    one Python call per region would cost milliseconds each, more than the work itself.
    """
    from pyspark.sql import functions as F

    assigned = assign_buildings(buildings, regions, engine).where(F.col(REGION_ID).isNotNull())
    areas = regions.select(REGION_ID, F.col(AREA_M2).cast("double").alias(AREA_M2))
    grouped = assigned.join(F.broadcast(areas), REGION_ID, "inner")
    if buckets is None:
        buckets = int(regions.sparkSession.conf.get("spark.sql.shuffle.partitions", "8") or "8")
    bucket = F.pmod(F.col(REGION_ID), F.lit(max(int(buckets), 1)))

    def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
        return aggregate_sorted(frame, bins, has_height)

    per_region = grouped.groupBy(bucket.alias("__bucket")).applyInPandas(aggregate, _AGGREGATE_SCHEMA)
    zeros = F.array_repeat(F.lit(0.0).cast(FloatType()), len(FEATURE_NAMES))
    return regions.select(REGION_ID).join(per_region, REGION_ID, "left").select(
        F.col(REGION_ID).cast(LongType()).alias(REGION_ID),
        F.coalesce(F.col(VECTOR), zeros).alias(VECTOR),
        F.col(VECTOR).isNotNull().alias(HAS_BUILDING),
    )

