"""POIs conditioned on the latent land-use map, written as Amap CSV (Shenzhen) or OS PointX (London).

Real POI data are a biased view of land use, and the sample keeps the biases later stages must cope
with: density is far higher in commercial cores than anywhere else, some residential estates have
almost no POIs, and parks host cafés and kiosks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from landuse.constants import LANDUSE_CLASSES
from landuse.synth.landuse_map import CLS, COVER, NO_LANDUSE, SEA, LatentMap, smooth_field
from landuse.synth.profiles import ProfileSpec
from landuse.synth.regions import to_lonlat
from landuse.synth.writers import encode_lines, fixed_decimal, quote_if_needed, write_lines

# Relative POI density per latent cell of each class (before the core boost and local noise).
_POI_DENSITY = {"commercial": 30.0, "residential": 4.0, "industrial": 2.5, "public_service": 4.0,
                "utilities": 0.5, "green_space": 2.0, "transport": 1.5, "non_construction": 0.05}
_CORE_BOOST = 4.0  # density multiplier 1 + boost * core score
_EMPTY_ESTATE_SHARE = 0.27  # share of residential land (smooth patches) with almost no POIs
_EMPTY_ESTATE_FACTOR = 0.03

AMAP_HEADER = "id,name,type,typecode,location"
POINTX_HEADER = "ref_no|name|pointx_class|groupname|categoryname|classname|feature_easting|feature_northing"
_BASE36 = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


@dataclass(frozen=True)
class PoiSample:
    """Sampled POIs: projected ``x``/``y``, ``category`` index into the profile's vocabulary, cell class."""

    x: np.ndarray
    y: np.ndarray
    category: np.ndarray
    cell_class: np.ndarray

    @property
    def n(self) -> int:
        """Number of POIs."""
        return int(self.x.size)


def poi_cell_weights(latent: LatentMap, rng: np.random.Generator) -> np.ndarray:
    """Flat per-cell POI intensity (relative; zero on water)."""
    density = np.array([_POI_DENSITY[c] for c in LANDUSE_CLASSES] + [0.0], dtype=np.float64)
    klass = np.where(latent.classes == NO_LANDUSE, len(LANDUSE_CLASSES), latent.classes)
    weight = density[klass] * (1.0 + _CORE_BOOST * latent.core.astype(np.float64))
    weight *= np.exp(0.5 * smooth_field(rng, latent.n, 300 / latent.cell_m).astype(np.float64))
    estates = smooth_field(rng, latent.n, 400 / latent.cell_m)
    empty = (latent.classes == CLS["residential"]) & (estates < np.quantile(estates, _EMPTY_ESTATE_SHARE))
    weight[empty] *= _EMPTY_ESTATE_FACTOR
    weight[np.isin(latent.cover, [COVER["river"], COVER["lake"], SEA])] = 0.0
    return weight.ravel()


def sample_pois(latent: LatentMap, profile: ProfileSpec, n_pois: int, rng: np.random.Generator) -> PoiSample:
    """Exactly ``n_pois`` POIs: cells by intensity, categories by the cell class's affinities."""
    weight = poi_cell_weights(latent, rng)
    counts = rng.multinomial(n_pois, weight / weight.sum())
    cells = np.repeat(np.arange(weight.size, dtype=np.int64), counts)
    cells = cells[rng.permutation(cells.size)]  # source order is not spatial
    row, col = np.divmod(cells, latent.n)
    xs, ys = latent.cell_centres()
    jitter = rng.uniform(-0.49, 0.49, size=(cells.size, 2)) * latent.cell_m
    x = np.round(xs[col] + jitter[:, 0], 1)
    y = np.round(ys[row] + jitter[:, 1], 1)
    cell_class = latent.classes[row, col].astype(np.int16)

    affinity = np.stack([cat.affinity_vector() for cat in profile.poi_categories])  # (K, C)
    category = np.zeros(cells.size, dtype=np.int32)
    for k in range(len(LANDUSE_CLASSES)):
        sel = np.flatnonzero(cell_class == k)
        column = affinity[:, k]
        if sel.size == 0:
            continue
        if column.sum() <= 0:
            column = affinity.sum(axis=1)
        category[sel] = rng.choice(len(column), size=sel.size, p=column / column.sum())
    return PoiSample(x=x, y=y, category=category, cell_class=cell_class)


def _pick(values: list[str], index: np.ndarray) -> pa.Array:
    return pc.take(pa.array(values, type=pa.string()), pa.array(index))


def poi_names(profile: ProfileSpec, category: np.ndarray, rng: np.random.Generator, sep: str) -> pa.Array:
    """Names: brand stems as ``brand(place店)`` / ``brand``, others as ``place`` + ``sep`` + stem."""
    cats = profile.poi_categories
    stems = [stem for cat in cats for stem in cat.stems]
    offset = np.cumsum([0] + [len(cat.stems) for cat in cats])[:-1]
    count = np.array([len(cat.stems) for cat in cats])
    stem_idx = offset[category] + np.floor(rng.random(category.size) * count[category]).astype(np.int64)
    place = _pick(list(profile.places), rng.integers(0, len(profile.places), category.size))
    stem = _pick(stems, stem_idx)
    chain = pa.array(np.array([cat.chain for cat in cats])[category])
    if sep:  # London: chains carry the brand only
        branded = stem
    else:  # Amap: "麦当劳(华强北店)"
        branded = pc.binary_join_element_wise(stem, "(", place, "店)", "")
    return pc.if_else(chain, branded, pc.binary_join_element_wise(place, stem, sep))


def _affine_ids(n: int, modulus: int, multiplier: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct, scattered-looking ids in ``[0, modulus)``: ``(i * multiplier + b) mod modulus``."""
    shift = int(rng.integers(0, modulus))
    return (np.arange(n, dtype=np.int64) * multiplier + shift) % modulus


def write_amap(path: Path, pois: PoiSample, profile: ProfileSpec, rng: np.random.Generator) -> int:
    """Amap-style CSV ``id,name,type,typecode,location`` (location = WGS84 ``lon,lat``); returns rows."""
    cats = profile.poi_categories
    ids36 = _affine_ids(pois.n, 36**8, 1_234_567_891, rng)
    digits = (ids36[:, None] // (36 ** np.arange(7, -1, -1, dtype=np.int64))[None, :]) % 36
    ids = np.char.add("B0", np.ascontiguousarray(_BASE36[digits]).view("<U8").ravel())
    names = poi_names(profile, pois.category, rng, sep="")
    types = _pick([";".join(cat.levels) for cat in cats], pois.category)
    codes = _pick([cat.code for cat in cats], pois.category)
    lon, lat = to_lonlat(profile.crs, pois.x, pois.y)
    location = pc.binary_join_element_wise(fixed_decimal(lon, 6), fixed_decimal(lat, 6), ",")
    lines = encode_lines([pa.array(ids), quote_if_needed(names, ","), quote_if_needed(types, ","), codes,
                          quote_if_needed(location, ",")], ",")
    write_lines(path, AMAP_HEADER, lines)
    return pois.n


def write_pointx(path: Path, pois: PoiSample, profile: ProfileSpec, rng: np.random.Generator) -> int:
    """OS PointX-style pipe-delimited file (easting/northing in the profile CRS, 1 decimal); returns rows."""
    cats = profile.poi_categories
    ref_no = 10_000_000 + _affine_ids(pois.n, 90_000_000, 7_654_321, rng)
    names = poi_names(profile, pois.category, rng, sep=" ")
    columns = [
        pc.cast(pa.array(ref_no), pa.string()),
        quote_if_needed(names, "|"),
        _pick([cat.code for cat in cats], pois.category),
        _pick([cat.levels[0] for cat in cats], pois.category),
        _pick([cat.levels[1] for cat in cats], pois.category),
        _pick([cat.levels[2] for cat in cats], pois.category),
        fixed_decimal(pois.x, 1),
        fixed_decimal(pois.y, 1),
    ]
    write_lines(path, POINTX_HEADER, encode_lines(columns, "|"))
    return pois.n
