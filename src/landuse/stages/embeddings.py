"""Stages ``flow-embeddings`` (H_flow) and ``poi-embeddings`` (H_poi).

* ``flow-embeddings``: the OD graph of ``flows`` (one source or all summed; weight ``daily_avg``
  or ``trips``) → seeded weighted random walks (vectorised, alias sampling) → skip-gram Word2Vec
  (gensim, ``corpus_file`` mode). The flows table is one row per OD cell — at most a few million
  rows, the graph Word2Vec trains on anyway — so it is read into the driver; trips never are.
* ``poi-embeddings``: greedy insertion tours of each region's POIs (Spark, grouped by region) →
  Doc2Vec PV-DM. Only the tours (one row per region) reach the driver.

Both write one row per region of the regions table — ``region_id``, ``vector`` (list<float>), a
flag (``has_flow`` / ``has_pois``) — so regions without data are flagged, never dropped.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from landuse.config import ConfigError
from landuse.runner import Stage, StageContext
from landuse.spark.io import read_pandas, read_table, table_path, write_pandas
from landuse.spark.schemas import REGION_ID, SOURCE, T_FLOWS, T_POI_REGIONS, T_REGIONS
from landuse.stages.regions import study_crs

log = logging.getLogger(__name__)
T_FLOW_EMBEDDINGS = "flow_embeddings"
T_POI_EMBEDDINGS = "poi_embeddings"


def region_ids(ctx: StageContext) -> np.ndarray:
    """All region ids (the rows every embedding table must have)."""
    return read_pandas(ctx.config, T_REGIONS, "regions", columns=[REGION_ID])[REGION_ID].to_numpy(dtype=np.int64)


def run_flow(ctx: StageContext) -> None:
    """Walks + Word2Vec over the configured flows."""
    from pyspark.sql import functions as F

    from landuse.features.walks import FlowGraph, random_walks
    from landuse.features.word2vec import flow_embedding_table, train_flow_embeddings

    config, cfg = ctx.config, ctx.config.embeddings.flow
    flows = read_table(ctx.spark, config, T_FLOWS, "flows")
    if cfg.source is not None:
        flows = flows.where(F.col(SOURCE) == cfg.source)
    od = (
        flows.groupBy("o_region", "d_region").agg(F.sum(cfg.weight).cast("double").alias("w")).toPandas()
    )
    if od.empty:
        raise ConfigError(f"embeddings.flow.source: no flows for source {cfg.source!r} in {table_path(config, T_FLOWS)}")
    nodes = region_ids(ctx)
    graph = FlowGraph.from_edges(
        od["o_region"].to_numpy(np.int64), od["d_region"].to_numpy(np.int64), od["w"].to_numpy(float), nodes=nodes
    )
    walks = random_walks(graph, cfg.walks_per_node, cfg.walk_length, config.seed, p=cfg.p, q=cfg.q)
    vectors = train_flow_embeddings(
        np.ascontiguousarray(walks), dim=cfg.dim, window=cfg.window, negative=cfg.negative, epochs=cfg.epochs,
        workers=cfg.workers, seed=config.seed,
    )
    table = flow_embedding_table(graph, vectors)
    write_pandas(table, ctx.out(T_FLOW_EMBEDDINGS))
    ctx.summary.update(regions=len(table), regions_with_flow=int(table["has_flow"].sum()), edges=len(od),
                       walks=int(walks.shape[0]), dim=cfg.dim)
    log.info("flow embeddings: %d regions, %d with flow, %d edges", len(table), int(table["has_flow"].sum()), len(od))


def run_poi(ctx: StageContext) -> None:
    """Greedy tours + Doc2Vec over the POIs assigned to regions."""
    from landuse.features.doc2vec import poi_embedding_table, train_poi_embeddings
    from landuse.features.poi_tours import region_tours

    config, cfg = ctx.config, ctx.config.embeddings.poi
    pois = read_table(ctx.spark, config, T_POI_REGIONS, "pois")
    tours: pd.DataFrame = region_tours(pois, study_crs(config), cfg.level, config.seed, cfg.min_pois).toPandas()
    vectors = train_poi_embeddings(
        tours, dim=cfg.dim, window=cfg.window, epochs=cfg.epochs, workers=cfg.workers, seed=config.seed
    )
    table = poi_embedding_table(tours, vectors, region_ids=region_ids(ctx), dim=cfg.dim)
    write_pandas(table, ctx.out(T_POI_EMBEDDINGS))
    ctx.summary.update(regions=len(table), regions_with_pois=int(table["has_pois"].sum()),
                       regions_below_min_pois=int(table["below_min_pois"].sum()), dim=cfg.dim, level=cfg.level)
    log.info("poi embeddings: %d regions, %d with POIs", len(table), int(table["has_pois"].sum()))


FLOW_STAGE = Stage(
    name="flow-embeddings",
    description="H_flow: weighted random walks on the OD graph -> Word2Vec per region",
    run=run_flow,
    outputs=lambda config: {T_FLOW_EMBEDDINGS: table_path(config, T_FLOW_EMBEDDINGS)},
    config_keys=("seed", "embeddings.flow"),
    upstream=("regions", "flows"),
    enabled=lambda config: bool(config.inputs.trips),
)

POI_STAGE = Stage(
    name="poi-embeddings",
    description="H_poi: greedy POI tours per region -> Doc2Vec per region",
    run=run_poi,
    outputs=lambda config: {T_POI_EMBEDDINGS: table_path(config, T_POI_EMBEDDINGS)},
    config_keys=("seed", "study", "embeddings.poi"),
    upstream=("regions", "pois"),
    enabled=lambda config: config.inputs.pois is not None,
)
