"""The monitoring stage body: regions + predictions + a planned layer → flag table, map and GeoJSON."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Sequence

import geopandas as gpd
import pyarrow as pa

from landuse.manifest import commit_dir, staging_dir, write_manifest
from landuse.monitoring.planned import (
    DEFAULT_THRESHOLD,
    DEVIATION,
    PLAN_SOURCE,
    PLANNED_CLASS,
    MonitoringError,
    deviation_map,
    flag_deviations,
    planned_per_region,
    read_planned,
)
from landuse.spark.io import PART, write_pandas
from landuse.spark.schemas import RAW, REASON, REGION_ID, SOURCE, T_REGIONS, T_REJECTS
from landuse.storage import location, read_parquet

log = logging.getLogger(__name__)

T_MONITORING = "monitoring"
T_PREDICTIONS = "predictions"  # as written by landuse.training.predict
MAP_FILE = "monitoring_deviations.png"
GEOJSON_FILE = "monitoring.geojson"
REJECTS_SCHEMA = pa.schema([(SOURCE, pa.string()), (REASON, pa.string()), (RAW, pa.string())])


def _require(path: Path, table: str, producer: str) -> Path:
    if not path.exists():
        raise MonitoringError(f"table {table} not found at {path}: run `landuse run {producer}` first")
    return path


def _commit_table(frame: Any, final: Path, manifest: dict[str, Any], schema: pa.Schema | None = None) -> None:
    staged = staging_dir(final)
    write_pandas(frame, staged, schema=schema)
    write_manifest(staged, manifest)
    commit_dir(staged, final)


def run_monitoring(tables_dir: Path, work_dir: Path, planned_path: Path, class_column: str, classes: Sequence[str],
                   threshold: float = DEFAULT_THRESHOLD, id_column: str | None = None, crs: str | None = None,
                   class_map_path: Path | None = None) -> dict[str, Any]:
    """Compare the planned layer with ``tables/predictions``; write the flags and return a summary.

    Writes ``tables/monitoring`` (Parquet, :data:`~landuse.monitoring.planned.FLAG_COLUMNS`),
    ``tables/rejects/planned`` (rejected plan rows), ``work_dir/monitoring_deviations.png`` and
    ``work_dir/monitoring.geojson`` (EPSG:4326). The summary holds the counts (regions, planned
    regions, flagged, rejected plan rows), the threshold and the output paths.
    """
    tables_dir = location(tables_dir) if isinstance(tables_dir, str) else tables_dir  # local or a store URI
    work_dir = Path(work_dir)
    regions_file = _require(tables_dir / T_REGIONS / PART, T_REGIONS, "regions")
    regions = gpd.read_parquet(io.BytesIO(regions_file.read_bytes()))[[REGION_ID, "geometry"]]
    predictions = read_parquet(_require(tables_dir / T_PREDICTIONS, T_PREDICTIONS, "predict")).to_pandas()
    plan, rejects = read_planned(planned_path, class_column, classes, id_column=id_column, crs=crs,
                                 class_map_path=class_map_path)
    if plan.empty:
        raise MonitoringError(f"{planned_path}: no usable plan polygons ({len(rejects)} rejected)")
    per_region = planned_per_region(regions, plan, classes)
    flags = flag_deviations(predictions, per_region, classes, threshold)

    summary = {
        "regions": len(flags),
        "planned_regions": int(flags[PLANNED_CLASS].notna().sum()),
        "flagged": int(flags[DEVIATION].sum()),
        "threshold": float(threshold),
        "rejected_plan_rows": len(rejects),
        "planned_path": str(planned_path),
    }
    out = tables_dir / T_MONITORING
    _commit_table(flags, out, {"stage": "monitor", "rows": len(flags), **summary})
    _commit_table(rejects, tables_dir / T_REJECTS / PLAN_SOURCE, {"stage": "monitor", "rows": len(rejects)},
                  schema=REJECTS_SCHEMA)

    work_dir.mkdir(parents=True, exist_ok=True)
    title = f"Planned vs predicted land use: {summary['flagged']} deviations (margin ≥ {threshold:g})"
    png = deviation_map(regions, flags, work_dir / MAP_FILE, title)
    geojson = work_dir / GEOJSON_FILE
    geojson.unlink(missing_ok=True)
    regions.merge(flags, on=REGION_ID, how="inner").to_crs("EPSG:4326").to_file(geojson, driver="GeoJSON")
    summary.update(table=str(out), map=str(png), geojson=str(geojson))
    log.info("monitor: %d of %d planned regions deviate from the plan (margin >= %g) -> %s, %s",
             summary["flagged"], summary["planned_regions"], threshold, out, png)
    return summary
