"""Stage ``ingest``: every trip and POI source → canonical ``trips``, ``locations``, ``pois``.

Rejected rows go to ``rejects/<source>/`` with a reason; the manifest carries, per source table,
rows in = kept + rejected (checked). Rows outside the study extent are rejected: the extent is
``study.extent`` or the regions' bounding box grown by ``study.extent_buffer_m``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from landuse.config import Config
from landuse.runner import Stage, StageContext
from landuse.spark.io import read_geoparquet, table_path, write_spark
from landuse.spark.schemas import (
    LOCATIONS_SCHEMA,
    T_LOCATIONS,
    T_POIS,
    T_REGIONS,
    T_REJECTS,
    T_TRIPS,
    TRIPS_SCHEMA,
)

log = logging.getLogger(__name__)
POI_SOURCE = "pois"


def study_extent(config: Config):  # -> landuse.ingest.validation.LonLatBox
    """The lon/lat box outside which rows are rejected."""
    from pyproj import Transformer

    from landuse.ingest.validation import LonLatBox

    if config.study.extent is not None:
        return LonLatBox(*config.study.extent)
    regions = read_geoparquet(config, T_REGIONS, "regions")
    x0, y0, x1, y1 = regions.total_bounds
    pad = config.study.extent_buffer_m
    to_lonlat = Transformer.from_crs(regions.crs, "EPSG:4326", always_xy=True)
    return LonLatBox.from_bounds(to_lonlat.transform_bounds(x0 - pad, y0 - pad, x1 + pad, y1 + pad))


def outputs(config: Config) -> dict[str, Path]:
    """trips, locations, pois (when configured) and one rejects table per source."""
    out = {T_TRIPS: table_path(config, T_TRIPS), T_LOCATIONS: table_path(config, T_LOCATIONS)}
    names = list(config.inputs.trips)
    if config.inputs.pois is not None:
        out[T_POIS] = table_path(config, T_POIS)
        names.append(POI_SOURCE)
    for name in names:
        out[f"{T_REJECTS}/{name}"] = table_path(config, f"{T_REJECTS}/{name}")
    return out


def run(ctx: StageContext) -> None:
    """Read, validate and write every source; account for every row."""
    from functools import reduce

    from landuse.ingest.pois import read_pois
    from landuse.ingest.quarantine import log_summaries
    from landuse.ingest.trips import read_trips

    spark, config = ctx.spark, ctx.config
    extent = study_extent(config)
    summaries, sources = [], {}
    trips, locations = [], []
    for name, source in config.inputs.trips.items():
        result = read_trips(spark, source, extent, name=name)
        trips.append(result.trips)
        if result.locations is not None:
            locations.append(result.locations)
        write_spark(result.rejects, ctx.out(f"{T_REJECTS}/{name}"), partitions=1)
        summaries += result.summaries()
        sources[name] = {
            "adapter": source.adapter,
            "keys_are_regions": result.keys_are_regions,
            "has_locations": result.locations is not None,
        }
    empty_trips = spark.createDataFrame([], TRIPS_SCHEMA)
    empty_locations = spark.createDataFrame([], LOCATIONS_SCHEMA)
    write_spark(reduce(lambda a, b: a.unionByName(b), trips, empty_trips), ctx.out(T_TRIPS))
    write_spark(reduce(lambda a, b: a.unionByName(b), locations, empty_locations), ctx.out(T_LOCATIONS), partitions=1)
    if config.inputs.pois is not None:
        pois = read_pois(spark, config.inputs.pois, extent, name=POI_SOURCE)
        write_spark(pois.pois, ctx.out(T_POIS))
        write_spark(pois.rejects, ctx.out(f"{T_REJECTS}/{POI_SOURCE}"), partitions=1)
        summaries.append(pois.summary())
        sources[POI_SOURCE] = {"adapter": config.inputs.pois.adapter}
    log_summaries(summaries, log)
    spark.catalog.clearCache()  # the validated rows persisted by landuse.ingest.validation
    ctx.summary.update(
        extent_lonlat=[extent.min_lon, extent.min_lat, extent.max_lon, extent.max_lat],
        sources=sources,
        ingest=[s.to_dict() for s in summaries],
    )


def inputs(config: Config) -> list[Path]:
    """Every trip and POI file (and station / zone tables named in options)."""
    from landuse.config import iter_input_paths

    return [path for key, path in iter_input_paths(config) if key.startswith(("inputs.trips", "inputs.pois"))]


STAGE = Stage(
    name="ingest",
    description="read + validate trips and POIs into canonical tables; bad rows to rejects/<source>/",
    run=run,
    outputs=outputs,
    config_keys=("study", "inputs.trips", "inputs.pois"),
    inputs=inputs,
    upstream=("regions",),
    enabled=lambda config: bool(config.inputs.trips) or config.inputs.pois is not None,
)
