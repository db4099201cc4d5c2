"""POI sources: one adapter per POI format, all producing the canonical POI table.

Each :class:`PoiSource` reads CSV / Parquet / GeoParquet / GeoJSON / GeoPackage / shapefile,
locates the point (lon/lat columns, x/y in a CRS, a WKT column, Amap's ``"lon,lat"`` text or the
file's own geometry) and splits the category hierarchy into one token per level (``cat_l1`` ..
``cat_l3``, coarse to fine). Output: ``POIS_SCHEMA`` plus rejects (``REJECTS_SCHEMA``) with reasons
``extra_fields`` (a delimited row with more fields than the header), ``undecodable_text`` (the id,
a category or the ``name`` held bytes invalid in the declared ``encoding``), ``null_coordinates``,
``unparsable_coordinates``, ``coordinates_out_of_range``, ``zero_coordinates``, ``outside_extent``,
``missing_id``, ``missing_category``, ``duplicate_id``.

Options common to every adapter (column names are case-insensitive):
``format`` (auto|csv|parquet|vector), ``sep``, ``encoding``, ``header``, ``columns`` (names when
there is no header), ``id_column``, ``lon_column`` + ``lat_column`` (WGS84 degrees, or coordinates
in ``crs``), ``x_column`` + ``y_column`` (the same, named for projected coordinates, e.g. metres
with ``crs: EPSG:32118``), ``geometry_column`` (WKT), ``crs``, ``category_columns`` (1–3 columns,
coarse to fine). Without coordinate options, columns ``x``/``y`` are used when ``crs`` is set.

Vector files (GeoPackage, GeoJSON, shapefile, GeoParquet) are read on the driver with GeoPandas,
except GeoParquet when the session has Sedona registered: Spark then scans it on the executors
(Sedona's ``geoparquet`` reader; the CRS comes from the file's metadata), so a large POI file never
passes through the driver. Both give the same points: the geometry itself, or a point on the
surface of area / line features.

Ids: the ``id_column`` option, else the adapter's id column (``id``, ``osm_id``, ``ref_no``,
``PLACEID``). A file with neither gets row-number ids ``<file name>:<row>`` (data rows counted
from 0 in file order, stable between runs) and a note in the ingest manifest. Ids must be unique:
every later row repeating an id is rejected as ``duplicate_id`` (the first usable row, in file
order, is kept).
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from landuse.constants import CRS_WGS84
from landuse.ingest import validation as V
from landuse.ingest.coords import check_crs, is_wgs84, to_lonlat
from landuse.ingest.errors import IngestError
from landuse.ingest.files import (
    RawFrame,
    frame_from_dataframe,
    frame_from_pandas,
    input_format,
    list_input_files,
    read_delimited,
    show_names,
)
from landuse.ingest.registry import AdapterRegistry
from landuse.ingest.options import Option, parse_options
from landuse.ingest.quarantine import IngestSummary
from landuse.ingest.validation import Endpoint, LonLatBox
from landuse.spark.schemas import CATEGORY_PREFIX, LAT, LON, POI_ID, POIS_SCHEMA, SOURCE, T_POIS

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from landuse.config import SourceConfig

N_LEVELS = 3
GEOMETRY_WKT = "geometry"  # column holding WKT when a vector file is read on the driver
DUPLICATE_ID = "duplicate_id"  # a later row repeating a POI id (the first usable one is kept)
ROW_NUMBER_IDS = "row_number"  # id_column value: number the rows (file:row) even when an id column exists
NAME_CANDIDATES = ("name",)  # checked for undecodable text too: garbled names mean a wrong encoding option


@dataclass(frozen=True)
class PoiIngestSummary(IngestSummary):
    """:class:`IngestSummary` plus notes for the manifest (e.g. how ids were made)."""

    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.notes:
            out["notes"] = list(self.notes)
        return out


@dataclass(frozen=True)
class PoiIngestResult:
    """Valid POIs (``POIS_SCHEMA``), rejects (``REJECTS_SCHEMA``), the rows as read and every row's reason."""

    pois: "DataFrame"
    rejects: "DataFrame"
    name: str
    path: str
    raw: "DataFrame"  # rows as read (rows in)
    reasons: "DataFrame"  # one column ``reason`` per row read; null = kept
    notes: tuple[str, ...] = ()  # for the manifest, e.g. "poi_id: row_number (...)"

    def summary(self) -> IngestSummary:
        """Row accounting, checked: in = kept + rejected."""
        kept, by_reason = V.tally_reasons(self.reasons)
        return PoiIngestSummary(
            self.name, T_POIS, self.path, self.raw.count(), kept, sum(by_reason.values()), by_reason, self.notes
        ).check()


@dataclass(frozen=True)
class CoordSpec:
    """Where a POI's point is: ``lonlat`` (x, y columns), ``wkt`` (one column) or ``pair`` (``"x,y"`` text)."""

    kind: str
    columns: tuple[str, ...]
    crs: str | None = None  # None: WGS84 lon/lat


COMMON_OPTIONS = (
    Option("format", "choice", "auto", "input format", choices=("auto", "csv", "parquet", "vector")),
    Option("sep", "str", None, "field delimiter of delimited files"),
    Option("encoding", "str", "utf-8", "text encoding"),
    Option("header", "bool", True, "whether delimited files have a header line"),
    Option("columns", "str_list", None, "column names when header is false"),
    Option("id_column", "str", None, "POI id column; row_number: ids <file>:<row> (also when no id column exists)"),
    Option("lon_column", "str", None, "longitude (or x with crs) column"),
    Option("lat_column", "str", None, "latitude (or y with crs) column"),
    Option("x_column", "str", None, "x column in crs (same as lon_column)"),
    Option("y_column", "str", None, "y column in crs (same as lat_column)"),
    Option("geometry_column", "str", None, "WKT point column"),
    Option("crs", "str", None, "CRS of the coordinates when not WGS84 lon/lat"),
    Option("category_columns", "str_list", None, "1-3 category columns, coarse to fine"),
)


class PoiSource(ABC):
    """A POI format. Subclasses set defaults and may override :meth:`categories` / :meth:`point`."""

    adapter: ClassVar[str]
    options: ClassVar[tuple[Option, ...]] = COMMON_OPTIONS
    default_sep: ClassVar[str] = ","
    default_columns: ClassVar[tuple[str, ...] | None] = None  # names for header-less files
    id_candidates: ClassVar[tuple[str, ...]] = ("id",)
    coord_candidates: ClassVar[tuple[CoordSpec, ...]] = (
        CoordSpec("lonlat", ("lon", "lat")),
        CoordSpec("lonlat", ("lng", "lat")),
        CoordSpec("lonlat", ("longitude", "latitude")),
        CoordSpec("wkt", ("geometry",)),
        CoordSpec("wkt", ("wkt",)),
    )
    # x/y columns of projected coordinates: taken when option crs is set and no other point is found
    xy_candidate: ClassVar[tuple[str, str]] = ("x", "y")

    def read(
        self,
        spark: "SparkSession",
        source: "SourceConfig",
        extent: LonLatBox | None = None,
        *,
        name: str | None = None,
    ) -> PoiIngestResult:
        """Read and validate ``source`` (``name`` fills the ``source`` column; default: the adapter)."""
        name = name or self.adapter
        path = Path(source.path)
        where = f"{path}: POI source {name!r} (adapter {self.adapter})"
        opts = parse_options(source.options, self.options, where)
        if opts["crs"] is not None:
            check_crs(opts["crs"], f"{where}: option crs")
        frame, vector_crs = self._load(spark, path, opts)
        coords = self.point(frame, opts, vector_crs is not None)
        if vector_crs is not None and coords == CoordSpec("wkt", (GEOMETRY_WKT,), None):
            # The file's own geometry, as WKT: already WGS84 when read on the driver, in the file's
            # CRS when Spark read it (converted later by _build_pois, like any WKT column with crs).
            coords = CoordSpec("wkt", (GEOMETRY_WKT,), None if is_wgs84(vector_crs) else vector_crs)
        id_col = self._id_column(frame, opts)
        levels = self._levels(frame, opts)
        return _build_pois(frame, id_col, coords, levels, self.converts_gcj02(opts), extent, name)

    # --- hooks -------------------------------------------------------------------------------

    def categories(self, frame: RawFrame, opts: Mapping[str, Any]) -> list["Column"]:
        """Category token columns, coarse to fine (at most three)."""
        raise IngestError(f"{frame.label}: adapter {self.adapter} needs option category_columns")

    def converts_gcj02(self, opts: Mapping[str, Any]) -> bool:
        """Whether coordinates are GCJ-02 (converted to WGS84)."""
        return False

    def point(self, frame: RawFrame, opts: Mapping[str, Any], from_vector: bool) -> CoordSpec:
        """Where the point is: explicit options first, then the file's geometry, then adapter defaults."""
        crs = opts["crs"]
        if (opts["lon_column"] or opts["lat_column"]) and (opts["x_column"] or opts["y_column"]):
            raise IngestError(f"{frame.label}: set lon_column/lat_column or x_column/y_column, not both")
        x_opt, y_opt = (opts["x_column"], opts["y_column"]) if opts["x_column"] or opts["y_column"] else \
            (opts["lon_column"], opts["lat_column"])
        if x_opt or y_opt:
            if not (x_opt and y_opt):
                pair = "x_column and y_column" if opts["x_column"] or opts["y_column"] else "lon_column and lat_column"
                raise IngestError(f"{frame.label}: set both {pair}")
            if opts["x_column"] and crs is None:
                raise IngestError(f"{frame.label}: options x_column/y_column need option crs (the CRS of the "
                                  "coordinates, e.g. EPSG:32118; EPSG:4326 for lon/lat degrees)")
            cols = (frame.require(x_opt, what="column (option x_column/lon_column)"),
                    frame.require(y_opt, what="column (option y_column/lat_column)"))
            return CoordSpec("lonlat", cols, crs)
        if opts["geometry_column"]:
            return CoordSpec("wkt", (frame.require(opts["geometry_column"]),), None if from_vector else crs)
        if from_vector:  # the vector reader already converted the geometry to WGS84 WKT
            return CoordSpec("wkt", (frame.require(GEOMETRY_WKT),), None)
        for cand in self.coord_candidates:
            if all(frame.find(c) for c in cand.columns):
                return CoordSpec(cand.kind, tuple(frame.require(c) for c in cand.columns), crs or cand.crs)
        if crs is not None and all(frame.find(c) for c in self.xy_candidate):
            return CoordSpec("lonlat", tuple(frame.require(c) for c in self.xy_candidate), crs)
        expected = ", ".join("/".join(c.columns) for c in self.coord_candidates)
        raise IngestError(
            f"{frame.label}: no coordinate columns: expected one of {expected}, {'/'.join(self.xy_candidate)} "
            f"with option crs, or options lon_column/lat_column, x_column/y_column (with crs) or geometry_column "
            f"(has: {show_names(frame.columns)})"
        )

    # --- internals ---------------------------------------------------------------------------

    def _load(self, spark: "SparkSession", path: Path, opts: Mapping[str, Any]) -> tuple[RawFrame, str | None]:
        """The rows as read and, for vector input, the CRS of its ``geometry`` WKT column (else None)."""
        fmt = input_format(path, opts["format"])
        if fmt == "parquet" and not _is_geoparquet(path):
            return frame_from_dataframe(spark.read.parquet(str(path)), str(path)), None
        if fmt == "parquet" and _sedona_registered(spark):
            return _geoparquet_frame(spark, path, opts["crs"])
        if fmt in ("parquet", "vector"):
            return _vector_frame(spark, path, opts["crs"]), CRS_WGS84
        sep = opts["sep"] or self.default_sep
        columns = opts["columns"] or self.default_columns
        return read_delimited(spark, path, sep=sep, header=opts["header"], columns=columns, encoding=opts["encoding"]), None

    def _id_column(self, frame: RawFrame, opts: Mapping[str, Any]) -> str | None:
        """The id column, or None: ids are then row numbers (no id column, or ``id_column: row_number``)."""
        if opts["id_column"] == ROW_NUMBER_IDS and frame.find(ROW_NUMBER_IDS) is None:
            return None
        if opts["id_column"]:
            return frame.require(opts["id_column"], what="column (option id_column)")
        return frame.find(*self.id_candidates)

    def _levels(self, frame: RawFrame, opts: Mapping[str, Any]) -> list["Column"]:
        if opts["category_columns"]:
            if len(opts["category_columns"]) > N_LEVELS:
                raise IngestError(f"{frame.label}: option category_columns takes at most {N_LEVELS} columns")
            return [V.clean(frame.col(frame.require(c, what="column (option category_columns)")))
                    for c in opts["category_columns"]]
        return self.categories(frame, opts)


def _is_geoparquet(path: Path) -> bool:
    import pyarrow.parquet as pq

    from landuse.ingest.files import PARQUET_SUFFIXES

    first = list_input_files(path, PARQUET_SUFFIXES)[0]
    try:
        meta = pq.read_schema(first).metadata or {}
    except Exception as exc:
        raise IngestError(f"{first}: unreadable Parquet ({type(exc).__name__})") from None
    return b"geo" in meta


def _sedona_registered(spark: "SparkSession") -> bool:
    """Whether the session resolved the Sedona engine (its SQL functions and GeoParquet reader)."""
    from landuse.spark.session import session_engine
    from landuse.spatial.engines import ENGINE_SEDONA

    return session_engine(spark) == ENGINE_SEDONA


def _geoparquet_frame(spark: "SparkSession", path: Path, crs: str | None) -> tuple[RawFrame, str]:
    """A GeoParquet file scanned by Spark on the executors (Sedona's ``geoparquet`` reader).

    Returns the attributes (as text) plus the point as WKT in the file's CRS (``geometry``), and
    that CRS (from the metadata, or option ``crs``: :func:`~landuse.ingest.polygons.geoparquet_geometry`).
    The point is the geometry itself, or for area / line POIs ``ST_PointOnSurface`` (JTS's interior
    point, the algorithm GEOS's ``representative_point`` ports, as on the driver path). Coordinates
    are written with Java's round-trip double text, so parsing them back is exact.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import UserDefinedType

    from landuse.ingest.polygons import geoparquet_geometry

    column, file_crs = geoparquet_geometry(path, crs=crs)
    df = spark.read.format("geoparquet").load(str(path))
    geom = f"`{column}`"
    point = (
        f"CASE WHEN {geom} IS NULL OR ST_IsEmpty({geom}) THEN NULL "
        f"WHEN ST_GeometryType({geom}) = 'ST_Point' THEN {geom} ELSE ST_PointOnSurface({geom}) END"
    )
    attributes = [f for f in df.schema.fields if f.name not in (column, GEOMETRY_WKT)]
    # Other geometry columns (GeoParquet allows several) become WKT text like every attribute.
    kept = [
        F.expr(f"ST_AsText(`{f.name}`)").alias(f.name) if isinstance(f.dataType, UserDefinedType) else F.col(f"`{f.name}`")
        for f in attributes
    ]
    names = [f.name for f in attributes]
    points = df.select(*kept, F.expr(point).alias("__point"))
    x, y = F.expr("ST_X(__point)").cast("string"), F.expr("ST_Y(__point)").cast("string")
    wkt = F.concat(F.lit("POINT ("), x, F.lit(" "), y, F.lit(")"))  # NULL when the point is
    table = points.select(*[F.col(f"`{n}`") for n in names], wkt.alias(GEOMETRY_WKT))
    return frame_from_dataframe(table, str(path)), file_crs.to_wkt()


def _vector_frame(spark: "SparkSession", path: Path, crs: str | None) -> RawFrame:
    """A vector file read on the driver: attributes as text plus the point as WGS84 WKT (``geometry``)."""
    from landuse.ingest.polygons import read_vector

    gdf = read_vector(path, crs=crs)
    geom = gdf.geometry
    points = geom.geom_type.isin(["Point"]) | geom.isna() | geom.is_empty
    if not points.all():
        # Area or line POIs (e.g. OSM buildings) are represented by a point inside them.
        geom = geom.where(points, geom.representative_point())
    geom = geom.to_crs("EPSG:4326")
    table = gdf.drop(columns=[gdf.geometry.name]).copy()
    table[GEOMETRY_WKT] = [None if g is None or g.is_empty else g.wkt for g in geom]
    return frame_from_pandas(spark, table, label=str(path))


def _split_token(text: "Column", sep: str, index: int) -> "Column":
    """Token ``index`` (0-based) of ``text`` split on regex ``sep``; null when absent or blank."""
    from pyspark.sql import functions as F

    return V.clean(F.element_at(F.split(text, sep), index + 1))


def _row_number_ids(df: "DataFrame") -> tuple["DataFrame", "Column"]:
    """``<file name>:<row>`` ids: data rows counted from 0 in file order (per file of a directory).

    Needs ``__file`` / ``__ord`` (:func:`_with_file_order`). Spark keeps a file's splits in offset
    order across partitions, so within one file ``monotonically_increasing_id`` follows the rows'
    order in the file; the ids do not depend on how the file was split.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy("__file").orderBy("__ord")
    df = df.withColumn("__rownum", F.row_number().over(order) - 1)
    return df, F.concat(F.col("__file"), F.lit(":"), F.col("__rownum").cast("string"))


def _with_file_order(df: "DataFrame", label: str) -> "DataFrame":
    """``__file`` (the file's name) and ``__ord`` (row order within it), computed right over the scan.

    Rows read on the driver (vector files, pandas) carry no file name: they get ``label``'s.
    """
    from pyspark.sql import functions as F

    name = F.regexp_extract(F.input_file_name(), r"([^/]+)$", 1)
    return df.withColumns({
        "__file": F.when(name != "", name).otherwise(F.lit(Path(label).name)),
        "__ord": F.monotonically_increasing_id(),
    })


def _build_pois(
    frame: RawFrame,
    id_col: str | None,
    coords: CoordSpec,
    levels: Sequence["Column"],
    gcj02: bool,
    extent: LonLatBox | None,
    name: str,
) -> PoiIngestResult:
    from pyspark.sql import functions as F

    if coords.kind == "lonlat":
        x_t, y_t = V.clean(frame.col(coords.columns[0])), V.clean(frame.col(coords.columns[1]))
    else:
        text = V.clean(frame.col(coords.columns[0]))
        regex = (
            r"(?i)^POINT\s*(?:Z|M|ZM)?\s*\(\s*(\S+)\s+([^\s)]+)(?:\s+[^\s)]+)*\s*\)$"
            if coords.kind == "wkt"
            else r"^\s*([^,\s]+)\s*,\s*([^,\s]+)\s*$"
        )
        # Text that is present but not a point keeps its full value so it is "unparsable", not "null".
        x_t = F.when(text.rlike(regex), F.regexp_extract(text, regex, 1)).otherwise(text)
        y_t = F.when(text.rlike(regex), F.regexp_extract(text, regex, 2)).otherwise(text)
    from pyspark.sql import Window

    x, y = V.parse_double(x_t), V.parse_double(y_t)
    convert = gcj02 or (coords.crs is not None and not is_wgs84(coords.crs))
    cats = list(levels)[:N_LEVELS] + [F.lit(None).cast("string")] * (N_LEVELS - len(levels))
    notes: tuple[str, ...] = ()
    df = _with_file_order(frame.df, frame.label)
    if id_col is None:
        df, ids = _row_number_ids(df)
        notes = ("poi_id: row_number (no id column; ids are <file name>:<row>, rows counted from 0 in file order)",)
    else:
        ids = V.clean(frame.col(id_col))
    cols = {
        "__x_t": x_t, "__y_t": y_t, "__x": x, "__y": y, "__id": ids,
        **{f"__l{i + 1}": c for i, c in enumerate(cats)},
        **({} if convert else {"__lon": x, "__lat": y}),
    }
    df = df.withColumns(cols)
    if convert:
        df = to_lonlat(df, [("__x", "__y", "__lon", "__lat")], crs=coords.crs, gcj02=gcj02)
    point = Endpoint(F.col("__x_t"), F.col("__y_t"), F.col("__x"), F.col("__y"), F.col("__lon"), F.col("__lat"))
    texts = [F.col("__id"), *[F.col(f"__l{i + 1}") for i in range(N_LEVELS)]]
    name_col = frame.find(*NAME_CANDIDATES)
    if name_col is not None:
        texts.append(frame.col(name_col))
    row_checks: list = [(V.UNDECODABLE_TEXT, V.undecodable(*texts))]
    extra = frame.extra_fields()
    if extra is not None:
        row_checks.insert(0, (V.EXTRA_FIELDS, extra))
    checks = row_checks + V.coordinate_checks([point], extent) + [
        (V.MISSING_ID, F.col("__id").isNull()),
        (V.MISSING_CATEGORY, F.col("__l1").isNull()),
    ]
    reason = V.first_reason(checks)
    if id_col is not None:
        # A repeated id keeps its first usable row (file order); later rows are rejected as duplicate_id.
        first = Window.partitionBy("__id").orderBy(F.col("__own").isNotNull(), F.col("__file"), F.col("__ord"))
        df = df.withColumn("__own", reason).withColumn(
            "__rank", F.when(F.col("__id").isNotNull(), F.row_number().over(first)))
        reason = F.coalesce(F.col("__own"), F.when(F.col("__rank") > 1, F.lit(DUPLICATE_ID)))
    kept_cols = [
        F.lit(name).alias(SOURCE), F.col("__id").alias(POI_ID), F.col("__lon").alias(LON), F.col("__lat").alias(LAT),
        *[F.col(f"__l{i + 1}").alias(f"{CATEGORY_PREFIX}{i + 1}") for i in range(N_LEVELS)],
    ]
    split = V.split_rows(df, reason, kept_cols, frame.raw_struct(), name, line=frame.line).conformed(POIS_SCHEMA)
    return PoiIngestResult(split.kept, split.rejects, name, frame.label, frame.df, split.reasons, notes)


# ------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------

POI_SOURCES: AdapterRegistry[PoiSource] = AdapterRegistry("POI")
register_poi_source = POI_SOURCES.register


def poi_source(adapter: str) -> PoiSource:
    """The POI source registered as ``adapter``; :class:`IngestError` listing the known ones."""
    return POI_SOURCES.create(adapter)


def read_pois(
    spark: "SparkSession", source: "SourceConfig", extent: LonLatBox | None = None, *, name: str | None = None
) -> PoiIngestResult:
    """Read a POI source with the adapter named in its config."""
    return poi_source(source.adapter).read(spark, source, extent, name=name)


# ------------------------------------------------------------------------------------------
# Adapters
# ------------------------------------------------------------------------------------------


@register_poi_source
class AmapCsvPoiSource(PoiSource):
    """Amap (Gaode) POI export: ``id,name,type,typecode,location`` with ``type`` = ``大类;中类;小类``.

    ``location`` is ``"lon,lat"``. Options: ``category_source`` (``type``: the three names;
    ``typecode``: the 6-digit code cut 2/4/6), ``coordinate_system`` (``wgs84``, or ``gcj02`` for
    coordinates as published by Amap, converted to WGS84). A POI with several types
    (``a;b;c|d;e;f``) is classed by the first.
    """

    adapter = "amap_csv"
    options = COMMON_OPTIONS + (
        Option("category_source", "choice", "type", "category tokens from", choices=("type", "typecode")),
        Option("coordinate_system", "choice", "wgs84", "datum of the coordinates", choices=("wgs84", "gcj02")),
    )
    coord_candidates = (CoordSpec("pair", ("location",)),) + PoiSource.coord_candidates

    def categories(self, frame: RawFrame, opts: Mapping[str, Any]) -> list["Column"]:
        from pyspark.sql import functions as F

        if opts["category_source"] == "typecode":
            code = _split_token(V.clean(frame.col(frame.require("typecode"))), r"\|", 0)
            return [V.clean(F.substring(code, 1, n)) for n in (2, 4, 6)]
        first = _split_token(V.clean(frame.col(frame.require("type"))), r"\|", 0)
        return [_split_token(first, ";", i) for i in range(N_LEVELS)]

    def converts_gcj02(self, opts: Mapping[str, Any]) -> bool:
        return opts["coordinate_system"] == "gcj02"


@register_poi_source
class OsPointxPoiSource(PoiSource):
    """Ordnance Survey Points of Interest (PointX), pipe-delimited, British National Grid metres.

    Columns ``ref_no|name|pointx_class|groupname|categoryname|classname|feature_easting|feature_northing``
    (header line expected; ``header: false`` uses these names in this order). Levels: group,
    category, class names, or with ``category_source: codes`` the 8-digit ``pointx_class`` cut 2/4/8.
    """

    adapter = "os_pointx"
    options = COMMON_OPTIONS + (
        Option("category_source", "choice", "names", "category tokens from", choices=("names", "codes")),
    )
    default_sep = "|"
    default_columns = (
        "ref_no", "name", "pointx_class", "groupname", "categoryname", "classname", "feature_easting", "feature_northing",
    )
    id_candidates = ("ref_no",)
    coord_candidates = (CoordSpec("lonlat", ("feature_easting", "feature_northing"), "EPSG:27700"),)

    def categories(self, frame: RawFrame, opts: Mapping[str, Any]) -> list["Column"]:
        from pyspark.sql import functions as F

        if opts["category_source"] == "codes":
            code = F.lpad(V.clean(frame.col(frame.require("pointx_class"))), 8, "0")
            return [V.clean(F.substring(code, 1, n)) for n in (2, 4, 8)]
        return [V.clean(frame.col(frame.require(c))) for c in ("groupname", "categoryname", "classname")]


@register_poi_source
class NycCommonplacePoiSource(PoiSource):
    """NYC CommonPlace points (``the_geom`` WKT lon/lat, ``FACILITY_T`` type, ``FACI_DOM`` subtype, ``PLACEID``).

    Levels: l1 = ``FACILITY_T`` (13 facility types), l2 = ``FACILITY_T:FACI_DOM``.
    """

    adapter = "nyc_commonplace"
    id_candidates = ("PLACEID",)
    coord_candidates = (CoordSpec("wkt", ("the_geom",)),) + PoiSource.coord_candidates

    def categories(self, frame: RawFrame, opts: Mapping[str, Any]) -> list["Column"]:
        from pyspark.sql import functions as F

        facility = V.clean(frame.col(frame.require("FACILITY_T")))
        subtype = V.clean(frame.col(frame.require("FACI_DOM")))
        return [facility, F.when(facility.isNotNull() & subtype.isNotNull(), F.concat(facility, F.lit(":"), subtype))]


@register_poi_source
class OsmPoiSource(PoiSource):
    """OpenStreetMap-style POIs (Geofabrik layout): ``osm_id``, ``fclass``; lon/lat, WKT or file geometry.

    Level l1 = ``fclass``. Area/line features read from vector files use a point inside them.
    """

    adapter = "osm_pois"
    id_candidates = ("osm_id", "id")

    def categories(self, frame: RawFrame, opts: Mapping[str, Any]) -> list["Column"]:
        return [V.clean(frame.col(frame.require("fclass")))]
