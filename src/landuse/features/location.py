"""H_geo: multi-scale sinusoidal encoding of projected region centroids.

Coordinates are first normalised to the study extent with one length for both axes,
``L = max(width, height)``: ``u = (x - minx) / L``, ``v = (y - miny) / L``, so both lie in [0, 1]
and the extent's aspect ratio is kept (a wide city does not get stretched vertically). Each scale
``s`` is a wavelength as a fraction of ``L`` and contributes ``sin(2πu/s), cos(2πu/s),
sin(2πv/s), cos(2πv/s)``; with ``include_xy`` the raw ``u, v`` come first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from landuse.spark.schemas import CENTROID_X, CENTROID_Y, REGION_ID

VECTOR = "vector"
HAS_GEO = "has_geo"

Extent = tuple[float, float, float, float]


def location_encoding(
    x: np.ndarray, y: np.ndarray, extent: Extent, scales: Sequence[float], include_xy: bool = True
) -> np.ndarray:
    """Encode points ``(x, y)`` (metres) as float32 ``[N, 4*len(scales) + 2*include_xy]``.

    ``extent`` is ``(minx, miny, maxx, maxy)`` in the same CRS. Raises ``ValueError`` for a
    degenerate extent (zero or negative size, non-finite) or a non-positive scale.
    """
    minx, miny, maxx, maxy = (float(value) for value in extent)
    length = max(maxx - minx, maxy - miny)
    if not np.isfinite([minx, miny, maxx, maxy]).all() or maxx < minx or maxy < miny or length <= 0:
        raise ValueError(f"location encoding: degenerate extent {extent} (need minx <= maxx, miny <= maxy, a positive size)")
    if not scales or min(scales) <= 0:
        raise ValueError(f"location encoding: scales must be non-empty and positive, got {list(scales)}")
    u = (np.asarray(x, dtype=np.float64) - minx) / length
    v = (np.asarray(y, dtype=np.float64) - miny) / length
    columns = [u, v] if include_xy else []
    for scale in scales:
        phase_u, phase_v = 2 * np.pi * u / scale, 2 * np.pi * v / scale
        columns += [np.sin(phase_u), np.cos(phase_u), np.sin(phase_v), np.cos(phase_v)]
    return np.stack(columns, axis=1).astype(np.float32).reshape(len(u), len(columns))


def geo_feature_table(
    regions: pd.DataFrame, scales: Sequence[float], include_xy: bool = True, extent: Extent | None = None
) -> pd.DataFrame:
    """``geo_features``: region_id (int64), vector (float32 arrays), has_geo (all True).

    ``regions`` has region_id, centroid_x, centroid_y (projected metres). The extent defaults to
    the centroids' bounding box; pass ``extent`` (e.g. the regions' polygon bounds) to normalise
    to something else — needed when there are too few regions for a non-degenerate box.
    """
    x = regions[CENTROID_X].to_numpy(np.float64)
    y = regions[CENTROID_Y].to_numpy(np.float64)
    if extent is None:
        if len(x) == 0:
            raise ValueError("location encoding: no regions and no extent given")
        extent = (x.min(), y.min(), x.max(), y.max())
    encoded = location_encoding(x, y, extent, scales, include_xy)
    return pd.DataFrame(
        {
            REGION_ID: regions[REGION_ID].to_numpy(np.int64),
            VECTOR: list(encoded),
            HAS_GEO: np.ones(len(encoded), dtype=bool),
        }
    )
