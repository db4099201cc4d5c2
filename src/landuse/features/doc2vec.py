"""POI embeddings (H_poi): gensim Doc2Vec over the per-region POI token tours.

Each region is one document, tagged with ``str(region_id)``, whose words are its category tokens in
greedy-tour order (:mod:`landuse.features.poi_tours`). PV-DM, 72-d, window 5, min_count 1 and 100
epochs are the paper's settings (docs/architecture.md, method facts).

Determinism: with ``workers=1`` and a fixed ``seed`` two runs give identical vectors, also across
processes with different ``PYTHONHASHSEED``. gensim 4 seeds the initial vectors from ``seed`` through
``np.random.default_rng`` and the training randomness from a ``RandomState(seed)``; its ``hashfxn``
(Python's salted ``hash``) only seeds vectors made by ``seeded_vector``/``infer_vector``, which are
not used here. The vocabulary order is frequency then first occurrence, and documents are fed sorted
by region_id, so nothing depends on hashing. With several workers, thread scheduling makes the
vectors vary run to run (gensim's documented behaviour).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import pandas as pd

from landuse.spark.schemas import REGION_ID

TOKENS = "tokens"
VECTOR = "vector"
HAS_POIS = "has_pois"


def _documents(tours: pd.DataFrame) -> list:
    """TaggedDocuments for the regions with at least one token, sorted by region_id."""
    from gensim.models.doc2vec import TaggedDocument

    docs = []
    for region_id, tokens in sorted(zip(tours[REGION_ID].astype("int64"), tours[TOKENS]), key=lambda t: t[0]):
        words = [str(t) for t in (tokens if tokens is not None else []) if t is not None]
        if words:
            docs.append(TaggedDocument(words, [str(int(region_id))]))
    return docs


def train_poi_embeddings(
    tours: pd.DataFrame,
    dim: int = 72,
    window: int = 5,
    min_count: int = 1,
    epochs: int = 100,
    dm: int = 1,
    workers: int | None = None,
    seed: int = 42,
) -> pd.DataFrame:
    """Doc2Vec vectors per region: (region_id int64, vector list of float32), one row per region
    with a non-empty token list, sorted by region_id.

    ``tours`` needs region_id and tokens (list of strings); regions with no tokens get no row (see
    :func:`poi_embedding_table`). ``dm=1`` is PV-DM, ``dm=0`` PV-DBOW. ``workers=None`` uses all
    cores; pass ``workers=1`` for bit-identical reruns.
    """
    from gensim.models.doc2vec import Doc2Vec

    docs = _documents(tours)
    if not docs:
        return pd.DataFrame({REGION_ID: pd.Series([], dtype="int64"), VECTOR: pd.Series([], dtype=object)})
    model = Doc2Vec(
        vector_size=int(dim),
        window=int(window),
        min_count=int(min_count),
        epochs=int(epochs),
        dm=int(dm),
        workers=int(workers) if workers is not None else (os.cpu_count() or 1),
        seed=int(seed),
    )
    model.build_vocab(docs)
    model.train(docs, total_examples=len(docs), epochs=model.epochs)
    tags = [doc.tags[0] for doc in docs]
    vectors = np.asarray([model.dv[tag] for tag in tags], dtype=np.float32)
    return pd.DataFrame({REGION_ID: np.asarray(tags, dtype=np.int64), VECTOR: list(vectors)})


def poi_embedding_table(
    tours: pd.DataFrame,
    embeddings: pd.DataFrame,
    region_ids: Iterable[int] | None = None,
    dim: int | None = None,
) -> pd.DataFrame:
    """Every region with its POI vector and ``has_pois``; regions without a vector get zeros, False.

    Regions are those of ``tours`` plus ``region_ids`` (pass all region ids so that regions with no
    POI at all, which have no tour row, are kept too). Tour columns other than tokens (n_pois,
    below_min_pois) are carried over; regions not in ``tours`` get n_pois 0 and below_min_pois True.
    ``dim`` is needed only when ``embeddings`` is empty. Output sorted by region_id.
    """
    if dim is None:
        if embeddings.empty:
            raise ValueError("poi_embedding_table needs dim when there are no embeddings")
        dim = len(embeddings[VECTOR].iloc[0])
    ids = set(tours[REGION_ID].astype("int64").tolist())
    if region_ids is not None:
        ids.update(int(r) for r in region_ids)
    table = pd.DataFrame({REGION_ID: np.asarray(sorted(ids), dtype=np.int64)})
    extra = [c for c in tours.columns if c not in (REGION_ID, TOKENS)]
    if extra:
        table = table.merge(tours[[REGION_ID, *extra]].astype({REGION_ID: "int64"}), on=REGION_ID, how="left")
    if "n_pois" in table.columns:
        table["n_pois"] = table["n_pois"].fillna(0).astype("int32")
    if "below_min_pois" in table.columns:
        table["below_min_pois"] = table["below_min_pois"].astype("boolean").fillna(True).astype(bool)
    vectors = dict(zip(embeddings[REGION_ID].astype("int64").tolist(), embeddings[VECTOR]))
    zero = np.zeros(int(dim), dtype=np.float32)
    table[HAS_POIS] = table[REGION_ID].map(lambda r: r in vectors).astype(bool)
    table[VECTOR] = [np.asarray(vectors.get(r, zero), dtype=np.float32) for r in table[REGION_ID].tolist()]
    return table
