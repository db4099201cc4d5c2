"""Regional units: the canonical regions table and regular grids.

The canonical table has one row per region with the columns of
:data:`landuse.spark.schemas.REGIONS_SCHEMA`: ``region_id`` (int64), ``source_id`` (the source's own
id as text), ``geometry`` (polygonal, in the run's projected CRS), the centroid in that CRS
(``centroid_x``/``centroid_y``, metres), the centroid in WGS84 (``lon``/``lat``) and ``area_m2``.

Regions are few (at most ~10^5 polygons), so they are built with GeoPandas on the driver and only then
handed to Spark (:func:`to_spark`), where geometry travels as WKB.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely

from landuse.constants import CRS_WGS84
from landuse.spark.schemas import (
    AREA_M2,
    CENTROID_X,
    CENTROID_Y,
    GEOMETRY,
    LAT,
    LON,
    REGION_ID,
    REGIONS_SCHEMA,
    SOURCE_ID,
    T_REGIONS,
    check_schema,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

REGION_COLUMNS: tuple[str, ...] = tuple(f.name for f in REGIONS_SCHEMA.fields)
GRID_ROW, GRID_COL = "row", "col"
# id_column value (and on_duplicate_id choice) numbering the regions 0..N-1 in file order
ROW_NUMBER = "row_number"
ON_DUPLICATE_ID: tuple[str, ...] = ("error", ROW_NUMBER)


class RegionsError(ValueError):
    """Region polygons cannot be turned into the canonical table (no CRS, bad ids, empty shapes)."""


def check_projected_crs(crs: str | pyproj.CRS) -> pyproj.CRS:
    """Return ``crs`` as a :class:`pyproj.CRS`, raising unless it is projected with metre units."""
    parsed = pyproj.CRS.from_user_input(crs)
    if not parsed.is_projected:
        raise RegionsError(f"CRS {crs} is not projected: regions need a projected CRS in metres")
    units = {axis.unit_name for axis in parsed.axis_info}
    if not units <= {"metre", "meter", "m"}:
        raise RegionsError(f"CRS {crs} has axis units {sorted(units)}: regions need metres")
    return parsed


def polygonal(geoms: np.ndarray) -> np.ndarray:
    """Repair invalid geometries with ``make_valid`` and keep only their polygonal parts.

    ``make_valid`` may return a GeometryCollection mixing polygons with the lines or points of a
    collapsed ring; those lower-dimensional leftovers carry no area and are dropped. Multipolygons
    are kept as they are. Geometries with no polygonal part come back empty.
    """
    geoms = np.asarray(geoms, dtype=object)
    out = geoms.copy()
    invalid = ~shapely.is_valid(geoms) & ~shapely.is_missing(geoms)
    if invalid.any():
        out[invalid] = shapely.make_valid(geoms[invalid])
    mixed = np.flatnonzero(
        ~shapely.is_missing(out)
        & ~np.isin(shapely.get_type_id(out), (3, 6))  # 3 Polygon, 6 MultiPolygon
    )
    for i in mixed:
        parts = shapely.get_parts(shapely.get_parts(out[i]))
        polys = [p for p in parts if shapely.get_type_id(p) == 3 and not p.is_empty]
        if not polys:
            out[i] = shapely.Polygon()
        elif len(polys) == 1:
            out[i] = polys[0]
        else:
            out[i] = shapely.MultiPolygon(polys)
    return out


def _region_ids(source: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(region_id int64, source_id str): the source id when integer-like, else a dense rank.

    Integer-like means an integer dtype, floats with integral values, or strings that are the
    canonical decimal text of an integer (``"12"`` yes, ``"012"`` no: it would not round-trip).
    The dense rank (0-based) is taken over the source ids sorted as text.
    """
    values = source.to_numpy()
    if pd.api.types.is_integer_dtype(source.dtype):
        ids = values.astype(np.int64)
        return ids, np.array([str(v) for v in ids], dtype=object)
    if pd.api.types.is_float_dtype(source.dtype):
        if np.all(np.isfinite(values)) and np.all(values == np.round(values)) and np.all(np.abs(values) < 2**62):
            ids = values.astype(np.int64)
            return ids, np.array([str(v) for v in ids], dtype=object)
        text = np.array([repr(float(v)) for v in values], dtype=object)
    else:
        text = np.array([str(v) for v in values], dtype=object)
        try:
            parsed = [int(t) for t in text]
        except ValueError:
            parsed = None
        if parsed is not None and all(str(p) == t for p, t in zip(parsed, text)) and all(
            abs(p) < 2**62 for p in parsed
        ):
            return np.array(parsed, dtype=np.int64), text
    uniques = np.array(sorted(set(text)), dtype=object)
    ids = np.searchsorted(uniques, text).astype(np.int64)
    return ids, text


def source_id_text(values: pd.Series) -> np.ndarray:
    """The source's own ids as text, as ``source_id`` stores them (integral floats without ``.0``)."""
    if pd.api.types.is_float_dtype(values.dtype) and np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        return np.array([str(int(v)) for v in values], dtype=object)
    return np.array([str(v) for v in values.to_numpy()], dtype=object)


def duplicate_id_message(id_column: str, source_ids: Sequence[str] | np.ndarray, region_ids: np.ndarray | None = None) -> str:
    """One line naming the duplicated ids of ``id_column`` and how to number the rows instead."""
    keys = pd.Series(region_ids if region_ids is not None else source_ids)
    dup = pd.Series(list(source_ids))[keys.duplicated(keep=False).to_numpy()]
    shown = ", ".join(map(repr, dup.unique()[:5].tolist()))
    return (f"id column {id_column!r} has duplicate ids ({int(dup.nunique())} repeated, e.g. {shown}); set "
            f"inputs.regions.options.on_duplicate_id: row_number to number the regions 0..N-1 in file order "
            f"(source_id keeps the {id_column!r} values), or id_column: row_number")


def regions_from_geodataframe(
    gdf: gpd.GeoDataFrame, id_column: str | None, crs: str, *, on_duplicate_id: str = "error"
) -> gpd.GeoDataFrame:
    """Build the canonical regions table from polygons in any CRS.

    ``gdf`` must carry a CRS and an id column with unique, non-null values. Geometries are
    reprojected to the projected ``crs``, repaired with ``make_valid`` (multipolygons kept),
    and sorted by ``region_id``. Raises :class:`RegionsError` naming the problem otherwise.
    The result is a GeoDataFrame with the columns of ``REGIONS_SCHEMA`` (geometry as shapely
    objects; :func:`to_spark` turns it into WKB).

    ``id_column`` None or :data:`ROW_NUMBER` numbers the regions 0..N-1 in row (file) order, with
    ``source_id`` the same number as text. ``on_duplicate_id="row_number"`` does the same when the id
    column repeats a value (e.g. names), keeping each row's own value as ``source_id``.
    """
    if on_duplicate_id not in ON_DUPLICATE_ID:
        raise RegionsError(f"on_duplicate_id: {on_duplicate_id!r} is not one of {', '.join(ON_DUPLICATE_ID)}")
    target = check_projected_crs(crs)
    if gdf.crs is None:
        raise RegionsError("region polygons have no CRS: set one on the input (e.g. a .prj / GeoPackage SRS)")
    if id_column is None or id_column == ROW_NUMBER:
        region_ids = np.arange(len(gdf), dtype=np.int64)
        source_ids = np.array([str(i) for i in region_ids], dtype=object)
    else:
        if id_column not in gdf.columns:
            columns = ", ".join(map(str, gdf.columns))
            raise RegionsError(f"region polygons have no id column {id_column!r} (columns: {columns}); "
                               "id_column: row_number numbers them 0..N-1 in file order")
        source = gdf[id_column]
        if source.isna().any():
            raise RegionsError(f"id column {id_column!r} has {int(source.isna().sum())} null value(s); "
                               "id_column: row_number numbers the regions 0..N-1 in file order instead")
        region_ids, source_ids = _region_ids(source)
        if len(np.unique(region_ids)) != len(region_ids):
            if on_duplicate_id == "error":
                raise RegionsError(duplicate_id_message(id_column, source_ids, region_ids))
            region_ids = np.arange(len(gdf), dtype=np.int64)
            source_ids = source_id_text(source)

    geoms = polygonal(gdf.geometry.to_crs(target).values)
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if empty.any():
        bad = source_ids[empty][:5]
        raise RegionsError(f"{int(empty.sum())} region(s) have no polygonal geometry, e.g. ids {', '.join(bad)}")

    centroids = shapely.centroid(geoms)
    cx, cy = shapely.get_x(centroids), shapely.get_y(centroids)
    to_wgs84 = pyproj.Transformer.from_crs(target, CRS_WGS84, always_xy=True)
    lon, lat = to_wgs84.transform(cx, cy)
    table = gpd.GeoDataFrame(
        {
            REGION_ID: region_ids,
            SOURCE_ID: source_ids,
            GEOMETRY: geoms,
            CENTROID_X: cx,
            CENTROID_Y: cy,
            LON: np.asarray(lon, dtype=float),
            LAT: np.asarray(lat, dtype=float),
            AREA_M2: shapely.area(geoms),
        },
        geometry=GEOMETRY,
        crs=target,
    )
    return table.sort_values(REGION_ID, kind="stable").reset_index(drop=True)


def grid_regions(extent_xy: Sequence[float], cell_size_m: float, crs: str) -> gpd.GeoDataFrame:
    """A regular grid of square cells covering ``extent_xy = (xmin, ymin, xmax, ymax)`` in ``crs``.

    Cells start at (xmin, ymin) and cover the extent (the last row/column may overhang it).
    Ids are row-major: ``region_id = row * n_cols + col`` with row 0 the southernmost row and
    col 0 the westernmost column. Neighbouring cells share exactly the same corner coordinates,
    so their common edges are exact (queen adjacency sees them).
    """
    check_projected_crs(crs)
    xmin, ymin, xmax, ymax = (float(v) for v in extent_xy)
    if not (cell_size_m > 0 and xmax > xmin and ymax > ymin):
        raise RegionsError(f"grid needs cell_size_m > 0 and a non-empty extent, got {extent_xy}, {cell_size_m}")
    n_cols = max(1, math.ceil((xmax - xmin) / cell_size_m - 1e-9))
    n_rows = max(1, math.ceil((ymax - ymin) / cell_size_m - 1e-9))
    xs = xmin + np.arange(n_cols + 1) * cell_size_m
    ys = ymin + np.arange(n_rows + 1) * cell_size_m
    rows, cols = np.divmod(np.arange(n_rows * n_cols, dtype=np.int64), n_cols)
    cells = shapely.box(xs[cols], ys[rows], xs[cols + 1], ys[rows + 1], ccw=True)
    return gpd.GeoDataFrame(
        {REGION_ID: rows * n_cols + cols, GRID_ROW: rows, GRID_COL: cols, GEOMETRY: cells},
        geometry=GEOMETRY,
        crs=crs,
    )


def voronoi_regions(seeds_xy: np.ndarray, extent_xy: Sequence[float], crs: str) -> gpd.GeoDataFrame:
    """Voronoi cells of ``seeds_xy`` (n×2, projected) clipped to ``extent_xy``; ``region_id`` = seed index.

    The usual way to make regions around point facilities (bike docks, towers). Seeds must be
    distinct and inside the extent. Neighbouring cells share their edges exactly (GEOS builds them
    from one diagram), so they are queen-adjacent.
    """
    check_projected_crs(crs)
    seeds = np.asarray(seeds_xy, dtype=np.float64)
    if seeds.ndim != 2 or seeds.shape[1] != 2 or len(seeds) == 0:
        raise RegionsError("seeds_xy must be a non-empty n×2 array")
    if len(np.unique(seeds, axis=0)) != len(seeds):
        raise RegionsError("seeds_xy has duplicate points")
    xmin, ymin, xmax, ymax = (float(v) for v in extent_xy)
    extent = shapely.box(xmin, ymin, xmax, ymax)
    if not shapely.contains_xy(extent, seeds[:, 0], seeds[:, 1]).all():
        raise RegionsError("all seeds must lie strictly inside extent_xy")
    diagram = shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=extent, ordered=True)
    cells = shapely.intersection(np.asarray(shapely.get_parts(diagram), dtype=object), extent)
    return gpd.GeoDataFrame(
        {REGION_ID: np.arange(len(seeds), dtype=np.int64), GEOMETRY: cells}, geometry=GEOMETRY, crs=crs
    )


def to_spark(spark: "SparkSession", table: gpd.GeoDataFrame) -> "DataFrame":
    """The canonical regions table as a Spark DataFrame matching ``REGIONS_SCHEMA`` (WKB geometry)."""
    missing = [c for c in REGION_COLUMNS if c not in table.columns]
    if missing:
        raise RegionsError(f"table {T_REGIONS}: missing column(s) {', '.join(missing)}")
    pdf = pd.DataFrame({c: table[c].to_numpy() for c in REGION_COLUMNS})
    pdf[GEOMETRY] = list(shapely.to_wkb(np.asarray(table[GEOMETRY].values, dtype=object)))
    pdf[REGION_ID] = pdf[REGION_ID].astype(np.int64)
    pdf[SOURCE_ID] = pdf[SOURCE_ID].astype(str)
    df = spark.createDataFrame(pdf, schema=REGIONS_SCHEMA)
    check_schema(df, REGIONS_SCHEMA, T_REGIONS)
    return df


def from_spark(df: "DataFrame", crs: str) -> gpd.GeoDataFrame:
    """Collect a (small) regions DataFrame back into a GeoDataFrame in ``crs`` (geometry from WKB)."""
    check_schema(df, REGIONS_SCHEMA, T_REGIONS)
    pdf: pd.DataFrame = df.select(*REGION_COLUMNS).toPandas()
    geoms = shapely.from_wkb(pdf[GEOMETRY].map(bytes).to_numpy())
    pdf[GEOMETRY] = geoms
    table = gpd.GeoDataFrame(pdf, geometry=GEOMETRY, crs=crs)
    return table.sort_values(REGION_ID, kind="stable").reset_index(drop=True)
