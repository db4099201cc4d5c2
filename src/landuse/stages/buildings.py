"""Stage ``buildings``: building footprints → per-region morphology features (H_bld).

Reads ``inputs.buildings`` (adapter ``footprints``: GeoJSON, GPKG, GeoParquet, … with optional
``id_column``, ``height_column``, ``levels_column``, ``type_column``, ``crs``, ``layer``) on the
driver, sends bad rows to ``rejects/buildings`` with a reason, and computes the morphology on Spark
(:func:`landuse.features.morphology.region_building_features`): per-building descriptors per Arrow
batch, assignment of each footprint's representative point to a region with the session's point
join engine, ``groupBy(region_id mod buckets).applyInPandas`` aggregation. Output ``building_features``: one row
per region — ``region_id``, ``vector`` (:data:`~landuse.features.morphology.FEATURE_NAMES` order,
float32), ``has_building`` (False with a zero vector where a region holds no footprint).
"""

from __future__ import annotations

import logging
from pathlib import Path

from landuse.config import Config
from landuse.features.morphology import HAS_BUILDING
from landuse.runner import Stage, StageContext
from landuse.spark.io import read_table, table_path, write_spark
from landuse.spark.schemas import T_REGIONS, T_REJECTS
from landuse.stages.regions import study_crs
from landuse.storage import read_parquet

log = logging.getLogger(__name__)

T_BUILDING_FEATURES = "building_features"
REJECTS = f"{T_REJECTS}/buildings"
SOURCE = "buildings"
__all__ = ["HAS_BUILDING", "REJECTS", "STAGE", "T_BUILDING_FEATURES", "run"]


def run(ctx: StageContext) -> None:
    """Ingest the footprints, then descriptors → region assignment → aggregation on the executors."""

    from landuse.features.morphology import FEATURE_NAMES, HEIGHT_FEATURES, VECTOR, region_building_features
    from landuse.ingest.buildings import buildings_dataframe, read_footprints
    from landuse.ingest.quarantine import write_rejects
    from landuse.spatial.engines import make_engine

    config, cfg = ctx.config, ctx.config.embeddings.buildings
    source = config.inputs.buildings
    assert source is not None  # enabled() guarantees it
    crs = study_crs(config)
    result = read_footprints(source, crs, cfg.min_area_m2, name=SOURCE,
                             repair_tolerance=config.ingest.polygon_repair_tolerance)
    summary = result.summary()
    write_rejects(result.rejects, ctx.out(REJECTS))

    spark = ctx.spark
    buildings = buildings_dataframe(spark, result.buildings)  # sliced over the default parallelism
    regions = read_table(spark, config, T_REGIONS, "regions")
    engine = make_engine(spark)
    features = region_building_features(buildings, regions, engine, cfg.orientation_bins, result.has_height)
    # one row per region (small): a single sorted file
    write_spark(features.orderBy("region_id").coalesce(1), ctx.out(T_BUILDING_FEATURES))

    # The staging dir starts with "." (hidden from Spark's listing): read the small table back with pyarrow.
    table = read_parquet(ctx.out(T_BUILDING_FEATURES), columns=[VECTOR, HAS_BUILDING]).to_pandas()
    assigned = int(sum(float(v[0]) for v in table[VECTOR]))  # feature 0 is the count
    with_buildings = int(table[HAS_BUILDING].sum())
    notes = list(result.notes)
    outside = len(result.buildings) - assigned
    if outside:
        notes.append(f"{outside} footprint(s) outside every region are left out")
    ctx.summary.update(
        ingest=[summary.to_dict()],
        feature_names=list(FEATURE_NAMES),
        dim=len(FEATURE_NAMES),
        has_height=result.has_height,
        height_features=list(HEIGHT_FEATURES),
        orientation_bins=cfg.orientation_bins,
        min_area_m2=cfg.min_area_m2,
        engine=engine.name,
        regions=len(table),
        regions_with_buildings=with_buildings,
        buildings_in=summary.rows_in,
        buildings_kept=summary.kept,
        buildings_rejected=summary.rejected,
        buildings_assigned=assigned,
        buildings_outside_regions=outside,
        notes=notes,
    )
    log.info("buildings: %s; %d assigned to %d of %d regions (%s engine)", summary.line(), assigned,
             with_buildings, len(table), engine.name)
    for note in notes:
        log.info("buildings: %s", note)


def inputs(config: Config) -> list[Path]:
    """The footprint file."""
    from landuse.config import iter_input_paths

    return [path for key, path in iter_input_paths(config) if key.startswith("inputs.buildings")]


STAGE = Stage(
    name="buildings",
    description="H_bld: building footprints -> per-region morphology (count, density, built-up share, "
                "size / shape / orientation statistics, heights); bad rows to rejects/buildings",
    run=run,
    outputs=lambda config: {T_BUILDING_FEATURES: table_path(config, T_BUILDING_FEATURES),
                            REJECTS: table_path(config, REJECTS)},
    config_keys=("study", "inputs.buildings", "embeddings.buildings", "ingest.polygon_repair_tolerance"),
    inputs=inputs,
    upstream=("regions",),
    enabled=lambda config: config.inputs.buildings is not None and config.inputs.regions is not None,
)
