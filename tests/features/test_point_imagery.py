"""Point-level image features: tile grid, bilinear sampling, missing tiles, the raster helper."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from affine import Affine

from landuse.features.point_imagery import feature_grid, point_features, sample_points, tile_coordinates

# 10 m pixels, upper-left corner at (500000, 2500000), tiles of 32 px every 16 px (overlapping)
TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 2_500_000.0)
SIZE, STRIDE = 32, 16


def centre(r: float, c: float) -> tuple[float, float]:
    """World (x, y) of the centre of global tile (r, c)."""
    return TRANSFORM @ (c * STRIDE + SIZE / 2, r * STRIDE + SIZE / 2)


def tiles(rows: range, cols: range, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rr, cc = np.meshgrid(np.array(rows), np.array(cols), indexing="ij")
    vec = np.random.default_rng(seed).normal(size=(rr.size, d)).astype(np.float32)
    return rr.ravel(), cc.ravel(), vec


def test_grid_layout_and_errors() -> None:
    grid, r0, c0 = feature_grid([5, 5, 7], [2, 3, 2], np.arange(6, dtype=np.float32).reshape(3, 2))
    assert (r0, c0) == (5, 2) and grid.shape == (3, 2, 2)
    np.testing.assert_array_equal(grid[0, 1], [2, 3])
    np.testing.assert_array_equal(grid[2, 0], [4, 5])
    assert np.isnan(grid[1]).all() and np.isnan(grid[2, 1]).all()
    with pytest.raises(ValueError, match="more than once"):
        feature_grid([1, 1], [1, 1], np.zeros((2, 2)))
    with pytest.raises(ValueError, match="no tiles"):
        feature_grid([], [], np.zeros((0, 2)))


def test_exact_at_tile_centres_and_midpoint_is_mean() -> None:
    rows, cols, vec = tiles(range(3, 7), range(10, 15))
    grid, r0, c0 = feature_grid(rows, cols, vec)
    xs, ys = zip(*(centre(r, c) for r, c in zip(rows, cols)))
    np.testing.assert_allclose(sample_points(grid, None, (r0, c0), TRANSFORM, STRIDE, SIZE, xs, ys), vec, atol=1e-5)
    tr, tc = tile_coordinates(TRANSFORM, STRIDE, SIZE, np.array(xs), np.array(ys))
    np.testing.assert_allclose(tr, rows, atol=1e-9)
    np.testing.assert_allclose(tc, cols, atol=1e-9)
    lookup = {(r, c): v for r, c, v in zip(rows, cols, vec)}
    x, y = centre(4.5, 11.5)  # the middle of four tiles
    got = sample_points(grid, None, (r0, c0), TRANSFORM, STRIDE, SIZE, [x], [y])[0]
    expected = np.mean([lookup[(4, 11)], lookup[(4, 12)], lookup[(5, 11)], lookup[(5, 12)]], 0)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    x, y = centre(4.0, 11.5)  # the middle of an edge: two tiles
    got = sample_points(grid, None, (r0, c0), TRANSFORM, STRIDE, SIZE, [x], [y])[0]
    np.testing.assert_allclose(got, (lookup[(4, 11)] + lookup[(4, 12)]) / 2, atol=1e-5)


def test_linear_field_reproduced_exactly() -> None:
    rows, cols, _ = tiles(range(0, 8), range(2, 9))
    cx, cy = (np.array(v) for v in zip(*(centre(r, c) for r, c in zip(rows, cols))))
    field = lambda x, y: np.stack([0.01 * x - 0.02 * y + 3.0, 0.5 * (x - 500_000) + 7.0], 1)  # noqa: E731
    grid, r0, c0 = feature_grid(rows, cols, field(cx - 500_000, cy - 2_500_000))
    rng = np.random.default_rng(1)
    px = rng.uniform(cx.min(), cx.max(), 500)
    py = rng.uniform(cy.min(), cy.max(), 500)
    got = sample_points(grid, None, (r0, c0), TRANSFORM, STRIDE, SIZE, px, py)
    np.testing.assert_allclose(got, field(px - 500_000, py - 2_500_000), rtol=1e-4, atol=1e-2)


def test_missing_tiles_renormalised_and_far_points_nan() -> None:
    rows, cols, vec = tiles(range(0, 2), range(0, 2), d=2)
    keep = ~((rows == 1) & (cols == 1))  # drop one of the four tiles
    grid, r0, c0 = feature_grid(rows[keep], cols[keep], vec[keep])
    assert grid.shape == (2, 2, 2) and np.isnan(grid[1, 1]).all()
    x, y = centre(0.5, 0.5)
    got = sample_points(grid, None, (r0, c0), TRANSFORM, STRIDE, SIZE, [x], [y])[0]
    np.testing.assert_allclose(got, vec[keep].mean(0), atol=1e-5)  # equal weights over the three that exist
    x, y = centre(1.0, 1.0)  # exactly at the missing tile's centre: every other neighbour weighs 0
    far = centre(40.0, -40.0)
    near_edge = centre(-0.4, 0.0)  # half a tile outside the grid: the edge tile's value
    got = sample_points(grid, None, (r0, c0), TRANSFORM, STRIDE, SIZE, [x, far[0], near_edge[0], np.nan],
                        [y, far[1], near_edge[1], 0.0])
    assert np.isnan(got[0]).all() and np.isnan(got[1]).all() and np.isnan(got[3]).all()
    np.testing.assert_allclose(got[2], vec[0], atol=1e-5)
    # an explicit validity mask wins over the values
    valid = np.ones((2, 2), dtype=bool)
    valid[0, 0] = False
    x, y = centre(0.0, 0.5)
    got = sample_points(np.nan_to_num(grid), valid, (r0, c0), TRANSFORM, STRIDE, SIZE, [x], [y])[0]
    np.testing.assert_allclose(got, vec[1], atol=1e-5)


def test_vectorised_on_many_points() -> None:
    rows, cols, vec = tiles(range(0, 200), range(0, 200), d=16)
    grid, r0, c0 = feature_grid(rows, cols, vec)
    rng = np.random.default_rng(2)
    x0, y0 = centre(0, 0)
    x1, y1 = centre(199, 199)
    xs, ys = rng.uniform(x0, x1, 100_000), rng.uniform(y1, y0, 100_000)
    start = time.perf_counter()
    got = sample_points(grid, None, (r0, c0), TRANSFORM, STRIDE, SIZE, xs, ys)
    elapsed = time.perf_counter() - start
    assert got.shape == (100_000, 16) and np.isfinite(got).all()
    assert elapsed < 5.0, f"100k points took {elapsed:.2f} s"


def test_point_features_from_raster_and_other_crs(tmp_path) -> None:
    rasterio = pytest.importorskip("rasterio")
    from pyproj import Transformer

    path = tmp_path / "r.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="float32",
                       crs="EPSG:32650", transform=TRANSFORM) as dst:
        dst.write(np.zeros((1, 64, 64), dtype=np.float32))
    rows, cols, vec = tiles(range(0, 3), range(0, 3), d=4)
    frame = pd.DataFrame({"tile_row": rows, "tile_col": cols, "vector": list(vec)})
    frame = pd.concat([frame, frame.iloc[:2]])  # a tile listed for two regions
    cx, cy = centre(1, 2)
    lon, lat = Transformer.from_crs("EPSG:32650", "EPSG:4326", always_xy=True).transform(cx, cy)
    points = pd.DataFrame({"lon": [lon], "lat": [lat]})
    got = point_features(points, "EPSG:4326", path, frame, STRIDE, SIZE, x="lon", y="lat")
    np.testing.assert_allclose(got[0], vec[(rows == 1) & (cols == 2)][0], atol=1e-3)
