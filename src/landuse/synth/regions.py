"""Regional units: a square grid (Shenzhen) or Voronoi cells around bike docks (London)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer
from scipy.spatial import cKDTree

from landuse.constants import CRS_WGS84
from landuse.synth.landuse_map import CLS, COVER, NO_LANDUSE, LatentMap
from landuse.synth.profiles import LONDON_STREET_TYPES, LONDON_STREETS, ProfileSpec
from landuse.synth.scales import ScaleSpec

# Relative dock density per land-use class: docks follow people and jobs, never water.
_DOCK_WEIGHT = {"commercial": 6.0, "residential": 3.0, "industrial": 0.6, "public_service": 2.0,
                "utilities": 0.1, "green_space": 1.5, "transport": 1.5, "non_construction": 0.08}


@dataclass(frozen=True)
class Regions:
    """Regional units in id order: ``ids[i]`` is the id of ``geometry[i]`` (projected CRS)."""

    ids: np.ndarray  # int64
    geometry: np.ndarray  # shapely polygons
    id_column: str

    @property
    def n(self) -> int:
        """Number of regions."""
        return int(self.ids.size)

    def centroids(self) -> np.ndarray:
        """(n, 2) projected centroid coordinates."""
        return shapely.get_coordinates(shapely.centroid(self.geometry))


def grid_regions(origin_x: float, origin_y: float, scale: ScaleSpec) -> Regions:
    """``grid_m`` squares over the extent; ``grid_id`` is row-major from the north-west corner, from 0."""
    n, g = scale.n_grid, float(scale.grid_m)
    row, col = np.divmod(np.arange(n * n, dtype=np.int64), n)
    xmin = origin_x + col * g
    ymax = origin_y - row * g
    geometry = shapely.box(xmin, ymax - g, xmin + g, ymax)
    return Regions(ids=row * n + col, geometry=geometry, id_column="grid_id")


def sample_docks(latent: LatentMap, n_docks: int, rng: np.random.Generator) -> np.ndarray:
    """(n_docks, 2) projected dock positions: at most one per latent cell, denser where people are."""
    class_weight = np.array([_DOCK_WEIGHT[name] for name in CLS] + [0.0], dtype=np.float64)
    klass = np.where(latent.classes == NO_LANDUSE, len(CLS), latent.classes).ravel()
    weight = class_weight[klass] * (0.3 + latent.urban.ravel())
    weight[np.isin(latent.cover.ravel(), [COVER["river"], COVER["lake"]])] = 0.0
    if np.count_nonzero(weight) < n_docks:
        raise ValueError(f"cannot place {n_docks} docks on {np.count_nonzero(weight)} eligible cells")
    # Gumbel top-k: sampling without replacement proportional to weight, fully vectorised
    with np.errstate(divide="ignore"):
        keys = np.log(weight) + rng.gumbel(size=weight.size)
    chosen = np.argpartition(-keys, n_docks - 1)[:n_docks]
    chosen = chosen[np.argsort(-keys[chosen], kind="stable")]
    row, col = np.divmod(chosen, latent.n)
    xs, ys = latent.cell_centres()
    jitter = rng.uniform(-0.4, 0.4, size=(n_docks, 2)) * latent.cell_m
    x = np.round(xs[col] + jitter[:, 0], 1)
    y = np.round(ys[row] + jitter[:, 1], 1)
    return np.column_stack([x, y])


def voronoi_regions(docks: np.ndarray, bounds: tuple[float, float, float, float], ids: np.ndarray) -> Regions:
    """Voronoi cells of ``docks`` clipped to ``bounds``; cell i belongs to dock i and gets ``ids[i]``."""
    extent = shapely.box(*bounds)
    diagram = shapely.voronoi_polygons(shapely.multipoints(docks), extend_to=extent, ordered=True)
    cells = shapely.intersection(shapely.get_parts(diagram), extent)
    if cells.size != len(docks):
        raise RuntimeError(f"Voronoi diagram has {cells.size} cells for {len(docks)} docks")
    order = np.argsort(ids, kind="stable")
    return Regions(ids=ids[order].astype(np.int64), geometry=cells[order], id_column="region_id")


def to_lonlat(crs: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projected → WGS84 (lon, lat)."""
    transformer = Transformer.from_crs(crs, CRS_WGS84, always_xy=True)
    lon, lat = transformer.transform(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return np.asarray(lon), np.asarray(lat)


def station_names(docks: np.ndarray, places: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    """TfL-style unique names ``"<Street> <Type>, <Area>"``; the area is the nearest district centre."""
    n = len(docks)
    n_areas = max(4, min(len(places) * 5, n // 100 + 4))
    suffixes = ("", " North", " South", " East", " West")
    area_names = np.array([places[i % len(places)] + suffixes[i // len(places)] for i in range(n_areas)], dtype=object)
    lo, hi = docks.min(axis=0), docks.max(axis=0)
    centres = rng.uniform(lo, hi + 1e-9, size=(n_areas, 2))
    _, area = cKDTree(centres).query(docks, k=1)
    combos = np.array([f"{s} {t}" for s in LONDON_STREETS for t in LONDON_STREET_TYPES], dtype=object)
    combos = combos[rng.permutation(combos.size)]
    # rank of each dock within its area (random order), so names are unique per area
    order = np.lexsort((rng.random(n), area))
    sorted_area = area[order]
    first = np.searchsorted(sorted_area, sorted_area, side="left")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - first
    street = combos[rank % combos.size]
    repeat = rank // combos.size
    tail = np.where(repeat > 0, np.char.add(" ", (repeat + 1).astype(str)).astype(object), "")
    return np.asarray(street + tail + ", " + area_names[area], dtype=object)


def station_table(profile: ProfileSpec, docks: np.ndarray, ids: np.ndarray, latent: LatentMap,
                  rng: np.random.Generator) -> pd.DataFrame:
    """TfL BikePoint-like table ``id, commonName, lat, lon, nbDocks`` (sorted by id), plus projected x/y."""
    lon, lat = to_lonlat(profile.crs, docks[:, 0], docks[:, 1])
    row, col = latent.cell_of(docks[:, 0], docks[:, 1])
    activity = latent.urban[row, col].astype(np.float64)
    nb = np.clip(np.rint(12 + 30 * activity + rng.normal(0, 4, len(docks))), 10, 64).astype(np.int64)
    frame = pd.DataFrame({
        "id": ids.astype(np.int64),
        "commonName": station_names(docks, profile.places, rng),
        "lat": np.round(lat, 6),
        "lon": np.round(lon, 6),
        "nbDocks": nb,
        "x": docks[:, 0],
        "y": docks[:, 1],
    })
    return frame.sort_values("id", kind="stable").reset_index(drop=True)
