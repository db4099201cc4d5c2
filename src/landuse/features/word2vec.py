"""Flow embeddings (H_flow): skip-gram Word2Vec over random walks on the OD flow graph.

Corpus. The walks are a text corpus, one walk per line, region ids separated by single spaces. In
the stage the executors write it with Spark's text writer (:func:`landuse.features.walks.spark_walk_corpus`);
:func:`concat_text_parts` streams its part files, in partition order, into one local file (the
driver reads files, never rows through Spark), and gensim trains from that file in ``corpus_file``
mode: each worker thread reads its own byte range of the file, so all cores are used and no walk is
ever held in memory.

Determinism: with ``workers=1`` and a fixed ``seed`` two runs give identical vectors in
``corpus_file`` mode (checked in ``tests/features/test_walks.py``), and the corpus itself does not
depend on Spark's partitioning, so the stage's vectors are reproducible with
``embeddings.flow.workers: 1``. With more workers the threads split the file at approximate line
boundaries and their scheduling varies, so runs differ slightly, as in any multi-threaded Word2Vec.

Models. The fitted Word2Vec is saved with the output table, under ``<table>/_model/word2vec.model``
(gensim's format; the ``_`` prefix keeps Spark, pyarrow and Delta readers of the table off it), and
:func:`load_flow_model` loads it back. The helpers :func:`save_model_files` and
:func:`local_model_dir` copy a model between a local directory and a table directory (a
``pathlib.Path`` or a ``upath.UPath`` on an object store), the one place where that differs.

New regions. Word2Vec over walks is transductive: its tokens are the training regions, so a region
that was not in the training run has no vector of its own. :func:`overlap_flow_table` gives it the
area-weighted mean of the vectors of the training regions it overlaps (the ``flow-embeddings`` stage
in inference mode, ``landuse run predict --regions``) — an approximation that is exact for a region
equal to a training region and a smoothing for any other.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from landuse.features.walks import PAD, FlowGraph, walk_lines
from landuse.spark.schemas import REGION_ID
from landuse.storage import is_local, location

if TYPE_CHECKING:
    from gensim.models import Word2Vec

COL_VECTOR = "vector"
COL_HAS_FLOW = "has_flow"
MODEL_DIR = "_model"  # inside an output table directory: the fitted model files
WORD2VEC_FILE = "word2vec.model"
_CHUNK_ROWS = 65_536
_COPY_BYTES = 1 << 22
_PART = re.compile(r"^part-(\d+)(?:.*-c(\d+))?")


# --- Corpus files ----------------------------------------------------------------------------------


def as_path(path: Any) -> Any:
    """``path`` as a path object: a ``Path``/``UPath`` unchanged, a string through :func:`landuse.storage.location`."""
    return location(path) if isinstance(path, str) else path


def text_part_files(directory: Any) -> list[Any]:
    """The part files of a Spark text output directory, in partition order (then file sequence)."""
    directory = as_path(directory)
    parts = []
    for path in directory.iterdir():
        match = _PART.match(path.name)
        if match:
            parts.append(((int(match.group(1)), int(match.group(2) or 0), path.name), path))
    return [path for _, path in sorted(parts, key=lambda item: item[0])]


def concat_text_parts(directory: Any, target: Path) -> int:
    """Stream the part files of ``directory`` into the local file ``target``; returns the line count.

    Every part ends with a newline (one is added where the writer left none), so lines never merge.
    """
    lines = 0
    with open(target, "wb") as out:
        for part in text_part_files(directory):
            last = b"\n"
            with part.open("rb") as handle:
                while chunk := handle.read(_COPY_BYTES):
                    out.write(chunk)
                    lines += chunk.count(b"\n")
                    last = chunk[-1:]
            if last != b"\n":
                out.write(b"\n")
                lines += 1
    return lines


def save_model_files(local_dir: Path, table_dir: Any) -> list[str]:
    """Copy the files of ``local_dir`` into ``<table_dir>/_model/``; returns their names.

    ``table_dir`` is the stage's staging directory, so the model is committed with the table.
    """
    dest = as_path(table_dir) / MODEL_DIR
    if is_local(dest):
        dest.mkdir(parents=True, exist_ok=True)
    names = []
    for path in sorted(Path(local_dir).iterdir()):
        with open(path, "rb") as src, (dest / path.name).open("wb") as dst:
            shutil.copyfileobj(src, dst, _COPY_BYTES)
        names.append(path.name)
    return names


@contextmanager
def local_model_dir(table_dir: Any) -> Iterator[Path]:
    """The ``_model`` directory of a table as a local directory (copied to a temp dir when remote)."""
    src = as_path(table_dir) / MODEL_DIR
    if is_local(src):
        if not src.is_dir():
            raise FileNotFoundError(f"no saved model in {table_dir} (expected {src})")
        yield Path(src)
        return
    with tempfile.TemporaryDirectory(prefix="landuse-model-") as tmp:
        for path in src.iterdir():
            with path.open("rb") as handle, open(Path(tmp) / path.name, "wb") as out:
                shutil.copyfileobj(handle, out, _COPY_BYTES)
        yield Path(tmp)


# --- Word2Vec -------------------------------------------------------------------------------------


def write_walk_corpus(walks: np.ndarray, path: Path) -> int:
    """Write walks (a (B, L) array, ``-1`` padded) as a local corpus file, one walk per line.

    The same lines as the executors write (:func:`landuse.features.walks.walk_lines`). Returns the
    number of tokens written. Walks shorter than two tokens after dropping padding carry no context
    (a walk from an isolated or dangling node) and are skipped, so such nodes get no vector.
    """
    walks = np.asarray(walks, dtype=np.int64)
    tokens = 0
    with open(path, "w", encoding="ascii") as handle:
        for b in range(0, walks.shape[0], _CHUNK_ROWS):
            chunk = walks[b : b + _CHUNK_ROWS]
            lines = walk_lines(chunk)
            if len(lines):
                handle.write("\n".join(lines.to_pylist()))
                handle.write("\n")
            lengths = (chunk != PAD).sum(axis=1)
            tokens += int(lengths[lengths > 1].sum())
    return tokens


def fit_word2vec(
    corpus_file: Path,
    dim: int = 64,
    window: int = 5,
    negative: int = 5,
    epochs: int = 5,
    min_count: int = 1,
    workers: int | None = None,
    seed: int = 42,
) -> Word2Vec:
    """Skip-gram Word2Vec (negative sampling) trained from a local corpus file (``corpus_file`` mode).

    ``workers`` defaults to ``os.cpu_count()``; ``workers=1`` gives identical vectors per seed.
    """
    from gensim.models import Word2Vec  # heavy import, only where training happens

    if os.path.getsize(corpus_file) == 0:
        raise ValueError("walk corpus is empty")
    return Word2Vec(
        corpus_file=str(corpus_file),
        vector_size=int(dim),
        window=int(window),
        negative=int(negative),
        hs=0,
        sg=1,
        epochs=int(epochs),
        min_count=int(min_count),
        workers=int(workers or os.cpu_count() or 1),
        seed=int(seed),
    )


def word_vectors(model: Word2Vec) -> pd.DataFrame:
    """(region_id int64, vector float32 array) per region in the vocabulary, sorted by region id."""
    keys = np.array([int(k) for k in model.wv.index_to_key], dtype=np.int64)
    vectors = model.wv.vectors.astype(np.float32)
    order = np.argsort(keys, kind="stable")
    return pd.DataFrame({REGION_ID: keys[order], COL_VECTOR: list(vectors[order])})


def save_flow_model(model: Word2Vec, table_dir: Any) -> list[str]:
    """Save a fitted Word2Vec as ``<table_dir>/_model/word2vec.model`` (plus any gensim side files)."""
    with tempfile.TemporaryDirectory(prefix="word2vec-") as tmp:
        model.save(str(Path(tmp) / WORD2VEC_FILE))
        return save_model_files(Path(tmp), table_dir)


def load_flow_model(table_dir: Any) -> Word2Vec:
    """The Word2Vec saved with a ``flow_embeddings`` table (keys: region ids as strings).

    ``model.wv[str(region_id)]`` is a region's vector; ``model.wv.most_similar(str(region_id))``
    its nearest regions by flow context.
    """
    from gensim.models import Word2Vec

    with local_model_dir(table_dir) as local:
        return Word2Vec.load(str(local / WORD2VEC_FILE))


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


# --- Regions outside the training run ------------------------------------------------------------

SLIVER = 1e-9  # overlap shares below this are boundary noise (touching polygons), not overlap


def overlap_flow_table(region_ids: np.ndarray, geometries: Any, train_ids: np.ndarray, train_geometries: Any,
                       train_vectors: np.ndarray, train_has_flow: np.ndarray) -> pd.DataFrame:
    """H_flow of regions that were not in the training run: the area-weighted mean of the training vectors.

    Word2Vec over walks is transductive — its tokens are the training regions — so a new region
    cannot be embedded by the model itself. Its vector is instead the mean of the vectors of the
    training regions with flow that it overlaps, each weighted by intersection area / the new
    region's area (weights normalised to sum to 1; shares below :data:`SLIVER` are boundary noise
    and ignored). A region overlapping no training region with flow gets zeros and
    ``has_flow = False``. A region equal to a training region gets that region's vector.

    Geometries are shapely arrays in one projected CRS; ``train_vectors`` is [T, D]. Returns
    region_id, vector (float32), has_flow, flow_overlap (Σ weights before normalising: the share of
    the region covered by training regions with flow), sorted by region_id.
    """
    import shapely

    region_ids = np.asarray(region_ids, dtype=np.int64)
    geoms = np.asarray(geometries, dtype=object)
    train_vectors = np.asarray(train_vectors, dtype=np.float64).reshape(len(train_ids), -1)
    keep = np.asarray(train_has_flow, dtype=bool)
    tree_geoms, tree_vectors = np.asarray(train_geometries, dtype=object)[keep], train_vectors[keep]
    n, dim = len(region_ids), train_vectors.shape[1]
    pairs = shapely.STRtree(tree_geoms).query(geoms, predicate="intersects") if len(tree_geoms) and n else \
        np.zeros((2, 0), dtype=np.int64)
    area = shapely.area(geoms)
    share = shapely.area(shapely.intersection(geoms[pairs[0]], tree_geoms[pairs[1]])) / np.maximum(area[pairs[0]], 1e-12)
    real = share >= SLIVER
    src, dst, share = pairs[0][real], pairs[1][real], share[real]
    total = np.bincount(src, weights=share, minlength=n)
    summed = np.zeros((n, dim), dtype=np.float64)
    np.add.at(summed, src, share[:, None] * tree_vectors[dst])
    has = total > 0
    vectors = np.zeros((n, dim), dtype=np.float32)
    vectors[has] = (summed[has] / total[has, None]).astype(np.float32)
    order = np.argsort(region_ids, kind="stable")
    return pd.DataFrame({REGION_ID: region_ids[order], COL_VECTOR: list(vectors[order]), COL_HAS_FLOW: has[order],
                         "flow_overlap": total[order]})
