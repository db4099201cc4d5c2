"""Building footprints (``inputs.buildings``, adapter ``footprints``): GeoJSON, GPKG, GeoParquet, …

The file is read on the driver with :func:`~landuse.ingest.polygons.read_vector` (any vector format
GeoPandas reads), invalid polygons are repaired when ``make_valid`` changes their area by at most
``ingest.polygon_repair_tolerance``, and every row ends up either kept — reprojected to the study
CRS, as WKB — or in the rejects table (``REJECTS_SCHEMA``) with one reason:

* ``null_geometry`` — null or empty geometry;
* ``not_polygon`` — a point, line or collection instead of a (multi)polygon;
* ``invalid_geometry`` — an invalid polygon that repair would change beyond the tolerance;
* ``invalid_coordinates`` — the footprint cannot be projected to the study CRS (non-finite result);
* ``area_below_min`` — projected area below ``embeddings.buildings.min_area_m2`` (or zero);
* ``missing_id`` — ``id_column`` given and null for the row;
* ``invalid_height`` / ``invalid_levels`` — a non-numeric, non-finite or negative value in the
  height / levels column (an empty value is simply an unknown height).

Rows in = kept + rejected is checked. Whole-file problems (not found, unreadable, no CRS, an
option naming a column the file lacks, no rows at all) raise a one-line :class:`IngestError`.

Options (all optional): ``crs`` (of the coordinates when the file has none; overrides a wrong
one), ``layer`` (GPKG layer), ``id_column`` (default: the row number, noted), ``height_column``
(metres), ``levels_column`` (storeys; height = levels × 3 m where only levels are known),
``type_column`` (carried as ``building_type``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from landuse.config import SourceConfig
from landuse.features.morphology import (
    BUILDING_ID,
    BUILDING_TYPE,
    FLOOR_HEIGHT_M,
    FLOORS,
    HEIGHT,
    floors_from_height,
)
from landuse.ingest.coords import check_crs
from landuse.ingest.errors import IngestError
from landuse.ingest.files import show_names, value_text
from landuse.ingest.guards import DEFAULT_REPAIR_TOLERANCE
from landuse.ingest.options import Option, parse_options
from landuse.ingest.polygons import (
    INVALID_GEOMETRY,
    NOT_POLYGON,
    NULL_GEOMETRY,
    _rejects_frame,
    _repair,
    geometry_problems,
    read_vector,
)
from landuse.ingest.quarantine import IngestSummary, reason_counts
from landuse.spark.schemas import GEOMETRY

if TYPE_CHECKING:
    import geopandas as gpd

log = logging.getLogger(__name__)

ADAPTER = "footprints"
TABLE = "buildings"
INVALID_COORDINATES = "invalid_coordinates"
AREA_BELOW_MIN = "area_below_min"
MISSING_ID = "missing_id"
INVALID_HEIGHT = "invalid_height"
INVALID_LEVELS = "invalid_levels"
REASONS = (NULL_GEOMETRY, NOT_POLYGON, INVALID_GEOMETRY, INVALID_COORDINATES, AREA_BELOW_MIN, MISSING_ID, INVALID_HEIGHT, INVALID_LEVELS)

OPTIONS = (
    Option("crs", "str", None, "CRS of the coordinates when the file has none"),
    Option("layer", "str", None, "layer of a multi-layer file (GPKG)"),
    Option("id_column", "str", None, "building id column (default: row number)"),
    Option("height_column", "str", None, "building height in metres"),
    Option("levels_column", "str", None, "number of storeys (height = levels x 3 m where no height)"),
    Option("type_column", "str", None, "building type / use tag"),
)
COLUMN_OPTIONS = ("id_column", "height_column", "levels_column", "type_column")


@dataclass(frozen=True)
class BuildingsResult:
    """Footprints that passed (pandas), the rejected rows (``REJECTS_SCHEMA``) and the accounting.

    ``buildings`` columns (:data:`~landuse.features.morphology.BUILDINGS_SCHEMA`): ``building_id``
    (str), ``geometry`` (WKB bytes in the study CRS), ``height`` (m) and ``floors`` (float, NaN
    when unknown), ``building_type`` (str or None).
    """

    buildings: pd.DataFrame
    rejects: pd.DataFrame
    source: str
    path: str
    rows_in: int
    has_height: bool  # a height or levels column was configured
    notes: tuple[str, ...] = field(default_factory=tuple)

    def summary(self) -> IngestSummary:
        """Accounting for the file (checked: in = kept + rejected)."""
        return IngestSummary(
            source=self.source,
            table=TABLE,
            path=self.path,
            rows_in=self.rows_in,
            kept=len(self.buildings),
            rejected=len(self.rejects),
            by_reason=reason_counts(self.rejects) if len(self.rejects) else {},
        ).check()


def _numeric(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float values with NaN where missing, mask of present-but-bad values: non-numeric, non-finite, negative)."""
    as_text = values.map(lambda v: v.strip() if isinstance(v, str) else v)
    missing = as_text.isna() | as_text.map(lambda v: isinstance(v, str) and v == "")
    parsed = pd.to_numeric(as_text.where(~missing), errors="coerce").astype("float64").to_numpy()
    present = ~missing.to_numpy()
    with np.errstate(invalid="ignore"):
        bad = present & ~(np.isfinite(parsed) & (parsed >= 0))
    parsed = np.where(present & ~bad, parsed, np.nan)
    return parsed, bad


def read_footprints(
    source: SourceConfig,
    crs: str,
    min_area_m2: float = 0.0,
    *,
    name: str = "buildings",
    repair_tolerance: float = DEFAULT_REPAIR_TOLERANCE,
) -> BuildingsResult:
    """Read, validate and reproject the footprints of ``source`` to ``crs`` (a projected CRS in metres).

    ``repair_tolerance``: ``ingest.polygon_repair_tolerance`` (see :func:`~landuse.ingest.polygons._repair`).
    """
    import geopandas as gpd
    import shapely

    path = Path(source.path)
    if source.adapter != ADAPTER:
        raise IngestError(f"{path}: unknown buildings adapter {source.adapter!r} (known: {ADAPTER})")
    where = f"{path}: buildings (adapter {ADAPTER})"
    opts = parse_options(source.options, OPTIONS, where)
    target = check_crs(crs, "study.crs")
    if not target.is_projected:
        raise IngestError(f"study.crs {crs!r} is not projected; building areas need metres (e.g. a UTM zone)")
    original = read_vector(path, crs=opts["crs"], layer=opts["layer"])
    geom_name = original.geometry.name
    columns = [c for c in original.columns if c != geom_name]
    for key in COLUMN_OPTIONS:
        column = opts[key]
        if column is not None and column not in original.columns:
            label = key.replace("_column", "").replace("_", " ")
            raise IngestError(f"{path}: missing {label} column {column!r} (option {key}; has: {show_names(columns)})")
    if len(original) == 0:
        raise IngestError(f"{path}: no footprints (the file has 0 rows)")
    original = original.reset_index(drop=True)
    notes: list[str] = []

    gdf = _repair(original, path, repair_tolerance)
    reasons = geometry_problems(gdf)
    usable = reasons.isna().to_numpy()
    projected = np.full(len(gdf), None, dtype=object)
    if usable.any():
        projected[usable] = gpd.GeoSeries(gdf.geometry.to_numpy()[usable], crs=gdf.crs).to_crs(target).to_numpy()
    area = np.zeros(len(gdf))
    if usable.any():
        coords = shapely.get_coordinates(projected[usable])
        finite = np.ones(int(usable.sum()), dtype=bool)
        if coords.size and not np.isfinite(coords).all():
            finite = np.array([np.isfinite(shapely.get_coordinates(g)).all() for g in projected[usable]])
        bad_coords = np.zeros(len(gdf), dtype=bool)
        bad_coords[np.flatnonzero(usable)[~finite]] = True
        reasons[bad_coords] = INVALID_COORDINATES
        ok = usable & ~bad_coords
        area[ok] = shapely.area(projected[ok])
        small = ok & ((area < min_area_m2) | (area <= 0))
        reasons[small] = AREA_BELOW_MIN

    if opts["id_column"]:
        raw_ids = gdf[opts["id_column"]]
        missing_id = raw_ids.isna().to_numpy() | raw_ids.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy()
        reasons[reasons.isna().to_numpy() & missing_id] = MISSING_ID
        ids = raw_ids.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else value_text(v))
        dup = ids[reasons.isna() & ids.duplicated(keep=False)]
        if len(dup):
            log.warning("%s: %d footprint(s) share an id with another (e.g. %r); all are kept", path, len(dup),
                        dup.iloc[0])
    else:
        ids = pd.Series([str(i) for i in range(len(gdf))])
        notes.append("no id_column: building ids are the row numbers (0-based)")

    height = np.full(len(gdf), np.nan)
    floors = np.full(len(gdf), np.nan)
    if opts["height_column"]:
        height, bad = _numeric(gdf[opts["height_column"]])
        reasons[reasons.isna().to_numpy() & bad] = INVALID_HEIGHT
    if opts["levels_column"]:
        floors, bad = _numeric(gdf[opts["levels_column"]])
        reasons[reasons.isna().to_numpy() & bad] = INVALID_LEVELS
        fill = ~np.isfinite(height) & np.isfinite(floors)
        height = np.where(fill, floors * FLOOR_HEIGHT_M, height)
        if not opts["height_column"]:
            notes.append(f"height = levels x {FLOOR_HEIGHT_M:g} m (no height_column)")
    floors = np.where(np.isfinite(floors), floors, floors_from_height(height))
    has_height = bool(opts["height_column"] or opts["levels_column"])
    if not has_height:
        notes.append("no height_column / levels_column: height features (height_mean, height_max, height_std, "
                     "floor_area_ratio) are 0")

    keep = reasons.isna().to_numpy()
    kinds = None
    if opts["type_column"]:
        kinds = gdf[opts["type_column"]].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v))
                                             else value_text(v))
    buildings = pd.DataFrame({
        BUILDING_ID: ids[keep].astype(object).to_numpy(),
        GEOMETRY: shapely.to_wkb(projected[keep]) if keep.any() else np.array([], dtype=object),
        HEIGHT: height[keep],
        FLOORS: floors[keep],
        BUILDING_TYPE: kinds[keep].to_numpy() if kinds is not None else np.full(int(keep.sum()), None, dtype=object),
    })
    known = int(np.isfinite(buildings[HEIGHT]).sum())
    if has_height and known == 0 and len(buildings):
        notes.append("no kept footprint has a height: height features are 0")
    rejects = _rejects_frame(name, original, reasons)
    result = BuildingsResult(buildings=buildings, rejects=rejects, source=name, path=str(path), rows_in=len(original),
                             has_height=has_height, notes=tuple(notes))
    summary = result.summary()
    if summary.rejected:
        log.warning("%s", summary.line())
    return result


def buildings_dataframe(spark: Any, buildings: pd.DataFrame, partitions: int | None = None) -> Any:
    """The kept footprints as a Spark DataFrame (:data:`~landuse.features.morphology.BUILDINGS_SCHEMA`).

    Arrow ships the rows to the executors in slices; ``partitions`` spreads them for the
    per-building work (default: the session's default parallelism).
    """
    from landuse.features.morphology import BUILDINGS_SCHEMA

    frame = buildings[[f.name for f in BUILDINGS_SCHEMA.fields]]
    df = spark.createDataFrame(frame, schema=BUILDINGS_SCHEMA)
    return df.repartition(partitions) if partitions else df


def footprint_frame(result: BuildingsResult, crs: str) -> "gpd.GeoDataFrame":
    """The kept footprints as a GeoDataFrame in ``crs`` (for inspection and tests; driver-sized files only)."""
    import geopandas as gpd
    import shapely

    geometry = gpd.GeoSeries(shapely.from_wkb(result.buildings[GEOMETRY].to_numpy()), crs=crs)
    return gpd.GeoDataFrame(result.buildings.drop(columns=[GEOMETRY]), geometry=geometry, crs=crs)
