"""A planned land-use layer with known injected deviations, for planned-vs-actual monitoring.

The plan is one polygon per covered region (the region's own geometry) whose ``planned_class`` is
the region's true dominant class — except for a seeded random :data:`DEVIATION_FRACTION` of the
covered regions, whose plan is replaced by a class the region clearly is not ("injected
deviation": the plan says green_space, the ground is residential).

A deviation is only well defined where the actual use is clear, so deviating regions are drawn
among regions whose true dominant share is at least :data:`CLEAR_DOMINANT_SHARE`, and the
replacement class is drawn among classes with a true share below :data:`ABSENT_SHARE` (one always
exists: with a dominant share ≥ 0.5, at most four other classes can reach 0.1). Regions no
land-use polygon touches (coverage 0, e.g. open sea) have no plan.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd

from landuse.constants import LANDUSE_CLASSES

DEVIATION_FRACTION = 0.08  # of covered regions
CLEAR_DOMINANT_SHARE = 0.5  # deviating regions have an unambiguous actual use
ABSENT_SHARE = 0.1  # the injected planned class is (almost) absent on the ground

REGION_ID = "region_id"
PLANNED_CLASS = "planned_class"
ACTUAL_DOMINANT = "actual_dominant_class"
DEVIATION = "deviation"


def planned_layer(truth: pd.DataFrame, region_geometry: np.ndarray, crs: str,
                  rng: np.random.Generator) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """(plan polygons, deviation truth) from the true per-region distribution.

    Args:
        truth: ``region_id``, one share column per class of ``LANDUSE_CLASSES``, ``coverage``;
            row i describes ``region_geometry[i]``.
        region_geometry: the regions' polygons (projected CRS), in ``truth`` order.
        crs: CRS of ``region_geometry``.
        rng: the generator's ``planned`` stream.

    Returns:
        A GeoDataFrame (``region_id``, ``planned_class``, geometry) with one row per covered region,
        and a table ``region_id, planned_class, actual_dominant_class, deviation`` for the same rows.
    """
    classes = np.asarray(LANDUSE_CLASSES, dtype=object)
    shares = truth[list(LANDUSE_CLASSES)].to_numpy(dtype=np.float64)
    covered = np.flatnonzero(truth["coverage"].to_numpy() > 0)
    dominant = shares.argmax(axis=1)
    planned = dominant.copy()

    clear = covered[shares[covered, dominant[covered]] >= CLEAR_DOMINANT_SHARE]
    n_dev = min(int(round(DEVIATION_FRACTION * covered.size)), clear.size)
    deviating = np.sort(rng.choice(clear, size=n_dev, replace=False))
    for i in deviating:
        absent = np.flatnonzero(shares[i] < ABSENT_SHARE)
        planned[i] = rng.choice(absent)

    ids = truth[REGION_ID].to_numpy(np.int64)[covered]
    plan = gpd.GeoDataFrame({REGION_ID: ids, PLANNED_CLASS: classes[planned[covered]]},
                            geometry=np.asarray(region_geometry, dtype=object)[covered], crs=crs)
    deviations = pd.DataFrame({REGION_ID: ids, PLANNED_CLASS: classes[planned[covered]],
                               ACTUAL_DOMINANT: classes[dominant[covered]],
                               DEVIATION: planned[covered] != dominant[covered]})
    return plan, deviations
