"""Stages ``flow-embeddings`` (H_flow) and ``poi-embeddings`` (H_poi).

* ``flow-embeddings``: the OD graph of ``flows`` (one source or all summed; weight ``daily_avg``
  or ``trips``) → seeded weighted random walks generated on the executors → skip-gram Word2Vec
  (gensim, ``corpus_file`` mode). Spark sums the flows per region pair; only those edge arrays —
  O(edges between regions), never per trip or per flow row — come to the driver (through Arrow),
  which builds the alias tables (O(N + E)) and broadcasts them as compact integer arrays. The
  executors walk their share of the (start region, walk index) pairs (``mapInArrow``; every walk
  has its own seeded random stream, so the walks do not depend on the partitioning) and write the
  walks as a text corpus with Spark's text writer.
* ``poi-embeddings``: greedy insertion tours of each region's POIs (Spark, grouped by region),
  written by the executors as a text corpus (one tagged line per region) → Doc2Vec PV-DM.

Both corpora go to ``<output>/_corpus`` in the staging directory; the driver streams the part
files into one local file in a temporary directory (file reads, no Spark collect), gensim trains
from it, and the corpus directory is deleted. The fitted model is saved in ``<output>/_model/`` and
committed with the table (``landuse.features.word2vec.load_flow_model`` /
``landuse.features.doc2vec.load_poi_model`` load it; Doc2Vec can infer vectors for new tours).

Both write one row per region of the regions table — ``region_id``, ``vector`` (list<float>), a
flag (``has_flow`` / ``has_pois``) — so regions without data are flagged, never dropped.

Inference mode (``inference.training_tables`` set: ``landuse run predict --regions`` embedding
regions that were not in the training run) fits nothing:

* ``poi-embeddings`` builds the tours and their corpus exactly as above, then infers each line with
  the training run's Doc2Vec (:func:`landuse.features.doc2vec.infer_corpus`; its training epochs,
  the RNG reset to ``seed`` for every region, so a vector does not depend on the other regions);
* ``flow-embeddings``: Word2Vec over walks is transductive (its tokens are the training regions), so a
  new region's H_flow is the area-weighted mean of the vectors of the training regions with flow it
  overlaps (:func:`landuse.features.word2vec.overlap_flow_table`; no overlap: zeros, ``has_flow``
  False). Exact for a region equal to a training region, an approximation for any other.

The training tables read are stage inputs (their manifests), so switching modes, or a refitted
training run, reruns the stage.
"""

from __future__ import annotations

import io
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from landuse.config import Config, ConfigError
from landuse.constants import MANIFEST_FILE
from landuse.runner import Stage, StageContext
from landuse.spark.io import read_pandas, read_table, table_path, write_pandas
from landuse.spark.schemas import REGION_ID, SOURCE, T_FLOWS, T_POI_REGIONS, T_REGIONS
from landuse.stages.regions import study_crs

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)
T_FLOW_EMBEDDINGS = "flow_embeddings"
T_POI_EMBEDDINGS = "poi_embeddings"
CORPUS_DIR = "_corpus"  # inside the staging output: the executors' text corpus, removed after training


def region_ids(ctx: StageContext) -> np.ndarray:
    """All region ids (the rows every embedding table must have)."""
    return read_pandas(ctx.config, T_REGIONS, "regions", columns=[REGION_ID])[REGION_ID].to_numpy(dtype=np.int64)


def collect_columns(df: DataFrame) -> dict[str, np.ndarray]:
    """The columns of a driver-sized DataFrame as numpy arrays, through Arrow (no pandas, no Rows).

    Only for aggregates whose size is bounded by design (here: one row per region pair with flow).
    """
    import pyarrow as pa

    # Spark 4 / 3.5; the 3.5 stubs have no toArrow, so mypy reads it as a column
    batches = df.toArrow().to_batches() if hasattr(df, "toArrow") else df._collect_as_arrow()  # type: ignore[operator]
    if not batches:
        return {name: np.empty(0) for name in df.columns}
    table = pa.Table.from_batches(batches)
    return {name: table.column(name).to_numpy() for name in df.columns}


def _corpus_dir(out: Any) -> Any:
    return out / CORPUS_DIR


def training_table(config: Config, name: str) -> Any:
    """Table ``name`` of the training run in inference mode (``inference.training_tables``), else None."""
    source = config.inference.training_tables
    return None if source is None else source / name


def inference_inputs(config: Config, *names: str) -> list[Any]:
    """In inference mode the manifests of the training tables a stage reads (so its fingerprint covers
    them: switching modes or refitting the training run reruns the stage); [] otherwise."""
    if config.inference.training_tables is None:
        return []
    return [training_table(config, name) / MANIFEST_FILE for name in names]


def run_flow(ctx: StageContext) -> None:
    """Walks on the executors + Word2Vec over the configured flows (inference mode: see infer_flow)."""
    from pyspark.sql import functions as F

    from landuse.features.walks import FlowGraph, spark_walk_corpus
    from landuse.features.word2vec import (
        concat_text_parts, fit_word2vec, flow_embedding_table, save_flow_model, word_vectors,
    )
    from landuse.storage import remove_tree

    if ctx.config.inference.training_tables is not None:
        infer_flow(ctx)  # Word2Vec over walks is transductive: nothing to fit for regions it never saw
        return

    config, cfg = ctx.config, ctx.config.embeddings.flow
    flows = read_table(ctx.spark, config, T_FLOWS, "flows")
    if cfg.source is not None:
        flows = flows.where(F.col(SOURCE) == cfg.source)
    # One row per region pair with flow: O(edges between regions), the graph Word2Vec walks anyway.
    od = flows.groupBy("o_region", "d_region").agg(F.sum(cfg.weight).cast("double").alias("w")).select(
        F.col("o_region").cast("long").alias("o"), F.col("d_region").cast("long").alias("d"), "w"
    )
    edges = collect_columns(od)
    if edges["o"].size == 0:
        raise ConfigError(f"embeddings.flow.source: no flows for source {cfg.source!r} in {table_path(config, T_FLOWS)}")
    graph = FlowGraph.from_edges(edges["o"], edges["d"], edges["w"], nodes=region_ids(ctx))
    del edges
    out = ctx.out(T_FLOW_EMBEDDINGS)
    corpus = _corpus_dir(out)
    walks = spark_walk_corpus(ctx.spark, graph, str(corpus), cfg.walks_per_node, cfg.walk_length, config.seed,
                              p=cfg.p, q=cfg.q, partitions=config.spark.shuffle_partitions)
    with tempfile.TemporaryDirectory(prefix="flow-embeddings-") as tmp:
        local = Path(tmp) / "walks.txt"
        lines = concat_text_parts(corpus, local)
        if lines != walks:
            raise RuntimeError(f"walk corpus has {lines} lines, expected {walks}")
        model = fit_word2vec(local, dim=cfg.dim, window=cfg.window, negative=cfg.negative, epochs=cfg.epochs,
                             workers=cfg.workers, seed=config.seed)
    remove_tree(corpus)
    save_flow_model(model, out)
    table = flow_embedding_table(graph, word_vectors(model))
    write_pandas(table, out)
    ctx.summary.update(regions=len(table), regions_with_flow=int(table["has_flow"].sum()), edges=graph.n_edges,
                       walks=walks, dim=cfg.dim)
    log.info("flow embeddings: %d regions, %d with flow, %d edges, %d walks", len(table),
             int(table["has_flow"].sum()), graph.n_edges, walks)


def infer_flow(ctx: StageContext) -> None:
    """Inference mode: each region's H_flow from the training regions it overlaps (module docstring)."""
    import geopandas as gpd

    from landuse.features.word2vec import overlap_flow_table
    from landuse.spark.io import PART, read_geoparquet
    from landuse.storage import read_parquet

    config = ctx.config
    regions = read_geoparquet(config, T_REGIONS, "regions")
    train = gpd.read_parquet(io.BytesIO((training_table(config, T_REGIONS) / PART).read_bytes()))
    if train.crs != regions.crs:
        raise ConfigError(f"inference.training_tables: the training regions are in {train.crs}, these in "
                          f"{regions.crs}; use the training run's study.crs")
    flow = read_parquet(training_table(config, T_FLOW_EMBEDDINGS), columns=[REGION_ID, "vector", "has_flow"]).to_pandas()
    flow = train[[REGION_ID, "geometry"]].merge(flow, on=REGION_ID, how="inner")
    vectors = np.stack(flow["vector"].to_list()) if len(flow) else np.zeros((0, config.embeddings.flow.dim))
    table = overlap_flow_table(regions[REGION_ID].to_numpy(), regions.geometry.values, flow[REGION_ID].to_numpy(),
                               flow.geometry.values, vectors, flow["has_flow"].to_numpy(bool))
    write_pandas(table, ctx.out(T_FLOW_EMBEDDINGS))
    ctx.summary.update(regions=len(table), regions_with_flow=int(table["has_flow"].sum()), dim=int(vectors.shape[1]),
                       mode="inferred: area-weighted mean of the training regions' vectors",
                       training_table=str(training_table(config, T_FLOW_EMBEDDINGS)),
                       mean_flow_overlap=round(float(table["flow_overlap"].mean()), 6) if len(table) else 0.0)
    log.info("flow embeddings (inferred from %d training regions): %d regions, %d with flow", len(flow), len(table),
             int(table["has_flow"].sum()))


def run_poi(ctx: StageContext) -> None:
    """Greedy tours on the executors + Doc2Vec over the POIs assigned to regions (inference mode: the
    training Doc2Vec infers each tour instead)."""
    from landuse.features.doc2vec import doc_vectors, fit_doc2vec, poi_embedding_table, save_poi_model, untag_corpus
    from landuse.features.poi_tours import BELOW_MIN_POIS, N_POIS, region_tours, tour_corpus
    from landuse.storage import remove_tree

    config, cfg = ctx.config, ctx.config.embeddings.poi
    pois = read_table(ctx.spark, config, T_POI_REGIONS, "pois")
    tours = region_tours(pois, study_crs(config), cfg.level, config.seed, cfg.min_pois)
    out = ctx.out(T_POI_EMBEDDINGS)
    corpus = _corpus_dir(out)
    tour_corpus(tours).write.mode("overwrite").option("compression", "none").text(str(corpus))
    if config.inference.training_tables is not None:
        _infer_poi(ctx, corpus)
        return
    with tempfile.TemporaryDirectory(prefix="poi-embeddings-") as tmp:
        local = Path(tmp) / "tours.txt"
        ids, n_tokens = untag_corpus(corpus, local)  # O(regions): the region of each line
        if ids.size:
            model = fit_doc2vec(local, dim=cfg.dim, window=cfg.window, epochs=cfg.epochs, workers=cfg.workers,
                                seed=config.seed)
    remove_tree(corpus)
    if ids.size:
        vectors = doc_vectors(model, ids)
        save_poi_model(model, ids, out)
    else:
        vectors = pd.DataFrame({REGION_ID: pd.Series([], dtype="int64"), "vector": pd.Series([], dtype=object)})
    # A tour has one token per POI, so the token count is the region's POI count.
    regions = pd.DataFrame({REGION_ID: ids, N_POIS: n_tokens.astype(np.int32), BELOW_MIN_POIS: n_tokens < cfg.min_pois})
    table = poi_embedding_table(regions, vectors, region_ids=region_ids(ctx), dim=cfg.dim)
    write_pandas(table, out)
    ctx.summary.update(regions=len(table), regions_with_pois=int(table["has_pois"].sum()),
                       regions_below_min_pois=int(table["below_min_pois"].sum()), dim=cfg.dim, level=cfg.level)
    log.info("poi embeddings: %d regions, %d with POIs", len(table), int(table["has_pois"].sum()))


def _infer_poi(ctx: StageContext, corpus: Any) -> None:
    """Inference mode: the training Doc2Vec infers a vector for each tour of the corpus (no fitting)."""
    from landuse.features.doc2vec import infer_corpus, load_poi_model, poi_embedding_table
    from landuse.features.poi_tours import BELOW_MIN_POIS, N_POIS
    from landuse.storage import remove_tree

    config, cfg = ctx.config, ctx.config.embeddings.poi
    source = training_table(config, T_POI_EMBEDDINGS)
    try:
        model = load_poi_model(source)
    except FileNotFoundError:
        raise ConfigError(f"inference.training_tables: {source} keeps no Doc2Vec model (_model/); rerun "
                          "`landuse run poi-embeddings` in the training work dir") from None
    # epochs None: the model's own training epochs; the RNG is reset to the seed for every region
    ids, n_tokens, vectors = infer_corpus(model, corpus, epochs=None, seed=config.seed)
    remove_tree(corpus)
    dim = int(model.model.vector_size)
    regions = pd.DataFrame({REGION_ID: ids, N_POIS: n_tokens.astype(np.int32), BELOW_MIN_POIS: n_tokens < cfg.min_pois})
    table = poi_embedding_table(regions, vectors, region_ids=region_ids(ctx), dim=dim)
    write_pandas(table, ctx.out(T_POI_EMBEDDINGS))
    ctx.summary.update(regions=len(table), regions_with_pois=int(table["has_pois"].sum()),
                       regions_below_min_pois=int(table["below_min_pois"].sum()), dim=dim, level=cfg.level,
                       mode="inferred with the training Doc2Vec", training_table=str(source),
                       infer_epochs=int(model.model.epochs))
    log.info("poi embeddings (inferred): %d regions, %d with POIs", len(table), int(table["has_pois"].sum()))


FLOW_STAGE = Stage(
    name="flow-embeddings",
    description="H_flow: weighted random walks on the OD graph -> Word2Vec per region",
    run=run_flow,
    outputs=lambda config: {T_FLOW_EMBEDDINGS: table_path(config, T_FLOW_EMBEDDINGS)},
    config_keys=("seed", "embeddings.flow"),
    inputs=lambda config: inference_inputs(config, T_REGIONS, T_FLOW_EMBEDDINGS),
    upstream=("regions", "flows"),
    enabled=lambda config: bool(config.inputs.trips),
    version="2",  # walks on the executors (per-walk seeded streams), model saved under _model/
)

POI_STAGE = Stage(
    name="poi-embeddings",
    description="H_poi: greedy POI tours per region -> Doc2Vec per region",
    run=run_poi,
    outputs=lambda config: {T_POI_EMBEDDINGS: table_path(config, T_POI_EMBEDDINGS)},
    config_keys=("seed", "study", "embeddings.poi"),
    inputs=lambda config: inference_inputs(config, T_POI_EMBEDDINGS),
    upstream=("regions", "pois"),
    enabled=lambda config: config.inputs.pois is not None,
    version="2",  # tours corpus on the executors, Doc2Vec corpus_file mode, model saved under _model/
)
