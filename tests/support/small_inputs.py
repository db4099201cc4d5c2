"""Driver-side, in-memory forms of stage computations, for small inputs in tests.

The stages train and aggregate from Spark tables and executor-written corpora; these wrappers run the
same product functions on data held in memory so tests can check the results directly (and, for the
morphology aggregation, compare the Spark path against it).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from landuse.features.doc2vec import doc_vectors, fit_doc2vec, write_tour_corpus
from landuse.features.morphology import FEATURE_NAMES, HAS_BUILDING, VECTOR, aggregate_sorted
from landuse.features.word2vec import fit_word2vec, word_vectors, write_walk_corpus
from landuse.spark.schemas import AREA_M2, REGION_ID


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
    """Train skip-gram Word2Vec on walks held in memory (small graphs).

    Returns one row per region id in the vocabulary: ``region_id`` (int64) and ``vector`` (float32
    array of length ``dim``), sorted by region id. ``work_dir`` holds the temporary corpus file (a
    fresh temp dir by default, removed afterwards). The stage trains from the executors' corpus
    instead (:func:`landuse.features.word2vec.fit_word2vec` on the concatenated parts).
    """
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="walks-") as tmp:
        corpus = Path(tmp) / "walks.txt"
        if write_walk_corpus(walks, corpus) == 0:
            raise ValueError("walk corpus is empty")
        model = fit_word2vec(corpus, dim=dim, window=window, negative=negative, epochs=epochs,
                             min_count=min_count, workers=workers, seed=seed)
    return word_vectors(model)


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
    """Doc2Vec vectors per region of a pandas tours frame (small data).

    Returns (region_id int64, vector list of float32), one row per region with a non-empty token list,
    sorted by region_id.

    ``tours`` needs region_id and tokens (list of strings); regions with no tokens get no row (see
    :func:`landuse.features.doc2vec.poi_embedding_table`). Trains exactly as the stage does, from a local corpus file.
    """
    with tempfile.TemporaryDirectory(prefix="tours-") as tmp:
        corpus = Path(tmp) / "tours.txt"
        ids = write_tour_corpus(tours, corpus)
        if ids.size == 0:
            return pd.DataFrame({REGION_ID: pd.Series([], dtype="int64"), VECTOR: pd.Series([], dtype=object)})
        model = fit_doc2vec(corpus, dim=dim, window=window, min_count=min_count, epochs=epochs, dm=dm,
                            workers=workers, seed=seed)
    return doc_vectors(model, ids)


def aggregate_regions(descriptors: pd.DataFrame, region_areas: pd.Series, bins: int, has_height: bool) -> pd.DataFrame:
    """Driver-side form of the Spark aggregation of :mod:`landuse.features.morphology`.

    ``descriptors`` has ``region_id`` and the :data:`landuse.features.morphology.DESCRIPTOR_COLUMNS`; ``region_areas`` is the
    area (m²) indexed by region id. Returns region_id, vector (float32), has_building — one row per
    region of ``region_areas``, in its order (zero vector and False where no building).
    """
    inside = descriptors[descriptors[REGION_ID].isin(region_areas.index)]
    inside = inside.assign(**{AREA_M2: inside[REGION_ID].map(region_areas).to_numpy(np.float64)})
    found = aggregate_sorted(inside, bins, has_height).set_index(REGION_ID)[VECTOR]
    zeros = np.zeros(len(FEATURE_NAMES), dtype=np.float32)
    ids = [int(r) for r in region_areas.index]
    return pd.DataFrame({
        REGION_ID: np.array(ids, dtype=np.int64),
        VECTOR: [found[r] if r in found.index else zeros.copy() for r in ids],
        HAS_BUILDING: [r in found.index for r in ids],
    })
