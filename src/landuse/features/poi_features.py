"""Taxonomy-light POI features per region: category shares, TF-IDF, density.

Doc2Vec over POI tours (``features/doc2vec.py``) needs many POIs per region to say anything; on
real cities a region often has a handful. These features read the same assigned POIs directly:

* ``poi_counts`` — per chosen category level, each region's share of its POIs in each category
  token (the ``max_tokens`` most frequent tokens of the level, the rest summed into one ``other``
  column), levels side by side;
* ``poi_tfidf`` — the same counts weighted by TF-IDF (sublinear tf, smoothed idf, rows L2-normalised
  per level), so categories found everywhere weigh less than distinctive ones;
* ``poi_density`` — log POI count, log POIs per km², log distinct tokens per level, and the
  normalised Shannon entropy of the coarsest level's shares (mixed use vs one dominant kind).

A POI without a token at a fine level counts under its next coarser token (its category does not
stop existing because the source has no subtype for it). Counting runs on Spark (one row per
region and token reaches the driver, never one per POI); the matrices are sparse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from landuse.spark.schemas import CATEGORY_PREFIX, REGION_ID

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

TOKEN = "token"
N_POIS = "n_pois"
OTHER = "__other__"


def level_token_counts(poi_regions: "DataFrame", level: int) -> "DataFrame":
    """(region_id, token, n_pois) at ``level``: the finest token up to ``level`` of each assigned POI."""
    from pyspark.sql import functions as F

    present = [c for c in poi_regions.columns if c.startswith(CATEGORY_PREFIX)]
    chain = [f"{CATEGORY_PREFIX}{lv}" for lv in range(level, 0, -1) if f"{CATEGORY_PREFIX}{lv}" in present]
    if not chain:
        raise ValueError(f"poi_regions has no category columns (expected {CATEGORY_PREFIX}1..)")
    return (
        poi_regions.where(F.col(REGION_ID).isNotNull())
        .select(REGION_ID, F.coalesce(*[F.col(c) for c in chain]).alias(TOKEN))
        .where(F.col(TOKEN).isNotNull())
        .groupBy(REGION_ID, TOKEN)
        .agg(F.count(F.lit(1)).cast("long").alias(N_POIS))
    )


def count_matrix(counts: pd.DataFrame, region_ids: np.ndarray, max_tokens: int) -> tuple[sp.csr_matrix, list[str]]:
    """Sparse [N, T] counts (rows = ``region_ids`` in order) and the T token names.

    The ``max_tokens`` most frequent tokens (total POIs; ties by name) get a column each; if there
    are more, the rest are summed into a last column named ``__other__``. Regions absent from
    ``counts`` have empty rows; rows of regions not in ``region_ids`` are ignored.
    """
    region_ids = np.asarray(region_ids, dtype=np.int64)
    if counts.empty:
        return sp.csr_matrix((len(region_ids), 0)), []
    totals = counts.groupby(TOKEN)[N_POIS].sum().reset_index().sort_values([N_POIS, TOKEN], ascending=[False, True])
    kept = totals[TOKEN].astype(str).tolist()[:max_tokens]
    tokens = kept + ([OTHER] if len(totals) > max_tokens else [])
    column = {t: i for i, t in enumerate(kept)}
    col = counts[TOKEN].astype(str).map(column).fillna(len(kept)).to_numpy(np.int64)
    row = np.searchsorted(region_ids, counts[REGION_ID].to_numpy(np.int64))
    inside = row < len(region_ids)
    inside[inside] = region_ids[row[inside]] == counts[REGION_ID].to_numpy(np.int64)[inside]
    matrix = sp.coo_matrix(
        (counts[N_POIS].to_numpy(np.float64)[inside], (row[inside], col[inside])), shape=(len(region_ids), len(tokens))
    )
    return matrix.tocsr(), tokens


def shares(matrix: sp.csr_matrix) -> np.ndarray:
    """Rows divided by their sums (empty rows stay zero): dense [N, T] float32."""
    total = np.asarray(matrix.sum(axis=1)).ravel()
    scale = np.divide(1.0, total, out=np.zeros_like(total), where=total > 0)
    return np.asarray((sp.diags(scale) @ matrix).todense(), dtype=np.float32)


def tfidf(matrix: sp.csr_matrix) -> np.ndarray:
    """TF-IDF of a count matrix (sublinear tf, smoothed idf, L2 rows): dense [N, T] float32."""
    from sklearn.feature_extraction.text import TfidfTransformer

    if matrix.shape[1] == 0:
        return np.zeros(matrix.shape, dtype=np.float32)
    weighted = TfidfTransformer(sublinear_tf=True, smooth_idf=True, norm="l2").fit_transform(matrix)
    return np.asarray(weighted.todense(), dtype=np.float32)


DENSITY_COLUMNS = ("log_pois", "log_pois_per_km2")


def density(level_matrices: Sequence[sp.csr_matrix], area_m2: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Per region: log1p POIs, log1p POIs/km², log1p distinct tokens per level, entropy of the first level.

    ``level_matrices`` are count matrices of the same regions (any levels, coarsest first); every POI
    is counted once per level, so the POI total is the first matrix's row sum. Returns ([N, 3 + L], names).
    """
    if not level_matrices:
        raise ValueError("density needs at least one level's counts")
    first = level_matrices[0]
    total = np.asarray(first.sum(axis=1)).ravel()
    area_km2 = np.maximum(np.asarray(area_m2, dtype=np.float64) / 1e6, 1e-6)
    columns = [np.log1p(total), np.log1p(total / area_km2)]
    names = list(DENSITY_COLUMNS)
    for i, m in enumerate(level_matrices):
        columns.append(np.log1p(np.diff(m.tocsr().indptr)))
        names.append(f"log_distinct_tokens_{i + 1}")
    p = shares(first).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    width = first.shape[1]
    columns.append(h / math.log(width) if width > 1 else np.zeros(len(total)))
    names.append("entropy_level_1")
    return np.stack(columns, axis=1).astype(np.float32), names
