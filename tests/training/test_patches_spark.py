"""POIs placed on image tiles with Spark (``landuse.data.patches``) vs. the former driver-side pandas code.

The reference functions below are the implementation that read every POI into pandas on the
driver and looped over them in Python; they are kept here, unchanged, as the oracle of a
differential test: the Spark version must give every tile the same multiset of token ids and the
same vocabulary, on tile edges, in overlapping tiles (stride < size), in the gaps between tiles
(stride > size), for POIs off the raster, with NULL/NaN coordinates and NULL tokens.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from landuse.data.patches import _session, load_patch_set, load_training_patches, pixel_tiles, poi_tile_tokens
from landuse.storage import read_parquet

# the former code casts the NaN pixel of a POI at infinite longitude to int64 (and then skips it)
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


# ---------------------------------------------------------------------------------------------
# The former implementation (driver-side pandas + Python loops), the differential oracle
# ---------------------------------------------------------------------------------------------


def reference_tiles_of_pixels(rows: np.ndarray, cols: np.ndarray, size: int, stride: int) -> list[list[tuple[int, int]]]:
    """For each pixel (row, col), the global tiles containing it: tile t covers pixels t*stride .. t*stride+size-1."""
    out = []
    for r, c in zip(rows.tolist(), cols.tolist()):
        if r < 0 or c < 0:
            out.append([])
            continue
        trs = range(max(0, (r - size) // stride + 1), r // stride + 1)
        tcs = range(max(0, (c - size) // stride + 1), c // stride + 1)
        out.append([(tr, tc) for tr in trs for tc in tcs])
    return out


def reference_poi_tile_tokens(pois: pd.DataFrame, raster_path: str, tiles: torch.Tensor, size: int, stride: int,
                              token_column: str, lon: str = "lon", lat: str = "lat") -> tuple[list[list[int]], list[str]]:
    import pyproj

    frame = pois[[lon, lat, token_column]].dropna()
    vocabulary = sorted(frame[token_column].astype(str).unique().tolist())
    ids = {t: i for i, t in enumerate(vocabulary)}
    with rasterio.open(raster_path) as src:
        transformer = pyproj.Transformer.from_crs("EPSG:4326", src.crs, always_xy=True)
        x, y = transformer.transform(frame[lon].to_numpy(), frame[lat].to_numpy())
        inverse = ~src.transform
        col_f, row_f = inverse @ (np.asarray(x), np.asarray(y))
    rows, cols = np.floor(row_f).astype(np.int64), np.floor(col_f).astype(np.int64)
    index = {(int(r), int(c)): i for i, (r, c) in enumerate(tiles.tolist())}
    tokens: list[list[int]] = [[] for _ in range(len(index))]
    for token, places in zip(frame[token_column].astype(str), reference_tiles_of_pixels(rows, cols, size, stride)):
        for place in places:
            i = index.get(place)
            if i is not None:
                tokens[i].append(ids[token])
    return tokens, vocabulary


def reference_training_tokens(tables_dir, raster_path: str, level: int) -> tuple[list[list[int]], list[str]]:
    """The former body of ``load_training_patches`` for the POI tokens."""
    patch_set = load_patch_set(tables_dir / "image_patches")
    manifest = json.loads((tables_dir / "image_patches" / "_manifest.json").read_text())
    size = int(patch_set.pixels.shape[-1])
    stride = int(manifest.get("patch_stride") or size)
    columns = ["lon", "lat"] + [f"cat_l{i}" for i in range(1, level + 1)]
    pois = read_parquet(tables_dir / "poi_regions", columns=columns).to_pandas()
    token = pois[f"cat_l{level}"]
    for coarser in range(level - 1, 0, -1):
        token = token.fillna(pois[f"cat_l{coarser}"])
    pois = pois.assign(token=token)
    return reference_poi_tile_tokens(pois, raster_path, patch_set.tiles, size, stride, "token")


# ---------------------------------------------------------------------------------------------
# Fixtures: small rasters, POIs on and around tile edges
# ---------------------------------------------------------------------------------------------

POI_SCHEMA = "lon double, lat double, token string"
TOKENS = ["shop", "school", "Zoo", "église", "park"]


def write_raster(path, crs: str, transform, height: int, width: int) -> str:
    with rasterio.open(path, "w", driver="GTiff", height=height, width=width, count=1, dtype="uint8",
                       crs=crs, transform=transform) as dst:
        dst.write(np.zeros((1, height, width), np.uint8))
    return str(path)


def edge_pois(rng: np.random.Generator, origin_lon: float, origin_lat: float, pixel: float, n_pixels: int) -> list[tuple]:
    """POIs exactly on pixel/tile edges and corners, inside pixels, off the raster, and invalid rows."""
    rows: list[tuple] = []
    edges = list(range(-2, n_pixels + 3))
    for k in edges:  # exactly on edges (dyadic coordinates: the pixel arithmetic is exact)
        for m in edges[::3]:
            rows.append((origin_lon + k * pixel, origin_lat - m * pixel, TOKENS[(k + m) % len(TOKENS)]))
    for _ in range(400):  # anywhere, including off the raster
        r, c = (float(v) for v in rng.uniform(-3, n_pixels + 3, size=2))
        rows.append((origin_lon + c * pixel, origin_lat - r * pixel, str(rng.choice(TOKENS))))
    rows += [
        (None, origin_lat - pixel, "ghost"),  # NULL lon: skipped, and not in the vocabulary
        (origin_lon + pixel, float("nan"), "phantom"),  # NaN lat: likewise
        (origin_lon + pixel, origin_lat - pixel, None),  # NULL token
        (float("inf"), origin_lat - pixel, "far"),  # cannot be placed, but its token is in the vocabulary
        (origin_lon + 0.5 * pixel, origin_lat - 0.5 * pixel, "shop"),
    ]
    return rows


def assert_same(got: tuple[list[list[int]], list[str]], want: tuple[list[list[int]], list[str]]) -> None:
    assert got[1] == want[1]
    assert len(got[0]) == len(want[0])
    for i, (g, w) in enumerate(zip(got[0], want[0])):
        assert g == sorted(w), f"tile {i}: {g} != {sorted(w)}"


def some_tiles(size: int, stride: int, n_pixels: int) -> torch.Tensor:
    """The grid's tiles that fit the raster, minus a few (tiles absent from the patch set get nothing)."""
    last = (n_pixels - size) // stride
    keys = [(r, c) for r in range(last + 1) for c in range(last + 1) if (r * 7 + c) % 5 != 3]
    return torch.tensor(sorted(keys), dtype=torch.long)


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size,stride", [(16, 16), (16, 8), (4, 3), (3, 5), (1, 1)])
def test_pixel_tiles_matches_reference(spark, size: int, stride: int) -> None:
    pixels = [(r, c) for r in range(-2, 40) for c in (-1, 0, 2, 3, 4, 5, 8, 9, 15, 16, 17, 31, 33)]
    df = spark.createDataFrame(pixels + [(None, 3)], "r long, c long")
    got: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for row in pixel_tiles(df, "r", "c", size, stride).collect():
        got.setdefault((row["r"], row["c"]), []).append((row["tile_row"], row["tile_col"]))
    rows, cols = np.array([p[0] for p in pixels]), np.array([p[1] for p in pixels])
    for pixel, want in zip(pixels, reference_tiles_of_pixels(rows, cols, size, stride)):
        assert sorted(got.get(pixel, [])) == sorted(want), pixel
    assert reference_tiles_of_pixels(np.array([5, 17, -1]), np.array([3, 8, 0]), size=16, stride=16) == [[(0, 0)], [(1, 0)], []]
    assert reference_tiles_of_pixels(np.array([9]), np.array([0]), size=16, stride=8) == [[(0, 0), (1, 0)]]


@pytest.mark.parametrize("size,stride", [(4, 2), (4, 4), (3, 5)])
def test_poi_tile_tokens_matches_former_code_on_tile_edges(spark, tmp_path, size: int, stride: int) -> None:
    """EPSG:4326 raster with 1/16° pixels: POIs exactly on pixel and tile edges land as before."""
    n, origin_lon, origin_lat, pixel = 40, 113.0, 22.75, 1 / 16
    raster = write_raster(tmp_path / "r.tif", "EPSG:4326", from_origin(origin_lon, origin_lat, pixel, pixel), n, n)
    rows = edge_pois(np.random.default_rng(size * 10 + stride), origin_lon, origin_lat, pixel, n)
    tiles = some_tiles(size, stride, n)
    want = reference_poi_tile_tokens(pd.DataFrame(rows, columns=["lon", "lat", "token"]), raster, tiles, size, stride, "token")
    got = poi_tile_tokens(spark.createDataFrame(rows, POI_SCHEMA).repartition(3), raster, tiles, size, stride, "token")
    assert_same(got, want)
    assert sum(len(t) for t in want[0]) > 100
    assert "far" in got[1] and "ghost" not in got[1] and "phantom" not in got[1]


def test_poi_tile_tokens_matches_former_code_in_projected_crs(spark, tmp_path) -> None:
    """UTM raster (10 m pixels): lon/lat through pyproj in the workers gives the same pixels."""
    import pyproj

    n, size, stride = 64, 8, 4
    x0, y0 = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32650", always_xy=True).transform(114.05, 22.55)
    raster = write_raster(tmp_path / "utm.tif", "EPSG:32650", from_origin(round(x0), round(y0), 10, 10), n, n)
    back = pyproj.Transformer.from_crs("EPSG:32650", "EPSG:4326", always_xy=True)
    rng = np.random.default_rng(7)
    cols = np.concatenate([rng.uniform(-4, n + 4, 1500), np.repeat(np.arange(0, n + 1, 4), 9)])
    rows_px = np.concatenate([rng.uniform(-4, n + 4, 1500), np.tile(np.arange(0, n + 1, 8), 17)])
    lon, lat = back.transform(round(x0) + cols * 10, round(y0) - rows_px * 10)
    rows = [(float(a), float(b), TOKENS[i % len(TOKENS)]) for i, (a, b) in enumerate(zip(lon, lat))]
    tiles = some_tiles(size, stride, n)
    want = reference_poi_tile_tokens(pd.DataFrame(rows, columns=["lon", "lat", "token"]), raster, tiles, size, stride, "token")
    got = poi_tile_tokens(spark.createDataFrame(rows, POI_SCHEMA).repartition(4), raster, tiles, size, stride, "token")
    assert_same(got, want)
    assert sum(len(t) for t in got[0]) > 1500


def test_poi_tile_tokens_without_pois_or_tiles(spark, tmp_path) -> None:
    raster = write_raster(tmp_path / "r.tif", "EPSG:4326", from_origin(0, 1, 1 / 16, 1 / 16), 16, 16)
    empty = spark.createDataFrame([], POI_SCHEMA)
    assert poi_tile_tokens(empty, raster, torch.tensor([[0, 0], [0, 1]]), 4, 4, "token") == ([[], []], [])
    one = spark.createDataFrame([(0.01, 0.99, "a")], POI_SCHEMA)
    assert poi_tile_tokens(one, raster, torch.empty(0, 2, dtype=torch.long), 4, 4, "token") == ([], ["a"])
    assert poi_tile_tokens(one, raster, torch.tensor([[0, 0], [0, 1]]), 4, 4, "token") == ([[0], []], ["a"])


def write_tables(tables, raster_origin: tuple[float, float], pixel: float, size: int, stride: int, n: int) -> None:
    """image_patches (tiles of ``some_tiles``, two regions each) and poi_regions (cat_l1, cat_l2) tables."""
    tiles = some_tiles(size, stride, n).tolist()
    rng = np.random.default_rng(3)
    patches = tables / "image_patches"
    patches.mkdir(parents=True)
    frame = pd.DataFrame({
        "region_id": np.array([k % 2 + 1 for k in range(2 * len(tiles))], np.int64),
        "tile_row": np.array([t[0] for t in tiles for _ in (0, 1)], np.int32),
        "tile_col": np.array([t[1] for t in tiles for _ in (0, 1)], np.int32),
        "overlap": np.full(2 * len(tiles), 0.5, np.float32),
        "valid_fraction": np.ones(2 * len(tiles), np.float32),
        "bands": np.full(2 * len(tiles), 2, np.int32),
        "size": np.full(2 * len(tiles), size, np.int32),
        "pixels": [rng.normal(size=2 * size * size).astype(np.float32) for _ in range(2 * len(tiles))],
    })
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), patches / "part-0.parquet", row_group_size=7)
    (patches / "_manifest.json").write_text(json.dumps({"patch_stride": stride, "patch_bands": ["red", "nir"]}))
    lon0, lat0 = raster_origin
    rows = edge_pois(rng, lon0, lat0, pixel, n)
    l1 = [None if t is None else t[:2] for _, _, t in rows]
    l2 = [None if t is None or i % 4 == 0 else t for i, (_, _, t) in enumerate(rows)]
    pois = pa.table({"region_id": pa.array(np.arange(len(rows)) % 3, pa.int64()),
                     "lon": pa.array([r[0] for r in rows], pa.float64()),
                     "lat": pa.array([r[1] for r in rows], pa.float64()),
                     "cat_l1": pa.array(l1, pa.string()), "cat_l2": pa.array(l2, pa.string())})
    (tables / "poi_regions").mkdir()
    for k, start in enumerate(range(0, len(rows), 300)):  # several files, as Spark writes them
        pq.write_table(pois.slice(start, 300), tables / "poi_regions" / f"part-{k:05d}.parquet")


def test_load_training_patches_matches_former_code(spark, tmp_path) -> None:
    n, size, stride, pixel = 32, 4, 2, 1 / 16
    raster = write_raster(tmp_path / "r.tif", "EPSG:4326", from_origin(113.0, 22.75, pixel, pixel), n, n)
    tables = tmp_path / "tables"
    write_tables(tables, (113.0, 22.75), pixel, size, stride, n)
    for level in (1, 2):
        patch_set, got_stride, roles = load_training_patches(tables, raster, level=level, batch_size=16, spark=spark)
        assert got_stride == stride and roles == ["red", "nir"] and len(patch_set) == len(some_tiles(size, stride, n))
        assert_same((patch_set.poi_tokens, patch_set.vocabulary), reference_training_tokens(tables, raster, level))
        assert sum(1 for t in patch_set.poi_tokens if t) > len(patch_set) // 2
    # callers without a session (the probe) use the active one
    assert _session(None).sparkContext is spark.sparkContext
