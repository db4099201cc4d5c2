"""Flow embeddings (H_flow): skip-gram Word2Vec over random walks on the OD flow graph.

Training uses gensim's ``corpus_file`` mode: the walks are written once as a text file (one walk per
line, region ids separated by spaces) and each worker thread reads its own part of it, so all cores
are used (the iterator mode is limited by one Python producer thread).

Determinism: with ``workers=1`` and a fixed ``seed`` two runs give identical vectors in
``corpus_file`` mode (checked in ``tests/features/test_walks.py``); with more workers the thread
scheduling makes runs differ slightly, as in any multi-threaded Word2Vec.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from landuse.features.walks import PAD, FlowGraph
from landuse.spark.schemas import REGION_ID

COL_VECTOR = "vector"
COL_HAS_FLOW = "has_flow"
_CHUNK_ROWS = 65_536


def write_walk_corpus(walks: np.ndarray, path: Path) -> int:
    """Write walks as space-separated region ids, one walk per line (``-1`` padding dropped).

    Returns the number of tokens written. Walks shorter than two tokens after dropping padding carry
    no context (a walk from an isolated or dangling node) and are skipped, so such nodes get no vector.
    """
    walks = np.asarray(walks, dtype=np.int64)
    tokens = 0
    with open(path, "w", encoding="ascii") as handle:
        for b in range(0, walks.shape[0], _CHUNK_ROWS):
            chunk = walks[b : b + _CHUNK_ROWS]
            lengths = (chunk != PAD).sum(axis=1)  # padding is always a suffix
            rows = chunk.astype(str).tolist()
            lines = [" ".join(row[:k]) for row, k in zip(rows, lengths.tolist()) if k > 1]
            if lines:
                handle.write("\n".join(lines))
                handle.write("\n")
            tokens += int(lengths[lengths > 1].sum())
    return tokens


def train_flow_embeddings(
    walks: np.ndarray,
    dim: int = 64,
    window: int = 5,
    negative: int = 5,
    epochs: int = 5,
    min_count: int = 1,
    workers: int | None = None,
    seed: int = 42,
    work_dir: Path | None = None,
) -> pd.DataFrame:
    """Train skip-gram Word2Vec (negative sampling) on a walk corpus.

    Returns one row per region id in the vocabulary: ``region_id`` (int64) and ``vector`` (float32
    array of length ``dim``), sorted by region id. ``workers`` defaults to ``os.cpu_count()``;
    ``work_dir`` holds the temporary corpus file (a fresh temp dir by default, removed afterwards).
    """
    from gensim.models import Word2Vec  # heavy import, only where training happens

    workers = workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="walks-") as tmp:
        corpus = Path(tmp) / "walks.txt"
        if write_walk_corpus(walks, corpus) == 0:
            raise ValueError("walk corpus is empty")
        model = Word2Vec(
            corpus_file=str(corpus),
            vector_size=dim,
            window=window,
            negative=negative,
            hs=0,
            sg=1,
            epochs=epochs,
            min_count=min_count,
            workers=workers,
            seed=seed,
        )
    keys = np.array([int(k) for k in model.wv.index_to_key], dtype=np.int64)
    vectors = model.wv.vectors.astype(np.float32)
    order = np.argsort(keys, kind="stable")
    return pd.DataFrame({REGION_ID: keys[order], COL_VECTOR: list(vectors[order])})


def flow_embedding_table(graph: FlowGraph, embeddings: pd.DataFrame) -> pd.DataFrame:
    """Embeddings for every node of the graph, with ``has_flow`` flagging the ones that got a vector.

    Nodes absent from ``embeddings`` (isolated regions, dangling regions no walk reached, tokens below
    ``min_count``) and nodes without any in- or out-flow keep a zero vector and ``has_flow = False``:
    flagged, never dropped.
    Embedding rows for ids outside the graph raise ``ValueError``.
    """
    ids = graph.node_ids
    emb_ids = embeddings[REGION_ID].to_numpy(dtype=np.int64)
    outside = np.setdiff1d(emb_ids, ids)
    if outside.size:
        raise ValueError(f"{outside.size} embedded ids are not graph nodes, e.g. {outside[:5].tolist()}")
    dim = len(embeddings[COL_VECTOR].iloc[0]) if len(embeddings) else 0
    matrix = np.zeros((ids.size, dim), dtype=np.float32)
    has = np.zeros(ids.size, dtype=bool)
    if len(embeddings):
        pos = np.searchsorted(ids, emb_ids)
        matrix[pos] = np.stack(embeddings[COL_VECTOR].to_list()).astype(np.float32)
        has[pos] = True
    in_degree = np.bincount(graph.indices, minlength=ids.size)
    has &= (graph.out_degree > 0) | (in_degree > 0)
    matrix[~has] = 0.0
    return pd.DataFrame({REGION_ID: ids, COL_VECTOR: list(matrix), COL_HAS_FLOW: has})
