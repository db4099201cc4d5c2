"""Stage ``regions``: canonical regions (GeoParquet), queen adjacency and distance-decay edges.

``inputs.regions`` adapters:

* ``polygons`` — a polygon file (shp, gpkg, GeoJSON, GeoParquet) in any CRS; options
  ``id_column`` (omitted or ``row_number``: regions numbered 0..N-1 in file order),
  ``on_duplicate_id`` (``error``, the default, or ``row_number``: number the rows when the id
  column repeats a value, keeping it as ``source_id``), ``crs`` (when the file has none), ``layer``;
* ``grid`` — square cells of ``cell_size_m`` over the bounds of the polygon file at ``path``
  (e.g. a city boundary); option ``clip`` (default true) keeps only cells overlapping the boundary (positive area).

An invalid polygon is repaired with ``make_valid`` only when that changes its area by at most
``ingest.polygon_repair_tolerance``; otherwise the stage fails with one line naming the row (a
region is never silently reshaped, and there is no rejects table for regions: rows in = regions).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from landuse.config import Config, ConfigError, SourceConfig
from landuse.runner import Stage, StageContext, no_spark
from landuse.spark.io import table_path, write_geoparquet, write_pandas
from landuse.spark.schemas import T_ADJACENCY, T_DISTANCE_DECAY, T_REGIONS

log = logging.getLogger(__name__)

ADAPTERS = ("polygons", "grid")


def study_crs(config: Config) -> str:
    """The projected working CRS, or a one-line error when unset."""
    if not config.study.crs:
        raise ConfigError("study.crs: required by the spatial stages (a projected CRS in metres, e.g. EPSG:32650)")
    return config.study.crs


def regions_source(config: Config) -> SourceConfig:
    """``inputs.regions``, validated."""
    source = config.inputs.regions
    if source is None:
        raise ConfigError("inputs.regions: required by the regions stage ({adapter: polygons, path: ..., options: {id_column: ...}})")
    if source.adapter not in ADAPTERS:
        raise ConfigError(f"inputs.regions.adapter: {source.adapter!r} is not one of {', '.join(ADAPTERS)}")
    return source


def build_regions(config: Config, notes: dict | None = None):  # -> geopandas.GeoDataFrame (canonical regions table)
    """Read ``inputs.regions`` and build the canonical regions table in ``study.crs``.

    ``notes`` (when given) receives how the ids were made, for the stage manifest (``id_column``).
    """
    from landuse.ingest.polygons import read_polygons
    from landuse.spatial.regions import (
        ON_DUPLICATE_ID,
        ROW_NUMBER,
        RegionsError,
        grid_regions,
        regions_from_geodataframe,
    )

    source, crs = regions_source(config), study_crs(config)
    opts = dict(source.options)
    # An invalid polygon is repaired only within this area change, else the read fails naming it.
    tolerance = config.ingest.polygon_repair_tolerance
    notes = {} if notes is None else notes
    if source.adapter == "polygons":
        id_column = opts.get("id_column") or None
        on_duplicate = opts.get("on_duplicate_id", "error")
        if on_duplicate not in ON_DUPLICATE_ID:
            raise ConfigError(f"inputs.regions.options.on_duplicate_id: {on_duplicate!r} is not one of "
                              f"{', '.join(ON_DUPLICATE_ID)}")
        if id_column is not None and not isinstance(id_column, str):
            raise ConfigError(f"inputs.regions.options.id_column: expected a column name or row_number, got {id_column!r}")
        if id_column is None or id_column == ROW_NUMBER:
            gdf = read_polygons(source.path, crs=opts.get("crs"), layer=opts.get("layer"), repair_tolerance=tolerance)
            notes["id_column"] = f"{ROW_NUMBER} (no id column given)" if id_column is None else ROW_NUMBER
            log.info("regions: no id column; regions numbered 0..%d in file order", len(gdf) - 1)
            return regions_from_geodataframe(gdf, None, crs)
        # ids are checked below (regions_from_geodataframe), where duplicates may become row numbers
        gdf = read_polygons(source.path, crs=opts.get("crs"), layer=opts.get("layer"), repair_tolerance=tolerance)
        if id_column not in gdf.columns:
            columns = ", ".join(str(c) for c in gdf.columns if c != gdf.geometry.name)
            raise ConfigError(f"inputs.regions.options.id_column: {source.path} has no column {id_column!r} "
                              f"(has: {columns}); omit id_column (or set it to row_number) to number the "
                              "regions 0..N-1 in file order")
        try:
            regions = regions_from_geodataframe(gdf, id_column, crs, on_duplicate_id=on_duplicate)
        except RegionsError as exc:
            raise RegionsError(f"{source.path}: {exc}") from None
        if on_duplicate == ROW_NUMBER and gdf[id_column].duplicated().any():
            notes["id_column"] = (f"{ROW_NUMBER} (duplicate ids in {id_column!r}: "
                                  f"{int(gdf[id_column].duplicated(keep=False).sum())} rows; source_id keeps them)")
            log.warning("regions: id column %r repeats values; regions numbered 0..%d in file order "
                        "(on_duplicate_id: row_number), source_id keeps the %r values", id_column, len(gdf) - 1, id_column)
        else:
            notes["id_column"] = id_column
        return regions
    cell = opts.get("cell_size_m")
    if not isinstance(cell, (int, float)) or cell <= 0:
        raise ConfigError("inputs.regions.options.cell_size_m: required for adapter grid (a positive number of metres)")
    boundary = read_polygons(source.path, crs=opts.get("crs"), layer=opts.get("layer"), repair_tolerance=tolerance).to_crs(crs)
    grid = grid_regions(boundary.total_bounds, float(cell), crs)
    if opts.get("clip", True):
        outline = boundary.geometry.union_all()
        # Keep cells overlapping the outline with positive area (a cell only touching it is outside).
        grid = grid[(grid.geometry.intersection(outline).area > 0).to_numpy()]
    grid["grid_id"] = grid["region_id"]
    return regions_from_geodataframe(grid, "grid_id", crs)


@no_spark
def run(ctx: StageContext) -> None:
    """Regions + edges; all driver-sized (regions are ≤ ~10^5 polygons), so no Spark is started."""
    from landuse.spatial.adjacency import distance_decay_edges, queen_adjacency

    notes: dict = {}
    regions = build_regions(ctx.config, notes)
    adjacency = queen_adjacency(regions)
    decay = distance_decay_edges(regions, ctx.config.regions.decay_radius_m)
    write_geoparquet(regions, ctx.out(T_REGIONS))
    write_pandas(adjacency, ctx.out(T_ADJACENCY))
    write_pandas(decay, ctx.out(T_DISTANCE_DECAY))
    degree = np.bincount(
        np.searchsorted(regions["region_id"].to_numpy(), adjacency["region_id_a"].to_numpy()), minlength=len(regions)
    )
    ctx.summary.update(
        regions=len(regions),
        crs=study_crs(ctx.config),
        adjacency_edges=len(adjacency),
        regions_without_neighbours=int((degree == 0).sum()),
        distance_decay_edges=len(decay),
        total_area_km2=round(float(regions["area_m2"].sum()) / 1e6, 3),
        **notes,
    )
    log.info("regions: %s", {k: ctx.summary[k] for k in ("regions", "adjacency_edges", "regions_without_neighbours")})


def inputs(config: Config) -> list[Path]:
    """The regions file."""
    return [regions_source(config).path] if config.inputs.regions else []


STAGE = Stage(
    name="regions",
    description="regions table (GeoParquet), queen adjacency and distance-decay edges",
    run=run,
    outputs=lambda config: {name: table_path(config, name) for name in (T_REGIONS, T_ADJACENCY, T_DISTANCE_DECAY)},
    config_keys=("study", "regions", "inputs.regions", "ingest.polygon_repair_tolerance"),
    inputs=inputs,
    upstream=(),
    after=("synth",),  # the synthetic city's raw files (hashed as inputs) must exist first
    enabled=lambda config: config.inputs.regions is not None,
)
