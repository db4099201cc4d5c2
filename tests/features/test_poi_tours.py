"""Greedy POI tours (hand-checked), region_tours in Spark, and Doc2Vec POI embeddings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from landuse.features import poi_tours
from landuse.features.doc2vec import HAS_POIS, VECTOR, poi_embedding_table
from landuse.features.poi_tours import (
    BELOW_MIN_POIS,
    N_POIS,
    TOKENS,
    farthest_pair,
    greedy_tour,
    region_rng,
    region_tours,
    token_column,
)
from tests.support.small_inputs import train_poi_embeddings

# --- greedy_tour -----------------------------------------------------------------------------------

# Hand-placed POIs (metres):
#   P0 (0, 0)   P1 (10, 0)   P2 (5, 1)   P3 (2, -1)   P4 (8, 2)   P5 (5, -3)
HAND_X = np.array([0.0, 10.0, 5.0, 2.0, 8.0, 5.0])
HAND_Y = np.array([0.0, 0.0, 1.0, -1.0, 2.0, -3.0])
HAND_ORDER = np.array([2, 5, 3, 4])
# Worked by hand:
# Farthest pair: d(P0,P1) = 10; next best d(P0,P4) = √68 ≈ 8.25, d(P1,P3) = √65 ≈ 8.06 → tour [0, 1].
# Insert P2: the only gap is (0,1)                                                → [0, 2, 1]
# Insert P5 (5,-3): gap (0,2) = √34 + 4 ≈ 9.831, gap (2,1) = 4 + √34 ≈ 9.831 — an exact tie,
#   resolved to the gap nearest the start                                          → [0, 5, 2, 1]
# Insert P3 (2,-1): d to P0 √5 ≈ 2.236, P5 √13 ≈ 3.606, P2 √13 ≈ 3.606, P1 √65 ≈ 8.062;
#   gaps (0,5) 5.842, (5,2) 7.211, (2,1) 11.668                                    → [0, 3, 5, 2, 1]
# Insert P4 (8,2): d to P0 √68 ≈ 8.246, P3 √45 ≈ 6.708, P5 √34 ≈ 5.831, P2 √10 ≈ 3.162, P1 √8 ≈ 2.828;
#   gaps (0,3) 14.954, (3,5) 12.539, (5,2) 8.993, (2,1) 5.990                     → [0, 3, 5, 2, 4, 1]
# (With end slots costing d(p, end), P4 would have gone after P1 at cost 2.828: the rule differs.)
HAND_TOUR = [0, 3, 5, 2, 4, 1]


def test_greedy_tour_matches_hand_worked_order() -> None:
    assert greedy_tour(HAND_X, HAND_Y, order=HAND_ORDER).tolist() == HAND_TOUR


def test_greedy_tour_rng_order_is_a_seeded_permutation_of_the_rest() -> None:
    remaining = np.array([2, 3, 4, 5])
    expected = greedy_tour(HAND_X, HAND_Y, order=np.random.default_rng(7).permutation(remaining))
    got = greedy_tour(HAND_X, HAND_Y, np.random.default_rng(7))
    assert got.tolist() == expected.tolist()
    assert sorted(got.tolist()) == list(range(6))
    with pytest.raises(ValueError, match="permutation"):
        greedy_tour(HAND_X, HAND_Y, order=np.array([2, 3, 4, 4]))
    with pytest.raises(ValueError, match="rng"):
        greedy_tour(HAND_X, HAND_Y)


def test_greedy_tour_starts_and_ends_with_the_farthest_pair() -> None:
    # Farthest pair is (P2, P4) = (-50, 0)–(60, 5); other indices sit in between.
    x = np.array([0.0, 10.0, -50.0, 20.0, 60.0])
    y = np.array([0.0, 5.0, 0.0, -5.0, 5.0])
    tour = greedy_tour(x, y, np.random.default_rng(0))
    assert (tour[0], tour[-1]) == (2, 4)
    # Unit-square corners: both diagonals are √2 → the lowest index pair (0, 3).
    assert farthest_pair(np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.0, 0.0, 1.0, 1.0])) == (0, 3)
    assert greedy_tour(np.array([3.0, 1.0]), np.array([0.0, 0.0])).tolist() == [0, 1]


def test_farthest_pair_across_row_blocks_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.random(1300), rng.random(1300)  # > 2 blocks of _PAIR_BLOCK rows
    d2 = (x[:, None] - x[None, :]) ** 2 + (y[:, None] - y[None, :]) ** 2
    i, j = np.unravel_index(np.argmax(np.triu(d2, 1)), d2.shape)
    assert farthest_pair(x, y) == (int(i), int(j))


def test_greedy_tour_zero_and_one_poi() -> None:
    empty = greedy_tour(np.array([]), np.array([]), np.random.default_rng(0))
    assert empty.dtype == np.int64 and empty.size == 0
    assert greedy_tour(np.array([5.0]), np.array([7.0]), np.random.default_rng(0)).tolist() == [0]


# --- region_tours (Spark) --------------------------------------------------------------------------

CRS = "EPSG:32650"
SEED = 11


def _pois() -> pd.DataFrame:
    """Region 1: 6 POIs, region 2: 3, region 3: 1, plus 2 POIs outside all regions (NULL region)."""
    rng = np.random.default_rng(5)
    rows = []
    for region, n, lon0 in ((1, 6, 114.050), (2, 3, 114.060), (3, 1, 114.070)):
        for k in range(n):
            lon = lon0 + rng.uniform(0, 0.003)
            lat = 22.540 + rng.uniform(0, 0.003)
            # Level fallback: every 3rd POI lacks cat_l3; in region 2 one lacks cat_l2 and cat_l3.
            l2 = None if (region == 2 and k == 1) else f"r{region}p{k}_l2"
            l3 = None if (k % 3 == 0 or l2 is None) else f"r{region}p{k}_l3"
            rows.append(("osm", f"{region}-{k}", lon, lat, f"r{region}p{k}_l1", l2, l3, region))
    rows.append(("osm", "out-1", 114.1, 22.6, "x_l1", "x_l2", "x_l3", None))
    rows.append(("osm", "out-2", 114.2, 22.7, "y_l1", None, None, None))
    pdf = pd.DataFrame(rows, columns=["source", "poi_id", "lon", "lat", "cat_l1", "cat_l2", "cat_l3", "region_id"])
    return pdf.astype({"region_id": "Int64"})


def _expected_tokens(pdf: pd.DataFrame, level: int) -> dict[int, list[str]]:
    """greedy_tour applied locally (pyproj + the documented row order and per-region RNG)."""
    import pyproj

    pdf = pdf[pdf["region_id"].notna()].copy()
    levels = [f"cat_l{lv}" for lv in range(level, 0, -1)]
    pdf["token"] = pdf[levels].bfill(axis=1).iloc[:, 0]
    x, y = pyproj.Transformer.from_crs("EPSG:4326", CRS, always_xy=True).transform(pdf["lon"].to_numpy(), pdf["lat"].to_numpy())
    pdf["x"], pdf["y"] = x, y
    out = {}
    for rid, g in pdf.groupby("region_id"):
        g = g.sort_values(["source", "poi_id"], ignore_index=True)
        tour = greedy_tour(g["x"].to_numpy(), g["y"].to_numpy(), region_rng(SEED, int(rid)))
        out[int(rid)] = g["token"].to_numpy()[tour].tolist()
    return out


def _poi_schema():
    """The poi_regions layout: the canonical POI schema plus a nullable region_id."""
    from pyspark.sql.types import LongType, StructField, StructType

    from landuse.spark.schemas import POIS_SCHEMA

    return StructType([*POIS_SCHEMA.fields, StructField("region_id", LongType(), True)])


def _collect(df) -> list[tuple]:
    return sorted((r[0], r[1], tuple(r[2]), r[3]) for r in df.collect())


def test_region_tours_in_spark(spark) -> None:
    local = _pois()
    pois = spark.createDataFrame(local.astype(object).where(local.notna(), None), schema=_poi_schema())
    # Input rows in 4 partitions, and in one partition in shuffled order: same result.
    tours = region_tours(pois.repartition(4), CRS, level=3, seed=SEED, min_pois=3)
    assert tours.schema == poi_tours.TOURS_SCHEMA
    rows = _collect(tours)
    shuffled = local.sample(frac=1.0, random_state=2)
    assert shuffled["poi_id"].tolist() != local["poi_id"].tolist()
    pois_shuffled = spark.createDataFrame(shuffled.astype(object).where(shuffled.notna(), None), schema=_poi_schema())
    assert _collect(region_tours(pois_shuffled.repartition(1), CRS, level=3, seed=SEED, min_pois=3)) == rows
    got = {r[0]: r for r in rows}

    assert sorted(got) == [1, 2, 3]  # NULL-region POIs excluded: no region, no tokens from them
    assert {rid: got[rid][1] for rid in got} == {1: 6, 2: 3, 3: 1}
    assert {rid: got[rid][3] for rid in got} == {1: False, 2: False, 3: True}  # 1 < min_pois = 3
    expected = _expected_tokens(local, level=3)
    assert {rid: list(got[rid][2]) for rid in got} == expected
    # Level fallback: cat_l3 missing → cat_l2; cat_l2 and cat_l3 missing → cat_l1.
    assert "r1p0_l2" in got[1][2] and "r1p1_l3" in got[1][2] and "r2p1_l1" in got[2][2]
    assert not any(t.startswith(("x_", "y_")) for r in got.values() for t in r[2])
    # The tour is not just the input order (otherwise the comparison above would prove little).
    assert expected[1] != sorted(expected[1])


def test_token_column_falls_back_to_coarser_levels(spark) -> None:
    local = _pois()
    pois = spark.createDataFrame(local.astype(object).where(local.notna(), None), schema=_poi_schema())
    tokens = {r[0]: r[1:] for r in pois.select("poi_id", *(token_column(pois, lv) for lv in (1, 2, 3))).collect()}
    assert tokens["1-0"] == ("r1p0_l1", "r1p0_l2", "r1p0_l2")
    assert tokens["1-1"] == ("r1p1_l1", "r1p1_l2", "r1p1_l3")
    assert tokens["2-1"] == ("r2p1_l1", "r2p1_l1", "r2p1_l1")


def test_region_tours_rejects_unknown_level(spark) -> None:
    local = _pois()
    pois = spark.createDataFrame(local.astype(object).where(local.notna(), None), schema=_poi_schema())
    with pytest.raises(ValueError, match="level 4"):
        region_tours(pois, CRS, level=4, seed=SEED, min_pois=3)


# --- Doc2Vec ---------------------------------------------------------------------------------------


def _tours() -> pd.DataFrame:
    tokens = {
        1: ["shop", "food", "shop", "bank", "food"],
        2: ["home", "home", "school", "park"],
        3: ["factory", "warehouse", "factory"],
        4: ["park", "park", "home"],
        5: [],
    }
    return pd.DataFrame({"region_id": list(tokens), TOKENS: list(tokens.values()), N_POIS: [len(t) for t in tokens.values()]})


_D2V_ARGS = dict(dim=8, window=2, epochs=20, workers=1, seed=3)


def test_doc2vec_workers_1_is_deterministic_across_runs_and_hash_seeds() -> None:
    a = train_poi_embeddings(_tours(), **_D2V_ARGS)
    b = train_poi_embeddings(_tours(), **_D2V_ARGS)
    assert a["region_id"].tolist() == [1, 2, 3, 4]  # the region without tokens gets no vector
    assert a["region_id"].dtype == np.int64
    assert all(v.dtype == np.float32 and v.shape == (8,) for v in a[VECTOR])
    assert np.array_equal(np.stack(a[VECTOR]), np.stack(b[VECTOR]))
    # Another process with another PYTHONHASHSEED gives the same bits (no dependence on hash()).
    code = (
        "import sys, numpy as np; sys.path[:0] = [%r, %r]; import test_poi_tours as t; "
        "from tests.support.small_inputs import train_poi_embeddings as f; "
        "print(np.stack(f(t._tours(), **t._D2V_ARGS)['vector']).tobytes().hex())"
    ) % (os.path.dirname(__file__), str(Path(__file__).resolve().parents[2]))
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == np.stack(a[VECTOR]).tobytes().hex()
    c = train_poi_embeddings(_tours(), **{**_D2V_ARGS, "seed": 4})
    assert not np.array_equal(np.stack(a[VECTOR]), np.stack(c[VECTOR]))  # the seed matters


def test_embedding_table_keeps_regions_without_pois_flagged() -> None:
    tours = _tours()
    tours[BELOW_MIN_POIS] = tours[N_POIS] < 4
    emb = train_poi_embeddings(tours, **_D2V_ARGS)
    table = poi_embedding_table(tours, emb, region_ids=[1, 2, 3, 4, 5, 6])
    assert table["region_id"].tolist() == [1, 2, 3, 4, 5, 6]
    assert table[HAS_POIS].tolist() == [True, True, True, True, False, False]
    assert table[N_POIS].tolist() == [5, 4, 3, 3, 0, 0]
    assert table[BELOW_MIN_POIS].tolist() == [False, False, True, True, True, True]
    for rid, vec in zip(table["region_id"], table[VECTOR]):
        assert vec.dtype == np.float32 and vec.shape == (8,)
        if rid in (5, 6):
            assert not vec.any()
        else:
            assert np.array_equal(vec, emb.set_index("region_id").loc[rid, VECTOR])
    with pytest.raises(ValueError, match="dim"):
        poi_embedding_table(tours, emb.iloc[:0])
    assert poi_embedding_table(tours, emb.iloc[:0], dim=8)[HAS_POIS].sum() == 0
