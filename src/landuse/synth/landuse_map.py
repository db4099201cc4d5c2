"""The latent land-use map: a fine cell raster of the 8 classes, and the land-use polygons derived from it.

Everything else in a synthetic city (regions' true distributions, POIs, docks, trips, imagery) is
conditioned on this map, so its structure is what later stages have to recover: commercial cores,
residential belts, industry towards the edge, parks, a river, a road grid with a ring road, scattered
schools/hospitals and small utility sites, farmland and forest at the fringe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio.features
import shapely
from affine import Affine
from scipy import ndimage
from scipy.spatial import cKDTree

from landuse.constants import LANDUSE_CLASSES
from landuse.synth.classmap import ClassMap
from landuse.synth.profiles import COVER_KINDS, ProfileSpec
from landuse.synth.scales import ScaleSpec

CLS = {name: i for i, name in enumerate(LANDUSE_CLASSES)}
NO_LANDUSE = 255  # cells outside the land survey (open sea): no polygon, coverage < 1 there

# cover raster values: 0 = built/other, 1.. = COVER_KINDS index + 1, SEA after them
COVER = {name: i + 1 for i, name in enumerate(COVER_KINDS)}
SEA = len(COVER_KINDS) + 1
_KEY_STRIDE = 64  # polygon key = parcel * 64 + class * 8 + cover


@dataclass
class LatentMap:
    """The generator's ground truth on a ``cell_m`` grid (row 0 is the northern edge).

    Attributes:
        origin_x, origin_y: projected coordinates of the north-west corner.
        cell_m: cell side in metres.
        classes: (n, n) uint8 class index into ``LANDUSE_CLASSES`` (``NO_LANDUSE`` for open sea).
        cover: (n, n) uint8 surface kind (see ``COVER``/``SEA``; 0 for built land and parks).
        urban: (n, n) float32 urban intensity (≈1 in a core, ≈0 at the rural fringe).
        core: (n, n) float32 commercial-core score.
        cores: commercial core centres as (x, y, radius_m) in projected metres, the main core first.
    """

    origin_x: float
    origin_y: float
    cell_m: int
    classes: np.ndarray
    cover: np.ndarray
    urban: np.ndarray
    core: np.ndarray
    cores: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def n(self) -> int:
        """Cells along one side."""
        return int(self.classes.shape[0])

    @property
    def transform(self) -> Affine:
        """Affine transform of the cell grid (north-up)."""
        return Affine(self.cell_m, 0.0, self.origin_x, 0.0, -self.cell_m, self.origin_y)

    def cell_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) of the cells containing projected points (clipped to the grid)."""
        col = np.clip(np.floor((np.asarray(x) - self.origin_x) / self.cell_m).astype(np.int64), 0, self.n - 1)
        row = np.clip(np.floor((self.origin_y - np.asarray(y)) / self.cell_m).astype(np.int64), 0, self.n - 1)
        return row, col

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Projected x (per column) and y (per row) of cell centres, as 1-D arrays."""
        centres = (np.arange(self.n) + 0.5) * self.cell_m
        return self.origin_x + centres, self.origin_y - centres


def smooth_field(rng: np.random.Generator, n: int, sigma_cells: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation length ``sigma_cells``."""
    noise = ndimage.gaussian_filter(rng.standard_normal((n, n)), sigma=max(sigma_cells, 0.5), mode="reflect")
    noise -= noise.mean()
    noise /= noise.std() + 1e-12
    return noise.astype(np.float32)


def _seeds_dilated(rng: np.random.Generator, allowed: np.ndarray, per_km2: float, cell_m: int,
                   half_size: int) -> np.ndarray:
    """Square patches of ``2*half_size+1`` cells around random seeds in ``allowed`` (``per_km2`` seeds)."""
    p = per_km2 * (cell_m * cell_m) / 1e6
    seeds = (rng.random(allowed.shape) < p) & allowed
    if half_size == 0:
        return seeds
    return ndimage.binary_dilation(seeds, structure=np.ones((2 * half_size + 1,) * 2, dtype=bool))


def build_latent_map(profile: ProfileSpec, scale: ScaleSpec, origin_x: float, origin_y: float,
                     rng: np.random.Generator) -> LatentMap:
    """Draw a latent land-use map for one city from ``rng``."""
    n, c = scale.n_cells, scale.cell_m
    side = float(scale.extent_m)
    centre_local = (np.arange(n, dtype=np.float64) + 0.5) * c
    u = centre_local[None, :]  # metres east of the west edge
    v = centre_local[:, None]  # metres south of the north edge

    # --- commercial cores and urban intensity ---
    n_cores = int(rng.integers(1, scale.max_cores + 1))
    r0 = 0.06 * side + 300.0
    main = np.clip(side / 2 + rng.normal(0.0, 0.05 * side, 2), 0.3 * side, 0.7 * side)
    cores_local = [(float(main[0]), float(main[1]), r0)]
    for _ in range(n_cores - 1):
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.22, 0.35) * side
        cu = float(np.clip(main[0] + dist * np.cos(angle), 0.15 * side, 0.85 * side))
        cv = float(np.clip(main[1] + dist * np.sin(angle), 0.15 * side, 0.85 * side))
        cores_local.append((cu, cv, r0 * float(rng.uniform(0.45, 0.7))))
    urban_r = 0.32 * side
    core = np.zeros((n, n), dtype=np.float32)
    urban = np.zeros((n, n), dtype=np.float32)
    for i, (cu, cv, r) in enumerate(cores_local):
        d2 = (u - cu) ** 2 + (v - cv) ** 2
        core = np.maximum(core, np.exp(-0.5 * d2 / r**2).astype(np.float32))
        ru = urban_r if i == 0 else 0.55 * urban_r
        urban = np.maximum(urban, np.exp(-0.5 * d2 / ru**2).astype(np.float32))

    f_urban = smooth_field(rng, n, 800 / c)
    f_com = smooth_field(rng, n, 250 / c)
    f_ind = smooth_field(rng, n, 700 / c)
    f_park = smooth_field(rng, n, 250 / c)
    f_rural = smooth_field(rng, n, 600 / c)
    f_strip = smooth_field(rng, n, 150 / c)
    urban = np.clip(urban + 0.12 * f_urban, 0.0, 1.0).astype(np.float32)
    is_urban = urban > 0.35

    classes = np.full((n, n), CLS["non_construction"], dtype=np.uint8)
    cover = np.zeros((n, n), dtype=np.uint8)

    # --- rural fringe: farmland, forest, a little bare land ---
    cover[:] = np.where(f_rural > 0.1, COVER["farmland"], COVER["forest"])
    cover[(f_rural < -1.9) | (f_rural > 2.3)] = COVER["bare"]

    # --- urban fabric: residential by default, industry towards the edge, commercial cores ---
    classes[is_urban] = CLS["residential"]
    industrial = ((urban > 0.35) & (urban < 0.62) & (f_ind > 0.7)) | ((urban > 0.2) & (urban <= 0.35) & (f_ind > 1.3))
    classes[industrial] = CLS["industrial"]
    commercial = (core + 0.2 * f_com) > 0.5
    classes[commercial] = CLS["commercial"]
    built = classes != CLS["non_construction"]
    cover[built] = 0

    # --- road network: arterial grid (one cell wide) and a ring road around the main core ---
    spacing = 900.0
    roads = np.zeros((n, n), dtype=bool)
    for axis in (0, 1):
        count = max(int(side // spacing), 1)
        positions = (np.arange(count) + 0.5) * spacing + rng.uniform(-0.2, 0.2, count) * spacing
        idx = np.clip((positions // c).astype(np.int64), 0, n - 1)
        primary = np.arange(count) % 2 == 0
        for line, is_primary in zip(idx, primary):
            # primary arterials cross the whole extent, secondary ones only the built-up area
            if axis == 0:  # north-south line at column `line`
                roads[:, line] |= np.ones(n, dtype=bool) if is_primary else urban[:, line] > 0.4
            else:
                roads[line, :] |= np.ones(n, dtype=bool) if is_primary else urban[line, :] > 0.4
    mu, mv, _ = cores_local[0]
    theta = np.arctan2(v - mv, u - mu)
    ring_r = 0.55 * urban_r * (1.0 + 0.07 * np.sin(2 * theta + rng.uniform(0, 2 * np.pi)))
    ring = np.abs(np.sqrt((u - mu) ** 2 + (v - mv) ** 2) - ring_r) < 0.75 * c
    roads |= ring

    # street-front retail along urban arterials
    near_road = ndimage.binary_dilation(roads, iterations=1) & ~roads
    classes[near_road & (urban > 0.5) & (f_strip > 1.2) & (classes == CLS["residential"])] = CLS["commercial"]

    # --- parks: smooth-field patches plus one large park near the centre ---
    parks = is_urban & (f_park > 1.6)
    angle = rng.uniform(0, 2 * np.pi)
    pu, pv, pr = mu + 1.6 * r0 * np.cos(angle), mv + 1.6 * r0 * np.sin(angle), 0.25 * r0 + 150.0
    parks |= ((u - pu) ** 2 + (v - pv) ** 2) < pr**2
    classes[parks] = CLS["green_space"]
    cover[parks] = 0

    # --- public services (schools, hospitals, campuses) and utility sites ---
    host = np.isin(classes, [CLS["residential"], CLS["commercial"], CLS["industrial"]])
    public = (_seeds_dilated(rng, host & is_urban, 2.5, c, 1) | _seeds_dilated(rng, host & is_urban, 0.3, c, 2)
              | _seeds_dilated(rng, host & is_urban, 0.08, c, 3))
    classes[public & (classes != CLS["green_space"])] = CLS["public_service"]
    utility_host = urban > 0.2
    utilities = _seeds_dilated(rng, utility_host, 0.5, c, 0) | _seeds_dilated(rng, utility_host, 0.25, c, 1)
    classes[utilities] = CLS["utilities"]
    cover[utilities | public] = 0

    # --- water: a meandering river across the city and a lake or two at the fringe ---
    tilt = rng.uniform(-0.5, 0.5)
    s = (u - side / 2) * np.cos(tilt) + (v - side / 2) * np.sin(tilt)
    t = -(u - side / 2) * np.sin(tilt) + (v - side / 2) * np.cos(tilt)
    t_main = -(mu - side / 2) * np.sin(tilt) + (mv - side / 2) * np.cos(tilt)
    offset = t_main + rng.choice([-1.0, 1.0]) * rng.uniform(1.3, 2.2) * r0
    centreline = (offset + 0.06 * side * np.sin(2 * np.pi * s / (rng.uniform(0.6, 1.0) * side) + rng.uniform(0, 6.3))
                  + 0.02 * side * np.sin(2 * np.pi * s / (0.25 * side) + rng.uniform(0, 6.3)))
    river_w = float(np.clip(0.015 * side, 100.0, 350.0))
    river = np.abs(t - centreline) < river_w / 2
    lakes = np.zeros((n, n), dtype=bool)
    fringe = np.flatnonzero((urban < 0.4).ravel() & ~river.ravel())
    for _ in range(int(rng.integers(1, 3)) if fringe.size else 0):
        cell = fringe[int(rng.integers(0, fringe.size))]
        lu, lv = centre_local[cell % n], centre_local[cell // n]
        lr = rng.uniform(150.0, 0.03 * side + 150.0)
        lakes |= np.sqrt((u - lu) ** 2 + (v - lv) ** 2) / lr + 0.15 * f_park < 1.0
    classes[lakes | river] = CLS["non_construction"]
    cover[lakes] = COVER["lake"]
    cover[river] = COVER["river"]

    # roads last: bridges cross the river; transport hubs (stations, depots) at arterial crossings
    classes[roads] = CLS["transport"]
    cover[roads] = 0
    plus = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
    crossings = np.flatnonzero(ndimage.binary_erosion(roads, structure=plus).ravel())  # road cells with 4 road neighbours
    n_hubs = min(crossings.size, max(1, int(round(side * side / 15e6))))
    if n_hubs:
        hub_seed = np.zeros(n * n, dtype=bool)
        hub_seed[rng.choice(crossings, n_hubs, replace=False)] = True
        hubs = ndimage.binary_dilation(hub_seed.reshape(n, n), structure=np.ones((4, 4), dtype=bool))
        classes[hubs & ~river & ~lakes] = CLS["transport"]
        cover[hubs & ~river & ~lakes] = 0

    # --- open sea (outside the land survey): a bay along the southern edge ---
    if profile.coast:
        f_coast = smooth_field(rng, n, 400 / c)[n // 2, :][None, :]
        depth = 0.12 * side * np.clip(1.0 - u / (0.6 * side), 0.0, 1.0) + 0.02 * side * f_coast
        sea = (side - v) < depth
        classes[sea] = NO_LANDUSE
        cover[sea] = SEA

    cores = [(origin_x + cu, origin_y - cv, r) for cu, cv, r in cores_local]
    return LatentMap(origin_x, origin_y, c, classes, cover, urban, core.astype(np.float32), cores)


def _parcels(latent: LatentMap, parcel_m: int, rng: np.random.Generator) -> np.ndarray:
    """(n, n) int32 parcel ids: nearest of random seeds, so land-use polygons are parcel sized."""
    n, c = latent.n, latent.cell_m
    side = n * c
    n_seeds = max(4, int(round((side / parcel_m) ** 2)))
    seeds = rng.uniform(0, side, size=(n_seeds, 2))
    centres = (np.arange(n) + 0.5) * c
    grid = np.stack(np.meshgrid(centres, centres), axis=-1).reshape(-1, 2)
    _, nearest = cKDTree(seeds).query(grid, k=1)
    return nearest.reshape(n, n).astype(np.int32)


def landuse_polygons(latent: LatentMap, profile: ProfileSpec, class_map: ClassMap, parcel_m: int,
                     rng: np.random.Generator) -> gpd.GeoDataFrame:
    """Polygonise the latent map per parcel and give each polygon a source code of its class.

    Returns a frame with the profile's id / code (/ name) columns, a ``landuse_class`` index column
    (dropped before writing; the source files only carry codes) and cell-aligned polygons.
    """
    parcel = _parcels(latent, parcel_m, rng)
    key = parcel * _KEY_STRIDE + latent.classes.astype(np.int32) * 8 + latent.cover.astype(np.int32)
    mask = latent.classes != NO_LANDUSE
    geoms: list[shapely.Geometry] = []
    keys: list[int] = []
    for geojson, value in rasterio.features.shapes(key, mask=mask, connectivity=4, transform=latent.transform):
        geoms.append(shapely.geometry.shape(geojson))
        keys.append(int(value))
    geometry = np.array(geoms, dtype=object)
    invalid = ~shapely.is_valid(geometry)
    if invalid.any():  # rasterised rings can self-touch; repair without changing area
        geometry[invalid] = shapely.make_valid(geometry[invalid])
    key_arr = np.array(keys, dtype=np.int64)
    klass = ((key_arr % _KEY_STRIDE) // 8).astype(np.int16)
    cover = (key_arr % 8).astype(np.int16)

    codes = np.empty(len(key_arr), dtype=object)
    cover_code_set = {code for group in profile.cover_codes.values() for code in group}
    for kind, kind_codes in profile.cover_codes.items():
        for code in kind_codes:
            if class_map.class_of(code) != CLS["non_construction"]:
                raise ValueError(f"{profile.name}: cover code {code!r} ({kind}) is not non_construction in "
                                 f"{class_map.path}")
    for k in range(len(LANDUSE_CLASSES)):
        for cv in np.unique(cover[klass == k]):
            sel = np.flatnonzero((klass == k) & (cover == cv))
            if 0 < cv <= len(COVER_KINDS):
                options = profile.cover_codes[COVER_KINDS[cv - 1]]
            else:
                options = tuple(x for x in class_map.codes_of_class(k) if x not in cover_code_set)
                options = options or class_map.codes_of_class(k)
            codes[sel] = np.array(options, dtype=object)[rng.integers(0, len(options), sel.size)]

    columns: dict[str, object] = {profile.landuse_id_column: np.arange(1, len(key_arr) + 1, dtype=np.int64),
                                  profile.landuse_code_column: codes}
    if profile.landuse_name_column:
        names = {code: class_map.name_of(code) for code in set(codes)}
        columns[profile.landuse_name_column] = np.array([names[x] for x in codes], dtype=object)
    columns["landuse_class"] = klass
    return gpd.GeoDataFrame(pd.DataFrame(columns), geometry=geometry, crs=profile.crs)
