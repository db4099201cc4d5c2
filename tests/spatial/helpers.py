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


def require_sedona(spark) -> None:
    """Return when Sedona is registered on ``spark``; skip (with the reason) only when no Sedona jar is installed.

    With the jars in ``jvm/jars`` (``make jars``) the tests' session resolves the Sedona engine, so a
    session without it is a failure, not a skip.
    """
    from pathlib import Path

    import pytest

    from landuse.spark.session import REPO_JARS_DIR, local_jars, sedona_available

    if sedona_available(spark):
        return
    jars = [j for j in local_jars() if Path(j).name.startswith("sedona-spark")]
    if not jars:
        pytest.skip(f"no Sedona jar among the local jars ({REPO_JARS_DIR} or $LANDUSE_JARS_DIR / $SEDONA_JARS): "
                    "run `make jars`")
    pytest.fail(f"Sedona jars {jars} are installed but Sedona's classes are not loadable in the test session")


def executed_plan(df) -> str:
    """The physical plan Spark chose for ``df``, as text."""
    return df._jdf.queryExecution().executedPlan().toString()


def shuffles_or_aggregates(plan: str) -> list[str]:
    """Plan lines that exchange rows between partitions (other than a broadcast) or aggregate them."""
    return [
        line.strip() for line in plan.splitlines()
        if ("Exchange" in line and "BroadcastExchange" not in line) or "Aggregate" in line
    ]
