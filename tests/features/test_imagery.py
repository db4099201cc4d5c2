"""Per-region image statistics and patches (landuse.features.imagery) against direct numpy reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import pytest
import rasterio
from rasterio.features import geometry_mask
from rasterio.transform import from_origin
from shapely import box, ops, to_wkb
from shapely.geometry import Polygon

from landuse.config import ConfigError, ImageEmbeddingConfig, SourceConfig
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


def test_band_statistics_match_direct_numpy(saltlake: Path) -> None:
    spec = _spec(saltlake, "landsat7_etm", indices=())
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


def test_ndvi_matches_direct_numpy(saltlake: Path) -> None:
    spec = _spec(saltlake, "landsat7_etm", indices=("ndvi",))
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


def test_nodata_excluded_and_scale_applied(tmp_path: Path) -> None:
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

    spec = _spec(path, "raster", {"nir": 2, "red": 1}, indices=("ndvi",), percentiles=(50.0,))
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
                                                                   indices=(), apply_scale=False))
    assert raw["vector"][0][0] == pytest.approx(data[0, rows, cols][valid].mean(), rel=1e-6)


def test_float_raster_with_nan_single_band(tmp_path: Path) -> None:
    data = np.linspace(20.0, 40.0, 400).reshape(1, 20, 20)
    data[0, 10:12, 5:9] = np.nan
    path = _write(tmp_path / "lst.tif", data)
    spec = _spec(path, "raster", {"lst": 1}, indices=())
    assert feature_names(spec) == ["lst_mean", "lst_std", "lst_p10", "lst_p50", "lst_p90"]
    region = box(500_000, 4_000_000, 500_200, 4_000_200)  # the whole raster
    row = region_image_stats(_frame({1: region}), UTM50, spec).iloc[0]
    pixels = data[~np.isnan(data)]
    assert row["n_pixels"] == 400 - 8 and row["has_image"]
    np.testing.assert_allclose(row["vector"][:2], [pixels.mean(), pixels.std()], rtol=1e-6)


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


def test_spark_matches_pandas(spark, saltlake: Path) -> None:
    spec = _spec(saltlake, "landsat7_etm")
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
