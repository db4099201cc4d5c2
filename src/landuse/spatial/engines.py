"""Spatial-join engines: assign points to regions, behind one interface.

Boundary rule (identical in every engine, and in the GeoPandas reference used by the tests and the
benchmark): a point belongs to a region when it *intersects* the region's closed polygon — its
interior or its boundary. A point on a shared edge, on a vertex shared by several regions, or in
the overlap of overlapping polygons goes to the **smallest** ``region_id`` among them. A point in no
region, or with a null / NaN / infinite coordinate, keeps its row with a NULL region: rows are never
dropped.

Points carry *projected* x/y in the regions' CRS. :func:`project_points` derives them from lon/lat
once, inside ``mapInArrow`` with pyproj (``always_xy=True``), so every engine sees bit-identical
coordinates.

Engines:

* :class:`BuiltinJoinEngine` — the regions (small) are collected once and turned into a
  :class:`~landuse.spatial.pointindex.RegionPointIndex` (a lookup grid over a shapely STRtree),
  which is broadcast once; each Python worker loads it on first use and keeps it for later tasks,
  and assigns whole Arrow batches inside ``mapInArrow`` with numpy — no per-row Python loop.
* :class:`SedonaJoinEngine` — Sedona SQL as a left outer join with the regions broadcast (Sedona's
  ``BroadcastIndexJoin``: an R-tree over the regions, probed by each point where it lies). The
  smallest-id rule is part of the join condition, so each point matches at most one region and
  the point rows are never shuffled or grouped. Each region r carries, precomputed once on the
  driver (:func:`tie_pieces`), a collection ``ties`` that covers exactly the part of r lying in
  regions of smaller id: the boundary edges of smaller-id neighbours that touch r (with their
  original vertices), or the whole neighbour where regions overlap. The condition is
  ``ST_Intersects(region, p) AND (ties IS NULL OR NOT ST_Intersects(ties, p))``: a p in regions
  s < r meets r's ties, so only the smallest-id region containing p is kept. Points with a null,
  NaN or infinite coordinate get a NULL point (JTS would place a NaN point inside a polygon) and
  match nothing. Every test is exact (JTS and GEOS decide point-in-polygon and point-on-segment
  with robust orientation tests on the same doubles), so both engines assign identically.

:func:`make_engine` picks the engine resolved for the session (``landuse.spark.session``).
"""

from __future__ import annotations

import abc
import uuid
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StructField, StructType

from landuse.constants import CRS_WGS84
from landuse.spark.schemas import GEOMETRY, REGION_ID
from landuse.spark.session import session_engine

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

    from landuse.spatial.pointindex import RegionPointIndex

ENGINE_BUILTIN = "builtin"
ENGINE_SEDONA = "sedona"

# Per-Python-worker caches: workers are reused across tasks, so a broadcast index is unpickled (and
# a pyproj transformer created) once per worker, not once per task or batch.
_INDEX_CACHE: dict[str, "RegionPointIndex"] = {}
_INDEX_CACHE_SIZE = 4  # region sets kept per worker (bounded memory)
_TRANSFORMER_CACHE: dict[tuple[str, str], Any] = {}


class SpatialJoinError(ValueError):
    """Bad arguments to a spatial join (missing columns, a clashing output column)."""


def _require_columns(df: "DataFrame", columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SpatialJoinError(f"{what}: missing column(s) {', '.join(missing)} (has: {', '.join(df.columns)})")


def _with_field(schema: StructType, name: str, data_type: Any) -> StructType:
    if name in schema.fieldNames():
        raise SpatialJoinError(f"output column {name!r} already exists in the input")
    return StructType(list(schema.fields) + [StructField(name, data_type, True)])


def _quoted(name: str) -> Any:
    return F.col(f"`{name}`")


class SpatialJoinEngine(abc.ABC):
    """Assigns points to regions under the module's boundary rule."""

    name: str

    @abc.abstractmethod
    def assign_points(
        self,
        points: "DataFrame",
        regions: "DataFrame",
        x_col: str,
        y_col: str,
        out_col: str = REGION_ID,
        keep_columns: Sequence[str] | None = None,
    ) -> "DataFrame":
        """``points`` plus ``out_col`` (long, NULL where in no region); one output row per input row.

        ``regions`` has ``region_id`` (long) and ``geometry`` (WKB in the same projected CRS as the
        points' ``x_col``/``y_col``), e.g. the canonical regions table. ``keep_columns`` limits
        the carried-through input columns (default: all, in order); carrying fewer saves moving
        them through the join (e.g. ``[]`` when only the region per point is needed).
        """

    @staticmethod
    def _output_columns(
        points: "DataFrame", regions: "DataFrame", x_col: str, y_col: str, out_col: str,
        keep_columns: Sequence[str] | None,
    ) -> tuple[list[str], list[str]]:
        """Validate the arguments; return (columns to carry through, those plus the coordinates)."""
        keep = list(points.columns) if keep_columns is None else list(keep_columns)
        _require_columns(points, [x_col, y_col, *keep], "points")
        _require_columns(regions, [REGION_ID, GEOMETRY], "regions")
        if len(set(keep)) != len(keep):
            raise SpatialJoinError(f"keep_columns has duplicates: {keep}")
        if out_col in keep:
            raise SpatialJoinError(f"output column {out_col!r} already exists in the input")
        return keep, keep + [c for c in dict.fromkeys([x_col, y_col]) if c not in keep]


class BuiltinJoinEngine(SpatialJoinEngine):
    """Region index built on the driver and broadcast once; Arrow batches assigned in ``mapInArrow``.

    ``cells_per_region`` / ``max_cells`` size the lookup grid (see
    :class:`~landuse.spatial.pointindex.RegionPointIndex`); they trade worker memory and index build
    time against the share of points that need an exact GEOS test.
    """

    name = ENGINE_BUILTIN

    def __init__(self, cells_per_region: int = 800, max_cells: int = 2**24) -> None:
        self.cells_per_region = cells_per_region
        self.max_cells = max_cells
        # The last regions DataFrame seen → its broadcast index: assigning origins and then
        # destinations against the same regions builds and broadcasts the index once.
        self._last: tuple["DataFrame", Any, str] | None = None

    def assign_points(
        self,
        points: "DataFrame",
        regions: "DataFrame",
        x_col: str,
        y_col: str,
        out_col: str = REGION_ID,
        keep_columns: Sequence[str] | None = None,
    ) -> "DataFrame":
        keep, inputs = self._output_columns(points, regions, x_col, y_col, out_col, keep_columns)
        if inputs != points.columns:
            points = points.select(*[_quoted(c) for c in inputs])
        out_schema = StructType([points.schema[c] for c in keep] + [StructField(out_col, LongType(), True)])
        broadcast, key = self.broadcast_index(regions)
        x_idx, y_idx = inputs.index(x_col), inputs.index(y_col)
        n_keep = len(keep)
        out_names = keep + [out_col]

        def assign_batches(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            index = _cached_index(key, broadcast)
            for batch in batches:
                x = _as_float64(batch.column(x_idx))
                y = _as_float64(batch.column(y_idx))
                region, found = index.lookup(x, y)
                column = pa.array(region, type=pa.int64(), mask=~found)
                yield pa.RecordBatch.from_arrays(batch.columns[:n_keep] + [column], names=out_names)

        return points.mapInArrow(assign_batches, out_schema)

    def broadcast_index(self, regions: "DataFrame") -> tuple[Any, str]:
        """(broadcast index, cache key) for ``regions``, built on the driver once per DataFrame.

        Each Python worker unpickles the index (rebuilding only the STRtree) the first time it
        meets the key, then keeps it for later tasks and batches.
        """
        if self._last is not None and self._last[0] is regions:
            return self._last[1], self._last[2]
        index = self.build_index(regions)
        broadcast = regions.sparkSession.sparkContext.broadcast(index)
        key = uuid.uuid4().hex
        self._last = (regions, broadcast, key)
        return broadcast, key

    def build_index(self, regions: "DataFrame") -> "RegionPointIndex":
        """The point index of a regions DataFrame (collected: regions are small, <= ~1e5 polygons)."""
        from landuse.spatial.pointindex import RegionPointIndex

        table: pd.DataFrame = regions.select(REGION_ID, GEOMETRY).toPandas()  # Arrow: far faster than collect()
        wkb = [bytes(g) for g in table[GEOMETRY]]
        ids = table[REGION_ID].to_numpy(dtype=np.int64)
        return RegionPointIndex.from_wkb(ids, wkb, cells_per_region=self.cells_per_region, max_cells=self.max_cells)


def _cached_index(key: str, broadcast: Any) -> "RegionPointIndex":
    """The worker's copy of the broadcast index, loaded on first use."""
    index = _INDEX_CACHE.pop(key, None)
    if index is None:
        index = broadcast.value
    _INDEX_CACHE[key] = index  # (re)inserted last: the dict doubles as an LRU list
    while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
        del _INDEX_CACHE[next(iter(_INDEX_CACHE))]
    return index


def _as_float64(column: pa.Array) -> np.ndarray:
    """float64 numpy view of an Arrow column, NaN where null."""
    if column.type != pa.float64():
        column = column.cast(pa.float64())
    return column.to_numpy(zero_copy_only=False)


class SedonaJoinEngine(SpatialJoinEngine):
    """Sedona SQL broadcast index join that yields at most one region per point: no row id, no shuffle.

    The regions (small) are collected once and each gets its :func:`tie_pieces` — where it meets
    regions of smaller id — computed with shapely on the driver. The join condition is

        ST_Intersects(region, p) AND (ties IS NULL OR NOT ST_Intersects(ties, p))

    so of the regions containing p only the smallest-id one survives. The regions side is
    broadcast, so Sedona plans ``BroadcastIndexJoin`` (R-tree over the regions, ``LeftOuter``, the
    second test as its extra condition, run only for the region that matched): the point rows
    stream through in their own partitions and are never exchanged or aggregated. Points with a
    null or non-finite coordinate are given a NULL geometry (JTS would treat a NaN point as inside
    a polygon) and so match nothing.
    Needs Sedona's SQL functions registered on the session (``build_session`` does it).
    """

    name = ENGINE_SEDONA
    _REGION_ID = "__landuse_region_id"
    _REGION_GEOM = "__landuse_region_geom"
    _TIES = "__landuse_region_ties"  # where the region meets regions of smaller id (tie_pieces)

    def __init__(self) -> None:
        # The last regions DataFrame seen → its broadcast side (see BuiltinJoinEngine._last).
        self._last: tuple["DataFrame", "DataFrame"] | None = None

    def assign_points(
        self,
        points: "DataFrame",
        regions: "DataFrame",
        x_col: str,
        y_col: str,
        out_col: str = REGION_ID,
        keep_columns: Sequence[str] | None = None,
    ) -> "DataFrame":
        keep, inputs = self._output_columns(points, regions, x_col, y_col, out_col, keep_columns)
        if inputs != points.columns:
            points = points.select(*[_quoted(c) for c in inputs])
        x, y = f"CAST(p.`{x_col}` AS DOUBLE)", f"CAST(p.`{y_col}` AS DOUBLE)"
        # NaN compares greater than every double (infinity included) in Spark SQL, so one range
        # test per coordinate rejects NaN and ±inf; NULL fails it too (CASE gives NULL).
        finite = f"abs({x}) < double('Infinity') AND abs({y}) < double('Infinity')"
        point = f"CASE WHEN {finite} THEN ST_Point({x}, {y}) END"
        condition = F.expr(
            f"ST_Intersects(r.{self._REGION_GEOM}, {point}) AND "
            f"(r.{self._TIES} IS NULL OR NOT ST_Intersects(r.{self._TIES}, {point}))"
        )
        joined = points.alias("p").join(F.broadcast(self.region_side(regions)).alias("r"), condition, "left")
        return joined.select(
            *[F.col(f"p.`{c}`").alias(c) for c in keep],
            F.col(f"r.{self._REGION_ID}").cast(LongType()).alias(out_col),
        )

    def region_side(self, regions: "DataFrame") -> "DataFrame":
        """The broadcast side: region id, geometry and :func:`tie_pieces` (built once per DataFrame)."""
        if self._last is not None and self._last[0] is regions:
            return self._last[1]
        import pandas as pd
        from pyspark.sql.types import BinaryType

        table: pd.DataFrame = regions.select(REGION_ID, GEOMETRY).toPandas()  # small: <= ~1e5 polygons
        wkb = [bytes(g) for g in table[GEOMETRY]]
        ids = table[REGION_ID].to_numpy(dtype=np.int64)
        frame = pd.DataFrame({self._REGION_ID: ids, "wkb": wkb, "ties": tie_pieces(ids, wkb)})
        schema = StructType(
            [
                StructField(self._REGION_ID, LongType(), False),
                StructField("wkb", BinaryType(), False),
                StructField("ties", BinaryType(), True),
            ]
        )
        side = regions.sparkSession.createDataFrame(frame, schema).select(
            self._REGION_ID,
            F.expr("ST_GeomFromWKB(wkb)").alias(self._REGION_GEOM),
            F.expr("ST_GeomFromWKB(ties)").alias(self._TIES),
        )
        self._last = (regions, side)
        return side


def tie_pieces(ids: np.ndarray, wkb: Sequence[bytes]) -> list[bytes | None]:
    """Per region r: WKB of a GeometryCollection holding, exactly, where r meets a smaller-id region.

    For each region s with a smaller id (or, among rows sharing an id, an earlier row) that
    intersects r:

    * when r and s only touch (interiors disjoint, the usual case in a partition), r ∩ s lies on
      s's boundary, so the pieces are s's own boundary edges that can reach r (those whose bounding
      box meets r's), each as a two-point LineString with s's original vertices;
    * otherwise (overlapping regions) the piece is s itself.

    A point p of r lies in some such s exactly when it intersects a piece: on a piece edge means on
    s's boundary; and a p of r on s's boundary lies on an edge of s whose box contains p, hence
    meets r's box. The coordinates are the regions' own, unchanged, and JTS decides "on a segment"
    and "in a polygon" with the same exact orientation test. Regions that meet no smaller one get
    ``None``. Edges carry only a few coordinates each, so the per-point test stays cheap even for
    detailed polygons (the whole neighbour is only carried where regions overlap).
    """
    import shapely

    n = len(ids)
    geoms = shapely.from_wkb(np.asarray(wkb, dtype=object))
    out: list[bytes | None] = [None] * n
    if n == 0:
        return out
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    smaller = (ids[right] < ids[left]) | ((ids[right] == ids[left]) & (right < left))
    left, right = left[smaller], right[smaller]
    # GEOS decides touches with exact predicates (RelateNG); a false "no" only costs speed.
    touching = shapely.touches(geoms[left], geoms[right])
    bounds = shapely.bounds(geoms)

    # Every boundary edge of every region, grouped by region: (start, end) points, owner.
    parts, part_owner = shapely.get_parts(geoms, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
    same_ring = coord_ring[1:] == coord_ring[:-1]
    start, end = coords[:-1][same_ring], coords[1:][same_ring]
    edge_owner = part_owner[ring_part[coord_ring[:-1][same_ring]]]
    keep = (start != end).any(axis=1)  # a zero-length edge adds nothing its neighbours don't
    order = np.argsort(edge_owner[keep], kind="stable")
    start, end, edge_owner = start[keep][order], end[keep][order], edge_owner[keep][order]
    first = np.searchsorted(edge_owner, np.arange(n))
    count = np.searchsorted(edge_owner, np.arange(n), side="right") - first

    # Edges of s for each touching pair (r, s), kept where the edge's box meets r's box.
    pair_r, pair_s = left[touching], right[touching]
    per_pair = count[pair_s]
    owner_r = np.repeat(pair_r, per_pair)
    offsets = np.arange(per_pair.sum()) - np.repeat(np.cumsum(per_pair) - per_pair, per_pair)
    edge = np.repeat(first[pair_s], per_pair) + offsets
    a, b, box = start[edge], end[edge], bounds[owner_r]
    meets = (
        (np.minimum(a[:, 0], b[:, 0]) <= box[:, 2]) & (np.maximum(a[:, 0], b[:, 0]) >= box[:, 0])
        & (np.minimum(a[:, 1], b[:, 1]) <= box[:, 3]) & (np.maximum(a[:, 1], b[:, 1]) >= box[:, 1])
    )
    edges = shapely.linestrings(np.stack([a[meets], b[meets]], axis=1))

    pieces = np.concatenate([edges, geoms[right[~touching]]])
    owner = np.concatenate([owner_r[meets], left[~touching]])
    order = np.argsort(owner, kind="stable")
    collections = np.empty(n, dtype=object)
    if len(pieces):
        shapely.geometrycollections(pieces[order], indices=owner[order], out=collections)
    return [None if g is None else shapely.to_wkb(g) for g in collections]


def make_engine(spark: "SparkSession", **builtin_options: int) -> SpatialJoinEngine:
    """The engine resolved for this session: Sedona when registered, the builtin engine otherwise."""
    if session_engine(spark) == ENGINE_SEDONA:
        return SedonaJoinEngine()
    return BuiltinJoinEngine(**builtin_options)


# ---------------------------------------------------------------------------------------------
# Coordinates and distinct locations
# ---------------------------------------------------------------------------------------------


def project_points(
    df: "DataFrame",
    lon_col: str,
    lat_col: str,
    crs: str,
    x_col: str,
    y_col: str,
    src_crs: str = CRS_WGS84,
) -> "DataFrame":
    """``df`` plus ``x_col``/``y_col`` (double): lon/lat in ``src_crs`` projected to ``crs``.

    Runs pyproj (``always_xy=True``, so input is lon, lat order) on whole Arrow batches in
    ``mapInArrow``; the transformer is cached per worker. Null or non-finite input, and points
    pyproj cannot project, give NULL x/y.
    """
    _require_columns(df, [lon_col, lat_col], "points")
    schema = _with_field(_with_field(df.schema, x_col, DoubleType()), y_col, DoubleType())
    names = df.columns
    lon_idx, lat_idx = names.index(lon_col), names.index(lat_col)
    key = (str(src_crs), str(crs))

    def project_batches(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        transformer = _cached_transformer(key)
        for batch in batches:
            lon = _as_float64(batch.column(lon_idx))
            lat = _as_float64(batch.column(lat_idx))
            x, y = transformer.transform(lon, lat)
            x = np.asarray(x, dtype=np.float64)
            y = np.asarray(y, dtype=np.float64)
            bad = ~(np.isfinite(x) & np.isfinite(y))
            yield pa.RecordBatch.from_arrays(
                batch.columns + [pa.array(x, mask=bad), pa.array(y, mask=bad)],
                names=names + [x_col, y_col],
            )

    return df.mapInArrow(project_batches, schema)


def _cached_transformer(key: tuple[str, str]) -> Any:
    transformer = _TRANSFORMER_CACHE.get(key)
    if transformer is None:
        import pyproj

        transformer = pyproj.Transformer.from_crs(key[0], key[1], always_xy=True)
        _TRANSFORMER_CACHE[key] = transformer
    return transformer


def assign_lonlat(
    engine: SpatialJoinEngine,
    points: "DataFrame",
    regions: "DataFrame",
    lon_col: str,
    lat_col: str,
    crs: str,
    out_col: str = REGION_ID,
    src_crs: str = CRS_WGS84,
    keep_columns: Sequence[str] | None = None,
) -> "DataFrame":
    """Assign lon/lat points: :func:`project_points` then ``engine.assign_points``.

    Returns ``points``' columns (or ``keep_columns``) plus ``out_col``; the projected coordinates
    are internal.
    """
    keep = list(points.columns) if keep_columns is None else list(keep_columns)
    x_col, y_col = f"__{out_col}_x", f"__{out_col}_y"
    projected = project_points(points, lon_col, lat_col, crs, x_col, y_col, src_crs=src_crs)
    return engine.assign_points(projected, regions, x_col, y_col, out_col, keep_columns=keep)


def assign_distinct_locations(
    engine: SpatialJoinEngine,
    locations: "DataFrame",
    regions: "DataFrame",
    key_col: str,
    lon_col: str,
    lat_col: str,
    crs: str,
    out_col: str = REGION_ID,
    src_crs: str = CRS_WGS84,
) -> "DataFrame":
    """``(key_col, out_col)``: each distinct location key assigned once, for equi-joining back.

    Trips that reference stations, towers or zones repeat the same few thousand locations millions
    of times; assigning the distinct keys and joining the (small) result back on the key avoids
    running the spatial join per trip. A key seen with several coordinates (a moved station) is
    placed at its smallest non-null (lon, lat), so the result is deterministic. Keys whose
    location is in no region, or unknown, get NULL.
    """
    _require_columns(locations, [key_col, lon_col, lat_col], "locations")
    # Rows with a null coordinate sort last (False < True), so they are used only when a key has
    # no usable coordinates at all (it then gets NULL).
    first = F.min(
        F.struct(
            (F.col(lon_col).isNull() | F.col(lat_col).isNull()).alias("missing"),
            F.col(lon_col).alias("lon"),
            F.col(lat_col).alias("lat"),
        )
    ).alias("__loc")
    distinct = (
        locations.where(F.col(key_col).isNotNull())
        .groupBy(key_col)
        .agg(first)
        .select(key_col, F.col("__loc.lon").alias(lon_col), F.col("__loc.lat").alias(lat_col))
    )
    return assign_lonlat(engine, distinct, regions, lon_col, lat_col, crs, out_col, src_crs, keep_columns=[key_col])
