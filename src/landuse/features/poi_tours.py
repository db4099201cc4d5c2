"""POI sequences per region: the greedy insertion tour (after Yao et al. 2017; docs/architecture.md).

Tour rule (pinned by ``tests/features/test_poi_tours.py``):

1. The two POIs farthest apart (Euclidean, metres) are the tour's first and last element, the lower
   index first. Ties between equally distant pairs go to the lowest index pair (lexicographic
   ``(i, j)`` with ``i < j``).
2. The remaining POIs are inserted one at a time, in a shuffled order (``rng.permutation`` of the
   remaining indices in ascending order, or an explicit ``order``).
3. A POI ``p`` goes into the gap between consecutive tour POIs ``a, b`` with the smallest
   ``d(p, a) + d(p, b)``; ties go to the gap nearest the start. The ends are never insertion slots:
   the farthest pair stays the first and last element. (An end slot costing ``d(p, end)`` — one
   distance against two for a gap — would pull most POIs to the ends and undo the farthest-pair
   anchoring.)

:func:`region_tours` runs the tour per region in Spark (``groupBy(region_id).applyInPandas``) and
emits the category tokens in tour order; :func:`tour_corpus` turns the tours into the Doc2Vec text
corpus (one tagged line per region, in region_id order), which the executors write — no tour is
collected to the driver.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from landuse.features.doc2vec import tagged_line
from landuse.features.pois import category_columns
from landuse.spark.schemas import CATEGORY_PREFIX, LAT, LON, POI_ID, REGION_ID, SOURCE
from landuse.spatial.engines import project_points

N_POIS = "n_pois"
TOKENS = "tokens"
BELOW_MIN_POIS = "below_min_pois"

TOURS_SCHEMA = StructType(
    [
        StructField(REGION_ID, LongType(), False),
        StructField(N_POIS, IntegerType(), False),
        StructField(TOKENS, ArrayType(StringType(), False), False),
        StructField(BELOW_MIN_POIS, BooleanType(), False),
    ]
)

_X, _Y, _TOKEN = "__tour_x", "__tour_y", "__tour_token"
# Rows per block when searching the farthest pair: bounds the distance block to ~block × n doubles.
_PAIR_BLOCK = 512


def farthest_pair(x: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    """``(i, j)``, ``i < j``: the pair of points farthest apart; ties → lowest ``(i, j)``.

    Needs at least two points. Works in row blocks so memory stays O(block × n), not O(n²).
    """
    n = len(x)
    if n < 2:
        raise ValueError(f"farthest_pair needs at least 2 points, got {n}")
    best, best_pair = -1.0, (0, 1)
    cols = np.arange(n)
    for start in range(0, n - 1, _PAIR_BLOCK):
        rows = np.arange(start, min(start + _PAIR_BLOCK, n - 1))
        # Squared distances: same order as distances, without sqrt rounding merging distinct values.
        d2 = (x[rows, None] - x[None, :]) ** 2 + (y[rows, None] - y[None, :]) ** 2
        d2[cols[None, :] <= rows[:, None]] = -1.0  # keep only j > i
        flat = int(np.argmax(d2))  # first maximum in row-major order = lowest (i, j)
        r, c = divmod(flat, n)
        if d2[r, c] > best:  # strict: an equal maximum in a later block has a higher i
            best, best_pair = float(d2[r, c]), (int(rows[r]), int(c))
    return best_pair


def greedy_tour(
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator | None = None,
    order: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the points in greedy-insertion tour order (module docstring has the rule).

    ``x``/``y`` are projected coordinates in metres. The insertion order is ``order`` when given
    (exactly the indices other than the farthest pair, each once), else ``rng.permutation`` of those
    indices in ascending order. Zero points → empty; one point → ``[0]``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-d of equal length, got {x.shape} and {y.shape}")
    n = len(x)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    i, j = farthest_pair(x, y)
    remaining = np.delete(np.arange(n, dtype=np.int64), [i, j])
    if order is None:
        if not len(remaining):
            order = remaining
        elif rng is None:
            raise ValueError("greedy_tour needs rng or an explicit order when there are more than 2 points")
        else:
            order = rng.permutation(remaining)
    else:
        order = np.asarray(order, dtype=np.int64)
        if len(order) != len(remaining) or not np.array_equal(np.sort(order), remaining):
            raise ValueError(f"order must be a permutation of {remaining.tolist()}, got {order.tolist()}")

    # Preallocated buffers holding the tour and its coordinates; an insertion shifts the tail in
    # place, so the cost of each step is one vectorised pass over the current tour.
    tour = np.empty(n, dtype=np.int64)
    tx = np.empty(n, dtype=np.float64)
    ty = np.empty(n, dtype=np.float64)
    tour[:2], tx[:2], ty[:2] = (i, j), (x[i], x[j]), (y[i], y[j])
    k = 2
    for p in order:
        d = np.hypot(tx[:k] - x[p], ty[:k] - y[p])
        gap = int(np.argmin(d[:-1] + d[1:]))  # insert between tour[gap] and tour[gap + 1]
        at = gap + 1
        tour[at + 1 : k + 1] = tour[at:k]
        tx[at + 1 : k + 1] = tx[at:k]
        ty[at + 1 : k + 1] = ty[at:k]
        tour[at], tx[at], ty[at] = p, x[p], y[p]
        k += 1
    return tour


def region_rng(seed: int, region_id: int) -> np.random.Generator:
    """The RNG of one region: depends only on (seed, region_id), never on partitioning."""
    # SeedSequence takes non-negative integers only; map a negative id onto its 64-bit pattern.
    return np.random.default_rng([int(seed) % 2**64, int(region_id) % 2**64])


def token_column(pois: DataFrame, level: int) -> Column:
    """The category token at ``level``, falling back to the next coarser level where it is NULL."""
    levels = [int(c[len(CATEGORY_PREFIX) :]) for c in category_columns(pois)]
    if level not in levels:
        raise ValueError(f"category level {level} not in the POI table (levels present: {levels})")
    coarser = sorted((lv for lv in levels if lv <= level), reverse=True)
    return F.coalesce(*[F.col(f"{CATEGORY_PREFIX}{lv}") for lv in coarser])


def tour_region(pdf: pd.DataFrame, seed: int, min_pois: int) -> pd.DataFrame:
    """One region's POIs (columns region_id, source, poi_id, x, y, token) → one TOURS_SCHEMA row.

    Rows are first sorted by (source, poi_id, x, y, token) so the tour does not depend on the order
    Spark delivered them in.
    """
    pdf = pdf.sort_values([SOURCE, POI_ID, _X, _Y, _TOKEN], kind="mergesort", ignore_index=True)
    region_id = int(pdf[REGION_ID].iloc[0])
    tour = greedy_tour(pdf[_X].to_numpy(), pdf[_Y].to_numpy(), region_rng(seed, region_id))
    tokens = pdf[_TOKEN].to_numpy(dtype=object)[tour].tolist()
    n = len(pdf)
    return pd.DataFrame(
        {REGION_ID: [region_id], N_POIS: [n], TOKENS: [tokens], BELOW_MIN_POIS: [n < min_pois]}
    ).astype({REGION_ID: "int64", N_POIS: "int32", BELOW_MIN_POIS: "bool"})


def region_tours(pois: DataFrame, crs: str, level: int, seed: int, min_pois: int) -> DataFrame:
    """Per region: (region_id, n_pois, tokens in greedy-tour order, below_min_pois).

    ``pois`` is the ``poi_regions`` table (source, poi_id, lon, lat, cat_l1.., region_id). POIs with
    NULL region_id (outside all regions) are excluded, as are POIs whose lon/lat cannot be projected
    to ``crs`` or whose token is NULL at every level up to ``level``. Tokens are taken at ``level``
    with fallback to coarser levels. Regions with fewer than ``min_pois`` POIs are kept and flagged.
    """
    token = token_column(pois, level)
    assigned = pois.where(F.col(REGION_ID).isNotNull()).select(
        F.col(REGION_ID).cast("long").alias(REGION_ID),
        F.col(SOURCE).cast("string").alias(SOURCE),
        F.col(POI_ID).cast("string").alias(POI_ID),
        LON,
        LAT,
        token.alias(_TOKEN),
    )
    projected = project_points(assigned, LON, LAT, crs, _X, _Y)
    rows = projected.where(F.col(_X).isNotNull() & F.col(_Y).isNotNull() & F.col(_TOKEN).isNotNull()).select(
        REGION_ID, SOURCE, POI_ID, _X, _Y, _TOKEN
    )
    seed, min_pois = int(seed), int(min_pois)
    return rows.groupBy(REGION_ID).applyInPandas(lambda pdf: tour_region(pdf, seed, min_pois), TOURS_SCHEMA)


def _tour_line_batches(batches):
    """mapInArrow: (region_id, tokens) → the tagged corpus line (``value``) of each region with tokens."""
    import pyarrow as pa

    for batch in batches:
        ids = batch.column(0).to_pylist()
        tokens = batch.column(1).to_pylist()
        lines = [line for line in map(tagged_line, ids, tokens) if line is not None]
        yield pa.RecordBatch.from_arrays([pa.array(lines, type=pa.string())], names=["value"])


def tour_corpus(tours: DataFrame) -> DataFrame:
    """The Doc2Vec corpus of ``region_tours`` output: one ``value`` line per region with tokens,
    ``<region_id>\t<token> <token> …`` (tokens via :func:`landuse.features.doc2vec.encode_token`).

    Sorted by region_id (a range-partitioned sort), so Spark's text writer stores the lines in
    region order across its part files, whatever the partitioning.
    """
    ordered = tours.where(F.size(TOKENS) > 0).select(REGION_ID, TOKENS).orderBy(REGION_ID)
    return ordered.mapInArrow(_tour_line_batches, "value string")
