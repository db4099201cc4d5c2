"""POI category shares / TF-IDF / density per region, and the poi-features level fallback on Spark."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from landuse.data.tables import modality_table
from landuse.features.poi_features import OTHER, count_matrix, density, level_token_counts, shares, tfidf


def counts_frame() -> pd.DataFrame:
    return pd.DataFrame({"region_id": [1, 1, 2, 2, 2, 9], "token": ["a", "b", "a", "c", "d", "a"],
                         "n_pois": [3, 1, 1, 1, 2, 5]})


def test_count_matrix_orders_tokens_by_frequency_and_pools_the_rest() -> None:
    m, tokens = count_matrix(counts_frame(), np.array([1, 2, 3]), max_tokens=2)
    # a: 9 POIs (region 9 is not a region here but counts toward frequency), d: 2, b/c: 1 each -> other
    assert tokens == ["a", "d", OTHER]
    dense = m.toarray()
    np.testing.assert_array_equal(dense, [[3, 0, 1], [1, 2, 1], [0, 0, 0]])


def test_shares_tfidf_and_empty_rows() -> None:
    m, _ = count_matrix(counts_frame(), np.array([1, 2, 3]), max_tokens=10)
    s = shares(m)
    np.testing.assert_allclose(s.sum(1), [1, 1, 0])
    t = tfidf(m)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), [1, 1, 0], atol=1e-6)
    # 'a' is in both regions, 'b' only in region 1: b weighs more per POI than a there
    col = {tok: i for i, tok in enumerate(count_matrix(counts_frame(), np.array([1, 2, 3]), 10)[1])}
    assert t[0, col["b"]] / 1 > t[0, col["a"]] / math.log1p(3) * 0.5


def test_density_columns() -> None:
    m, _ = count_matrix(counts_frame(), np.array([1, 2, 3]), max_tokens=10)
    x, names = density([m], np.array([2e6, 1e6, 1e6]))
    assert names == ["log_pois", "log_pois_per_km2", "log_distinct_tokens_1", "entropy_level_1"]
    np.testing.assert_allclose(x[:, 0], np.log1p([4, 4, 0]), rtol=1e-6)
    np.testing.assert_allclose(x[:, 1], np.log1p([2, 4, 0]), rtol=1e-6)
    np.testing.assert_allclose(x[:, 2], np.log1p([2, 3, 0]), rtol=1e-6)
    assert x[2, 3] == 0 and 0 < x[0, 3] < x[1, 3] <= 1  # three kinds mix more than two


def test_modality_table_zeroes_absent_rows() -> None:
    frame = modality_table(np.array([1, 2]), np.ones((2, 3)), np.array([True, False]), "has_x")
    assert list(frame.columns) == ["region_id", "vector", "has_x"]
    assert frame["vector"].iloc[1].tolist() == [0, 0, 0] and frame["has_x"].tolist() == [True, False]


def test_level_fallback_on_spark(spark) -> None:
    rows = [(1, "food", "food:pizza"), (1, "food", None), (2, "school", "school:primary"), (None, "x", "x:y")]
    df = spark.createDataFrame(rows, "region_id long, cat_l1 string, cat_l2 string")
    got = {(r.region_id, r.token): r.n_pois for r in level_token_counts(df, 2).collect()}
    # the POI without a level-2 token counts under its level-1 token; unassigned POIs are skipped
    assert got == {(1, "food:pizza"): 1, (1, "food"): 1, (2, "school:primary"): 1}
    assert {(r.region_id, r.token): r.n_pois for r in level_token_counts(df, 1).collect()} == {(1, "food"): 2, (2, "school"): 1}
    with pytest.raises(ValueError, match="category columns"):
        level_token_counts(df.select("region_id"), 1)
