"""Stage ``regions``: canonical regions (GeoParquet), queen adjacency and distance-decay edges.

``inputs.regions`` adapters:

* ``polygons`` — a polygon file (shp, gpkg, GeoJSON, GeoParquet) in any CRS; options
  ``id_column`` (required), ``crs`` (when the file has none), ``layer``;
* ``grid`` — square cells of ``cell_size_m`` over the bounds of the polygon file at ``path``
  (e.g. a city boundary); option ``clip`` (default true) keeps only cells overlapping the boundary (positive area).
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


def build_regions(config: Config):  # -> geopandas.GeoDataFrame (canonical regions table)
    """Read ``inputs.regions`` and build the canonical regions table in ``study.crs``."""
    from landuse.ingest.polygons import read_polygons
    from landuse.spatial.regions import grid_regions, regions_from_geodataframe

    source, crs = regions_source(config), study_crs(config)
    opts = dict(source.options)
    if source.adapter == "polygons":
        id_column = opts.get("id_column")
        if not id_column:
            raise ConfigError("inputs.regions.options.id_column: required for adapter polygons")
        gdf = read_polygons(source.path, id_column=id_column, crs=opts.get("crs"), layer=opts.get("layer"))
        return regions_from_geodataframe(gdf, id_column, crs)
    cell = opts.get("cell_size_m")
    if not isinstance(cell, (int, float)) or cell <= 0:
        raise ConfigError("inputs.regions.options.cell_size_m: required for adapter grid (a positive number of metres)")
    boundary = read_polygons(source.path, crs=opts.get("crs"), layer=opts.get("layer")).to_crs(crs)
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

    regions = build_regions(ctx.config)
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
    config_keys=("study", "regions", "inputs.regions"),
    inputs=inputs,
    upstream=(),
    enabled=lambda config: config.inputs.regions is not None,
)
