"""Image patches for the encoders: the ``image_patches`` table streamed through Petastorm.

The table has one row per (region, tile): the same tile appears once per region it overlaps.
:func:`iter_patch_batches` streams it in batches (pixels as ``[B, bands, size, size]``);
:func:`load_patch_set` keeps each tile once (the pretraining sample set) plus the region
memberships (region, tile, overlap, valid_fraction) that pooling needs. :func:`poi_tile_tokens`
places POIs on the same global tile grid (lon/lat → raster CRS → pixel → tile) with Spark on the
executors and gives every tile its list of category-token ids; the driver receives only per-tile
token counts (bounded by tiles × vocabulary), never the POIs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from landuse.data.reader import _parquet_files, _quiet_petastorm
from landuse.storage import local_copy, location, parquet_metadata

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)
REGION_ID, TILE_ROW, TILE_COL = "region_id", "tile_row", "tile_col"
OVERLAP, VALID_FRACTION, BANDS, SIZE, PIXELS = "overlap", "valid_fraction", "bands", "size", "pixels"
PATCH_COLUMNS = (REGION_ID, TILE_ROW, TILE_COL, OVERLAP, VALID_FRACTION, BANDS, SIZE, PIXELS)


@dataclass
class PatchBatch:
    """One streamed batch of patch-table rows."""

    region_id: torch.Tensor  # [B] int64
    tile: torch.Tensor  # [B, 2] int64 (tile_row, tile_col)
    overlap: torch.Tensor  # [B] float32
    valid_fraction: torch.Tensor  # [B] float32
    pixels: torch.Tensor  # [B, bands, size, size] float32


@dataclass
class PatchSet:
    """Unique tiles with their pixels and POI tokens, and the (region, tile) memberships."""

    tiles: torch.Tensor  # [N, 2] int64 (tile_row, tile_col), sorted
    pixels: torch.Tensor  # [N, bands, size, size] float32
    memberships: pd.DataFrame  # region_id, tile (index into tiles), overlap, valid_fraction
    poi_tokens: list[list[int]] = field(default_factory=list)  # per tile: token ids (may be empty)
    vocabulary: list[str] = field(default_factory=list)  # token id -> category token

    def __len__(self) -> int:
        return int(self.tiles.shape[0])

    @property
    def bands(self) -> int:
        """Channels per patch."""
        return int(self.pixels.shape[1])

    def band_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-band mean and std over every pixel of every tile, ``([bands], [bands])``."""
        flat = self.pixels.transpose(0, 1).reshape(self.bands, -1)
        return flat.mean(1), flat.std(1)


def _to_batch(raw: dict[str, torch.Tensor]) -> PatchBatch:
    n = len(raw[REGION_ID])
    if n == 0:
        pixels = torch.empty(0, 0, 0, 0)
    else:
        bands, size = int(raw[BANDS][0]), int(raw[SIZE][0])
        if (raw[BANDS] != bands).any() or (raw[SIZE] != size).any():
            raise ValueError("image_patches: rows with different band counts or sizes in one table")
        pixels = raw[PIXELS].to(torch.float32).reshape(n, bands, size, size)
    return PatchBatch(
        region_id=raw[REGION_ID].long(),
        tile=torch.stack([raw[TILE_ROW].long(), raw[TILE_COL].long()], dim=1),
        overlap=raw[OVERLAP].float(),
        valid_fraction=raw[VALID_FRACTION].float(),
        pixels=pixels,
    )


def iter_patch_batches(path: Path, batch_size: int = 256) -> Iterator[PatchBatch]:
    """Stream the patch table at ``path`` through Petastorm (``make_batch_reader`` + DataLoader).

    Single-threaded ``dummy`` pool (petastorm 0.13.1's thread pool can drop row groups, see
    ``landuse.data.reader``); the rows streamed are counted against the Parquet footers and a short
    pass raises RuntimeError rather than silently encoding a subset.
    """
    from petastorm import make_batch_reader
    from petastorm.pytorch import DataLoader

    files = _parquet_files(path)
    if not path.is_dir() or not files:
        raise ValueError(f"table image_patches not found at {path}: run `landuse run imagery` with embeddings.image.patches on")
    expected = sum(parquet_metadata(f).num_rows for f in files)
    fields = [re.escape(c) + "$" for c in PATCH_COLUMNS]
    got = 0
    with _quiet_petastorm(), local_copy(path) as local:
        reader = make_batch_reader("file://" + str(local.resolve()), schema_fields=fields, num_epochs=1,
                                   shuffle_row_groups=False, reader_pool_type="dummy")
        with DataLoader(reader, batch_size=batch_size) as loader:
            for raw in loader:
                batch = _to_batch(raw)
                got += len(batch.region_id)
                yield batch
    if got != expected:
        raise RuntimeError(f"petastorm streamed {got} of {expected} rows from {path}")


def load_patch_set(path: Path, batch_size: int = 256) -> PatchSet:
    """Every tile of the patch table once (sorted by tile_row, tile_col), with its region memberships."""
    tiles: dict[tuple[int, int], torch.Tensor] = {}
    rows: list[tuple[int, int, int, float, float]] = []
    for batch in iter_patch_batches(path, batch_size):
        for i in range(len(batch.region_id)):
            key = (int(batch.tile[i, 0]), int(batch.tile[i, 1]))
            if key not in tiles:
                tiles[key] = batch.pixels[i].clone()
            rows.append((int(batch.region_id[i]), *key, float(batch.overlap[i]), float(batch.valid_fraction[i])))
    keys = sorted(tiles)
    position = {k: i for i, k in enumerate(keys)}
    frame = pd.DataFrame(rows, columns=[REGION_ID, TILE_ROW, TILE_COL, OVERLAP, VALID_FRACTION])
    memberships = pd.DataFrame({
        REGION_ID: frame[REGION_ID].astype(np.int64),
        "tile": np.asarray([position[(r, c)] for r, c in zip(frame[TILE_ROW], frame[TILE_COL])], dtype=np.int64),
        OVERLAP: frame[OVERLAP].astype(np.float32),
        VALID_FRACTION: frame[VALID_FRACTION].astype(np.float32),
    }).sort_values([REGION_ID, "tile"], ignore_index=True)
    pixels = torch.stack([tiles[k] for k in keys]) if keys else torch.empty(0, 0, 0, 0)
    tile_tensor = torch.tensor(keys, dtype=torch.long).reshape(-1, 2)
    return PatchSet(tiles=tile_tensor, pixels=pixels, memberships=memberships,
                    poi_tokens=[[] for _ in keys], vocabulary=[])


def pixel_tiles(df: "DataFrame", row: str, col: str, size: int, stride: int,
                tile_row: str = TILE_ROW, tile_col: str = TILE_COL) -> "DataFrame":
    """``df`` with one row per global tile containing its pixel (``row``, ``col``; integers), in Spark SQL.

    Tile t covers pixels ``t*stride .. t*stride+size-1``, so pixel p lies in tiles
    ``max(0, (p - size) // stride + 1) .. p // stride`` — several when ``stride < size`` (the small
    range is exploded), none when it falls in the gap between tiles (``stride > size``). Rows with a
    negative or NULL pixel are dropped. Adds ``tile_row``/``tile_col`` (bigint); pure SQL
    arithmetic, it runs on the executors.
    """
    from pyspark.sql import functions as F

    if size <= 0 or stride <= 0:
        raise ValueError(f"tile size {size} and stride {stride} must be > 0")
    size, stride = int(size), int(stride)
    r, c = f"`{row}`", f"`{col}`"
    work = {"r0": "__tile_r0", "r1": "__tile_r1", "c0": "__tile_c0", "c1": "__tile_c1"}

    def first(p: str) -> str:  # max(0, (p - size) // stride + 1) for p >= 0 (p - size >= 0 in the ELSE)
        return f"CASE WHEN {p} < {size} THEN CAST(0 AS BIGINT) ELSE CAST(({p} - {size}) div {stride} + 1 AS BIGINT) END"

    out = df.where(f"{r} >= 0 AND {c} >= 0").select(
        "*",
        F.expr(first(r)).alias(work["r0"]), F.expr(f"CAST({r} div {stride} AS BIGINT)").alias(work["r1"]),
        F.expr(first(c)).alias(work["c0"]), F.expr(f"CAST({c} div {stride} AS BIGINT)").alias(work["c1"]),
    )
    # sequence(a, b) counts down when a > b: an empty range (a pixel between tiles) must be dropped first
    out = out.where(F.col(work["r0"]) <= F.col(work["r1"])).where(F.col(work["c0"]) <= F.col(work["c1"]))
    out = out.withColumn(tile_row, F.explode(F.sequence(F.col(work["r0"]), F.col(work["r1"]))))
    out = out.withColumn(tile_col, F.explode(F.sequence(F.col(work["c0"]), F.col(work["c1"]))))
    return out.drop(*work.values())


def raster_grid(raster_path: str) -> tuple[str, tuple[float, float, float, float, float, float]]:
    """The raster's CRS (WKT) and its *inverse* affine transform ``(a, b, c, d, e, f)``: map x/y -> col/row.

    Read once on the driver with rasterio; these few values are all the executors need.
    """
    import rasterio

    with rasterio.open(raster_path) as src:
        inverse = ~src.transform
        return src.crs.to_wkt(), tuple(float(v) for v in inverse[:6])  # type: ignore[return-value]


_X, _Y, _TOKEN, _TILE = "__poi_x", "__poi_y", "__poi_token", "__tile"


def poi_tile_tokens(pois: "DataFrame", raster_path: str, tiles: torch.Tensor, size: int, stride: int,
                    token_column: str, lon: str = "lon", lat: str = "lat") -> tuple[list[list[int]], list[str]]:
    """Per tile (rows of ``tiles`` [N, 2]), the token ids of the POIs inside it, and the vocabulary.

    ``pois`` is a Spark DataFrame and stays on the executors: lon/lat (EPSG:4326) are projected to
    the raster's CRS with pyproj inside ``mapInArrow`` (:func:`landuse.spatial.engines.project_points`),
    then to pixel row/col with the raster's inverse affine transform (the same
    ``x*a + y*b + c`` double arithmetic as rasterio's ``~transform @ (x, y)``) and ``floor``; each
    pixel is expanded to every tile of the patch grid ``size`` / ``stride`` containing it
    (:func:`pixel_tiles`); a join with the patch set's tile keys (a small broadcast DataFrame) keeps
    the tiles that exist, and the POIs are counted per (tile, token).

    The driver collects only (a) the distinct tokens — at most the vocabulary — and (b) the per-tile
    token counts — at most ``len(tiles) × len(vocabulary)`` rows — never a row per POI. Each tile's
    list holds every POI's token id (a multiset, sorted by id; the POI-set encoder pools it order-
    invariantly). POIs with a NULL/NaN lon, lat or token are skipped (and their tokens are not in the
    vocabulary); the vocabulary is sorted.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StructField, StructType

    from landuse.spatial.engines import project_points

    valid = (F.col(lon).isNotNull() & ~F.isnan(F.col(lon)) & F.col(lat).isNotNull() & ~F.isnan(F.col(lat))
             & F.col(token_column).isNotNull())
    frame = pois.select(F.col(lon).cast("double").alias(lon), F.col(lat).cast("double").alias(lat),
                        F.col(token_column).cast("string").alias(_TOKEN)).where(valid)
    # driver: the distinct tokens (bounded by the vocabulary size)
    vocabulary = sorted(str(row[0]) for row in frame.select(_TOKEN).distinct().collect())
    keys = tiles.reshape(-1, 2).tolist()
    tokens: list[list[int]] = [[] for _ in keys]
    if not keys or not vocabulary:
        return tokens, vocabulary
    crs, (a, b, c, d, e, f) = raster_grid(raster_path)
    projected = project_points(frame, lon, lat, crs, _X, _Y)
    x, y = F.col(_X), F.col(_Y)
    col_f = x * F.lit(a) + y * F.lit(b) + F.lit(c)  # rasterio/affine: vx * sa + vy * sb + sc
    row_f = x * F.lit(d) + y * F.lit(e) + F.lit(f)
    # pixels past the last tile of the patch set cannot be in any of its tiles: dropped early, which
    # also keeps floor() and the exploded tile ranges small
    row_end = max(r for r, _ in keys) * stride + size
    col_end = max(c for _, c in keys) * stride + size
    located = projected.select(_TOKEN, row_f.alias("__row_f"), col_f.alias("__col_f")).where(
        (F.col("__row_f") >= 0) & (F.col("__row_f") < row_end) & (F.col("__col_f") >= 0) & (F.col("__col_f") < col_end))
    pixels = located.select(_TOKEN, F.floor("__row_f").alias("__row"), F.floor("__col_f").alias("__col"))
    placed = pixel_tiles(pixels, "__row", "__col", size, stride)
    spark = pois.sparkSession
    key_schema = StructType([StructField(TILE_ROW, LongType(), False), StructField(TILE_COL, LongType(), False),
                             StructField(_TILE, LongType(), False)])
    tile_keys = spark.createDataFrame(pd.DataFrame({  # the patch set's tiles (already on the driver)
        TILE_ROW: np.asarray([r for r, _ in keys], np.int64), TILE_COL: np.asarray([c for _, c in keys], np.int64),
        _TILE: np.arange(len(keys), dtype=np.int64)}), key_schema)
    counts = (placed.join(F.broadcast(tile_keys), [TILE_ROW, TILE_COL])
              .groupBy(_TILE, _TOKEN).agg(F.count(F.lit(1)).alias("n")))
    # driver: one row per (tile, token) present — at most len(tiles) × len(vocabulary), never per POI
    ids = {t: i for i, t in enumerate(vocabulary)}
    for row in counts.collect():
        tokens[int(row[_TILE])].extend([ids[str(row[_TOKEN])]] * int(row["n"]))
    for tile_tokens in tokens:
        tile_tokens.sort()
    return tokens, vocabulary


def token_batch(poi_tokens: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (tokens [T] int64, set index [T] int64), the POISetEncoder's input."""
    flat = [t for tokens in poi_tokens for t in tokens]
    index = [i for i, tokens in enumerate(poi_tokens) for _ in tokens]
    return torch.tensor(flat, dtype=torch.long), torch.tensor(index, dtype=torch.long)


def load_training_patches(tables_dir: Path, raster_path: str, level: int = 1, batch_size: int = 256,
                          spark: "SparkSession | None" = None) -> tuple[PatchSet, int, list[str]]:
    """``image_patches`` + ``poi_regions`` of a work dir -> (PatchSet with POI tokens, stride, band roles).

    Tokens are category codes at ``level`` (1..3), falling back to coarser levels where missing.
    The tile grid (size, stride) and band roles come from the patch table's manifest. The POIs are
    read and placed on tiles with Spark (:func:`poi_tile_tokens`): ``spark`` is the run's session
    (default: the active one, else one built from a default config); only per-tile token counts
    reach the driver.
    """
    from pyspark.sql import functions as F

    from landuse.manifest import read_manifest
    from landuse.spark.io import read_spark

    tables_dir = location(tables_dir) if isinstance(tables_dir, str) else tables_dir
    patches_dir = tables_dir / "image_patches"
    patch_set = load_patch_set(patches_dir, batch_size)
    if len(patch_set) == 0:
        raise ValueError(f"table image_patches at {patches_dir} has no rows")
    manifest = read_manifest(patches_dir) or {}
    size = int(patch_set.pixels.shape[-1])
    stride = int(manifest.get("patch_stride") or size)
    roles = [str(r) for r in manifest.get("patch_bands") or [f"band{i}" for i in range(patch_set.bands)]]
    pois_dir = tables_dir / "poi_regions"
    if not pois_dir.is_dir():
        raise ValueError(f"table poi_regions not found at {pois_dir}: run `landuse run pois` first")
    pois = read_spark(_session(spark), pois_dir)
    token = F.coalesce(*[F.col(f"cat_l{i}") for i in range(level, 0, -1)])
    pois = pois.select("lon", "lat", token.alias("token"))
    patch_set.poi_tokens, patch_set.vocabulary = poi_tile_tokens(pois, raster_path, patch_set.tiles, size, stride, "token")
    with_pois = sum(1 for t in patch_set.poi_tokens if t)
    log.info("patches: %d tiles (%d with POIs), %d bands, %d px, stride %d, %d tokens",
             len(patch_set), with_pois, patch_set.bands, size, stride, len(patch_set.vocabulary))
    return patch_set, stride, roles


def _session(spark: "SparkSession | None") -> "SparkSession":
    """``spark``, else the active session, else one built from a default config (local callers)."""
    if spark is not None:
        return spark
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    from landuse.config import Config
    from landuse.spark.session import build_session

    return build_session(Config(name="patches"))
