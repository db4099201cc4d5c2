"""Building footprints conditioned on the latent land-use map, written as GeoParquet.

Each latent cell (``cell_m``, 50 m) is split into ``slots × slots`` sub-squares that hold at most one
rectangular footprint each, so footprints never overlap. Whether a slot is built, and the size,
shape, orientation and height of its building, follow the cell's class (a region's building stock
therefore follows its land-use mixture) and the urban intensity (denser and taller towards the
commercial cores):

* residential — suburban houses (small, 2-3 storeys, four slots per cell) where urban intensity is
  low, apartment blocks (medium, 5-30 storeys) in the city;
* commercial — fewer, large, near-square, tall (up to ~45 storeys in a core);
* industrial — large, low (1-2 storeys), elongated sheds;
* public service — medium, 2-7 storeys, loosely oriented (campus-like);
* utilities — small low plant buildings; transport — a few long, low sheds (stations, depots);
* green space / farmland / forest / bare land — almost none; water and open sea — none.

Buildings follow a smooth district street-grid orientation (a city-wide angle ± ~15°), except a
class-dependent share drawn at random, so the orientation entropy of planned areas is low.
Heights are ``levels × 3 m`` plus a small roof allowance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from landuse.constants import LANDUSE_CLASSES
from landuse.synth.landuse_map import CLS, COVER, NO_LANDUSE, SEA, LatentMap, smooth_field
from landuse.synth.writers import write_geoparquet

FLOOR_HEIGHT_M = 3.0
ID_COLUMN = "building_id"
HEIGHT_COLUMN = "height"
LEVELS_COLUMN = "levels"
_MAX_SLOTS = 2
_FILL = 0.92  # a footprint's rotated bounding box spans at most this share of its slot


@dataclass(frozen=True)
class BuildingStyle:
    """How one kind of cell is built up.

    Attributes:
        slots: sub-squares per side of a latent cell (each holds at most one building).
        occupancy: chance a slot is built at urban intensity 0; ``occupancy_urban`` is added at 1.
        long_m: range of the long side in metres (shrunk to fit the slot when rotated).
        aspect: range of long / short side.
        levels: storeys (lo, hi); hi is approached in the cores (urban intensity ** ``height_power``).
        aligned: share of buildings following the district street grid (the rest at random angles).
    """

    slots: int
    occupancy: float
    occupancy_urban: float
    long_m: tuple[float, float]
    aspect: tuple[float, float]
    levels: tuple[int, int]
    aligned: float
    height_power: float = 1.0


HOUSE, BLOCK = "residential_house", "residential_block"
STYLES: dict[str, BuildingStyle] = {
    HOUSE: BuildingStyle(2, 0.18, 0.25, (9.0, 16.0), (1.1, 1.8), (1, 3), 0.8),
    BLOCK: BuildingStyle(1, 0.55, 0.30, (20.0, 42.0), (1.6, 3.5), (5, 30), 0.9, 1.5),
    "commercial": BuildingStyle(1, 0.45, 0.35, (26.0, 46.0), (1.0, 1.7), (3, 45), 0.9, 1.5),
    "industrial": BuildingStyle(1, 0.60, 0.20, (34.0, 48.0), (2.2, 4.5), (1, 2), 0.95),
    "public_service": BuildingStyle(1, 0.45, 0.10, (18.0, 38.0), (1.3, 3.0), (2, 7), 0.5),
    "utilities": BuildingStyle(1, 0.30, 0.00, (8.0, 22.0), (1.0, 2.0), (1, 2), 0.7),
    "green_space": BuildingStyle(1, 0.02, 0.00, (5.0, 12.0), (1.0, 1.5), (1, 1), 0.3),
    "transport": BuildingStyle(1, 0.05, 0.00, (34.0, 48.0), (4.0, 8.0), (1, 2), 1.0),
    "non_construction": BuildingStyle(1, 0.01, 0.00, (6.0, 16.0), (1.0, 2.5), (1, 2), 0.3),
}
STYLE_NAMES: tuple[str, ...] = tuple(STYLES)
_HOUSE_BELOW_URBAN = 0.5  # residential cells below this urban intensity hold houses, above it blocks


@dataclass(frozen=True)
class BuildingSample:
    """Sampled footprints (projected CRS) with their generating class, for writing and for tests."""

    geometry: np.ndarray  # shapely Polygons
    levels: np.ndarray  # int32
    height: np.ndarray  # float64 metres
    landuse_class: np.ndarray  # int16 index into LANDUSE_CLASSES of the cell the building stands in
    style: np.ndarray  # int16 index into STYLE_NAMES

    @property
    def n(self) -> int:
        return len(self.geometry)

    def frame(self, crs: str) -> gpd.GeoDataFrame:
        """The file's columns: building_id, height, levels, geometry (no class: that is the truth)."""
        return gpd.GeoDataFrame(
            {ID_COLUMN: np.arange(1, self.n + 1, dtype=np.int64), HEIGHT_COLUMN: self.height,
             LEVELS_COLUMN: self.levels},
            geometry=gpd.GeoSeries(self.geometry, crs=crs), crs=crs,
        )


def _cell_styles(latent: LatentMap) -> np.ndarray:
    """(n, n) int16 index into STYLE_NAMES, -1 where nothing is built (water, open sea)."""
    style = np.full(latent.classes.shape, -1, dtype=np.int16)
    for k, name in enumerate(LANDUSE_CLASSES):
        style[latent.classes == k] = STYLE_NAMES.index(name) if name in STYLES else -1
    residential = latent.classes == CLS["residential"]
    style[residential & (latent.urban < _HOUSE_BELOW_URBAN)] = STYLE_NAMES.index(HOUSE)
    style[residential & (latent.urban >= _HOUSE_BELOW_URBAN)] = STYLE_NAMES.index(BLOCK)
    wet = np.isin(latent.cover, [COVER["river"], COVER["lake"], SEA]) | (latent.classes == NO_LANDUSE)
    style[wet] = -1
    return style


def sample_buildings(latent: LatentMap, rng: np.random.Generator) -> BuildingSample:
    """Draw footprints for every latent cell from ``rng`` (deterministic for a given seed)."""
    n, c = latent.n, float(latent.cell_m)
    styles = [STYLES[name] for name in STYLE_NAMES]
    slots_of = np.array([s.slots for s in styles])
    occ0, occ1 = np.array([s.occupancy for s in styles]), np.array([s.occupancy_urban for s in styles])

    # district street-grid orientation (degrees), smooth over ~600 m
    grid_angle = rng.uniform(0.0, 90.0) + 15.0 * smooth_field(rng, n, 600.0 / c).astype(np.float64)

    cell_style = _cell_styles(latent).ravel()
    urban = latent.urban.astype(np.float64).ravel()
    # candidate slots: every cell × _MAX_SLOTS² sub-squares, valid where the sub-square exists for the style
    cell = np.repeat(np.arange(n * n), _MAX_SLOTS**2)
    sub = np.tile(np.arange(_MAX_SLOTS**2), n * n)
    st = cell_style[cell]
    built_style = st >= 0
    slots = np.where(built_style, slots_of[np.maximum(st, 0)], 1)
    valid = built_style & (sub < slots**2)
    p = np.where(valid, occ0[np.maximum(st, 0)] + occ1[np.maximum(st, 0)] * urban[cell], 0.0)
    built = rng.random(cell.size) < p
    cell, sub, st, slots = cell[built], sub[built], st[built], slots[built]
    m = cell.size

    def per_style(attr: str, idx: int) -> np.ndarray:
        return np.array([getattr(s, attr)[idx] for s in styles], dtype=np.float64)[st]

    long_side = rng.uniform(per_style("long_m", 0), per_style("long_m", 1))
    aspect = rng.uniform(per_style("aspect", 0), per_style("aspect", 1))
    short_side = long_side / aspect
    aligned = rng.random(m) < np.array([s.aligned for s in styles])[st]
    row, col = cell // n, cell % n
    angle = np.where(aligned, grid_angle[row, col] + rng.normal(0.0, 2.0, m) + 90.0 * (rng.random(m) < 0.5),
                     rng.uniform(0.0, 180.0, m))
    theta = np.radians(angle)
    cos, sin = np.abs(np.cos(theta)), np.abs(np.sin(theta))
    slot_m = c / slots
    box_w, box_h = long_side * cos + short_side * sin, long_side * sin + short_side * cos
    shrink = np.minimum(1.0, _FILL * slot_m / np.maximum(box_w, box_h))
    long_side, short_side, box_w, box_h = long_side * shrink, short_side * shrink, box_w * shrink, box_h * shrink
    # slot origin (north-west corner), then a jittered centre keeping the rotated box inside the slot
    sub_row, sub_col = sub // slots, sub % slots
    x0 = latent.origin_x + col * c + sub_col * slot_m
    y0 = latent.origin_y - row * c - sub_row * slot_m
    cx = x0 + slot_m / 2 + rng.uniform(-1.0, 1.0, m) * (slot_m - box_w) / 2
    cy = y0 - slot_m / 2 + rng.uniform(-1.0, 1.0, m) * (slot_m - box_h) / 2

    u = np.array([-0.5, 0.5, 0.5, -0.5, -0.5])
    v = np.array([-0.5, -0.5, 0.5, 0.5, -0.5])
    lx, ly = u[None, :] * long_side[:, None], v[None, :] * short_side[:, None]
    ct, stt = np.cos(theta)[:, None], np.sin(theta)[:, None]
    coords = np.stack([cx[:, None] + lx * ct - ly * stt, cy[:, None] + lx * stt + ly * ct], axis=-1)
    geometry = shapely.polygons(np.round(coords, 2))

    lo, hi = per_style("levels", 0), per_style("levels", 1)
    power = np.array([s.height_power for s in styles])[st]
    reach = urban[cell] ** power * rng.uniform(0.35, 1.0, m)
    levels = np.clip(np.rint(lo + (hi - lo) * reach), 1, None).astype(np.int32)
    height = np.round(levels * FLOOR_HEIGHT_M + rng.uniform(0.3, 2.0, m), 1)
    klass = latent.classes.ravel()[cell].astype(np.int16)
    return BuildingSample(geometry=geometry, levels=levels, height=height, landuse_class=klass,
                          style=st.astype(np.int16))


def class_counts(sample: BuildingSample) -> dict[str, int]:
    """Buildings per land-use class of the cell they stand in (for the manifest)."""
    counts = np.bincount(sample.landuse_class.astype(np.int64), minlength=len(LANDUSE_CLASSES))
    return {name: int(counts[k]) for k, name in enumerate(LANDUSE_CLASSES)}


def write_buildings(path: Path, sample: BuildingSample, crs: str) -> None:
    """Write the footprints as GeoParquet (WKB geometry + CRS metadata), byte-deterministic."""
    write_geoparquet(sample.frame(crs), path)

