"""Image patches for the encoders: the ``image_patches`` table streamed through Petastorm.

The table has one row per (region, tile): the same tile appears once per region it overlaps.
:func:`iter_patch_batches` streams it in batches (pixels as ``[B, bands, size, size]``);
:func:`load_patch_set` keeps each tile once (the pretraining sample set) plus the region
memberships (region, tile, overlap, valid_fraction) that pooling needs. :func:`poi_tile_tokens`
places POIs on the same global tile grid (lon/lat → raster CRS → pixel → tile) and gives every
tile its list of category-token ids.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from landuse.data.reader import _parquet_files, _quiet_petastorm
from landuse.storage import local_copy, location, parquet_metadata, read_parquet

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


def tiles_of_pixels(rows: np.ndarray, cols: np.ndarray, size: int, stride: int) -> list[list[tuple[int, int]]]:
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


def poi_tile_tokens(pois: pd.DataFrame, raster_path: str, tiles: torch.Tensor, size: int, stride: int,
                    token_column: str, lon: str = "lon", lat: str = "lat") -> tuple[list[list[int]], list[str]]:
    """Per tile (rows of ``tiles`` [N, 2]), the token ids of the POIs inside it, and the vocabulary.

    POIs' lon/lat (EPSG:4326) are transformed to the raster's CRS and to pixel row/col with the
    raster's transform; a POI belongs to every tile (of the patch grid ``size`` / ``stride``)
    containing its pixel. Tokens missing (null) are skipped; the vocabulary is sorted.
    """
    import pyproj
    import rasterio

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
    for token, places in zip(frame[token_column].astype(str), tiles_of_pixels(rows, cols, size, stride)):
        for place in places:
            i = index.get(place)
            if i is not None:
                tokens[i].append(ids[token])
    return tokens, vocabulary


def token_batch(poi_tokens: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (tokens [T] int64, set index [T] int64), the POISetEncoder's input."""
    flat = [t for tokens in poi_tokens for t in tokens]
    index = [i for i, tokens in enumerate(poi_tokens) for _ in tokens]
    return torch.tensor(flat, dtype=torch.long), torch.tensor(index, dtype=torch.long)


def load_training_patches(tables_dir: Path, raster_path: str, level: int = 1, batch_size: int = 256) -> tuple[PatchSet, int, list[str]]:
    """``image_patches`` + ``poi_regions`` of a work dir -> (PatchSet with POI tokens, stride, band roles).

    Tokens are category codes at ``level`` (1..3), falling back to coarser levels where missing.
    The tile grid (size, stride) and band roles come from the patch table's manifest.
    """
    from landuse.manifest import read_manifest

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
    columns = ["lon", "lat"] + [f"cat_l{i}" for i in range(1, level + 1)]
    pois = read_parquet(pois_dir, columns=columns).to_pandas()
    token = pois[f"cat_l{level}"]
    for coarser in range(level - 1, 0, -1):
        token = token.fillna(pois[f"cat_l{coarser}"])
    pois = pois.assign(token=token)
    patch_set.poi_tokens, patch_set.vocabulary = poi_tile_tokens(pois, raster_path, patch_set.tiles, size, stride, "token")
    with_pois = sum(1 for t in patch_set.poi_tokens if t)
    log.info("patches: %d tiles (%d with POIs), %d bands, %d px, stride %d, %d tokens",
             len(patch_set), with_pois, patch_set.bands, size, stride, len(patch_set.vocabulary))
    return patch_set, stride, roles
