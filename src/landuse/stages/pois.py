"""Stage ``pois``: assign POIs to regions and count them per region by category token."""

from __future__ import annotations

import logging

from landuse.runner import Stage, StageContext
from landuse.spark.io import read_table, table_path, write_spark
from landuse.spark.schemas import LAT, LON, REGION_ID, T_POI_COUNTS, T_POI_REGIONS, T_POIS, T_REGIONS
from landuse.stages.regions import study_crs

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> None:
    """poi_regions (every POI, region_id NULL outside all regions) and poi_counts."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from landuse.features.pois import poi_counts
    from landuse.spatial.engines import assign_lonlat, make_engine

    spark, config = ctx.spark, ctx.config
    pois = read_table(spark, config, T_POIS, "ingest")
    regions = read_table(spark, config, T_REGIONS, "regions")
    assigned = assign_lonlat(make_engine(spark), pois, regions, LON, LAT, study_crs(config)).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    write_spark(assigned, ctx.out(T_POI_REGIONS))
    write_spark(poi_counts(assigned), ctx.out(T_POI_COUNTS))  # per (region, level, token): spread over tasks
    row = assigned.agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(F.col(REGION_ID).isNull().cast("long")).alias("outside"),
        F.countDistinct(REGION_ID).alias("regions"),
    ).first()
    assert row is not None, "an aggregate without grouping has exactly one row"
    ctx.summary.update(
        pois_in=int(row["n"]),
        pois_assigned=int(row["n"]) - int(row["outside"] or 0),
        pois_outside_regions=int(row["outside"] or 0),
        regions_with_pois=int(row["regions"]),
    )
    log.info("pois: %s", {k: ctx.summary[k] for k in ("pois_in", "pois_assigned", "pois_outside_regions")})
    assigned.unpersist()


STAGE = Stage(
    name="pois",
    description="assign POIs to regions; per-region counts by category level and token",
    run=run,
    outputs=lambda config: {name: table_path(config, name) for name in (T_POI_REGIONS, T_POI_COUNTS)},
    config_keys=("study",),
    upstream=("regions", "ingest"),
    enabled=lambda config: config.inputs.pois is not None,
)
