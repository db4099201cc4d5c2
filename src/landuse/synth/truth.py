"""Ground truth: each region's land-use distribution from exact polygon intersection areas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

from landuse.constants import LANDUSE_CLASSES

_PAIR_BATCH = 200_000  # intersections per batch, bounds the temporary geometry arrays


def class_areas(regions: np.ndarray, polygons: np.ndarray, polygon_class: np.ndarray) -> np.ndarray:
    """(N, C) area (m²) of each class's polygons inside each region, from exact intersections."""
    n, c = len(regions), len(LANDUSE_CLASSES)
    tree = shapely.STRtree(polygons)
    region_idx, polygon_idx = tree.query(regions, predicate="intersects")
    totals = np.zeros(n * c, dtype=np.float64)
    for lo in range(0, region_idx.size, _PAIR_BATCH):
        r = region_idx[lo : lo + _PAIR_BATCH]
        p = polygon_idx[lo : lo + _PAIR_BATCH]
        area = shapely.area(shapely.intersection(regions[r], polygons[p]))
        totals += np.bincount(r * c + polygon_class[p].astype(np.int64), weights=area, minlength=n * c)
    return totals.reshape(n, c)


def region_distribution(ids: np.ndarray, regions: np.ndarray, polygons: np.ndarray,
                        polygon_class: np.ndarray) -> pd.DataFrame:
    """Truth table: ``region_id``, one share column per class, ``coverage``.

    A share is the class's area over the region's *covered* area (so shares sum to 1 wherever
    coverage > 0, and are all 0 for a region no land-use polygon touches, e.g. open sea);
    ``coverage`` is the covered area over the region's area. This is the definition the labels
    stage uses (issue 3: "rows sum to 1 where coverage > 0 plus the coverage fraction").
    """
    areas = class_areas(regions, polygons, polygon_class)
    region_area = shapely.area(regions)
    covered = areas.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.where(covered[:, None] > 0, areas / covered[:, None], 0.0)
    frame = pd.DataFrame(shares, columns=list(LANDUSE_CLASSES))
    frame.insert(0, "region_id", ids.astype(np.int64))
    frame["coverage"] = covered / region_area
    return frame
