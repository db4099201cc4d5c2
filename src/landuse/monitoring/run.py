"""The monitor stage's body (landuse.stages.monitor): regions + predictions + a planned layer → flag table,
rejected plan rows, map and GeoJSON."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Sequence

import geopandas as gpd
import pyarrow as pa

from landuse.config import Config, ConfigError
from landuse.monitoring.planned import (
    DEFAULT_THRESHOLD,
    DEVIATION,
    PLANNED_CLASS,
    MonitoringError,
    deviation_map,
    flag_deviations,
    planned_per_region,
    read_planned,
)
from landuse.spark.io import PART, write_pandas
from landuse.spark.schemas import RAW, REASON, REGION_ID, SOURCE, T_REGIONS
from landuse.storage import location, read_parquet

log = logging.getLogger(__name__)

T_MONITORING = "monitoring"
T_PREDICTIONS = "predictions"  # as written by landuse.serving.predict
MAPS_OUTPUT = "monitoring_map"  # the monitor stage's output of maps: <driver_dir>/maps/monitoring/
MAP_FILE = "monitoring_deviations.png"  # in it
GEOJSON_FILE = "monitoring.geojson"  # in it (EPSG:4326)
REJECTS_SCHEMA = pa.schema([(SOURCE, pa.string()), (REASON, pa.string()), (RAW, pa.string())])
ADAPTER = "planned_polygons"  # the only adapter of inputs.planned
OPTIONS = ("class_column", "id_column", "crs", "class_map_path")  # inputs.planned.options


def planned_options(config: Config) -> dict[str, Any]:
    """The validated ``inputs.planned.options`` (``class_column`` required); one-line ConfigError otherwise."""
    source = config.inputs.planned
    if source is None:
        raise ConfigError("inputs.planned: required by monitor ({adapter: planned_polygons, path: ..., "
                          "options: {class_column: ...}})")
    if source.adapter != ADAPTER:
        raise ConfigError(f"inputs.planned.adapter: {source.adapter!r} is not {ADAPTER}")
    opts = dict(source.options)
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"inputs.planned.options.{unknown[0]}: unknown option (allowed: {', '.join(OPTIONS)})")
    if not opts.get("class_column"):
        raise ConfigError("inputs.planned.options.class_column: required (the column holding the planned class)")
    return opts


def _require(path: Path, table: str, producer: str) -> Path:
    if not path.exists():
        raise MonitoringError(f"table {table} not found at {path}: run `landuse run {producer}` first")
    return path


def run_monitoring(tables_dir: Path, planned_path: Path, class_column: str, classes: Sequence[str], *,
                   table_out: Path, rejects_out: Path, maps_out: Path, threshold: float = DEFAULT_THRESHOLD,
                   id_column: str | None = None, crs: str | None = None,
                   class_map_path: Path | None = None) -> dict[str, Any]:
    """Compare the planned layer with ``tables/predictions``; write the flags and return a summary.

    Reads ``regions`` and ``predictions`` from ``tables_dir`` and writes into the given directories
    (the monitor stage's staging dirs; the runner writes the manifests and commits them): the flag
    table into ``table_out`` (Parquet, :data:`~landuse.monitoring.planned.FLAG_COLUMNS`), the rejected
    plan rows into ``rejects_out``, and ``monitoring_deviations.png`` and ``monitoring.geojson``
    (EPSG:4326) into ``maps_out``. The summary holds the counts (regions, planned regions, flagged,
    rejected plan rows), the threshold and the plan's path.
    """
    tables_dir = location(tables_dir) if isinstance(tables_dir, str) else tables_dir  # local or a store URI
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
    write_pandas(flags, table_out)
    write_pandas(rejects, rejects_out, schema=REJECTS_SCHEMA)

    maps_out = Path(maps_out)
    maps_out.mkdir(parents=True, exist_ok=True)
    title = f"Planned vs predicted land use: {summary['flagged']} deviations (margin ≥ {threshold:g})"
    deviation_map(regions, flags, maps_out / MAP_FILE, title)
    regions.merge(flags, on=REGION_ID, how="inner").to_crs("EPSG:4326").to_file(maps_out / GEOJSON_FILE,
                                                                                driver="GeoJSON")
    log.info("monitor: %d of %d planned regions deviate from the plan (margin >= %g) -> %s, %s",
             summary["flagged"], summary["planned_regions"], threshold, table_out, maps_out)
    return summary
