"""H_geo location encoding: shapes, ranges, normalisation, a hand-computed value, aspect ratio."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from landuse.features.location import geo_feature_table, location_encoding

SCALES = (1.0, 0.5, 0.25)
EXTENT = (1000.0, 2000.0, 5000.0, 4000.0)  # 4 km wide, 2 km tall: L = 4000 m


def test_shape_dtype_and_range() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.uniform(1000, 5000, 50), rng.uniform(2000, 4000, 50)
    with_xy = location_encoding(x, y, EXTENT, SCALES)
    without = location_encoding(x, y, EXTENT, SCALES, include_xy=False)
    assert with_xy.shape == (50, 14) and with_xy.dtype == np.float32
    assert without.shape == (50, 12)
    np.testing.assert_array_equal(with_xy[:, 2:], without)
    assert (np.abs(without) <= 1.0).all()
    assert (with_xy[:, :2] >= 0).all() and (with_xy[:, :2] <= 1).all()


def test_uv_normalisation_keeps_aspect_ratio() -> None:
    corners_x = np.array([1000.0, 5000.0, 1000.0, 5000.0])
    corners_y = np.array([2000.0, 2000.0, 4000.0, 4000.0])
    uv = location_encoding(corners_x, corners_y, EXTENT, SCALES)[:, :2]
    # One length (the longer side) for both axes: the 2 km side spans only [0, 0.5].
    np.testing.assert_allclose(uv, [[0, 0], [1, 0], [0, 0.5], [1, 0.5]])


def test_hand_computed_value() -> None:
    enc = location_encoding(np.array([2000.0]), np.array([2500.0]), EXTENT, (1.0, 0.5))[0]
    # u = (2000-1000)/4000 = 1/4, v = (2500-2000)/4000 = 1/8; phases 2πu/s and 2πv/s per scale.
    r = math.sqrt(0.5)
    expected = [0.25, 0.125, 1, 0, r, r, 0, -1, 1, 0]  # u, v, then (sin u, cos u, sin v, cos v) per scale
    np.testing.assert_allclose(enc, expected, atol=1e-6)


def test_distinct_points_get_distinct_encodings() -> None:
    # Inside the extent: at scale 1 the sinusoids wrap once, so u = 0 and u = 1 would coincide.
    xs, ys = np.linspace(1000, 5000, 20, endpoint=False), np.linspace(2000, 4000, 10)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    enc = location_encoding(grid[:, 0], grid[:, 1], EXTENT, SCALES, include_xy=False)
    assert len(np.unique(enc.round(5) + 0.0, axis=0)) == len(grid)


@pytest.mark.parametrize("extent", [(0, 0, 0, 0), (10, 0, 5, 1), (0, 0, float("nan"), 1)])
def test_degenerate_extent_raises(extent: tuple) -> None:
    with pytest.raises(ValueError, match="degenerate extent"):
        location_encoding(np.zeros(1), np.zeros(1), extent, SCALES)


def test_geo_feature_table() -> None:
    regions = pd.DataFrame({"region_id": [7, 3, 9], "centroid_x": [0.0, 100.0, 50.0], "centroid_y": [0.0, 50.0, 25.0]})
    table = geo_feature_table(regions, SCALES, include_xy=True)
    assert list(table.columns) == ["region_id", "vector", "has_geo"]
    assert table["region_id"].dtype == np.int64 and table["has_geo"].all()
    vectors = np.stack(table["vector"])
    assert vectors.shape == (3, 14) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors[:, :2], [[0, 0], [1, 0.5], [0.5, 0.25]])
    explicit = geo_feature_table(regions, SCALES, include_xy=True, extent=(-100.0, -100.0, 100.0, 100.0))
    np.testing.assert_allclose(np.stack(explicit["vector"])[:, :2], [[0.5, 0.5], [1, 0.75], [0.75, 0.625]])
    with pytest.raises(ValueError, match="degenerate extent"):
        geo_feature_table(regions.iloc[:1], SCALES, include_xy=True)
