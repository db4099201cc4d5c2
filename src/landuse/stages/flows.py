"""Stage ``flows``: assign trip endpoints to regions and aggregate OD flows per source.

Endpoints are assigned the cheapest correct way for each source: trips that reference stations or
zones join the *distinct* locations once and equi-join back on the key; pre-aggregated zone OD
tables (``keys_are_regions``) are checked against the region ids; free lon/lat endpoints go
through the spatial-join engine. Endpoints in no region are counted, never dropped silently.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from landuse.config import ConfigError
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
    """Per source: filter by time, assign, aggregate once, summarise, suppress small cells; union.

    Each source's trips are read and aggregated once (:func:`~landuse.features.flows.source_flows`):
    the OD cells (unassigned endpoints included) serve both the summary and the write, and the
    covered days are counted during the same pass, so the per-trip work (joins, spatial
    assignment, the shuffle) runs once per source.
    """
    from functools import reduce

    from pyspark.sql import functions as F

    from landuse.features.flows import filter_time, source_flows
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
    hours = (cfg.hours[0], cfg.hours[1]) if cfg.hours else None  # [start, end): two hours, checked at load
    per_source, summaries = [], {}
    for name, meta in sources.items():
        started = time.perf_counter()
        assigned = assign_endpoints(
            engine,
            filter_time(trips.where(F.col(SOURCE) == name), hours, cfg.day_type),
            locations.where(F.col(SOURCE) == name),
            regions,
            crs,
            keys_are_regions=bool(meta.get("keys_are_regions")),
            has_locations=bool(meta.get("has_locations")),
        )
        try:
            # One pass over the source's trips: OD cells, their summary and the covered days.
            result = source_flows(assigned, cfg.min_cell_count, default_days=cfg.days or 0)
        except ValueError:
            raise ConfigError(
                f"flows.days: source {name!r} has no dated trips; set flows.days to the number of days it covers"
            ) from None
        per_source.append(result)
        summaries[name] = result.summary.as_dict()
        log.info("flows %s: %s (%.1f s)", name, result.summary.as_dict(), time.perf_counter() - started)
    if not per_source:
        raise ConfigError("inputs.trips: the flows stage needs at least one trip source")
    union = reduce(lambda a, b: a.unionByName(b), [r.flows.withColumn(SOURCE, F.lit(n)) for n, r in zip(sources, per_source)])
    started = time.perf_counter()
    try:
        write_spark(union.select(SOURCE, *[c for c in union.columns if c != SOURCE]), ctx.out(T_FLOWS))
        log.info("flows: written in %.1f s", time.perf_counter() - started)
    finally:
        for result in per_source:
            result.release()
    ctx.summary.update(flows=summaries, hours=list(cfg.hours) if cfg.hours else None, day_type=cfg.day_type)


STAGE = Stage(
    name="flows",
    description="assign trip endpoints to regions and aggregate OD flows (counts, daily averages)",
    run=run,
    outputs=lambda config: {T_FLOWS: table_path(config, T_FLOWS)},
    config_keys=("study", "flows", "inputs.trips"),
    upstream=("regions", "ingest"),
    enabled=lambda config: bool(config.inputs.trips),
)

