"""POI embeddings (H_poi): gensim Doc2Vec over the per-region POI token tours.

Each region is one document whose words are its category tokens in greedy-tour order
(:mod:`landuse.features.poi_tours`). PV-DM, 72-d, window 5, min_count 1 and 100 epochs are the
paper's settings (docs/architecture.md, method facts).

Corpus. The executors write the tours as text (:func:`landuse.features.poi_tours.tour_corpus`), one
region per line in region_id order: ``<region_id>\t<token> <token> …`` (a tagged line). Tokens are
written with :func:`encode_token` so that each is exactly one whitespace-free word. The driver streams
the part files into one local file without the tags (:func:`untag_corpus`), keeping the region ids in
line order — O(regions) — because gensim's ``corpus_file`` mode tags each document with its line
number: document ``i`` is region ``region_ids[i]``.

Workers. ``workers=1`` trains with ``corpus_file=`` (deterministic per seed). With several workers,
gensim's ``corpus_file`` mode splits the file into byte ranges of about equal word counts, and
Doc2Vec then trains some documents twice and some not at all (gensim issue #2757: a skipped line's
vector stays at its random initial value), so several workers stream the same local file through
``TaggedLineDocument`` instead: every document once per epoch, the work spread over the threads,
but the thread scheduling makes the vectors vary run to run (gensim's documented behaviour).
Either way no tour is held in memory on the driver. Documents longer than 10,000 tokens are
truncated by gensim (its ``MAX_DOCUMENT_LEN``, in both modes).

Determinism: with ``workers=1`` and a fixed ``seed`` two runs give identical vectors, also across
processes with different ``PYTHONHASHSEED``. gensim 4 seeds the initial vectors from ``seed`` through
``np.random.default_rng`` and the training randomness from a ``RandomState(seed)``; its ``hashfxn``
(Python's salted ``hash``) only seeds vectors made by ``seeded_vector``/``infer_vector``, and
:meth:`PoiModel.infer` swaps it for CRC-32. The
vocabulary order is frequency then first occurrence, and documents are in region_id order, so
nothing depends on hashing or on Spark's partitioning.

Models. The fitted Doc2Vec is saved with the output table under ``<table>/_model/doc2vec.model``
with ``doc2vec_regions.npy`` (the region id of each document); :func:`load_poi_model` loads both,
and :meth:`PoiModel.infer` embeds the tour of a new region (``infer_vector``); :func:`infer_corpus`
does so for every line of a tour corpus (the ``poi-embeddings`` stage in inference mode, for regions
that were not in the training run).
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from landuse.features.word2vec import local_model_dir, save_model_files, text_part_files
from landuse.spark.schemas import REGION_ID

if TYPE_CHECKING:
    from gensim.models.doc2vec import Doc2Vec

TOKENS = "tokens"
VECTOR = "vector"
HAS_POIS = "has_pois"
DOC2VEC_FILE = "doc2vec.model"
REGIONS_FILE = "doc2vec_regions.npy"
# Python's whitespace (what gensim's vocabulary scan splits on; a superset of the C++ reader's) and '%'.
_ESCAPE = re.compile(r"[%\s]")


def encode_token(token: object) -> str:
    """A token as one corpus word: ``%`` and whitespace percent-encoded (UTF-8 bytes), ``''`` → ``%``.

    Injective, and the identity for tokens without ``%`` or whitespace (all the usual category codes).
    """
    text = str(token)
    if not text:
        return "%"
    return _ESCAPE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group(0).encode("utf-8")), text)


def tagged_line(region_id: int, tokens: Iterable[object] | None) -> str | None:
    """The corpus line of one region's tour, ``<region_id>\t<words>``; None when it has no token."""
    words = [encode_token(t) for t in (tokens if tokens is not None else []) if t is not None]
    return f"{int(region_id)}\t{' '.join(words)}" if words else None


def untag_corpus(directory: Any, target: Path) -> tuple[np.ndarray, np.ndarray]:
    """Stream the tagged part files of ``directory`` into the local file ``target`` without the tags.

    Returns (region ids, token counts), both in line order — O(regions). Lines without tokens are
    dropped (gensim's ``corpus_file`` reader skips an empty line without counting it as a document,
    which would shift every later tag).
    """
    ids: list[int] = []
    counts: list[int] = []
    with open(target, "wb") as out:
        for part in text_part_files(directory):
            with part.open("rb") as handle:
                for line in handle:
                    tag, _, words = line.rstrip(b"\r\n").partition(b"\t")
                    words = words.strip()
                    if not words:
                        continue
                    out.write(words + b"\n")
                    ids.append(int(tag))
                    counts.append(len(words.split()))
    return np.asarray(ids, dtype=np.int64), np.asarray(counts, dtype=np.int32)


def write_tour_corpus(tours: pd.DataFrame, target: Path) -> np.ndarray:
    """Write a pandas tours frame (region_id, tokens) as a local untagged corpus, sorted by region_id.

    Returns the region ids in line order (regions without tokens get no line). For small frames
    (tests); the stage writes the corpus on the executors.
    """
    ids = []
    with open(target, "w", encoding="utf-8") as out:
        for region_id, tokens in sorted(zip(tours[REGION_ID].astype("int64"), tours[TOKENS]), key=lambda t: t[0]):
            line = tagged_line(region_id, tokens)
            if line is not None:
                out.write(line.partition("\t")[2] + "\n")
                ids.append(int(region_id))
    return np.asarray(ids, dtype=np.int64)


def fit_doc2vec(
    corpus_file: Path,
    dim: int = 72,
    window: int = 5,
    min_count: int = 1,
    epochs: int = 100,
    dm: int = 1,
    workers: int | None = None,
    seed: int = 42,
) -> Doc2Vec:
    """Doc2Vec from a local untagged corpus file; document ``i`` is line ``i`` (module docstring).

    ``dm=1`` is PV-DM, ``dm=0`` PV-DBOW. ``workers=None`` uses all cores; ``workers=1`` trains in
    ``corpus_file`` mode and gives bit-identical reruns.
    """
    from gensim.models.doc2vec import Doc2Vec, TaggedLineDocument

    workers = int(workers) if workers is not None else (os.cpu_count() or 1)
    params = {"vector_size": int(dim), "window": int(window), "min_count": int(min_count), "epochs": int(epochs),
              "dm": int(dm), "workers": workers, "seed": int(seed)}
    if workers == 1:
        return Doc2Vec(corpus_file=str(corpus_file), **params)
    return Doc2Vec(documents=TaggedLineDocument(str(corpus_file)), **params)


def doc_vectors(model: Doc2Vec, region_ids: np.ndarray) -> pd.DataFrame:
    """(region_id int64, vector float32 array) per document, sorted by region_id."""
    region_ids = np.asarray(region_ids, dtype=np.int64)
    if len(model.dv) != region_ids.size:
        raise ValueError(f"model has {len(model.dv)} documents, but {region_ids.size} region ids were given")
    vectors = np.asarray(model.dv.vectors[: region_ids.size], dtype=np.float32)
    order = np.argsort(region_ids, kind="stable")
    return pd.DataFrame({REGION_ID: region_ids[order], VECTOR: list(vectors[order])})


@dataclass(frozen=True, eq=False)
class PoiModel:
    """A fitted Doc2Vec with the region id of each of its documents."""

    model: Doc2Vec
    region_ids: np.ndarray  # (D,) int64, document i = region_ids[i]

    def vector(self, region_id: int) -> np.ndarray:
        """The trained vector of a region of the training corpus (``KeyError`` for others)."""
        hit = np.flatnonzero(self.region_ids == int(region_id))
        if hit.size == 0:
            raise KeyError(f"region {region_id} has no document in the model")
        return np.asarray(self.model.dv.vectors[int(hit[0])], dtype=np.float32)

    def infer(self, tokens: Sequence[object], epochs: int | None = None, seed: int | None = None) -> np.ndarray:
        """A vector for a new region's tour (tokens in tour order; :func:`encode_token` is applied).

        gensim's ``infer_vector`` starts from a vector seeded by a hash of the words and draws from the
        model's RNG; ``seed`` resets that RNG, and the starting vector is seeded by CRC-32 instead of
        Python's salted ``hash`` (gensim's default), so the same tour gives the same vector in every
        process. More ``epochs`` (default: the training epochs) make it more stable. Tokens never
        seen in training are ignored.
        """
        return self.infer_words([encode_token(t) for t in tokens if t is not None], epochs, seed)

    def infer_words(self, words: Sequence[str], epochs: int | None = None, seed: int | None = None) -> np.ndarray:
        """:meth:`infer` for words already encoded as in the corpus (:func:`encode_token`), e.g. a corpus line."""
        from unittest import mock

        from gensim.models import doc2vec as gensim_doc2vec

        if seed is not None:
            self.model.random = np.random.RandomState(int(seed))
        words = list(words)
        start = functools.partial(gensim_doc2vec.pseudorandom_weak_vector, hashfxn=_stable_hash)
        # gensim's infer_vector offers no hook for its starting vector: swap the module-level helper it calls
        with mock.patch.object(gensim_doc2vec, "pseudorandom_weak_vector", start):
            return np.asarray(self.model.infer_vector(words, epochs=epochs), dtype=np.float32)


def infer_corpus(model: PoiModel, directory: Any, epochs: int | None = None,
                 seed: int | None = None) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Infer a vector for every tagged line of the part files of ``directory`` (a tour corpus).

    The lines are streamed, one region at a time (nothing but the vectors is held). Every line is
    inferred with the RNG reset to ``seed``, so a region's vector does not depend on the other
    regions or their order. Returns (region ids, token counts) of every line in line order, like
    :func:`untag_corpus`, and the vectors as :func:`doc_vectors` does (sorted by region_id) — only
    for lines with a token the model knows: a tour of unseen categories only would get the random
    starting vector, so it gets no vector (``has_pois`` False in :func:`poi_embedding_table`).
    """
    known = model.model.wv.key_to_index
    ids: list[int] = []
    counts: list[int] = []
    embedded: list[int] = []
    vectors: list[np.ndarray] = []
    for part in text_part_files(directory):
        with part.open("rb") as handle:
            for line in handle:
                tag, _, words = line.rstrip(b"\r\n").partition(b"\t")
                tokens = words.decode("utf-8").split()
                if not tokens:
                    continue  # as untag_corpus: a line without tokens is no document
                ids.append(int(tag))
                counts.append(len(tokens))
                if any(token in known for token in tokens):
                    embedded.append(int(tag))
                    vectors.append(model.infer_words(tokens, epochs, seed))
    region_ids = np.asarray(embedded, dtype=np.int64)
    order = np.argsort(region_ids, kind="stable")
    table = pd.DataFrame({REGION_ID: region_ids[order], VECTOR: [vectors[i] for i in order]})
    return np.asarray(ids, dtype=np.int64), np.asarray(counts, dtype=np.int32), table


def _stable_hash(text: str) -> int:
    """A process-independent string hash (CRC-32)."""
    return zlib.crc32(text.encode("utf-8"))


def save_poi_model(model: Doc2Vec, region_ids: np.ndarray, table_dir: Any) -> list[str]:
    """Save a fitted Doc2Vec and its document region ids under ``<table_dir>/_model/``."""
    with tempfile.TemporaryDirectory(prefix="doc2vec-") as tmp:
        model.save(str(Path(tmp) / DOC2VEC_FILE))
        np.save(Path(tmp) / REGIONS_FILE, np.asarray(region_ids, dtype=np.int64))
        return save_model_files(Path(tmp), table_dir)


def load_poi_model(table_dir: Any) -> PoiModel:
    """The Doc2Vec saved with a ``poi_embeddings`` table, with its document region ids."""
    from gensim.models.doc2vec import Doc2Vec

    with local_model_dir(table_dir) as local:
        return PoiModel(Doc2Vec.load(str(local / DOC2VEC_FILE)), np.load(local / REGIONS_FILE))


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
