"""H_img from an encoder: Pooling(Overlay(encoder(patches))).

Every tile of ``image_patches`` is encoded once; a region's vector is the mean of its tiles'
embeddings weighted by ``overlap × valid_fraction`` (how much of the tile lies in the region and
has data). The result has the columns of the statistical ``image_features`` table (region_id,
vector, n_pixels, coverage, has_image) and is written as table ``image_embeddings`` so the
assemble stage can take either source.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from landuse.data.patches import iter_patch_batches
from landuse.models.encoders import ImageEncoder

log = logging.getLogger(__name__)
T_IMAGE_EMBEDDINGS = "image_embeddings"
# The config that determines the table (pretrain.seed / poi_level default to seed /
# embeddings.poi.level); its section hash is the manifest's config_hash.
PRETRAIN_CONFIG_KEYS: tuple[str, ...] = ("seed", "embeddings.poi.level", "pretrain")
REGION_ID, VECTOR, N_PIXELS, COVERAGE, HAS_IMAGE = "region_id", "vector", "n_pixels", "coverage", "has_image"


def pool_regions(region_ids: np.ndarray, tile_index: np.ndarray, overlap: np.ndarray, valid_fraction: np.ndarray,
                 tile_embeddings: np.ndarray, tile_pixels: int = 1,
                 all_regions: Sequence[int] | None = None) -> pd.DataFrame:
    """Overlap-weighted pooling of tile embeddings per region.

    One entry per (region, tile): ``tile_index`` into ``tile_embeddings [T, d]``; weight =
    ``overlap · valid_fraction``. vector = Σ w·e / Σ w; n_pixels = round(Σ overlap · tile_pixels)
    (region pixels covered by tiles); coverage = Σ w / Σ overlap (share of them with data);
    has_image = Σ w > 0. Regions in ``all_regions`` without tiles get zeros and has_image False.
    """
    region_ids = np.asarray(region_ids, dtype=np.int64)
    emb = np.asarray(tile_embeddings, dtype=np.float64)
    dim = emb.shape[1] if emb.ndim == 2 else 0
    weight = np.asarray(overlap, dtype=np.float64) * np.asarray(valid_fraction, dtype=np.float64)
    ids = np.unique(region_ids if all_regions is None else np.concatenate([region_ids, np.asarray(all_regions, np.int64)]))
    pos = np.searchsorted(ids, region_ids)
    sums = np.zeros((len(ids), dim))
    np.add.at(sums, pos, weight[:, None] * emb[np.asarray(tile_index, dtype=np.int64)])
    wsum = np.bincount(pos, weights=weight, minlength=len(ids))
    osum = np.bincount(pos, weights=np.asarray(overlap, dtype=np.float64), minlength=len(ids))
    vectors = np.divide(sums, wsum[:, None], out=np.zeros_like(sums), where=wsum[:, None] > 0)
    return pd.DataFrame({
        REGION_ID: ids,
        VECTOR: list(vectors.astype(np.float32)),
        N_PIXELS: np.round(osum * tile_pixels).astype(np.int64),
        COVERAGE: np.divide(wsum, osum, out=np.zeros_like(wsum), where=osum > 0),
        HAS_IMAGE: wsum > 0,
    })


@torch.no_grad()
def encode_tiles(encoder: ImageEncoder, pixels: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """``pixels [N, C, H, W]`` -> embeddings ``[N, out_dim]`` float32 (eval mode)."""
    encoder.eval()
    out = [encoder(pixels[i:i + batch_size]) for i in range(0, len(pixels), batch_size)]
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, encoder.out_dim), np.float32)


@torch.no_grad()
def region_image_embeddings(encoder: ImageEncoder, patches_path: Path, batch_size: int = 256,
                            all_regions: Sequence[int] | None = None) -> pd.DataFrame:
    """Stream ``image_patches`` through Petastorm, encode each tile once, pool per region.

    Only tile embeddings (not pixels) are kept in memory.
    """
    encoder.eval()
    cache: dict[tuple[int, int], int] = {}
    embeddings: list[np.ndarray] = []
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    tile_pixels = 0
    for batch in iter_patch_batches(patches_path, batch_size):
        if len(batch.region_id) == 0:
            continue
        tile_pixels = int(batch.pixels.shape[-1] * batch.pixels.shape[-2])
        keys = [(int(r), int(c)) for r, c in batch.tile.tolist()]
        new = [i for i, k in enumerate(keys) if k not in cache and cache.setdefault(k, -1) == -1]
        if new:
            emb = encoder(batch.pixels[new]).numpy().astype(np.float32)
            for j, i in enumerate(new):
                cache[keys[i]] = len(embeddings) + j
            embeddings.extend(emb)
        rows.append((batch.region_id.numpy(), np.asarray([cache[k] for k in keys]),
                     batch.overlap.numpy(), batch.valid_fraction.numpy()))
    if not rows:
        return pool_regions(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0),
                            np.zeros((0, encoder.out_dim)), all_regions=all_regions)
    region_ids, tile_index, overlap, valid_fraction = (np.concatenate(p) for p in zip(*rows))
    log.info("image embeddings: %d tiles encoded for %d rows", len(embeddings), len(region_ids))
    return pool_regions(region_ids, tile_index, overlap, valid_fraction, np.stack(embeddings), tile_pixels=tile_pixels,
                        all_regions=all_regions)


def write_image_embeddings_table(table: pd.DataFrame, directory: Path) -> dict[str, Any]:
    """Write ``table`` into ``directory`` with image_features' schema; returns its manifest facts
    (``table``, ``dim``, ``regions_with_image``). The pretrain stage's runner adds the manifest."""
    import pyarrow as pa

    from landuse.spark.io import write_pandas

    schema = pa.schema([
        pa.field(REGION_ID, pa.int64(), nullable=False),
        pa.field(VECTOR, pa.list_(pa.field("element", pa.float32(), nullable=False)), nullable=False),
        pa.field(N_PIXELS, pa.int64(), nullable=False),
        pa.field(COVERAGE, pa.float64(), nullable=False),
        pa.field(HAS_IMAGE, pa.bool_(), nullable=False),
    ])
    write_pandas(table[[f.name for f in schema]], Path(directory), schema=schema)
    dim = len(table[VECTOR].iloc[0]) if len(table) else 0
    return {"table": T_IMAGE_EMBEDDINGS, "dim": dim, "regions_with_image": int(table[HAS_IMAGE].sum())}


def write_image_embeddings(table: pd.DataFrame, directory: Path, manifest: dict[str, Any]) -> Path:
    """Write ``table`` as a committed ``image_embeddings`` table with ``manifest`` (outside the runner:
    fixtures and the serving tests' work dirs; the pipeline writes it through the pretrain stage)."""
    from landuse.manifest import commit_dir, now_iso, staging_dir, write_manifest

    directory = Path(directory)
    staged = staging_dir(directory)
    facts = write_image_embeddings_table(table, staged)
    write_manifest(staged, {"stage": "pretrain", "rows": len(table), "created": now_iso(), **facts, **manifest})
    commit_dir(staged, directory)
    return directory
