"""Stage ``flows``: assign trip endpoints to regions and aggregate OD flows per source.

Endpoints are assigned the cheapest correct way for each source: trips that reference stations or
zones join the *distinct* locations once and equi-join back on the key; pre-aggregated zone OD
tables (``keys_are_regions``) are checked against the region ids; free lon/lat endpoints go
through the spatial-join engine. Endpoints in no region are counted, never dropped silently.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from landuse.config import Config, ConfigError
from landuse.manifest import read_manifest
from landuse.runner import Stage, StageContext
from landuse.spark.io import read_table, table_path, write_spark
from landuse.spark.schemas import (
    D_KEY,
    D_LAT,
    D_LON,
    D_REGION,
    LAT,
    LOC_KEY,
    LON,
    O_KEY,
    O_LAT,
    O_LON,
    O_REGION,
    REGION_ID,
    SOURCE,
    T_FLOWS,
    T_LOCATIONS,
    T_REGIONS,
    T_TRIPS,
)
from landuse.stages.regions import study_crs

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from landuse.spatial.engines import SpatialJoinEngine

log = logging.getLogger(__name__)


def assign_endpoints(
    engine: "SpatialJoinEngine",
    trips: "DataFrame",
    locations: "DataFrame",
    regions: "DataFrame",
    crs: str,
    *,
    keys_are_regions: bool,
    has_locations: bool,
) -> "DataFrame":
    """``trips`` plus ``o_region``/``d_region`` (NULL where an endpoint is in no region)."""
    from pyspark.sql import functions as F

    from landuse.spatial.engines import assign_distinct_locations, assign_lonlat

    if keys_are_regions:
        ids = regions.select(F.col(REGION_ID).alias("__rid"))
        out = trips
        for key, col in ((O_KEY, O_REGION), (D_KEY, D_REGION)):
            # A key that is not a known region id becomes NULL (counted as unassigned).
            out = out.join(F.broadcast(ids), F.col(key).cast("long") == F.col("__rid"), "left")
            out = out.withColumnRenamed("__rid", col)
        return out
    if has_locations:
        mapping = assign_distinct_locations(engine, locations, regions, LOC_KEY, LON, LAT, crs)
        out = trips
        for key, col in ((O_KEY, O_REGION), (D_KEY, D_REGION)):
            m = mapping.select(F.col(LOC_KEY).alias(f"__{col}_key"), F.col(REGION_ID).alias(col))
            out = out.join(F.broadcast(m), F.col(key) == F.col(f"__{col}_key"), "left").drop(f"__{col}_key")
        return out
    out = assign_lonlat(engine, trips, regions, O_LON, O_LAT, crs, out_col=O_REGION)
    return assign_lonlat(engine, out, regions, D_LON, D_LAT, crs, out_col=D_REGION)


def run(ctx: StageContext) -> None:
    """Per source: assign, filter by time, aggregate, summarise, suppress small cells; union."""
    from functools import reduce

    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from landuse.features.flows import covered_days, filter_time, od_flows, summarise, suppress_small_cells
    from landuse.spatial.engines import make_engine

    spark, config = ctx.spark, ctx.config
    crs = study_crs(config)
    ingest = read_manifest(table_path(config, T_TRIPS)) or {}
    sources = {k: v for k, v in ingest.get("sources", {}).items() if k in config.inputs.trips}
    trips = read_table(spark, config, T_TRIPS, "ingest")
    locations = read_table(spark, config, T_LOCATIONS, "ingest")
    regions = read_table(spark, config, T_REGIONS, "regions")
    engine = make_engine(spark)
    cfg = config.flows
    per_source, summaries = [], {}
    for name, meta in sources.items():
        assigned = assign_endpoints(
            engine,
            trips.where(F.col(SOURCE) == name),
            locations.where(F.col(SOURCE) == name),
            regions,
            crs,
            keys_are_regions=bool(meta.get("keys_are_regions")),
            has_locations=bool(meta.get("has_locations")),
        )
        hours = tuple(cfg.hours) if cfg.hours else None
        assigned = filter_time(assigned, hours, cfg.day_type).persist(StorageLevel.MEMORY_AND_DISK)
        days = covered_days(assigned) or (cfg.days or 0)
        if days <= 0:
            raise ConfigError(
                f"flows.days: source {name!r} has no dated trips; set flows.days to the number of days it covers"
            )
        flows = od_flows(assigned, days)
        summary = summarise(assigned, flows, days, cfg.min_cell_count)
        per_source.append(suppress_small_cells(flows, cfg.min_cell_count).withColumn(SOURCE, F.lit(name)))
        summaries[name] = summary.as_dict()
        log.info("flows %s: %s", name, summary.as_dict())
    if not per_source:
        raise ConfigError("inputs.trips: the flows stage needs at least one trip source")
    union = reduce(lambda a, b: a.unionByName(b), per_source)
    write_spark(union.select(SOURCE, *[c for c in union.columns if c != SOURCE]), ctx.out(T_FLOWS))
    ctx.summary.update(flows=summaries, hours=list(cfg.hours) if cfg.hours else None, day_type=cfg.day_type)
    spark.catalog.clearCache()


STAGE = Stage(
    name="flows",
    description="assign trip endpoints to regions and aggregate OD flows (counts, daily averages)",
    run=run,
    outputs=lambda config: {T_FLOWS: table_path(config, T_FLOWS)},
    config_keys=("study", "flows", "inputs.trips"),
    upstream=("regions", "ingest"),
    enabled=lambda config: bool(config.inputs.trips),
)

