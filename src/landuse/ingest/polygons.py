"""Polygon inputs (regions, zones, land use) read on the driver with pyogrio / GeoPandas.

Polygon tables are small next to trips (10^2–10^5 rows), so they are read whole; whole-file
problems raise :class:`IngestError` with one line naming the file, while row-level problems of
land-use polygons (unmapped class codes, bad geometries, bad proportions) go to a rejects table.
Invalid polygons are repaired with ``make_valid`` only when that changes their area by at most a
relative tolerance (``ingest.polygon_repair_tolerance``); the area before repair is the one the
rings enclose as written (GEOS's shoelace area: a bow-tie's two lobes cancel out). Beyond the
tolerance the polygon stays invalid and is rejected as ``invalid_geometry`` (or, where a rejected
row has no table to go to — regions, zones, ``strict`` reads — fails the read with one line).
:func:`geoparquet_geometry` reads only a GeoParquet file's metadata (geometry column and CRS), for
point files that Spark scans on the executors instead (``landuse.ingest.pois`` with Sedona).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from landuse.constants import LANDUSE_CLASSES
from landuse.ingest.coords import check_crs
from landuse.ingest.errors import IngestError
from landuse.ingest.files import PARQUET_SUFFIXES, first_line, show_names, value_text
from landuse.ingest.guards import DEFAULT_REPAIR_TOLERANCE
from landuse.ingest.quarantine import IngestSummary, reason_counts
from landuse.spark.schemas import RAW, REASON, SOURCE, SOURCE_ID, T_LANDUSE

if TYPE_CHECKING:
    import geopandas as gpd
    import pyproj

log = logging.getLogger(__name__)

LANDUSE_CODE = "landuse_code"
LANDUSE_NAME = "landuse_name"
LANDUSE_CLASS = "landuse_class"
MAPPING_COLUMNS = ("code", "name", "landuse_class")

# Row-level reasons for polygon rejects.
NULL_GEOMETRY = "null_geometry"
NOT_POLYGON = "not_polygon"
UNMAPPED_CODE = "unmapped_code"
MISSING_CODE = "missing_code"
INVALID_PROPORTIONS = "invalid_proportions"
INVALID_GEOMETRY = "invalid_geometry"  # invalid, and make_valid would change its area beyond the tolerance


def read_vector(path: Path | str, *, crs: str | None = None, layer: str | None = None) -> "gpd.GeoDataFrame":
    """Any vector file (shp, gpkg, GeoJSON, FlatGeobuf, GeoParquet) with a known CRS.

    ``crs`` is the CRS of the coordinates when the file carries none; when the file has one and
    ``crs`` differs, ``crs`` wins (with a warning) so a wrong ``.prj`` can be overridden.
    """
    import geopandas as gpd

    path = Path(path)
    if not path.exists():
        raise IngestError(f"{path}: file not found")
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            gdf = gpd.read_parquet(path)
        else:
            gdf = gpd.read_file(path, layer=layer, engine="pyogrio")
    except Exception as exc:  # pyogrio / pyarrow / GEOS raise many unrelated types for a bad file
        raise IngestError(f"{path}: unreadable as a vector file ({type(exc).__name__}: {first_line(exc)})") from None
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry.name not in gdf.columns:
        raise IngestError(f"{path}: no geometry column")
    if crs is not None:
        wanted = check_crs(crs, f"{path}: option crs")
        if gdf.crs is not None and not gdf.crs.equals(wanted):
            log.warning("%s: file CRS %s overridden by option crs=%s", path, gdf.crs.to_string(), crs)
        gdf = gdf.set_crs(wanted, allow_override=True)
    elif gdf.crs is None:
        raise IngestError(f"{path}: no CRS in the file (no .prj / CRS metadata); set option crs, e.g. EPSG:4326")
    else:
        check_crs(gdf.crs, f"{path}: file CRS")
    return gdf


def geoparquet_geometry(path: Path | str, *, crs: str | None = None) -> tuple[str, "pyproj.CRS"]:
    """(primary geometry column, CRS) of a GeoParquet file or directory of parts, from its metadata only.

    For readers that scan the rows elsewhere (Spark on the executors). The CRS follows
    :func:`read_vector`: ``crs`` wins over the file's (with a warning when they differ); a column
    without a ``crs`` key is OGC:CRS84 lon/lat (the GeoParquet default); an explicit null CRS is
    unknown and needs ``crs``. Metadata of the first part stands for every part.
    """
    import pyarrow.parquet as pq
    import pyproj

    from landuse.ingest.files import list_input_files

    path = Path(path)
    first = list_input_files(path, PARQUET_SUFFIXES)[0]
    try:
        geo = json.loads((pq.read_schema(first).metadata or {})[b"geo"])
        column = geo["primary_column"]
        info = geo["columns"][column]
    except Exception as exc:  # missing key, bad JSON, unreadable footer
        raise IngestError(f"{first}: no usable GeoParquet metadata ({type(exc).__name__}: {first_line(exc)})") from None
    if "crs" not in info:
        file_crs: pyproj.CRS | None = pyproj.CRS.from_user_input("OGC:CRS84")
    elif info["crs"] is None:
        file_crs = None
    else:
        try:
            file_crs = pyproj.CRS.from_json_dict(info["crs"]) if isinstance(info["crs"], dict) else \
                pyproj.CRS.from_user_input(info["crs"])
        except pyproj.exceptions.CRSError:
            raise IngestError(f"{path}: unreadable CRS in the GeoParquet metadata") from None
    if crs is not None:
        wanted = check_crs(crs, f"{path}: option crs")
        if file_crs is not None and not file_crs.equals(wanted):
            log.warning("%s: file CRS %s overridden by option crs=%s", path, file_crs.to_string(), crs)
        return column, wanted
    if file_crs is None:
        raise IngestError(f"{path}: no CRS in the file (no .prj / CRS metadata); set option crs, e.g. EPSG:4326")
    return column, check_crs(file_crs, f"{path}: file CRS")


def geometry_problems(gdf: "gpd.GeoDataFrame") -> pd.Series:
    """Per row: ``null_geometry``, ``not_polygon``, ``invalid_geometry`` or None.

    Call it after :func:`_repair`: the polygons still invalid then are those it refused to repair.
    """
    geom = gdf.geometry
    empty = geom.isna() | geom.is_empty
    polygonal = geom.geom_type.isin(["Polygon", "MultiPolygon"])
    out = pd.Series(None, index=gdf.index, dtype=object)
    out[~empty & polygonal & ~geom.is_valid] = INVALID_GEOMETRY
    out[~empty & ~polygonal] = NOT_POLYGON
    out[empty] = NULL_GEOMETRY
    return out


def area_change(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Relative area change ``|after - before| / max(before, after)`` (0 where both are 0)."""
    import shapely

    a, b = shapely.area(before), shapely.area(after)
    top = np.maximum(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(top > 0, np.abs(b - a) / np.where(top > 0, top, 1.0), 0.0)


def _repair(gdf: "gpd.GeoDataFrame", path: Path, tolerance: float = DEFAULT_REPAIR_TOLERANCE) -> "gpd.GeoDataFrame":
    """Make invalid polygons valid (keeping their polygonal parts) when their area changes by at most ``tolerance``.

    The others are left as they are (invalid), for :func:`geometry_problems` to reject as
    ``invalid_geometry``. Both are logged, never silent.
    """
    import shapely

    geom = gdf.geometry
    bad = ~geom.isna() & ~geom.is_empty & ~geom.is_valid
    if not bad.any():
        return gdf
    before = geom[bad].to_numpy()
    # make_valid can return collections with stray lines/points; keep the area-bearing parts.
    fixed = np.array([_polygonal_part(g) for g in shapely.make_valid(before)], dtype=object)
    change = area_change(before, fixed)
    ok = change <= tolerance
    gdf = gdf.copy()
    if ok.any():
        gdf.loc[bad[bad].index[ok], gdf.geometry.name] = fixed[ok]
        log.warning("%s: repaired %d invalid polygon(s) with make_valid (area change <= %g%%)",
                    path, int(ok.sum()), tolerance * 100)
    if (~ok).any():
        log.warning("%s: %d invalid polygon(s) not repaired: make_valid would change their area by up to "
                    "%.0f%% (> ingest.polygon_repair_tolerance %g%%)", path, int((~ok).sum()),
                    float(change[~ok].max()) * 100, tolerance * 100)
    return gdf


def invalid_polygon_message(geom: Any, tolerance: float) -> str:
    """Why an invalid polygon was not repaired: the GEOS reason and the area change make_valid would make."""
    import shapely

    fixed = _polygonal_part(shapely.make_valid(geom))
    change = float(area_change(np.array([geom], dtype=object), np.array([fixed], dtype=object))[0])
    return (f"invalid polygon ({shapely.is_valid_reason(geom)}) that make_valid would change by {change:.0%} of "
            f"its area (> ingest.polygon_repair_tolerance {tolerance * 100:g}%); fix the polygon or raise the tolerance")


def _polygonal_part(geom: Any) -> Any:
    import shapely

    parts = shapely.get_parts(geom)
    return shapely.union_all(parts[np.isin(shapely.get_type_id(parts), [3, 6])])


def read_polygons(
    path: Path | str,
    id_column: str | None = None,
    crs: str | None = None,
    *,
    layer: str | None = None,
    required_columns: Sequence[str] = (),
    strict: bool = True,
    repair: bool = True,
    dissolve_duplicates: bool = False,
    repair_tolerance: float = DEFAULT_REPAIR_TOLERANCE,
) -> "gpd.GeoDataFrame":
    """Polygons (shp, gpkg, GeoJSON, GeoParquet) in their own CRS, with a unique non-null id column.

    Raises :class:`IngestError` (one line naming the file) when the file is unreadable, lacks
    ``id_column`` or a required column, has no or an unknown CRS, has null/duplicate ids, or —
    with ``strict`` — holds a null, empty, non-polygon or unrepairable geometry. Invalid polygons are
    repaired when that changes their area by at most ``repair_tolerance`` (relative); without
    ``strict`` the others come back invalid (:func:`geometry_problems`: ``invalid_geometry``).
    ``dissolve_duplicates`` merges rows sharing an id into one (multi)polygon instead of failing —
    for zone files that store a multi-part zone as several rows (NYC taxi zones 56 and 103).
    """
    path = Path(path)
    gdf = read_vector(path, crs=crs, layer=layer)
    columns = [c for c in gdf.columns if c != gdf.geometry.name]
    for name in ([id_column] if id_column else []) + list(required_columns):
        if name not in gdf.columns:
            what = "id column" if name == id_column else "column"
            raise IngestError(f"{path}: missing {what} {name!r} (has: {show_names(columns)})")
    if id_column:
        ids = gdf[id_column]
        if ids.isna().any():
            row = int(np.flatnonzero(ids.isna().to_numpy())[0])
            raise IngestError(f"{path}: row {row}: null id in column {id_column!r}")
        dup = ids[ids.duplicated()]
        if len(dup) and dissolve_duplicates:
            log.warning("%s: merged rows sharing an id into one polygon each: %s", path, sorted(set(dup.tolist()))[:10])
            geom_name = gdf.geometry.name
            merged = gdf.dissolve(by=id_column, sort=False, as_index=False)
            gdf = merged[[c for c in gdf.columns if c in merged.columns]].set_geometry(geom_name)
        elif len(dup):
            raise IngestError(
                f"{path}: duplicate id {dup.iloc[0]!r} in column {id_column!r} ({dup.nunique()} duplicated ids)"
            )
    if repair:
        gdf = _repair(gdf, path, repair_tolerance)
    if strict:
        problems = geometry_problems(gdf)
        if problems.notna().any():
            row = int(np.flatnonzero(problems.notna().to_numpy())[0])
            ident = f" (id {gdf[id_column].iloc[row]!r})" if id_column else ""
            if problems.iloc[row] == NULL_GEOMETRY:
                kind = "null or empty geometry"
            elif problems.iloc[row] == INVALID_GEOMETRY:
                kind = invalid_polygon_message(gdf.geometry.iloc[row], repair_tolerance)
            else:
                kind = f"{gdf.geometry.iloc[row].geom_type} geometry, expected Polygon/MultiPolygon"
            raise IngestError(f"{path}: row {row}{ident}: {kind} ({int(problems.notna().sum())} such rows)")
    return gdf


def centroids_lonlat(gdf: "gpd.GeoDataFrame") -> tuple[np.ndarray, np.ndarray]:
    """Polygon centroids in WGS84 lon/lat, computed in a projected CRS (metres), not in degrees."""
    projected = gdf if gdf.crs.is_projected else gdf.to_crs(gdf.estimate_utm_crs())
    cent = projected.geometry.centroid.to_crs("EPSG:4326")
    return cent.x.to_numpy(), cent.y.to_numpy()


# ------------------------------------------------------------------------------------------
# Land use
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LanduseResult:
    """Land-use polygons that passed, the rejected ones (pandas, ``REJECTS_SCHEMA``) and the accounting.

    ``polygons`` columns: ``source_id`` (str), then ``landuse_code``/``landuse_name``/``landuse_class``
    (code mode) or the proportion columns (proportion mode), then ``geometry`` in the file's CRS.
    """

    polygons: "gpd.GeoDataFrame"
    rejects: pd.DataFrame
    source: str
    path: str
    rows_in: int
    unmapped: Mapping[str, int] = field(default_factory=dict)  # unmapped code -> polygons

    def summary(self) -> IngestSummary:
        """Accounting for this file (checked: in = kept + rejected)."""
        return IngestSummary(
            source=self.source,
            table=T_LANDUSE,
            path=self.path,
            rows_in=self.rows_in,
            kept=len(self.polygons),
            rejected=len(self.rejects),
            by_reason=reason_counts(self.rejects) if len(self.rejects) else {},
        ).check()


def read_class_mapping(path: Path | str, classes: Sequence[str] = LANDUSE_CLASSES) -> pd.DataFrame:
    """A class-mapping CSV ``code,name,landuse_class`` (codes as text; classes from ``classes``)."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: class mapping file not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, comment="#", skipinitialspace=True)
    except Exception as exc:
        raise IngestError(f"{path}: unreadable class mapping ({type(exc).__name__}: {first_line(exc)})") from None
    table.columns = [c.strip() for c in table.columns]
    for name in MAPPING_COLUMNS:
        if name not in table.columns:
            raise IngestError(f"{path}: missing required column {name!r} (has: {show_names(table.columns)})")
    table = table[list(MAPPING_COLUMNS)].apply(lambda s: s.str.strip())
    for i, row in table.iterrows():
        if not row["code"]:
            raise IngestError(f"{path}: row {int(i) + 2}: empty code")  # +2: header line, 1-based
        if row["landuse_class"] not in classes:
            raise IngestError(
                f"{path}: row {int(i) + 2}: code {row['code']!r}: unknown landuse_class {row['landuse_class']!r} "
                f"(allowed: {', '.join(classes)})"
            )
    dup = table["code"][table["code"].duplicated()]
    if len(dup):
        raise IngestError(f"{path}: duplicate code {dup.iloc[0]!r}")
    return table.reset_index(drop=True)


def _code_text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = value_text(value).strip()
    return text or None


def _raw_json(gdf: "gpd.GeoDataFrame", rows: pd.Index) -> list[str]:
    """The original rows as JSON text (attributes plus geometry as WKT)."""
    geom_name = gdf.geometry.name
    out = []
    for idx in rows:
        record = {k: _json_value(v) for k, v in gdf.loc[idx].items() if k != geom_name}
        g = gdf.geometry.loc[idx]
        record[geom_name] = None if g is None or g.is_empty else g.wkt
        out.append(json.dumps(record, ensure_ascii=False))
    return out


def _json_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _rejects_frame(source: str, gdf: "gpd.GeoDataFrame", reasons: pd.Series) -> pd.DataFrame:
    rows = reasons.index[reasons.notna()]
    return pd.DataFrame(
        {SOURCE: source, REASON: reasons[rows].astype(str).to_list(), RAW: _raw_json(gdf, rows)},
        columns=[SOURCE, REASON, RAW],
    )


def _source_ids(gdf: "gpd.GeoDataFrame", id_column: str | None) -> pd.Series:
    if id_column:
        return gdf[id_column].map(value_text)
    return pd.Series([str(i) for i in range(len(gdf))], index=gdf.index)


def read_landuse_codes(
    path: Path | str,
    code_column: str,
    mapping_path: Path | str,
    *,
    id_column: str | None = None,
    crs: str | None = None,
    layer: str | None = None,
    match: Literal["exact", "prefix"] = "exact",
    source: str = "landuse",
    classes: Sequence[str] = LANDUSE_CLASSES,
    repair_tolerance: float = DEFAULT_REPAIR_TOLERANCE,
) -> LanduseResult:
    """Land-use polygons with a class-code column mapped to the target classes by a mapping CSV.

    Codes are compared as text (``101.0`` read from a DBF matches ``101``; leading zeros matter).
    ``match="prefix"`` lets a mapping row cover every code it prefixes (longest prefix wins, so
    ``05`` maps ``0501``..``0508`` unless a longer row exists). Polygons whose code is missing or
    unmapped go to rejects (``missing_code`` / ``unmapped_code``) and are reported with a count and
    examples; so do null / non-polygon geometries, and invalid ones that ``make_valid`` would
    change by more than ``repair_tolerance`` of their area (``invalid_geometry``).
    """
    path = Path(path)
    mapping = read_class_mapping(mapping_path, classes)
    gdf = read_polygons(path, id_column=id_column, crs=crs, layer=layer, required_columns=[code_column], strict=False,
                        repair_tolerance=repair_tolerance)
    codes = gdf[code_column].map(_code_text)
    lookup = dict(zip(mapping["code"], zip(mapping["name"], mapping["landuse_class"])))
    if match == "prefix":
        keys = sorted(lookup, key=len, reverse=True)

        def find(code: str | None) -> tuple[str, str] | None:
            if code is None:
                return None
            return next((lookup[k] for k in keys if code.startswith(k)), None)
    elif match == "exact":

        def find(code: str | None) -> tuple[str, str] | None:
            return None if code is None else lookup.get(code)
    else:
        raise IngestError(f"{path}: match must be 'exact' or 'prefix', got {match!r}")
    found = codes.map(find)
    reasons = geometry_problems(gdf)
    reasons[reasons.isna() & codes.isna()] = MISSING_CODE
    reasons[reasons.isna() & found.isna()] = UNMAPPED_CODE
    unmapped = codes[reasons == UNMAPPED_CODE].value_counts()
    if len(unmapped):
        examples = ", ".join(f"{c!r} ({n})" for c, n in unmapped.head(5).items())
        log.warning(
            "%s: %d polygon(s) with %d code(s) missing from %s go to rejects (unmapped_code): %s",
            path, int(unmapped.sum()), len(unmapped), mapping_path, examples,
        )
    keep = reasons.isna()
    kept = gdf[keep]
    polygons = _geo_frame(
        {
            SOURCE_ID: _source_ids(gdf, id_column)[keep].to_list(),
            LANDUSE_CODE: codes[keep].to_list(),
            LANDUSE_NAME: [found[i][0] for i in kept.index],
            LANDUSE_CLASS: [found[i][1] for i in kept.index],
        },
        kept,
    )
    return LanduseResult(
        polygons=polygons,
        rejects=_rejects_frame(source, gdf, reasons),
        source=source,
        path=str(path),
        rows_in=len(gdf),
        unmapped={str(k): int(v) for k, v in unmapped.items()},
    )


def read_landuse_proportions(
    path: Path | str,
    proportion_columns: Sequence[str],
    *,
    id_column: str | None = None,
    crs: str | None = None,
    layer: str | None = None,
    source: str = "landuse",
    tolerance: float = 1e-6,
    repair_tolerance: float = DEFAULT_REPAIR_TOLERANCE,
) -> LanduseResult:
    """Polygons carrying class-proportion columns (e.g. NYC tracts ``lu_*``), passed through.

    A row whose proportions are missing, non-numeric, negative, above 1 or summing above 1
    (beyond ``tolerance``) goes to rejects (``invalid_proportions``); rows summing to 0 are kept
    (polygons with no land-use coverage, e.g. water).
    """
    path = Path(path)
    if not proportion_columns:
        raise IngestError(f"{path}: no proportion columns given (option proportion_columns)")
    gdf = read_polygons(
        path, id_column=id_column, crs=crs, layer=layer, required_columns=list(proportion_columns), strict=False,
        repair_tolerance=repair_tolerance,
    )
    values = gdf[list(proportion_columns)].apply(pd.to_numeric, errors="coerce").astype("float64")
    bad_value = values.isna().any(axis=1) | (values < -tolerance).any(axis=1) | (values > 1 + tolerance).any(axis=1)
    bad_sum = values.sum(axis=1) > 1 + tolerance
    reasons = geometry_problems(gdf)
    reasons[reasons.isna() & (bad_value | bad_sum)] = INVALID_PROPORTIONS
    keep = reasons.isna()
    kept = gdf[keep]
    polygons = _geo_frame(
        {SOURCE_ID: _source_ids(gdf, id_column)[keep].to_list(), **{c: values.loc[keep, c].to_numpy() for c in proportion_columns}},
        kept,
    )
    return LanduseResult(
        polygons=polygons, rejects=_rejects_frame(source, gdf, reasons), source=source, path=str(path), rows_in=len(gdf)
    )


def _geo_frame(columns: dict[str, Any], like: "gpd.GeoDataFrame") -> "gpd.GeoDataFrame":
    import geopandas as gpd

    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(like.geometry.to_numpy(), crs=like.crs))
