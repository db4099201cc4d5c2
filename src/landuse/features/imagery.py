"""H_img: per-region image statistics and image patches, read with rasterio.

Each region polygon (WKB, in the study's projected CRS) is reprojected to the raster's CRS; only
the window covering it is read. Statistics (mean, std, percentiles) per band role and per spectral
index are taken over the valid pixels inside the polygon. On Spark every task opens the raster
itself: only the :class:`RasterSpec` (a path and a few settings) travels, never pixels.

Zonal statistics (``embeddings.image.zonal``):

* ``exactextract`` (default): the library `exactextract <https://isciences.github.io/exactextract/>`_
  replaces the hand-written pixel-in-polygon rule (rasterio ``geometry_mask``) and the numpy
  statistics. It computes the exact fraction of each pixel inside the polygon and, weighted by it,
  the ``mean`` and ``stdev`` (population) and the ``count`` of valid pixels: a pixel cut in half by the
  boundary counts half. ``n_pixels`` is the number of valid pixels the polygon covers at least in
  part, ``coverage`` the exact valid-pixel area / region area (fractional pixels included). A
  polygon smaller than a pixel gets that pixel's values instead of nothing.
* ``centre``: the former hand-written code, kept for comparison and for ``all_touched``: the pixels
  whose centre is inside (or, with ``all_touched``, every pixel touched), each counted once;
  ``coverage`` is n_pixels * pixel area / region area, capped at 1.

Kept hand-written in both modes, and why:

* reading (:func:`_read`): the windowed read, the validity mask (a pixel that is nodata, masked or
  non-finite in *any* mapped band is invalid in all of them) and the optional scale/offset.
  exactextract's own rasterio source reads each band on its own (its own nodata only) and always
  applies scale/offset, so ``apply_scale: false`` and the all-band mask could not be kept; instead
  exactextract reads our planes (bands, then indices) through :func:`_plane_sources`, which read
  each region's window once for all planes.
* percentiles (:func:`_weighted_percentiles`, a dozen lines): coverage-weighted like the rest, from
  the per-pixel values and fractions exactextract returns (its ``values`` and ``coverage``
  operations). exactextract's own ``quantile`` merges equal pixel values into one sample before
  interpolating (isciences/exactextractr#113), which moves the percentiles of integer rasters such
  as Landsat's by up to several digital numbers (benchmarks/zonal_stats.py measures it).
* spectral indices: computed per pixel from the band map first (a normalised difference is not
  the difference of the means) and then aggregated like a band; an undefined ratio (a + b = 0) is
  left out of that index only.
* reprojection of the region polygons to the raster's CRS (exactextract requires one CRS and
  does not reproject).
* image patches (:func:`region_patches`): fixed tiles, not zonal statistics; ``overlap`` keeps the
  pixel-centre rule.
* Spark: one ``mapInPandas`` task per partition opens the raster; exactextract runs inside it on
  that partition's regions, so no pixels reach the driver.
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

EXACTEXTRACT, CENTRE = "exactextract", "centre"
ZONAL_METHODS = (EXACTEXTRACT, CENTRE)  # embeddings.image.zonal

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
    zonal: str = EXACTEXTRACT  # one of ZONAL_METHODS


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
    if image.zonal not in ZONAL_METHODS:
        raise ConfigError(f"embeddings.image.zonal: {image.zonal!r} is not one of {', '.join(ZONAL_METHODS)}")
    if image.zonal == EXACTEXTRACT and image.all_touched:
        raise ConfigError(
            "embeddings.image.all_touched: true is the pixel rule of zonal: centre; zonal: exactextract weighs "
            "every pixel the polygon touches by the fraction of it inside (set zonal: centre to keep all_touched)"
        )
    ordered = dict(sorted(band_map.items(), key=lambda item: (item[1], item[0])))
    path = str(source.path)
    with open_raster(path) as src:
        if src.crs is None:
            raise IngestError(f"{path}: raster has no CRS (region polygons cannot be placed on it)")
        t = src.transform
        if image.zonal == EXACTEXTRACT and not (t.b == 0 and t.d == 0 and t.a > 0 and t.e < 0):
            raise IngestError(f"{path}: exactextract needs a north-up grid without rotation, the raster's transform is "
                              f"{tuple(t)[:6]}; set embeddings.image.zonal: centre")
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
        zonal=image.zonal,
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


_Stats = tuple[list[np.ndarray], list[int], list[float]]  # per region: vector, n_pixels, coverage


def _index_planes(values: np.ndarray, slot: Mapping[str, int], indices: tuple[str, ...]) -> list[np.ndarray]:
    """Per pixel normalised differences (a - b) / (a + b) of ``values`` (bands, ...); NaN where a + b = 0."""
    planes = []
    for index in indices:
        a, b = (values[slot[role]] for role in INDEX_BANDS[index])
        total = a + b
        with np.errstate(divide="ignore", invalid="ignore"):
            planes.append(np.where(total != 0, (a - b) / total, np.nan))  # NaN: undefined ratio
    return planes


def _centre_stats(src: rasterio.DatasetReader, geoms: np.ndarray, spec: RasterSpec) -> _Stats:
    """zonal: centre: unweighted statistics of the pixels whose centre is inside (or touched, all_touched)."""
    bands = list(spec.band_map.values())
    slot = {role: k for k, role in enumerate(spec.band_map)}
    dim = len(feature_names(spec))
    pixel_area = abs(src.transform.determinant)
    vectors, counts, coverages = [], [], []
    for geom in geoms:
        vector, n, coverage = np.zeros(dim, dtype=np.float32), 0, 0.0
        block = _window(src, geom)
        if block is not None:
            values, valid = _read(src, bands, spec.apply_scale, *block)
            valid &= _inside(src, geom, *block, all_touched=spec.all_touched)
            n = int(valid.sum())
        if n > 0:
            pixels = values[:, valid]  # (bands, n) float64
            samples = np.concatenate([pixels, *(p[None] for p in _index_planes(pixels, slot, spec.indices))])
            if np.isnan(samples).any():  # (bands + indices, n)
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
    return vectors, counts, coverages


class _Planes:
    """The per-pixel planes exactextract summarises: the mapped bands, then the spectral indices.

    A window is read (with :func:`_read`: validity over all bands, scale/offset) and its indices are
    computed once, when the first plane asks for it; exactextract then asks every other plane for
    the same window of the same region.
    """

    def __init__(self, src: rasterio.DatasetReader, spec: RasterSpec) -> None:
        self.src, self.spec = src, spec
        self.bands = list(spec.band_map.values())
        self.slot = {role: k for k, role in enumerate(spec.band_map)}
        self.count = len(self.bands) + len(spec.indices)
        self._key: tuple[int, int, int, int] | None = None
        self._planes: list[np.ndarray] | None = None

    def window(self, col0: int, row0: int, width: int, height: int) -> list[np.ndarray]:
        """Per plane (height, width) float64, a masked array where a pixel is invalid (or an index undefined)."""
        key = (col0, row0, width, height)
        if key != self._key or self._planes is None:
            values, valid = _read(self.src, self.bands, self.spec.apply_scale, row0, col0, height, width)
            indices = _index_planes(values, self.slot, self.spec.indices)
            data = np.concatenate([values, *(p[None] for p in indices)]) if indices else values
            mask = np.broadcast_to(~valid, data.shape) | np.isnan(data)
            # a plane without invalid pixels (the usual case) goes as a plain array: cheaper to hand over
            self._planes = [np.ma.MaskedArray(plane, mask=m) if m.any() else plane for plane, m in zip(data, mask)]
            self._key = key
        return self._planes


def _plane_sources(src: rasterio.DatasetReader, planes: _Planes) -> list[Any]:
    """One exactextract RasterSource per plane, on the raster's grid, reading through ``planes``."""
    from exactextract.raster import RasterSource

    bounds = src.bounds
    extent = (bounds.left, bounds.bottom, bounds.right, bounds.top)
    res = (src.transform.a, -src.transform.e)

    class _PlaneSource(RasterSource):
        def __init__(self, k: int) -> None:
            super().__init__()
            self.k = k
            self.set_name(f"plane{k}")

        def res(self) -> tuple[float, float]:
            return res

        def extent(self) -> tuple[float, float, float, float]:
            return extent

        def srs_wkt(self) -> None:  # polygons are already in the raster's CRS
            return None

        def nodata_value(self) -> None:  # invalid pixels are masked
            return None

        def read_window(self, x0: int, y0: int, nx: int, ny: int) -> np.ndarray:
            if nx <= 0 or ny <= 0:
                return np.zeros((max(ny, 0), max(nx, 0)), dtype=np.float64)
            return planes.window(x0, y0, nx, ny)[self.k]

    return [_PlaneSource(k) for k in range(planes.count)]


def _weighted_percentiles(values: np.ndarray, weights: np.ndarray, percentiles: tuple[float, ...]) -> np.ndarray:
    """Coverage-weighted percentiles of each row of ``values`` (planes, n), one sample per pixel -> (planes, p).

    ``weights`` (n,) are the pixels' covered fractions, the same for every row. The definition is
    exactextract's (type 7 generalised to weights, stats.stackexchange.com/a/13223): sorted values
    x_i with weights w_i sit at s_i = i * w_i + (n - 1) * (w_0 + ... + w_i-1), and the q-quantile is x
    interpolated linearly at q * (n - 1) * sum(w); equal weights give numpy's linear percentile.
    exactextract's own ``quantile`` first merges equal values into one sample (isciences/exactextractr#113:
    the median of 0, 0, 0, 10 comes out as 5), which skews the percentiles of integer rasters, so the
    per-pixel values and fractions are taken from exactextract and the percentiles computed here.
    """
    values = np.atleast_2d(values)
    m, n = values.shape
    order = np.argsort(values, axis=1, kind="stable")
    x, w = np.take_along_axis(values, order, axis=1), weights[order]
    s = np.arange(n) * w + (n - 1) * (np.cumsum(w, axis=1) - w)  # from 0 to (n - 1) * sum(w) along each row
    target = np.asarray(percentiles, dtype=np.float64) / 100.0 * (n - 1) * weights.sum()
    # one search over all rows: row r shifted by r * span keeps the flattened positions sorted
    span = 2.0 * (n - 1) * weights.sum() + 1.0
    shift = np.arange(m)[:, None] * span
    k = np.searchsorted((s + shift).ravel(), (target[None, :] + shift).ravel(), side="right").reshape(m, -1)
    k = np.clip(k - np.arange(m)[:, None] * n - 1, 0, n - 1)  # per row: the last s <= target
    k1 = np.minimum(k + 1, n - 1)
    rows = np.arange(m)[:, None]
    step = s[rows, k1] - s[rows, k]
    frac = np.divide(target[None, :] - s[rows, k], step, out=np.zeros_like(step), where=step > 0)
    return x[rows, k] + np.clip(frac, 0.0, 1.0) * (x[rows, k1] - x[rows, k])


def _exact_stats(src: rasterio.DatasetReader, geoms: np.ndarray, spec: RasterSpec) -> _Stats:
    """zonal: exactextract: coverage-weighted statistics of every pixel the polygon covers in part.

    One exactextract pass over the partition's regions gives, per region and plane, the weighted
    mean and (population) stdev, the valid pixels' values and covered fractions (for the
    percentiles, :func:`_weighted_percentiles`), and the valid-pixel counts.
    """
    from exactextract import exact_extract
    from exactextract.operation import Operation

    n_bands, n_pct = len(spec.band_map), len(spec.percentiles)
    vectors = [np.zeros(len(feature_names(spec)), dtype=np.float32) for _ in geoms]
    counts, coverages = [0] * len(geoms), [0.0] * len(geoms)
    areas = shapely.area(geoms) if len(geoms) else np.zeros(0)
    usable = np.flatnonzero(~shapely.is_empty(geoms) & np.isfinite(shapely.bounds(geoms)).all(axis=1) & (areas > 0)
                            ) if len(geoms) else np.zeros(0, dtype=np.int64)
    if not len(usable):
        return vectors, counts, coverages
    sources = _plane_sources(src, _Planes(src, spec))

    def op(stat: str, k: int, **options: str) -> Any:
        return Operation(stat, f"{stat}{'_' + options['coverage_weight'] if options else ''}_{k}", sources[k], None,
                         options)

    means, stds = [op("mean", k) for k in range(len(sources))], [op("stdev", k) for k in range(len(sources))]
    # The bands share one validity mask, so their valid pixels (and covered fractions, in the same
    # order) are those of the first plane; an index leaves out its own undefined pixels.
    values = [op("values", k) for k in range(len(sources))] if n_pct else []
    fractions = [op("coverage", k) for k in [0, *range(n_bands, len(sources))]] if n_pct else []
    area, touched = op("count", 0), op("count", 0, coverage_weight="none")  # sum of fractions; pixels touched
    out = exact_extract(sources, _region_features(usable, geoms[usable]), [*means, *stds, *values, *fractions, area, touched],
                        include_cols=["slot"], output="pandas")
    mean = np.column_stack([out[o.name].to_numpy(dtype=np.float64) for o in means])  # (regions, planes)
    std = np.column_stack([out[o.name].to_numpy(dtype=np.float64) for o in stds])
    pct = np.zeros((len(out), len(sources), n_pct))  # a plane without a defined pixel keeps 0, as with centre
    n_touched = np.rint(out[touched.name].to_numpy(dtype=np.float64)).astype(np.int64)
    if n_pct:
        value_cols = [out[o.name].to_numpy() for o in values]
        fraction_cols = [out[o.name].to_numpy() for o in fractions]
        for row in np.flatnonzero(n_touched > 0):
            # an index defined on every valid pixel has the bands' pixels, in their order: one call for all
            n = len(fraction_cols[0][row])
            same = [k for k in range(len(sources)) if len(value_cols[k][row]) == n]
            pct[row, same] = _weighted_percentiles(np.stack([value_cols[k][row] for k in same]), fraction_cols[0][row],
                                                   spec.percentiles)
            for j, k in enumerate(range(n_bands, len(sources)), start=1):
                if 0 < len(value_cols[k][row]) < n:
                    pct[row, k] = _weighted_percentiles(value_cols[k][row], fraction_cols[j][row], spec.percentiles)[0]
    stats = np.nan_to_num(np.concatenate([mean[..., None], std[..., None], pct], axis=2), nan=0.0)  # NaN: no pixel
    pixel_area = abs(src.transform.determinant)
    area_px = out[area.name].to_numpy(dtype=np.float64)
    for row, slot in enumerate(out["slot"].to_numpy(dtype=np.int64)):
        if n_touched[row] > 0:
            vectors[slot] = stats[row].astype(np.float32).ravel()
            counts[slot] = int(n_touched[row])
            coverages[slot] = min(1.0, area_px[row] * pixel_area / areas[slot])
    return vectors, counts, coverages


def _region_features(slots: np.ndarray, geoms: np.ndarray) -> Any:
    """The regions as an exactextract FeatureSource: WKB geometries in the raster's CRS, property ``slot``."""
    from exactextract.feature import FeatureSource, JSONFeature

    class _Region(JSONFeature):
        def __init__(self, slot: int, wkb: bytes) -> None:
            super().__init__({"type": "Feature", "properties": {"slot": slot}})
            self.wkb = wkb

        def geometry(self) -> bytes:  # WKB, as exactextract's GDAL features give it
            return self.wkb

    class _Regions(FeatureSource):
        def count(self) -> int:
            return len(slots)

        def __iter__(self) -> Iterator[_Region]:
            for slot, wkb in zip(slots.tolist(), shapely.to_wkb(geoms)):
                yield _Region(slot, wkb)

        def srs_wkt(self) -> None:  # already reprojected to the raster's CRS
            return None

    return _Regions()


def _stats_frame(src: rasterio.DatasetReader, frame: pd.DataFrame, crs: str, spec: RasterSpec) -> pd.DataFrame:
    geoms = _raster_geometries(frame, crs, src) if len(frame) else np.asarray([], dtype=object)
    zonal = _centre_stats if spec.zonal == CENTRE else _exact_stats
    vectors, counts, coverages = zonal(src, geoms, spec)
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
    pixels inside the polygon: with zonal exactextract every valid pixel it covers in part, with
    centre those whose centre is inside or, all_touched, touched), coverage float64 (valid-pixel
    area / region area in the raster's CRS, at most 1; exact with exactextract, n_pixels * pixel
    area with centre), has_image bool. Regions without valid pixels keep a zero vector, has_image False.
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
    columns = list(zip(*rows)) if rows else [()] * 6
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
