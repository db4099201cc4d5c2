"""Shared helpers for the spatial tests (reference answers and probe points)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely

CRS = "EPSG:32650"


def sjoin_reference(regions: gpd.GeoDataFrame, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """GeoPandas sjoin(intersects) + smallest region_id; -1 where no region (the reference answer)."""
    points = gpd.GeoDataFrame(geometry=gpd.points_from_xy(x, y), crs=regions.crs)
    joined = gpd.sjoin(points, regions[["region_id", "geometry"]], predicate="intersects", how="left")
    best = joined.groupby(level=0)["region_id"].min().reindex(range(len(x)))
    return best.fillna(-1).to_numpy(dtype=np.int64)


def probe_points(regions: gpd.GeoDataFrame, n_random: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random points over and beyond the regions, plus every polygon vertex (shared by 2-3 regions)."""
    rng = np.random.default_rng(seed)
    xmin, ymin, xmax, ymax = regions.total_bounds
    pad = 0.1 * (xmax - xmin)
    xy = rng.uniform((xmin - pad, ymin - pad), (xmax + pad, ymax + pad), (n_random, 2))
    vertices = np.unique(shapely.get_coordinates(np.asarray(regions.geometry.values, dtype=object)), axis=0)
    xy = np.vstack([xy, vertices])
    return xy[:, 0].copy(), xy[:, 1].copy()
