"""Point-level image features: sample a patch-feature grid at arbitrary points (GAIR-style).

Per-tile feature vectors (one per image tile of ``size`` px on the raster's global grid with step
``stride``, as in the ``image_patches`` table: the tile's first pixel row is ``tile_row * stride``)
are scattered into a dense grid ``[H', W', d]``; a point (POI, trip endpoint) in the raster CRS is
mapped to fractional tile coordinates — tile (r, c) is centred at pixel ``(r*stride + size/2,
c*stride + size/2)`` — and gets the bilinear interpolation of its four surrounding tile vectors.
Weights are renormalised over the neighbours that exist (a missing tile is NaN in the grid), so a
point beside a gap or within half a tile outside the covered area still gets a value; a point with
no existing neighbour gets a NaN row. Everything is vectorised over points.

>>> grid, r0, c0 = feature_grid(tiles.tile_row, tiles.tile_col, np.stack(tiles.vector))
>>> feats = sample_points(grid, None, (r0, c0), src.transform, stride=32, size=32, xs=x, ys=y)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TILE_ROW, TILE_COL, VECTOR = "tile_row", "tile_col", "vector"

__all__ = ["feature_grid", "sample_points", "point_features", "tile_coordinates"]


def feature_grid(tile_rows: Sequence[int], tile_cols: Sequence[int], vectors: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Scatter per-tile vectors ``[T, d]`` into a dense grid.

    Returns ``(grid [H', W', d] float32, min_row, min_col)``: ``grid[tile_row - min_row, tile_col -
    min_col]`` is the tile's vector; cells without a tile are NaN (``np.isfinite(grid).all(-1)`` is
    the validity mask). Raises ValueError for mismatched lengths, no tiles or a repeated tile.
    """
    rows = np.asarray(tile_rows, dtype=np.int64).ravel()
    cols = np.asarray(tile_cols, dtype=np.int64).ravel()
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or not (len(rows) == len(cols) == len(vectors)):
        raise ValueError(f"feature_grid: need tile_rows [T], tile_cols [T], vectors [T, d]; got "
                         f"{rows.shape}, {cols.shape}, {vectors.shape}")
    if len(rows) == 0:
        raise ValueError("feature_grid: no tiles")
    r0, c0 = int(rows.min()), int(cols.min())
    h, w = int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1
    flat = (rows - r0) * w + (cols - c0)
    if len(np.unique(flat)) != len(flat):
        raise ValueError("feature_grid: a tile (tile_row, tile_col) appears more than once; deduplicate first")
    grid = np.full((h * w, vectors.shape[1]), np.nan, dtype=np.float32)
    grid[flat] = vectors
    return grid.reshape(h, w, vectors.shape[1]), r0, c0


def _inverse(transform: Any) -> tuple[float, float, float, float, float, float]:
    """Coefficients of the inverse of an affine ``(a, b, c, d, e, f)``: pixel (col, row) from (x, y)."""
    a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
    det = a * e - b * d
    if det == 0:
        raise ValueError("sample_points: the raster transform is not invertible")
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    return ia, ib, -(ia * c + ib * f), id_, ie, -(id_ * c + ie * f)


def tile_coordinates(transform: Any, stride: int, size: int, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fractional global tile coordinates (row, col) of points in the raster CRS; integers at tile centres.

    ``transform`` is the raster's affine (rasterio/affine ``Affine`` or its first six coefficients
    ``a, b, c, d, e, f``: x = a·col + b·row + c, y = d·col + e·row + f, pixel corners at integers).
    """
    if stride <= 0 or size <= 0:
        raise ValueError(f"stride and size must be > 0, got stride={stride} size={size}")
    ia, ib, ic, id_, ie, if_ = _inverse(transform)
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    col_px, row_px = ia * xs + ib * ys + ic, id_ * xs + ie * ys + if_
    return (row_px - size / 2) / stride, (col_px - size / 2) / stride


def sample_points(
    grid: np.ndarray,
    valid: np.ndarray | None,
    origin: tuple[int, int],
    transform: Any,
    stride: int,
    size: int,
    xs: np.ndarray,
    ys: np.ndarray,
) -> np.ndarray:
    """Bilinear samples ``[P, d]`` (float32) of ``grid`` at points ``(xs, ys)`` in the raster CRS.

    ``valid`` [H', W'] marks existing tiles (None: the cells whose vector is all finite);
    ``origin`` = ``(min_row, min_col)`` from :func:`feature_grid`. The four tiles around a point
    are weighted bilinearly, the weights of missing or out-of-grid tiles dropped and the rest
    renormalised; a point with no valid neighbour gets NaN.
    """
    grid = np.asarray(grid)
    h, w, d = grid.shape
    valid = np.isfinite(grid).all(-1) if valid is None else np.asarray(valid, dtype=bool)
    if valid.shape != (h, w):
        raise ValueError(f"sample_points: valid has shape {valid.shape}, grid {grid.shape[:2]}")
    tr, tc = tile_coordinates(transform, stride, size, xs, ys)
    tr, tc = tr - origin[0], tc - origin[1]
    out = np.full((len(tr), d), np.nan, dtype=np.float32)
    finite = np.isfinite(tr) & np.isfinite(tc)
    # far-away points have no neighbour; clip before the integer cast (also avoids overflow)
    tr, tc = np.clip(np.where(finite, tr, -2.0), -2.0, h + 1.0), np.clip(np.where(finite, tc, -2.0), -2.0, w + 1.0)
    r0, c0 = np.floor(tr).astype(np.int64), np.floor(tc).astype(np.int64)
    fr, fc = tr - r0, tc - c0
    total = np.zeros(len(tr))
    acc = np.zeros((len(tr), d))
    flat_grid = np.where(valid[..., None], grid, 0).reshape(h * w, d)  # zeros where missing: NaN * 0 is NaN
    for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
        r, c = r0 + dr, c0 + dc
        weight = (fr if dr else 1 - fr) * (fc if dc else 1 - fc)
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w) & finite
        flat = np.where(inside, r * w + c, 0)
        ok = inside & valid.reshape(-1)[flat]
        weight = np.where(ok, weight, 0.0)
        total += weight
        acc += weight[:, None] * flat_grid[flat]
    has = total > 1e-12
    out[has] = (acc[has] / total[has, None]).astype(np.float32)
    return out


def point_features(
    points: pd.DataFrame,
    crs: str,
    raster_path: str | Path,
    tiles: pd.DataFrame,
    stride: int,
    size: int,
    x: str = "x",
    y: str = "y",
) -> np.ndarray:
    """Image features ``[P, d]`` at the points of ``points`` (columns ``x``, ``y`` in ``crs``).

    ``tiles`` has ``tile_row``, ``tile_col`` and ``vector`` (one feature vector per tile, e.g. an
    encoder's output over the ``image_patches`` table; a tile listed once per region it meets is
    kept once). The raster's transform and CRS come from ``raster_path``; points are reprojected
    into the raster CRS with pyproj (always_xy). Rows with no tile around them are NaN.
    """
    import rasterio
    from pyproj import CRS, Transformer

    with rasterio.open(raster_path) as src:
        transform, raster_crs = src.transform, src.crs
    tiles = tiles.drop_duplicates([TILE_ROW, TILE_COL])
    grid, r0, c0 = feature_grid(tiles[TILE_ROW].to_numpy(), tiles[TILE_COL].to_numpy(), np.stack(tiles[VECTOR].to_numpy()))
    xs, ys = points[x].to_numpy(np.float64), points[y].to_numpy(np.float64)
    if raster_crs is not None and CRS.from_user_input(crs) != CRS.from_user_input(raster_crs.to_wkt()):
        xs, ys = Transformer.from_crs(crs, raster_crs.to_wkt(), always_xy=True).transform(xs, ys)
    return sample_points(grid, None, (r0, c0), transform, stride, size, np.asarray(xs), np.asarray(ys))
