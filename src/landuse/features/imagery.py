"""H_img: per-region image statistics and image patches, read with rasterio.

Each region polygon (WKB, in the study's projected CRS) is reprojected to the raster's CRS; only
the window covering it is read. Statistics (mean, std, percentiles) per band role and per spectral
index are taken over the valid pixels inside the polygon. On Spark every task opens the raster
itself: only the :class:`RasterSpec` (a path and a few settings) travels, never pixels.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import pandas as pd
import pyproj
import rasterio
import shapely
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StructField,
    StructType,
)
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioIOError, WindowError
from rasterio.features import geometry_mask, geometry_window
from rasterio.windows import Window

from landuse.config import SPECTRAL_INDICES, ConfigError, ImageEmbeddingConfig, SourceConfig
from landuse.errors import CorruptInputError
from landuse.ingest.errors import IngestError
from landuse.spark.schemas import GEOMETRY, REGION_ID

RASTER_ADAPTER = "raster"  # any raster; options.band_map is required

BAND_MAPS: dict[str, dict[str, int]] = {
    # Collection 2 Level 2 surface reflectance stack B1..B7
    "landsat8_oli": {"coastal": 1, "blue": 2, "green": 3, "red": 4, "nir": 5, "swir1": 6, "swir2": 7},
    # B1..B5, B6 (thermal), B7
    "landsat7_etm": {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir1": 5, "thermal": 6, "swir2": 7},
}

INDEX_BANDS: dict[str, tuple[str, str]] = {"ndvi": ("nir", "red"), "ndbi": ("swir1", "nir"), "mndwi": ("green", "swir1")}

VECTOR = "vector"
N_PIXELS = "n_pixels"
COVERAGE = "coverage"
HAS_IMAGE = "has_image"
TILE_ROW, TILE_COL = "tile_row", "tile_col"
OVERLAP = "overlap"
VALID_FRACTION = "valid_fraction"
BANDS, SIZE, PIXELS = "bands", "size", "pixels"

IMAGE_FEATURES_SCHEMA = StructType(
    [
        StructField(REGION_ID, LongType(), False),
        StructField(VECTOR, ArrayType(FloatType(), False), False),
        StructField(N_PIXELS, LongType(), False),
        StructField(COVERAGE, DoubleType(), False),
        StructField(HAS_IMAGE, BooleanType(), False),
    ]
)

IMAGE_PATCHES_SCHEMA = StructType(
    [
        StructField(REGION_ID, LongType(), False),
        StructField(TILE_ROW, IntegerType(), False),
        StructField(TILE_COL, IntegerType(), False),
        StructField(OVERLAP, FloatType(), False),
        StructField(VALID_FRACTION, FloatType(), False),
        StructField(BANDS, IntegerType(), False),
        StructField(SIZE, IntegerType(), False),
        StructField(PIXELS, ArrayType(FloatType(), False), False),
    ]
)


@dataclass(frozen=True)
class RasterSpec:
    """Everything a task needs to read region features from one raster (small and picklable)."""

    path: str
    band_map: dict[str, int]  # role -> 1-based band, in output order (sorted by band index)
    apply_scale: bool
    indices: tuple[str, ...]
    percentiles: tuple[float, ...]
    all_touched: bool


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def resolve_raster_spec(source: SourceConfig, image: ImageEmbeddingConfig) -> RasterSpec:
    """Validate ``inputs.imagery`` + ``embeddings.image`` and check the raster's header (bands, CRS)."""
    if source.adapter not in BAND_MAPS and source.adapter != RASTER_ADAPTER:
        choices = ", ".join(sorted([*BAND_MAPS, RASTER_ADAPTER]))
        raise ConfigError(f"inputs.imagery.adapter: unknown adapter {source.adapter!r} (choose from {choices})")
    unknown = sorted(set(source.options) - {"band_map"})
    if unknown:
        raise ConfigError(f"inputs.imagery.options.{unknown[0]}: unknown option (allowed: band_map)")
    band_map = dict(BAND_MAPS.get(source.adapter, {}))
    given = source.options.get("band_map")
    if given is None and source.adapter == RASTER_ADAPTER:
        raise ConfigError("inputs.imagery.options.band_map: required for adapter raster (role -> 1-based band, e.g. {red: 1, nir: 2})")
    if given is not None:
        if not isinstance(given, Mapping) or not given:
            raise ConfigError(f"inputs.imagery.options.band_map: expected a mapping role -> 1-based band, got {given!r}")
        for role, band in given.items():
            if isinstance(band, bool) or not isinstance(band, int) or band < 1:
                raise ConfigError(f"inputs.imagery.options.band_map.{role}: expected a 1-based band number, got {band!r}")
        band_map.update({str(role): band for role, band in given.items()})
    for index in image.indices:
        if index not in INDEX_BANDS:
            raise ConfigError(f"embeddings.image.indices: unknown index {index!r} (choose from {', '.join(SPECTRAL_INDICES)})")
        needed = INDEX_BANDS[index]
        if not set(needed) <= set(band_map):
            raise ConfigError(
                f"embeddings.image.indices: {index} needs bands {', '.join(needed)}; "
                f"the band map of inputs.imagery has {', '.join(band_map)}"
            )
    ordered = dict(sorted(band_map.items(), key=lambda item: (item[1], item[0])))
    path = str(source.path)
    with open_raster(path) as src:
        if src.crs is None:
            raise IngestError(f"{path}: raster has no CRS (region polygons cannot be placed on it)")
        beyond = [(role, band) for role, band in ordered.items() if band > src.count]
        if beyond:
            role, band = beyond[0]
            raise IngestError(f"{path}: band map {role}={band} but the raster has {src.count} band(s)")
    return RasterSpec(
        path=path,
        band_map=ordered,
        apply_scale=image.apply_scale,
        indices=tuple(image.indices),
        percentiles=tuple(float(p) for p in image.percentiles),
        all_touched=image.all_touched,
    )


def feature_names(spec: RasterSpec) -> list[str]:
    """Names of the vector entries: per band role, then per index: mean, std, each percentile."""
    stats = ["mean", "std"] + [f"p{p:g}".replace(".", "_") for p in spec.percentiles]
    return [f"{name}_{stat}" for name in [*spec.band_map, *spec.indices] for stat in stats]


@contextlib.contextmanager
def open_raster(path: str) -> Iterator[rasterio.DatasetReader]:
    """Open ``path`` for reading inside a GDAL environment; an unreadable file raises IngestError."""
    with rasterio.Env():
        try:
            src = rasterio.open(path)
        except RasterioIOError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise IngestError(f"{path}: cannot open raster: {reason}") from None
        with src:
            yield src


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _raster_geometries(frame: pd.DataFrame, crs: str, src: rasterio.DatasetReader) -> np.ndarray:
    """Region polygons decoded from WKB and reprojected (vertex by vertex) to the raster's CRS."""
    geoms = shapely.from_wkb(frame[GEOMETRY].to_numpy())
    source, target = pyproj.CRS.from_user_input(crs), pyproj.CRS.from_wkt(src.crs.to_wkt())
    if source.equals(target, ignore_axis_order=True):
        return geoms
    transformer = pyproj.Transformer.from_crs(source, target, always_xy=True)
    return shapely.transform(geoms, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


def _window(src: rasterio.DatasetReader, geom: Any) -> tuple[int, int, int, int] | None:
    """(row_off, col_off, height, width) of the pixels under ``geom``'s bounds, clipped; None if outside."""
    if geom is None or geom.is_empty or not np.isfinite(geom.bounds).all():
        return None
    try:
        window = geometry_window(src, [geom])
    except WindowError:
        return None
    height, width = int(window.height), int(window.width)
    if height <= 0 or width <= 0:
        return None
    return int(window.row_off), int(window.col_off), height, width


@contextlib.contextmanager
def _pixels_readable(src: rasterio.DatasetReader, window: Window) -> Iterator[None]:
    """Turn GDAL's read failure (a truncated or corrupt file whose header is intact) into CorruptInputError.

    The error is raised on an executor; the driver's CLI finds it in the worker's traceback and
    prints its message as the one error line.
    """
    try:
        yield
    except RasterioIOError as exc:
        cause = exc.__cause__ or exc.__context__
        detail = _first_line(cause) or _first_line(exc) or type(exc).__name__
        raise CorruptInputError(
            f"{src.name}: raster pixels cannot be read (rows {int(window.row_off)}-"
            f"{int(window.row_off + window.height)}): {detail}; the file is truncated or corrupt: restore "
            "inputs.imagery from its source"
        ) from None


def _first_line(exc: BaseException | None) -> str:
    return str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else ""


def _read(
    src: rasterio.DatasetReader, bands: list[int], apply_scale: bool, row0: int, col0: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Values (bands, h, w) float64, scaled if asked, 0 where invalid; validity (h, w) bool.

    The block may extend past the raster: pixels outside are invalid (padding).
    """
    values = np.zeros((len(bands), height, width), dtype=np.float64)
    valid = np.zeros((height, width), dtype=bool)
    r0, c0 = max(row0, 0), max(col0, 0)
    r1, c1 = min(row0 + height, src.height), min(col0 + width, src.width)
    if r1 <= r0 or c1 <= c0:
        return values, valid
    window = Window(c0, r0, c1 - c0, r1 - r0)
    with _pixels_readable(src, window):
        raw = src.read(bands, window=window, masked=False)
    ok = np.ones(raw.shape[1:], dtype=bool)
    nodatavals, flags = src.nodatavals, src.mask_flag_enums  # properties: fetch once, not per band
    for k, band in enumerate(bands):
        nodata = nodatavals[band - 1]
        if nodata is not None and not np.isnan(nodata):
            ok &= raw[k] != nodata
        if {MaskFlags.per_dataset, MaskFlags.alpha} & set(flags[band - 1]):
            with _pixels_readable(src, window):
                ok &= src.read_masks(band, window=window) > 0
    data = raw.astype(np.float64)
    if apply_scale:
        scales = np.array([src.scales[b - 1] for b in bands], dtype=np.float64)[:, None, None]
        offsets = np.array([src.offsets[b - 1] for b in bands], dtype=np.float64)[:, None, None]
        data = data * scales + offsets
    ok &= np.isfinite(data).all(axis=0)
    inner = (slice(r0 - row0, r1 - row0), slice(c0 - col0, c1 - col0))
    values[(slice(None), *inner)] = np.where(ok, data, 0.0)
    valid[inner] = ok
    return values, valid


def _inside(src: rasterio.DatasetReader, geom: Any, row0: int, col0: int, height: int, width: int, all_touched: bool) -> np.ndarray:
    """Pixels of the block that fall in ``geom`` (centre rule unless ``all_touched``)."""
    transform = src.window_transform(Window(col0, row0, width, height))
    return geometry_mask([geom], out_shape=(height, width), transform=transform, invert=True, all_touched=all_touched)


def _summary(samples: np.ndarray, percentiles: tuple[float, ...]) -> list[float]:
    if samples.size == 0:
        return [0.0] * (2 + len(percentiles))
    return [float(samples.mean()), float(samples.std()), *np.percentile(samples, percentiles).tolist()]


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def _stats_frame(src: rasterio.DatasetReader, frame: pd.DataFrame, crs: str, spec: RasterSpec) -> pd.DataFrame:
    bands = list(spec.band_map.values())
    slot = {role: k for k, role in enumerate(spec.band_map)}
    dim = len(feature_names(spec))
    pixel_area = abs(src.transform.determinant)
    vectors, counts, coverages = [], [], []
    for geom in _raster_geometries(frame, crs, src) if len(frame) else []:
        vector, n, coverage = np.zeros(dim, dtype=np.float32), 0, 0.0
        block = _window(src, geom)
        if block is not None:
            values, valid = _read(src, bands, spec.apply_scale, *block)
            valid &= _inside(src, geom, *block, all_touched=spec.all_touched)
            n = int(valid.sum())
        if n > 0:
            pixels = values[:, valid]  # (bands, n) float64
            rows = [pixels]
            for index in spec.indices:
                a, b = (pixels[slot[role]] for role in INDEX_BANDS[index])
                total = a + b
                with np.errstate(divide="ignore", invalid="ignore"):
                    rows.append(np.where(total != 0, (a - b) / total, np.nan)[None])  # NaN: undefined ratio
            samples = np.concatenate(rows)  # (bands + indices, n)
            if np.isnan(samples).any():
                parts = [_summary(row[~np.isnan(row)], spec.percentiles) for row in samples]
                vector = np.asarray([x for part in parts for x in part], dtype=np.float32)
            else:  # one vectorised pass over all rows (the common case)
                stats = [samples.mean(1)[:, None], samples.std(1)[:, None]]
                if spec.percentiles:
                    stats.append(np.percentile(samples, spec.percentiles, axis=1).T)
                vector = np.hstack(stats).astype(np.float32).ravel()
            coverage = min(1.0, n * pixel_area / geom.area) if geom.area > 0 else 0.0
        vectors.append(vector)
        counts.append(n)
        coverages.append(coverage)
    counts_arr = np.asarray(counts, dtype=np.int64)
    return pd.DataFrame(
        {
            REGION_ID: frame[REGION_ID].to_numpy(dtype=np.int64),
            VECTOR: pd.Series(vectors, dtype=object),
            N_PIXELS: counts_arr,
            COVERAGE: np.asarray(coverages, dtype=np.float64),
            HAS_IMAGE: counts_arr > 0,
        }
    )


def region_image_stats(frame: pd.DataFrame, crs: str, spec: RasterSpec) -> pd.DataFrame:
    """One row per region of ``frame`` (region_id, WKB geometry in ``crs``): feature vector and coverage.

    Columns: region_id int64, vector float32[len(feature_names(spec))], n_pixels int64 (valid
    pixels inside the polygon), coverage float64 (valid-pixel area / region area in the raster's
    CRS, at most 1), has_image bool. Regions without valid pixels keep a zero vector, has_image False.
    """
    with open_raster(spec.path) as src:
        return _stats_frame(src, frame, crs, spec)


# --------------------------------------------------------------------------------------------
# Patches
# --------------------------------------------------------------------------------------------


def _patch_frame(src: rasterio.DatasetReader, frame: pd.DataFrame, crs: str, spec: RasterSpec, size: int, stride: int) -> pd.DataFrame:
    bands = list(spec.band_map.values())
    rows: list[tuple] = []
    region_ids = frame[REGION_ID].to_numpy(dtype=np.int64)
    for region_id, geom in zip(region_ids, _raster_geometries(frame, crs, src) if len(frame) else []):
        block = _window(src, geom)
        if block is None:
            continue
        row0, col0, height, width = block
        # global tiles (origin 0, 0) that intersect the region's window
        first_r, last_r = max(0, (row0 - size) // stride + 1), (row0 + height - 1) // stride
        first_c, last_c = max(0, (col0 - size) // stride + 1), (col0 + width - 1) // stride
        top, left = first_r * stride, first_c * stride
        ext_h, ext_w = last_r * stride + size - top, last_c * stride + size - left
        values, valid = _read(src, bands, spec.apply_scale, top, left, ext_h, ext_w)
        inside = _inside(src, geom, top, left, ext_h, ext_w, all_touched=False)
        for tile_r in range(first_r, last_r + 1):
            for tile_c in range(first_c, last_c + 1):
                tile = (slice(tile_r * stride - top, tile_r * stride - top + size),
                        slice(tile_c * stride - left, tile_c * stride - left + size))
                overlap, valid_fraction = float(inside[tile].mean()), float(valid[tile].mean())
                if overlap > 0 and valid_fraction > 0:
                    pixels = values[(slice(None), *tile)].astype(np.float32).ravel()
                    rows.append((region_id, tile_r, tile_c, overlap, valid_fraction, pixels))
    columns = list(zip(*rows)) if rows else [[]] * 6
    n = len(rows)
    return pd.DataFrame(
        {
            REGION_ID: np.asarray(columns[0], dtype=np.int64),
            TILE_ROW: np.asarray(columns[1], dtype=np.int32),
            TILE_COL: np.asarray(columns[2], dtype=np.int32),
            OVERLAP: np.asarray(columns[3], dtype=np.float32),
            VALID_FRACTION: np.asarray(columns[4], dtype=np.float32),
            BANDS: np.full(n, len(bands), dtype=np.int32),
            SIZE: np.full(n, size, dtype=np.int32),
            PIXELS: pd.Series(list(columns[5]), dtype=object),
        }
    )


def region_patches(frame: pd.DataFrame, crs: str, spec: RasterSpec, size: int, stride: int) -> pd.DataFrame:
    """Tiles of ``size`` px on the raster's global grid (step ``stride``) that meet each region.

    One row per (region, tile) with overlap > 0 and valid_fraction > 0: region_id int64, tile_row /
    tile_col int32 (global: the tile's first pixel row is tile_row * stride), overlap float32
    (fraction of tile pixels whose centres are inside the region), valid_fraction float32 (fraction
    of tile pixels inside the raster and not nodata), bands int32, size int32, pixels float32
    (bands * size * size, band-major, scaled if asked, 0 where invalid; edge tiles padded).
    """
    if size <= 0 or stride <= 0:
        raise ValueError(f"patch size and stride must be > 0, got size={size} stride={stride}")
    with open_raster(spec.path) as src:
        return _patch_frame(src, frame, crs, spec, size, stride)


# --------------------------------------------------------------------------------------------
# Spark
# --------------------------------------------------------------------------------------------


def _per_partition(
    spec: RasterSpec, work: Callable[[rasterio.DatasetReader, pd.DataFrame], pd.DataFrame]
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A mapInPandas function that opens the raster once per partition (lazily: empty ones never do)."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        with contextlib.ExitStack() as stack:
            src = None
            for frame in batches:
                if src is None:
                    src = stack.enter_context(open_raster(spec.path))
                yield work(src, frame)

    return run


def image_features(regions: Any, crs: str, spec: RasterSpec, partitions: int) -> Any:
    """Spark DataFrame (region_id, geometry) -> image features (IMAGE_FEATURES_SCHEMA), one row per region."""
    work = _per_partition(spec, lambda src, frame: _stats_frame(src, frame, crs, spec))
    return regions.select(REGION_ID, GEOMETRY).repartition(partitions).mapInPandas(work, IMAGE_FEATURES_SCHEMA)


def image_patches(regions: Any, crs: str, spec: RasterSpec, size: int, stride: int, partitions: int) -> Any:
    """Spark DataFrame (region_id, geometry) -> image patches (IMAGE_PATCHES_SCHEMA)."""
    if size <= 0 or stride <= 0:
        raise ValueError(f"patch size and stride must be > 0, got size={size} stride={stride}")
    work = _per_partition(spec, lambda src, frame: _patch_frame(src, frame, crs, spec, size, stride))
    return regions.select(REGION_ID, GEOMETRY).repartition(partitions).mapInPandas(work, IMAGE_PATCHES_SCHEMA)
