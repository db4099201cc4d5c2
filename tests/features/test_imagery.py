"""Per-region image statistics and patches (landuse.features.imagery) against direct numpy reads.

Zonal statistics both ways (``embeddings.image.zonal``): ``centre`` against the pixel-centre mask of
rasterio and the numbers the hand-written code gave before exactextract; ``exactextract`` against
coverage-weighted statistics computed by hand (pixel fractions from the geometry) and, end to end,
the imagery stage on the real Landsat land-surface-temperature raster with the mh-180 regions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyproj
import pytest
import rasterio
import shapely
from rasterio.features import geometry_mask
from rasterio.transform import from_origin
from shapely import box, ops, to_wkb
from shapely.geometry import Polygon

from landuse.config import ConfigError, ImageEmbeddingConfig, SourceConfig, load_config
from landuse.features.imagery import (
    IMAGE_FEATURES_SCHEMA,
    IMAGE_PATCHES_SCHEMA,
    feature_names,
    image_features,
    image_patches,
    region_image_stats,
    region_patches,
    resolve_raster_spec,
)
from landuse.ingest.errors import IngestError

UTM12 = "EPSG:32612"
UTM50 = "EPSG:32650"

# Hand-drawn regions (UTM 12N metres) over the Salt Lake Landsat 7 fixture (x ~338.9-373.2 km,
# y ~4496.8-4540.5 km).
SALTLAKE_REGIONS = {
    1: box(350_000, 4_510_000, 351_000, 4_511_000),  # square
    2: Polygon([(355_000, 4_520_000), (357_000, 4_520_000), (356_000, 4_522_000)]),  # triangle
    3: Polygon([(360_000, 4_525_000), (362_000, 4_525_000), (362_000, 4_525_500), (360_500, 4_525_500),
                (360_500, 4_527_000), (360_000, 4_527_000)]),  # L-shape
    4: box(338_000, 4_515_000, 340_000, 4_517_000),  # across the west edge
    5: box(300_000, 4_500_000, 301_000, 4_501_000),  # fully outside
}


def _frame(regions: dict[int, object]) -> pd.DataFrame:
    return pd.DataFrame({"region_id": np.array(list(regions), dtype=np.int64),
                         "geometry": [to_wkb(g) for g in regions.values()]})


def _spec(path: Path, adapter: str, band_map: dict | None = None, **image: object):
    options = {"band_map": band_map} if band_map is not None else {}
    return resolve_raster_spec(SourceConfig(adapter=adapter, path=path, options=options), ImageEmbeddingConfig(**image))


def _direct_mask(src: rasterio.DatasetReader, geom: object, crs: str) -> np.ndarray:
    """Whole-raster polygon mask (no windows) of ``geom`` reprojected to the raster CRS."""
    to_raster = pyproj.Transformer.from_crs(crs, src.crs.to_wkt(), always_xy=True)
    projected = ops.transform(to_raster.transform, geom)
    return geometry_mask([projected], out_shape=(src.height, src.width), transform=src.transform, invert=True)


def _write(path: Path, data: np.ndarray, crs: str | None = UTM50, **profile: object) -> Path:
    count, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype=data.dtype,
                       crs=crs, transform=from_origin(500_000, 4_000_200, 10, 10), **profile) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def saltlake(shared_data: Path) -> Path:
    path = shared_data / "fixtures" / "landsat7_etm_7band_saltlake.tif"
    if not path.is_file():
        pytest.skip(f"Landsat 7 fixture not found at {path}")
    return path


def _weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    """Coverage-weighted quantile, one sample per pixel (type 7 generalised to weights).

    Sorted values x_0..x_n-1 with weights w_i sit at s_i = i * w_i + (n - 1) * (w_0 + .. + w_i-1);
    the quantile q is x interpolated linearly at q * (n - 1) * sum(w). Equal weights give numpy's
    linear percentile. (exactextract's own quantile merges equal values first: not this.)
    """
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order]
    n, before = len(x), np.concatenate([[0.0], np.cumsum(w)[:-1]])
    s = np.arange(n) * w + (n - 1) * before
    return float(np.interp(q * (n - 1) * w.sum(), s, x))


def _pixel_fractions(src: rasterio.DatasetReader, geom: object) -> tuple[tuple[slice, slice], np.ndarray]:
    """Fraction of each pixel of ``geom``'s window inside ``geom`` (raster CRS), from shapely intersections."""
    t, (minx, miny, maxx, maxy) = src.transform, geom.bounds  # north-up: t.a > 0 > t.e
    col0, col1 = max(int(np.floor((minx - t.c) / t.a)), 0), min(int(np.ceil((maxx - t.c) / t.a)), src.width)
    row0, row1 = max(int(np.floor((maxy - t.f) / t.e)), 0), min(int(np.ceil((miny - t.f) / t.e)), src.height)
    rows, cols = np.mgrid[row0:row1, col0:col1]
    x0, y0 = t.c + cols * t.a, t.f + rows * t.e
    pixels = shapely.box(x0, y0 + t.e, x0 + t.a, y0)
    fractions = shapely.area(shapely.intersection(pixels, geom)) / abs(t.a * t.e)
    return (slice(row0, row1), slice(col0, col1)), fractions


def test_band_statistics_match_direct_numpy(saltlake: Path) -> None:
    """zonal: centre: the pixels whose centre is inside, unweighted."""
    spec = _spec(saltlake, "landsat7_etm", indices=(), zonal="centre")
    names = feature_names(spec)
    assert list(spec.band_map) == ["blue", "green", "red", "nir", "swir1", "thermal", "swir2"]
    assert names[:5] == ["blue_mean", "blue_std", "blue_p10", "blue_p50", "blue_p90"] and len(names) == 35
    out = region_image_stats(_frame(SALTLAKE_REGIONS), UTM12, spec).set_index("region_id")
    assert out.index.tolist() == list(SALTLAKE_REGIONS)
    with rasterio.open(saltlake) as src:
        stack = src.read().astype(np.float64)
        for region_id in (1, 2, 3, 4):
            mask = _direct_mask(src, SALTLAKE_REGIONS[region_id], UTM12)
            row = out.loc[region_id]
            assert row["has_image"] and row["n_pixels"] == mask.sum() > 0
            for role, band in spec.band_map.items():
                pixels = stack[band - 1][mask]
                got = dict(zip(names, row["vector"]))
                assert got[f"{role}_mean"] == pytest.approx(pixels.mean(), rel=1e-6)
                assert got[f"{role}_std"] == pytest.approx(pixels.std(), rel=1e-6)
                assert got[f"{role}_p50"] == pytest.approx(np.percentile(pixels, 50), rel=1e-6)
    assert out.loc[[1, 2, 3], "coverage"].between(0.9, 1.0).all()
    assert 0.0 < out.loc[4, "coverage"] < 0.9
    outside = out.loc[5]
    assert not outside["has_image"] and outside["n_pixels"] == 0 and outside["coverage"] == 0.0
    assert len(outside["vector"]) == 35 and not np.any(outside["vector"])
    assert out["vector"].map(lambda v: v.dtype == np.float32).all()


# The hand-written code's output before exactextract (commit 060a578), all bands and indices:
# region -> n_pixels, coverage, {feature: value}.
CENTRE_BEFORE = {
    1: (1467, 0.999228055433228, {"red_mean": 89.36673736572266, "nir_std": 8.207392692565918, "swir1_p90": 113.0,
                                  "ndvi_mean": 0.06717206537723541, "mndwi_p10": -0.14953270554542542}),
    2: (2946, 1.0, {"red_mean": 48.05940246582031, "nir_std": 8.124363899230957, "swir1_p90": 81.0,
                    "ndvi_mean": 0.11917880922555923, "mndwi_p10": -0.4035087823867798}),
    3: (2570, 0.9981428154420758, {"red_mean": 66.79261016845703, "nir_std": 29.55323600769043, "swir1_p90": 73.0,
                                   "ndvi_mean": -0.2100672870874405, "mndwi_p10": -0.01986755058169365}),
    4: (3210, 0.5462773191159892, {"red_mean": 42.5694694519043, "nir_std": 9.52206039428711, "swir1_p90": 91.0,
                                   "ndvi_mean": 0.17248597741127014, "mndwi_p10": -0.347517728805542}),
}


def test_centre_reproduces_the_numbers_before_exactextract(saltlake: Path) -> None:
    spec = _spec(saltlake, "landsat7_etm", zonal="centre")
    names = feature_names(spec)
    out = region_image_stats(_frame(SALTLAKE_REGIONS), UTM12, spec).set_index("region_id")
    for region_id, (n_pixels, coverage, values) in CENTRE_BEFORE.items():
        row = out.loc[region_id]
        assert row["n_pixels"] == n_pixels and row["coverage"] == coverage
        got = dict(zip(names, row["vector"].tolist()))
        assert {name: got[name] for name in values} == values  # float32, bit for bit
    assert not out.loc[5, "has_image"]


def test_exactextract_against_centre_on_saltlake(saltlake: Path) -> None:
    """Real Landsat 7: exactextract uses every pixel the polygon touches, weighted; close to centre, not equal."""
    frame = _frame(SALTLAKE_REGIONS)
    exact = region_image_stats(frame, UTM12, _spec(saltlake, "landsat7_etm")).set_index("region_id")
    centre = region_image_stats(frame, UTM12, _spec(saltlake, "landsat7_etm", zonal="centre")).set_index("region_id")
    touched = region_image_stats(frame, UTM12, _spec(saltlake, "landsat7_etm", zonal="centre", all_touched=True))
    assert exact["n_pixels"].tolist() == touched["n_pixels"].tolist()  # the same pixels as all_touched ...
    assert (exact.loc[[1, 2, 3, 4], "n_pixels"] > centre.loc[[1, 2, 3, 4], "n_pixels"]).all()
    # ... but edge pixels weigh their covered fraction: the valid area is exact (regions 1-3 inside the raster)
    np.testing.assert_allclose(exact.loc[[1, 2, 3], "coverage"], 1.0, rtol=1e-9)
    assert exact.loc[4, "coverage"] == pytest.approx(centre.loc[4, "coverage"], abs=2e-3)
    a, b = np.stack(exact.loc[[1, 2, 3, 4], "vector"]), np.stack(centre.loc[[1, 2, 3, 4], "vector"])
    names = feature_names(_spec(saltlake, "landsat7_etm"))
    means = [k for k, name in enumerate(names) if name.endswith("_mean")]
    assert np.abs(a - b)[:, means].max() > 1e-3  # the weights change the numbers ...
    np.testing.assert_allclose(a[:, means], b[:, means], rtol=0.01, atol=0.01)  # ... a little
    assert not exact.loc[5, "has_image"] and exact.loc[5, "n_pixels"] == 0 and not np.any(exact.loc[5, "vector"])


def test_exactextract_weights_pixels_by_covered_fraction(tmp_path: Path) -> None:
    """A polygon cutting pixels in half: hand-computed coverage-weighted mean, std, median, index, counts."""
    rows, cols = np.mgrid[0:4, 0:4]
    red = (100 + 10 * rows + 5 * cols**3).astype(np.uint16)
    nir = (400 + 30 * rows * cols + 20 * cols).astype(np.uint16)
    nir[1, 1] = 0  # nodata in one band: the pixel is invalid in both
    path = _write(tmp_path / "half.tif", np.stack([red, nir]), nodata=0)  # 10 m pixels, top-left (500000, 4000200)
    # x 500005..500025: columns 0 and 2 half inside, column 1 whole; y 4000170..4000200: rows 0..2 whole
    region = box(500_005, 4_000_170, 500_025, 4_000_200)
    # inside pixel (3, 3) (x 500030..500040, y 4000160..4000170) but away from its centre
    small = box(500_031, 4_000_161, 500_034, 4_000_164)
    weights = np.zeros((4, 4))
    weights[0:3, 0:3] = [0.5, 1.0, 0.5]
    valid = (weights > 0) & (nir != 0)
    w, r, n = weights[valid], red[valid].astype(float), nir[valid].astype(float)
    ndvi = (n - r) / (n + r)

    spec = _spec(path, "raster", {"red": 1, "nir": 2}, indices=("ndvi",), percentiles=(50.0,))
    assert spec.zonal == "exactextract"  # the default
    out = region_image_stats(_frame({1: region, 2: small}), UTM50, spec).set_index("region_id")
    got = dict(zip(feature_names(spec), out.loc[1, "vector"].tolist()))
    mean = (w * r).sum() / w.sum()
    assert abs(mean - r.mean()) > 1.0  # unweighted would be far off
    assert got["red_mean"] == pytest.approx(mean, rel=1e-6)
    assert got["red_std"] == pytest.approx(np.sqrt((w * (r - mean) ** 2).sum() / w.sum()), rel=1e-6)
    assert got["red_p50"] == pytest.approx(_weighted_quantile(r, w, 0.5), rel=1e-6)
    assert got["nir_mean"] == pytest.approx((w * n).sum() / w.sum(), rel=1e-6)
    assert got["ndvi_mean"] == pytest.approx((w * ndvi).sum() / w.sum(), rel=1e-6)  # per pixel, then weighted
    assert len(np.unique(ndvi)) < len(ndvi)  # tied values (0.6 at weights 0.5 and 1): one sample per pixel
    assert got["ndvi_p50"] == pytest.approx(_weighted_quantile(ndvi, w, 0.5), rel=1e-6)
    assert out.loc[1, "n_pixels"] == 8  # 9 pixels touched, one nodata
    assert out.loc[1, "coverage"] == pytest.approx(w.sum() * 100 / region.area)  # 5 of 6 pixel areas
    # a polygon inside one pixel: exactextract takes the pixel (weight 1 of 1), centre finds none
    assert out.loc[2, "n_pixels"] == 1 and out.loc[2, "has_image"] and out.loc[2, "coverage"] == pytest.approx(1.0)
    np.testing.assert_allclose(out.loc[2, "vector"][[0, 3]], [red[3, 3], nir[3, 3]], rtol=1e-6)
    centre = region_image_stats(_frame({2: small}), UTM50, _spec(path, "raster", {"red": 1, "nir": 2}, indices=(),
                                                                 zonal="centre")).iloc[0]
    assert centre["n_pixels"] == 0 and not centre["has_image"]


def test_weighted_percentiles_take_one_sample_per_pixel() -> None:
    from landuse.features.imagery import _weighted_percentiles

    # exactextract's own quantile merges the three zeros into one sample and gives a median of 5
    np.testing.assert_allclose(_weighted_percentiles(np.array([0.0, 0.0, 0.0, 10.0]), np.ones(4), (50.0, 90.0)),
                               [[0.0, 7.0]])
    rng = np.random.default_rng(3)
    for trial in range(200):
        n, m = int(rng.integers(1, 40)), int(rng.integers(1, 5))
        values = rng.integers(0, 5, (m, n)).astype(float) if trial % 2 else rng.normal(size=(m, n))
        weights = rng.choice([1.0, 0.5, 0.125, 0.3], size=n)
        q = (0.0, 10.0, 50.0, 90.0, 100.0)
        got = _weighted_percentiles(values, weights, q)
        expected = [[_weighted_quantile(row, weights, p / 100) for p in q] for row in values]
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(_weighted_percentiles(values, np.ones(n), q), np.percentile(values, q, axis=1).T,
                                   rtol=1e-9, atol=1e-12)  # equal weights: numpy's linear percentile


def test_zonal_settings(tmp_path: Path) -> None:
    path = _write(tmp_path / "one.tif", np.ones((1, 4, 4), dtype=np.float32))
    with pytest.raises(ConfigError, match=r"^embeddings\.image\.all_touched: true is the pixel rule of zonal: centre"):
        _spec(path, "raster", {"lst": 1}, indices=(), all_touched=True)
    assert _spec(path, "raster", {"lst": 1}, indices=(), all_touched=True, zonal="centre").all_touched
    with pytest.raises(ValueError, match=r"zonal\n.*Input should be 'exactextract' or 'centre'"):  # typed at construction
        _spec(path, "raster", {"lst": 1}, indices=(), zonal="exact")
    from landuse.config import load_config

    with pytest.raises(ConfigError, match=r"embeddings\.image\.zonal: 'exact' is not one of exactextract, centre"):
        load_config(Path(__file__).resolve().parents[2] / "conf/synthetic_london.yaml", ["embeddings.image.zonal=exact"],
                    check_inputs=False)
    rotated = tmp_path / "rotated.tif"
    with rasterio.open(rotated, "w", driver="GTiff", width=4, height=4, count=1, dtype="float32", crs=UTM50,
                       transform=rasterio.Affine(10, 1, 500_000, 1, -10, 4_000_200)) as dst:
        dst.write(np.ones((1, 4, 4), dtype=np.float32))
    with pytest.raises(IngestError, match=r"rotated\.tif: exactextract needs a north-up grid .*embeddings\.image\.zonal: centre$"):
        _spec(rotated, "raster", {"lst": 1}, indices=())
    assert _spec(rotated, "raster", {"lst": 1}, indices=(), zonal="centre").zonal == "centre"


def test_ndvi_matches_direct_numpy(saltlake: Path) -> None:
    spec = _spec(saltlake, "landsat7_etm", indices=("ndvi",), zonal="centre")
    names = feature_names(spec)
    assert names[-5:] == ["ndvi_mean", "ndvi_std", "ndvi_p10", "ndvi_p50", "ndvi_p90"]
    got = dict(zip(names, region_image_stats(_frame({2: SALTLAKE_REGIONS[2]}), UTM12, spec)["vector"][0]))
    with rasterio.open(saltlake) as src:
        mask = _direct_mask(src, SALTLAKE_REGIONS[2], UTM12)
        nir, red = src.read(4).astype(np.float64)[mask], src.read(3).astype(np.float64)[mask]
    keep = nir + red != 0
    ndvi = (nir[keep] - red[keep]) / (nir[keep] + red[keep])
    assert got["ndvi_mean"] == pytest.approx(ndvi.mean(), rel=1e-6)
    assert got["ndvi_p90"] == pytest.approx(np.percentile(ndvi, 90), rel=1e-6)


@pytest.mark.parametrize("zonal", ["exactextract", "centre"])
def test_nodata_excluded_and_scale_applied(tmp_path: Path, zonal: str) -> None:
    """A region on pixel edges: every pixel wholly in or out, so both methods give numpy's numbers."""
    rng = np.random.default_rng(0)
    data = rng.integers(7_000, 30_000, size=(2, 20, 20)).astype(np.uint16)
    data[1, 5:8, 4:6] = 0  # nodata in one band only: the whole pixel is invalid
    path = tmp_path / "scaled.tif"
    with rasterio.open(path, "w", driver="GTiff", width=20, height=20, count=2, dtype="uint16", crs=UTM50,
                       transform=from_origin(500_000, 4_000_200, 10, 10), nodata=0) as dst:
        dst.write(data)
        dst.scales, dst.offsets = (2.75e-5, 2.75e-5), (-0.2, -0.2)
    region = box(500_020, 4_000_050, 500_120, 4_000_170)  # pixel rows 3..14, cols 2..11
    rows, cols = slice(3, 15), slice(2, 12)
    valid = data[1, rows, cols] != 0
    assert (~valid).sum() == 6
    red, nir = (data[k, rows, cols][valid] * 2.75e-5 - 0.2 for k in (0, 1))
    ndvi = (nir - red) / (nir + red)

    spec = _spec(path, "raster", {"nir": 2, "red": 1}, indices=("ndvi",), percentiles=(50.0,), zonal=zonal)
    assert spec.band_map == {"red": 1, "nir": 2}  # sorted by band
    assert feature_names(spec) == ["red_mean", "red_std", "red_p50", "nir_mean", "nir_std", "nir_p50",
                                   "ndvi_mean", "ndvi_std", "ndvi_p50"]
    row = region_image_stats(_frame({7: region}), UTM50, spec).iloc[0]
    expected = [red.mean(), red.std(), np.median(red), nir.mean(), nir.std(), np.median(nir),
                ndvi.mean(), ndvi.std(), np.median(ndvi)]
    np.testing.assert_allclose(row["vector"], expected, rtol=1e-5)
    assert row["n_pixels"] == 120 - 6
    assert row["coverage"] == pytest.approx((120 - 6) / 120)

    raw = region_image_stats(_frame({7: region}), UTM50, _spec(path, "raster", {"red": 1, "nir": 2},
                                                                   indices=(), apply_scale=False, zonal=zonal))
    assert raw["vector"][0][0] == pytest.approx(data[0, rows, cols][valid].mean(), rel=1e-6)


@pytest.mark.parametrize("zonal", ["exactextract", "centre"])
def test_float_raster_with_nan_single_band(tmp_path: Path, zonal: str) -> None:
    data = np.linspace(20.0, 40.0, 400).reshape(1, 20, 20)
    data[0, 10:12, 5:9] = np.nan
    path = _write(tmp_path / "lst.tif", data)
    spec = _spec(path, "raster", {"lst": 1}, indices=(), zonal=zonal)
    assert feature_names(spec) == ["lst_mean", "lst_std", "lst_p10", "lst_p50", "lst_p90"]
    region = box(500_000, 4_000_000, 500_200, 4_000_200)  # the whole raster
    row = region_image_stats(_frame({1: region}), UTM50, spec).iloc[0]
    pixels = data[~np.isnan(data)]
    assert row["n_pixels"] == 400 - 8 and row["has_image"]
    np.testing.assert_allclose(row["vector"], [pixels.mean(), pixels.std(), *np.percentile(pixels, [10, 50, 90])],
                               rtol=1e-6)
    assert row["coverage"] == pytest.approx(392 / 400)


def test_config_and_raster_errors(tmp_path: Path) -> None:
    path = _write(tmp_path / "one.tif", np.ones((1, 4, 4), dtype=np.float32))
    with pytest.raises(ConfigError, match=r"^inputs\.imagery\.adapter: unknown adapter 'sentinel2'"):
        _spec(path, "sentinel2")
    with pytest.raises(ConfigError, match=r"^inputs\.imagery\.options\.band_map: required"):
        _spec(path, "raster")
    with pytest.raises(ConfigError, match=r"^embeddings\.image\.indices: ndvi needs bands nir, red; .* has lst$"):
        _spec(path, "raster", {"lst": 1}, indices=("ndvi",))
    with pytest.raises(ConfigError, match=r"band_map\.lst: expected a 1-based band"):
        _spec(path, "raster", {"lst": 0}, indices=())
    with pytest.raises(IngestError, match=r"one\.tif: band map blue=2 but the raster has 1 band"):
        _spec(path, "landsat8_oli")  # 7-band preset on a 1-band raster
    missing = tmp_path / "missing.tif"
    with pytest.raises(IngestError, match=r"missing\.tif: cannot open raster") as err:
        _spec(missing, "raster", {"lst": 1}, indices=())
    assert "\n" not in str(err.value)
    not_raster = tmp_path / "notes.tif"
    not_raster.write_text("not a raster")
    with pytest.raises(IngestError, match=r"notes\.tif: cannot open raster"):
        _spec(not_raster, "raster", {"lst": 1}, indices=())
    no_crs = _write(tmp_path / "nocrs.tif", np.ones((1, 4, 4), dtype=np.float32), crs=None)
    with pytest.raises(IngestError, match=r"nocrs\.tif: raster has no CRS"):
        _spec(no_crs, "raster", {"lst": 1}, indices=())


@pytest.mark.parametrize("zonal", ["exactextract", "centre"])
def test_spark_matches_pandas(spark, saltlake: Path, zonal: str) -> None:
    spec = _spec(saltlake, "landsat7_etm", zonal=zonal)
    frame = _frame(SALTLAKE_REGIONS)
    regions = spark.createDataFrame(frame, "region_id long, geometry binary")
    features = image_features(regions, UTM12, spec, partitions=2)
    assert features.schema == IMAGE_FEATURES_SCHEMA
    got = features.toPandas().sort_values("region_id").reset_index(drop=True)
    expected = region_image_stats(frame, UTM12, spec)
    assert got["region_id"].tolist() == expected["region_id"].tolist()
    np.testing.assert_array_equal(np.stack(got["vector"]), np.stack(expected["vector"]))
    assert got["n_pixels"].tolist() == expected["n_pixels"].tolist()
    assert got["has_image"].tolist() == expected["has_image"].tolist()
    np.testing.assert_allclose(got["coverage"], expected["coverage"])

    patches = image_patches(regions, UTM12, spec, 32, 32, partitions=2)
    assert patches.schema == IMAGE_PATCHES_SCHEMA
    keys = sorted((r.region_id, r.tile_row, r.tile_col) for r in patches.select("region_id", "tile_row", "tile_col").collect())
    local = region_patches(frame, UTM12, spec, 32, 32)
    assert keys == sorted(zip(local["region_id"], local["tile_row"], local["tile_col"]))
    assert 5 not in {k[0] for k in keys}


@pytest.fixture()
def tiles_raster(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = np.stack([np.arange(1, 101), np.arange(1001, 1101)]).reshape(2, 10, 10).astype(np.uint16)
    path = tmp_path / "tiles.tif"
    with rasterio.open(path, "w", driver="GTiff", width=10, height=10, count=2, dtype="uint16", crs=UTM50,
                       transform=from_origin(500_000, 4_000_100, 10, 10)) as dst:
        dst.write(data)
    return path, data


def test_patches_tiles_overlap_and_padding(tiles_raster: tuple[Path, np.ndarray]) -> None:
    path, data = tiles_raster
    spec = _spec(path, "raster", {"a": 1, "b": 2}, indices=())
    region = box(500_010, 4_000_000, 500_090, 4_000_080)  # pixel rows 2..9, cols 1..8
    far = box(600_000, 4_000_000, 600_100, 4_000_100)
    out = region_patches(_frame({3: region, 4: far}), UTM50, spec, size=4, stride=4)
    assert out["region_id"].tolist() == [3] * 9  # tiles rows 0..2 x cols 0..2; the far region has none
    assert out["tile_row"].dtype == np.int32 and out["overlap"].dtype == np.float32
    tiles = out.set_index(["tile_row", "tile_col"])
    assert tiles.loc[(1, 1), "overlap"] == 1.0 and tiles.loc[(1, 1), "valid_fraction"] == 1.0
    assert tiles.loc[(0, 0), "overlap"] == pytest.approx(6 / 16)  # rows 2-3 x cols 1-3
    np.testing.assert_array_equal(tiles.loc[(1, 1), "pixels"], data[:, 4:8, 4:8].astype(np.float32).ravel())
    edge = tiles.loc[(2, 2)]  # rows 8..11, cols 8..11: only 2 x 2 pixels inside the raster
    assert edge["valid_fraction"] == pytest.approx(4 / 16) and edge["overlap"] == pytest.approx(2 / 16)
    expected = np.zeros((2, 4, 4), dtype=np.float32)
    expected[:, :2, :2] = data[:, 8:10, 8:10]
    np.testing.assert_array_equal(edge["pixels"], expected.ravel())
    assert (out["bands"] == 2).all() and (out["size"] == 4).all()
    assert out["pixels"].map(len).eq(2 * 4 * 4).all()

    overlapping = region_patches(_frame({3: region}), UTM50, spec, size=4, stride=2)
    assert len(overlapping) == 25  # tile rows/cols 0..4 on a step of 2
    first = overlapping.set_index(["tile_row", "tile_col"]).loc[(1, 3), "pixels"]
    np.testing.assert_array_equal(first, data[:, 2:6, 6:10].astype(np.float32).ravel())


@pytest.fixture(scope="module")
def nyc_imagery(spark, shared_data: Path, repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Stages regions + imagery of conf/nyc_manhattan.yaml (mh-180 regions over the Landsat land-surface
    temperature raster), imagery once per zonal method on the same work dir."""
    from landuse.manifest import read_manifest
    from landuse.runner import run_stage
    from landuse.spark.io import table_path
    from landuse.stages import STAGES

    work = tmp_path_factory.mktemp("nyc-imagery")
    runs: dict = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo_root)  # the config's paths are relative to the repository root
        for zonal in ("exactextract", "centre"):
            config = load_config(repo_root / "conf/nyc_manhattan.yaml",
                                 [f"work_dir={work}", "spark.shuffle_partitions=2", "embeddings.image.patches=false",
                                  f"embeddings.image.zonal={zonal}"])
            if not runs:
                assert run_stage(STAGES["regions"], config, STAGES).status == "ran"
            status = run_stage(STAGES["imagery"], config, STAGES, spark=spark).status
            path = table_path(config, "image_features")
            table = pq.read_table(path).to_pandas().sort_values("region_id").set_index("region_id")
            runs[zonal] = {"config": config, "status": status, "manifest": read_manifest(path), "table": table}
    regions = pq.read_table(table_path(runs["centre"]["config"], "regions"), columns=["region_id", "geometry"]).to_pandas()
    runs["regions"] = regions.sort_values("region_id").reset_index(drop=True)
    return runs


def test_imagery_stage_end_to_end_on_landsat_lst(nyc_imagery: dict) -> None:
    exact, centre, regions = nyc_imagery["exactextract"], nyc_imagery["centre"], nyc_imagery["regions"]
    # the fingerprint follows embeddings.image.zonal: switching it reruns the stage
    assert exact["status"] == centre["status"] == "ran"
    assert exact["manifest"]["config_hash"] != centre["manifest"]["config_hash"]
    assert exact["manifest"]["features"] == ["lst_mean", "lst_std", "lst_p10", "lst_p50", "lst_p90"]
    assert exact["manifest"]["regions"] == centre["manifest"]["regions"] == len(regions) == 180
    config = exact["config"]
    spec = resolve_raster_spec(config.inputs.imagery, config.embeddings.image)
    assert spec.zonal == "exactextract" and centre["config"].embeddings.image.zonal == "centre"
    a, b = exact["table"], centre["table"]
    assert a.index.tolist() == b.index.tolist() == regions["region_id"].tolist()

    # Spark (two partitions) = the same function on the driver
    local = region_image_stats(regions, config.study.crs, spec).set_index("region_id")
    np.testing.assert_allclose(np.stack(a["vector"]), np.stack(local["vector"]), rtol=1e-6)
    assert a["n_pixels"].tolist() == local["n_pixels"].tolist()

    # regions inside, across the raster's south edge (40.75 N) and outside it
    inside = a.index[(a["coverage"] > 0.999).to_numpy()]
    partial = a.index[((a["coverage"] > 0.05) & (a["coverage"] < 0.95)).to_numpy()]
    assert len(inside) > 100 and len(partial) >= 2 and (~a["has_image"]).sum() >= 1
    geoms = regions.set_index("region_id")["geometry"]
    with rasterio.open(spec.path) as src:
        to_raster = pyproj.Transformer.from_crs(config.study.crs, src.crs.to_wkt(), always_xy=True)
        lst = src.read(1)
        pixel_area = abs(src.transform.determinant)
        for region_id in [*inside[::25], *partial[:3]]:
            geom = ops.transform(to_raster.transform, shapely.from_wkb(geoms[region_id]))
            window, fractions = _pixel_fractions(src, geom)
            keep = fractions > 1e-12
            v, w = lst[window][keep], fractions[keep]
            got = a.loc[region_id]
            mean = (w * v).sum() / w.sum()
            np.testing.assert_allclose(got["vector"][:3], [mean, np.sqrt((w * (v - mean) ** 2).sum() / w.sum()),
                                                           _weighted_quantile(v, w, 0.1)], rtol=1e-5)
            assert got["n_pixels"] == keep.sum()
            assert got["coverage"] == pytest.approx(w.sum() * pixel_area / geom.area, rel=1e-6)
            centre_mask = geometry_mask([geom], out_shape=lst.shape, transform=src.transform, invert=True)
            assert b.loc[region_id, "n_pixels"] == centre_mask.sum() < got["n_pixels"]
            assert b.loc[region_id, "vector"][0] == pytest.approx(lst[centre_mask].mean(), rel=1e-6)

    # the two methods: exactextract uses more pixels (the partly covered ones), the means move little
    assert (a["n_pixels"] >= b["n_pixels"]).all() and (a["has_image"] >= b["has_image"]).all()
    both = (a["has_image"] & b["has_image"]).to_numpy()
    diff = np.abs(np.stack(a["vector"][both])[:, 0] - np.stack(b["vector"][both])[:, 0])
    assert 0 < diff.mean() < 0.5 and diff.max() < 2.0  # degrees C
