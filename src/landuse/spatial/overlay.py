"""Land-use labels: overlay land-use polygons onto regions → per-region class distributions.

Two kinds of land-use input:

* **class polygons** (a class name per polygon, e.g. a land survey mapped to the target classes):
  :func:`class_area_proportions`. For region r and class k, with A_rk the area of r intersected with
  the polygons of class k:

  - share_k = A_rk / Σ_k A_rk (the class mix of the *covered* part; the shares sum to 1 where
    coverage > 0 and are all 0 where coverage = 0);
  - ``coverage`` = Σ_k A_rk / area(r).

  Thesis option ``non_construction_residual=True``: land not mapped as any other class counts as
  non-construction. Shares are then taken of the *region* area, and the residual class gets the
  rest: share_k = A_rk / area(r) for k ≠ residual, share_residual = 1 − Σ_{k≠residual} share_k
  (clipped at 0 against rounding), so every row sums to 1 — an uncovered region is entirely
  non-construction. Polygons labelled with the residual class itself are absorbed by this rule.

* **proportion polygons** (each polygon carries class proportions, e.g. census tracts with
  MapPLUTO land-use shares): :func:`areal_interpolation`, weighting by intersection area:
  share_k = Σ_t a_rt·p_tk / Σ_t a_rt·Σ_k p_tk, with a_rt = area(r ∩ t).
  ``coverage`` = Σ_t a_rt·Σ_k p_tk / area(r): the part of the region covered by polygons that carry
  proportions (a polygon whose proportions are all 0 or missing carries no information).

Exactness: areas are exact GEOS polygon intersections (a land-use polygon lying inside the region
contributes its own area, the same number without the overlay). Land-use polygons are assumed not
to overlap one another (a land-use map is a partition); overlaps would be counted twice.

Where it runs: both functions take an optional ``spark`` session.

* Without one, or when the session resolved the builtin engine: on the driver, vectorised with
  shapely — an STRtree over the land-use polygons gives the intersecting (region, polygon) pairs
  (never all n×m pairs) and GEOS computes the pair intersections in bulk. That is the right tool
  up to ~10^5 polygons (10k regions × 100k land-use polygons takes seconds to tens of seconds on
  one core).
* With a session where Sedona is registered (``landuse.spark.session``): on the executors, in
  Sedona SQL. The land-use polygons (with their per-class weights) are spread over the cluster,
  the regions are broadcast, Sedona's broadcast index join finds the ``ST_Intersects`` pairs and
  each pair's ``ST_Area(ST_Intersection(region, polygon))`` is computed and summed per region
  there; only the n×k per-region sums come back to the driver. JTS and GEOS compute the same
  intersections up to rounding (agreement to ~1e-9 relative; the tests require 1e-6).

Everything after the per-region sums (shares, coverage, the residual class) is the same code for
both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence, TypeGuard

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from landuse.constants import LANDUSE_CLASSES
from landuse.spark.schemas import REGION_ID

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

COVERAGE = "coverage"
LANDUSE_CLASS = "landuse_class"
RESIDUAL_CLASS = "non_construction"


class OverlayError(ValueError):
    """Land-use input that cannot be overlaid (no CRS, unknown classes, bad proportions)."""


def _aligned(regions: gpd.GeoDataFrame, landuse: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """``landuse`` in the regions' CRS (reprojected when they differ; both must be set)."""
    if regions.crs is None or landuse.crs is None:
        which = "regions" if regions.crs is None else "land-use polygons"
        raise OverlayError(f"{which} have no CRS")
    if landuse.crs != regions.crs:
        landuse = landuse.to_crs(regions.crs)
    return landuse


def intersection_areas(
    region_geoms: np.ndarray, landuse_geoms: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(region index, land-use index, intersection area) for every intersecting pair."""
    region_geoms = np.asarray(region_geoms, dtype=object)
    landuse_geoms = np.asarray(landuse_geoms, dtype=object)
    tree = shapely.STRtree(landuse_geoms)
    r, t = tree.query(region_geoms, predicate="intersects")
    areas = np.zeros(len(r), dtype=np.float64)
    if len(r) == 0:
        return r, t, areas
    was_prepared = shapely.is_prepared(region_geoms)
    shapely.prepare(region_geoms)  # in place on the geometry objects; undone below
    try:
        inside = shapely.contains_properly(region_geoms[r], landuse_geoms[t])
    finally:
        shapely.destroy_prepared(region_geoms[~was_prepared])
    areas[inside] = shapely.area(landuse_geoms[t[inside]])
    rest = ~inside
    areas[rest] = shapely.area(shapely.intersection(region_geoms[r[rest]], landuse_geoms[t[rest]]))
    return r, t, areas


def _uses_sedona(spark: "SparkSession | None") -> TypeGuard["SparkSession"]:
    """Whether to overlay in Sedona SQL: a session was given and it resolved the Sedona engine."""
    if spark is None:
        return False
    from landuse.spark.session import session_engine
    from landuse.spatial.engines import ENGINE_SEDONA

    return session_engine(spark) == ENGINE_SEDONA


def sedona_weighted_areas(
    spark: "SparkSession", region_geoms: np.ndarray, polygon_geoms: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """(n regions × j) sums Σ_t area(region ∩ polygon_t)·weights[t, j], computed by Sedona on executors.

    The polygons (with their weight columns) are sliced over the default parallelism (as
    ``createDataFrame`` does with a pandas table), the regions are broadcast (Sedona's broadcast
    index join over ``ST_Intersects``), and each executor sums
    ``ST_Area(ST_Intersection(region, polygon))``·weight per region; only the per-region sums come
    back. Pairs that merely touch add 0, as in :func:`intersection_areas`.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import BinaryType, DoubleType, LongType, StructField, StructType

    n, j = len(region_geoms), weights.shape[1]
    out = np.zeros((n, j), dtype=np.float64)
    if n == 0 or len(polygon_geoms) == 0 or j == 0:
        return out
    weight_names = [f"w{c}" for c in range(j)]
    regions_pd = pd.DataFrame({"ri": np.arange(n, dtype=np.int64), "rg": shapely.to_wkb(region_geoms)})
    polygons_pd = pd.DataFrame({"tg": shapely.to_wkb(polygon_geoms)})
    for c, name in enumerate(weight_names):
        polygons_pd[name] = weights[:, c].astype(np.float64)
    # Null / empty polygons carry no area; Sedona's index cannot hold them.
    polygons_pd = polygons_pd[~(shapely.is_missing(polygon_geoms) | shapely.is_empty(polygon_geoms))]
    regions_schema = StructType([StructField("ri", LongType(), False), StructField("rg", BinaryType(), False)])
    polygons_schema = StructType(
        [StructField("tg", BinaryType(), False)] + [StructField(name, DoubleType(), False) for name in weight_names]
    )
    regions = spark.createDataFrame(regions_pd, regions_schema).select("ri", F.expr("ST_GeomFromWKB(rg)").alias("rg"))
    polygons = spark.createDataFrame(polygons_pd, polygons_schema).select(
        F.expr("ST_GeomFromWKB(tg)").alias("tg"), *weight_names
    )
    pairs = polygons.alias("t").join(F.broadcast(regions).alias("r"), F.expr("ST_Intersects(r.rg, t.tg)"))
    # One intersection per pair, projected before the sums (inlined, it would be computed per weight).
    areas = pairs.select("r.ri", F.expr("ST_Area(ST_Intersection(r.rg, t.tg))").alias("area"), *weight_names)
    sums = areas.groupBy("ri").agg(*[F.sum(F.col("area") * F.col(name)).alias(name) for name in weight_names])
    table: pd.DataFrame = sums.toPandas()  # at most n rows of j doubles
    out[table["ri"].to_numpy(dtype=np.int64)] = table[weight_names].to_numpy(dtype=np.float64)
    return out


def class_area_proportions(
    regions: gpd.GeoDataFrame,
    landuse: gpd.GeoDataFrame,
    class_column: str = LANDUSE_CLASS,
    classes: Sequence[str] = LANDUSE_CLASSES,
    id_column: str = REGION_ID,
    non_construction_residual: bool = False,
    residual_class: str = RESIDUAL_CLASS,
    spark: "SparkSession | None" = None,
) -> pd.DataFrame:
    """Per-region class area shares + ``coverage`` (see the module docstring for the formulas).

    Returns one row per region (``id_column``, one column per entry of ``classes`` in that order,
    ``coverage``), sorted by id. Raises :class:`OverlayError` on class names outside ``classes``.
    With a Sedona ``spark`` session the intersections run on the executors (module docstring).
    """
    classes = list(classes)
    if class_column not in landuse.columns:
        raise OverlayError(f"land-use polygons have no class column {class_column!r}")
    if non_construction_residual and residual_class not in classes:
        raise OverlayError(f"residual class {residual_class!r} is not among the classes {classes}")
    landuse = _aligned(regions, landuse)
    labels = landuse[class_column]
    unknown = sorted({str(v) for v in labels[~labels.isin(classes)].unique()})
    if unknown:
        raise OverlayError(f"land-use class(es) not in {classes}: {', '.join(unknown[:10])}")
    class_index = pd.Categorical(labels, categories=classes).codes.astype(np.int64)

    region_geoms = np.asarray(regions.geometry.values, dtype=object)
    n, k = len(region_geoms), len(classes)
    landuse_geoms = np.asarray(landuse.geometry.values, dtype=object)
    if _uses_sedona(spark):
        one_hot = np.zeros((len(landuse_geoms), k), dtype=np.float64)
        one_hot[np.arange(len(landuse_geoms)), class_index] = 1.0
        by_class = sedona_weighted_areas(spark, region_geoms, landuse_geoms, one_hot)
    else:
        r, t, areas = intersection_areas(region_geoms, landuse_geoms)
        by_class = np.bincount(r * k + class_index[t], weights=areas, minlength=n * k).reshape(n, k)
    region_area = shapely.area(region_geoms)
    covered = by_class.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        coverage = np.where(region_area > 0, covered / region_area, 0.0)
        if non_construction_residual:
            res = classes.index(residual_class)
            shares = np.where(region_area[:, None] > 0, by_class / region_area[:, None], 0.0)
            shares[:, res] = 0.0
            shares[:, res] = np.clip(1.0 - shares.sum(axis=1), 0.0, None)
        else:
            shares = np.where(covered[:, None] > 0, by_class / covered[:, None], 0.0)
    return _table(regions[id_column].to_numpy(), classes, shares, coverage, id_column)


def areal_interpolation(
    regions: gpd.GeoDataFrame,
    polygons: gpd.GeoDataFrame,
    proportion_columns: Sequence[str],
    id_column: str = REGION_ID,
    spark: "SparkSession | None" = None,
) -> pd.DataFrame:
    """Per-region class shares from polygons carrying class proportions, weighted by intersection area.

    Returns one row per region (``id_column``, one column per proportion column, ``coverage``),
    sorted by id; shares sum to 1 where coverage > 0. Missing proportions count as 0; negative
    ones raise :class:`OverlayError`. With a Sedona ``spark`` session the intersections run on
    the executors (module docstring).
    """
    columns = list(proportion_columns)
    missing = [c for c in columns if c not in polygons.columns]
    if missing:
        raise OverlayError(f"land-use polygons lack proportion column(s) {', '.join(missing)}")
    polygons = _aligned(regions, polygons)
    props = polygons[columns].astype(np.float64).fillna(0.0).to_numpy()
    if (props < 0).any():
        raise OverlayError(f"negative land-use proportions in {columns}")

    region_geoms = np.asarray(regions.geometry.values, dtype=object)
    n = len(region_geoms)
    polygon_geoms = np.asarray(polygons.geometry.values, dtype=object)
    if not columns:
        weighted = np.zeros((n, 0))
    elif _uses_sedona(spark):
        weighted = sedona_weighted_areas(spark, region_geoms, polygon_geoms, props)
    else:
        r, t, areas = intersection_areas(region_geoms, polygon_geoms)
        weighted = np.column_stack([np.bincount(r, weights=areas * props[t, j], minlength=n) for j in range(len(columns))])
    total = weighted.sum(axis=1)
    region_area = shapely.area(region_geoms)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.where(total[:, None] > 0, weighted / total[:, None], 0.0)
        coverage = np.where(region_area > 0, total / region_area, 0.0)
    return _table(regions[id_column].to_numpy(), columns, shares, coverage, id_column)


def _table(
    ids: np.ndarray, columns: list[str], shares: np.ndarray, coverage: np.ndarray, id_column: str
) -> pd.DataFrame:
    out = pd.DataFrame(shares, columns=columns)
    out.insert(0, id_column, ids)
    out[COVERAGE] = coverage
    return out.sort_values(id_column, kind="stable").reset_index(drop=True)
