"""Stage ``assemble``: the Petastorm-ready training tables the trainer reads.

* ``node_features`` — one row per region, sorted by region id (row i = graph node i), in Parquet
  shards of ``assemble.shard_rows`` rows and row groups of ``assemble.row_group_rows``: region_id,
  one fixed-length float vector per available modality (h_poi, h_img, h_geo, h_flow, then
  h_poi_counts, h_poi_tfidf, h_poi_density, h_poi_text, h_building, h_zeroshot and every
  ``inputs.embeddings`` name) with its flag (has_pois, has_image, has_geo, has_flow, has_<name>),
  the label distribution ``y``, ``coverage`` and ``has_label``. Numeric scalar and array columns
  only, as Petastorm's ``make_batch_reader`` needs.
* ``embedding_rejects`` — with ``inputs.embeddings``: the user-embedding rows that were not used,
  with the reason (see :mod:`landuse.data.external`).
* ``edges_flow`` — (o_region, d_region, weight) summed over ``assemble.flow_source`` (or all sources).

``edges_adjacency`` and ``edges_distance_decay`` come from the ``regions`` stage. The manifest of
``node_features`` records the dims, counts and class names (see ``landuse.data.tables.node_manifest``).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from landuse.config import Config, ConfigError
from landuse.runner import Stage, StageContext
from landuse.spark.io import parquet_rows, read_pandas, read_table, table_path, write_pandas, write_spark
from landuse.spark.schemas import REGION_ID, T_FLOWS, T_LABELS, T_REGIONS
from landuse.stages.embeddings import FLOW_STAGE, POI_STAGE, T_FLOW_EMBEDDINGS, T_POI_EMBEDDINGS
from landuse.stages.buildings import STAGE as BUILDINGS_STAGE
from landuse.stages.buildings import T_BUILDING_FEATURES
from landuse.stages.imagery import IMAGERY_STAGE, LOCATION_STAGE, T_GEO_FEATURES, T_IMAGE_FEATURES
from landuse.stages.poi_features import POI_FEATURE_TABLES
from landuse.stages.poi_features import STAGE as POI_FEATURES_STAGE
from landuse.stages.poi_features import modalities as poi_feature_modalities

log = logging.getLogger(__name__)
T_NODE_FEATURES = "node_features"
T_IMAGE_EMBEDDINGS = "image_embeddings"  # written by the pretrain stage (landuse.stages.pretrain)
T_EDGES_FLOW = "edges_flow"
T_EMBEDDING_REJECTS = "embedding_rejects"

# modality -> (stage that makes it, its table, its flag column)
MODALITY_SOURCES = {
    "poi": (POI_STAGE, T_POI_EMBEDDINGS, "has_pois"),
    "image": (IMAGERY_STAGE, T_IMAGE_FEATURES, "has_image"),
    "geo": (LOCATION_STAGE, T_GEO_FEATURES, "has_geo"),
    "flow": (FLOW_STAGE, T_FLOW_EMBEDDINGS, "has_flow"),
    **{name: (POI_FEATURES_STAGE, table, f"has_{name}") for name, table in POI_FEATURE_TABLES.items()},
    "building": (BUILDINGS_STAGE, T_BUILDING_FEATURES, "has_building"),
}


def _written(name: str, config: Config) -> bool:
    """Whether the modality's producing stage writes it under ``config``."""
    stage = MODALITY_SOURCES[name][0]
    if not stage.enabled(config):
        return False
    return name not in POI_FEATURE_TABLES or name in poi_feature_modalities(config)


def run(ctx: StageContext) -> None:
    """Join every enabled modality and the labels per region; sum flows into edges_flow."""
    from landuse.data.tables import assemble_node_features, flow_edges, node_manifest, write_shards

    config = ctx.config
    ids = read_pandas(config, T_REGIONS, "regions", columns=[REGION_ID])[REGION_ID].to_numpy(np.int64)
    modalities: dict[str, pd.DataFrame] = {}
    for name, (stage, table, flag) in MODALITY_SOURCES.items():
        if _written(name, config):
            producer = stage.name
            if name == "image" and config.embeddings.image.source == "encoder":
                table, producer = T_IMAGE_EMBEDDINGS, "pretrain"  # H_img = Pooling(Overlay(encoder(patches)))
            modalities[name] = read_pandas(config, table, producer, columns=[REGION_ID, "vector", flag])
    modalities.update(_external(ctx))
    labels = read_pandas(config, T_LABELS, "labels") if config.inputs.landuse is not None else None
    classes = list(config.labels.classes)
    try:
        table = assemble_node_features(ids, modalities, labels, classes)
    except ValueError as exc:
        raise ConfigError(f"assemble: {exc}") from None
    cfg = config.assemble
    files = write_shards(table, ctx.out(T_NODE_FEATURES), cfg.row_group_rows, cfg.shard_rows)
    summary = node_manifest(table, classes)
    if config.inputs.trips:
        edges = flow_edges(read_table(ctx.spark, config, T_FLOWS, "flows"), cfg.flow_source, cfg.flow_weight)
        write_spark(edges, ctx.out(T_EDGES_FLOW))  # one row per region pair with flow: many tasks, many files
        n_edges = parquet_rows(ctx.out(T_EDGES_FLOW))
        if n_edges == 0 and cfg.flow_source is not None:
            raise ConfigError(f"assemble.flow_source: no flows for source {cfg.flow_source!r} in {table_path(config, T_FLOWS)}")
        summary["flow_edges"] = n_edges
    ctx.summary.update(summary, shards=len(files))
    log.info("assemble: %d regions, modalities %s, %d shards", table.num_rows, ", ".join(modalities) or "none", len(files))


def _external(ctx: StageContext) -> dict[str, pd.DataFrame]:
    """The ``inputs.embeddings`` modality tables; their unused rows go to embedding_rejects."""
    from landuse.data.external import read_external_embedding
    from landuse.ingest.errors import IngestError
    from landuse.spark.schemas import SOURCE_ID

    config = ctx.config
    if not config.inputs.embeddings:
        return {}
    regions = read_pandas(config, T_REGIONS, "regions", columns=[REGION_ID, SOURCE_ID])
    out, rejects, summary = {}, [], {}
    for name, ext in config.inputs.embeddings.items():
        try:
            read = read_external_embedding(name, ext, regions)
        except IngestError as exc:
            raise ConfigError(str(exc)) from None
        out[name] = read.table
        rejects.append(read.rejects)
        summary[name] = {"rows_in": read.rows_in, "kept": read.kept, "rejected": len(read.rejects), "dim": read.dim,
                         "by_reason": read.rejects["reason"].value_counts().to_dict()}
        if len(read.rejects):
            log.warning("inputs.embeddings.%s: %d of %d rows not used (%s); see table %s", name, len(read.rejects),
                        read.rows_in, summary[name]["by_reason"], T_EMBEDDING_REJECTS)
    write_pandas(pd.concat(rejects, ignore_index=True), ctx.out(T_EMBEDDING_REJECTS))
    ctx.summary["external_embeddings"] = summary
    return out


def outputs(config: Config) -> dict:
    """node_features, plus edges_flow when there are trips, embedding_rejects with inputs.embeddings."""
    out = {T_NODE_FEATURES: table_path(config, T_NODE_FEATURES)}
    if config.inputs.trips:
        out[T_EDGES_FLOW] = table_path(config, T_EDGES_FLOW)
    if config.inputs.embeddings:
        out[T_EMBEDDING_REJECTS] = table_path(config, T_EMBEDDING_REJECTS)
    return out


def inputs(config: Config) -> list:
    """The user's embedding files (the encoder's image_embeddings come from the pretrain stage)."""
    return [ext.path for ext in config.inputs.embeddings.values()]


STAGE = Stage(
    name="assemble",
    description="Petastorm-ready training tables: node_features shards (all modalities + labels), edges_flow",
    run=run,
    outputs=outputs,
    config_keys=("labels", "assemble", "embeddings.image.source", "embeddings.poi_features.text",
                 "embeddings.poi_features.zeroshot", "inputs.embeddings"),
    inputs=inputs,
    upstream=("regions", "flows", "labels", "poi-embeddings", "flow-embeddings", "imagery", "location", "poi-features",
              "buildings", "pretrain"),
    enabled=lambda config: config.inputs.regions is not None,
)
