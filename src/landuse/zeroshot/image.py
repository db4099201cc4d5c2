"""Method ``image``: CLIP-style zero-shot land use from the region image tiles.

Every tile of the ``image_patches`` table (stage ``imagery`` with ``embeddings.image.patches``)
that meets a prompted region is shown to the user's CLIP model: the bands named by
``zeroshot.image.rgb_bands`` become R, G, B (the table's band order is the ``patch_bands`` list of
its manifest, else the imagery band map), each band is scaled to 0..1 by its 2nd and 98th
percentiles over the tiles (satellite reflectances are not 8-bit photographs), the tile is resized
to the model's image size and normalised with the checkpoint's CLIP mean/std. Each tile is scored
against ``prompts.class_texts`` (one prompt per class, e.g. "This is an area dominated by
[class]"): softmax over classes of cosine similarity / ``zeroshot.temperature``. A region's
distribution is the mean of its tiles' distributions weighted by ``overlap × valid_fraction`` —
the pooling of H_img (:func:`landuse.pretraining.image_embeddings.pool_regions`); regions without
tiles get a reject row ``no_image``.

Checkpoint format: a Hugging Face CLIP directory as written by ``CLIPModel.save_pretrained`` plus
the tokenizer's ``save_pretrained`` (``config.json``, ``model.safetensors``, tokenizer files,
optionally ``preprocessor_config.json`` for the image mean/std). ``transformers`` is already a
dependency of the project, so CLIP needs nothing new (``open_clip`` is not installed); an
open_clip or OpenAI checkpoint can be converted to this layout once with transformers' conversion
script. Loading is offline (``local_files_only=True``, ``HF_HUB_OFFLINE=1``): nothing is
downloaded, the weights are the user's.

Memory: the three RGB bands of every distinct tile of the prompted regions are held at once
(``tiles × 3 × size²`` float32); the table is read in record batches, never whole.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from landuse.config import Config, ConfigError
from landuse.zeroshot.base import (
    REJECT_COLUMNS,
    RegionPrompts,
    ZeroShotMethod,
    ZeroShotOutput,
    register,
)

log = logging.getLogger(__name__)

T_IMAGE_PATCHES = "image_patches"
PERCENTILES = (2.0, 98.0)  # robust per-band range mapped to 0..1
MAX_PERCENTILE_SAMPLES = 4_000_000  # pixels per band used for the percentiles (evenly spaced beyond this)
_COLUMNS = ["region_id", "tile_row", "tile_col", "overlap", "valid_fraction", "bands", "size", "pixels"]


# --------------------------------------------------------------------------------------------
# Tiles
# --------------------------------------------------------------------------------------------


@dataclass
class RgbTiles:
    """Distinct tiles (R, G, B as configured, raw values) and the (region, tile) memberships."""

    pixels: np.ndarray  # [T, 3, size, size] float32
    memberships: pd.DataFrame  # region_id, tile (index into pixels), overlap, valid_fraction


def patch_band_names(config: Config, patches_dir: Any) -> list[str]:
    """Band names of the patch pixels, in order: the table manifest's ``patch_bands``, else the imagery band map."""
    from landuse.manifest import read_manifest

    manifest = read_manifest(patches_dir) or {}
    if manifest.get("patch_bands"):
        return [str(b) for b in manifest["patch_bands"]]
    source = config.inputs.imagery
    if source is None:
        raise ConfigError(f"{T_IMAGE_PATCHES} at {patches_dir}: no patch_bands in its manifest and no inputs.imagery "
                          "to take the band map from")
    from landuse.features.imagery import BAND_MAPS

    band_map = dict(BAND_MAPS.get(source.adapter, {}))
    given = source.options.get("band_map")
    if isinstance(given, Mapping):
        band_map.update({str(k): int(v) for k, v in given.items()})
    # the imagery stage orders the bands by raster band number (RasterSpec.band_map)
    return [role for role, _ in sorted(band_map.items(), key=lambda item: (item[1], item[0]))]


def rgb_indices(band_names: Sequence[str], rgb_bands: Sequence[str]) -> list[int]:
    """Positions of the R, G, B bands among ``band_names``; a missing one is a ConfigError naming the bands."""
    missing = [b for b in rgb_bands if b not in band_names]
    if missing:
        raise ConfigError(f"zeroshot.image.rgb_bands: band {missing[0]!r} is not in the {T_IMAGE_PATCHES} table "
                          f"(bands available: {', '.join(band_names)})")
    return [list(band_names).index(b) for b in rgb_bands]


def _record_batches(patches_dir: Any, batch_rows: int = 512) -> Any:
    """The patch table's record batches, file by file (local or object store)."""
    import pyarrow.parquet as pq

    from landuse.storage import arrow_filesystem, parquet_files

    for file in parquet_files(patches_dir):
        filesystem, name = arrow_filesystem(file)
        source = name if filesystem is None else filesystem.open_input_file(name)
        yield from pq.ParquetFile(source).iter_batches(batch_size=batch_rows, columns=_COLUMNS)


def read_rgb_tiles(patches_dir: Any, band_names: Sequence[str], rgb_bands: Sequence[str],
                   regions: Sequence[int] | None = None) -> RgbTiles:
    """The R, G, B bands of each distinct tile meeting ``regions`` (all when None), read in record batches."""
    channels = rgb_indices(band_names, rgb_bands)
    wanted = None if regions is None else {int(r) for r in regions}
    position: dict[tuple[int, int], int] = {}
    tiles: list[np.ndarray] = []
    rows: list[tuple[int, int, float, float]] = []
    for batch in _record_batches(patches_dir):
        frame = {name: batch.column(name) for name in _COLUMNS}
        region_ids = frame["region_id"].to_numpy()
        n = len(region_ids)
        if n == 0:
            continue
        bands, size = frame["bands"].to_numpy(), frame["size"].to_numpy()
        if (bands != bands[0]).any() or (size != size[0]).any():
            raise ValueError(f"{T_IMAGE_PATCHES}: rows with different band counts or sizes in one table")
        if int(bands[0]) != len(band_names):
            raise ConfigError(f"{T_IMAGE_PATCHES}: pixels have {int(bands[0])} bands but the band names are "
                              f"{', '.join(band_names)}")
        pixels = frame["pixels"].flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        pixels = pixels.reshape(n, int(bands[0]), int(size[0]), int(size[0]))
        tile_row, tile_col = frame["tile_row"].to_numpy(), frame["tile_col"].to_numpy()
        overlap, valid = frame["overlap"].to_numpy(), frame["valid_fraction"].to_numpy()
        for i in range(n):
            if wanted is not None and int(region_ids[i]) not in wanted:
                continue
            key = (int(tile_row[i]), int(tile_col[i]))
            if key not in position:  # a tile shared by several regions is scored once
                position[key] = len(tiles)
                tiles.append(pixels[i, channels].copy())
            rows.append((int(region_ids[i]), position[key], float(overlap[i]), float(valid[i])))
    stacked = np.stack(tiles) if tiles else np.zeros((0, 3, 1, 1), np.float32)
    memberships = pd.DataFrame(rows, columns=["region_id", "tile", "overlap", "valid_fraction"]).astype(
        {"region_id": "int64", "tile": "int64", "overlap": "float64", "valid_fraction": "float64"})
    return RgbTiles(pixels=stacked, memberships=memberships)


def band_ranges(pixels: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> np.ndarray:
    """Per band ``[low, high]`` percentiles over every tile pixel, shape ``[3, 2]``.

    Pixels that are 0 in every band are left out: the imagery stage writes 0 for padding and nodata
    (edge tiles), and counting them would pull the low percentile to 0.
    """
    flat = pixels.transpose(1, 0, 2, 3).reshape(pixels.shape[1], -1)
    data = flat[:, (flat != 0).any(axis=0)]
    if data.shape[1] == 0:
        data = flat
    if data.shape[1] > MAX_PERCENTILE_SAMPLES:  # evenly spaced: deterministic and bounded
        data = data[:, np.linspace(0, data.shape[1] - 1, MAX_PERCENTILE_SAMPLES).astype(np.int64)]
    if data.shape[1] == 0:
        return np.tile(np.array([0.0, 1.0]), (pixels.shape[1], 1))
    return np.percentile(data, percentiles, axis=1).T.astype(np.float64)


def scale_to_unit(pixels: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """``pixels`` [T, 3, H, W] mapped band-wise from ``ranges`` [3, 2] to 0..1 (clipped)."""
    low = ranges[:, 0][None, :, None, None]
    span = np.maximum(ranges[:, 1] - ranges[:, 0], 1e-12)[None, :, None, None]  # a constant band maps to 0
    return np.clip((pixels - low) / span, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def _features(output: Any) -> torch.Tensor:
    """Projected embeddings from ``get_*_features`` (a tensor in transformers 4, an output object in 5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipScorer:
    """A CLIP model, its tokenizer and image normalisation, loaded offline from a checkpoint directory."""

    def __init__(self, checkpoint: Path, device: str | None = None) -> None:
        checkpoint = Path(checkpoint).expanduser()
        if not checkpoint.is_dir() or not (checkpoint / "config.json").is_file():
            raise ConfigError(f"zeroshot.image.checkpoint: {checkpoint} is not a Hugging Face CLIP directory "
                              "(config.json + weights + tokenizer, as written by save_pretrained)")
        try:
            model_type = json.loads((checkpoint / "config.json").read_text()).get("model_type")
        except ValueError:
            model_type = None
        if model_type != "clip":
            raise ConfigError(f"zeroshot.image.checkpoint: {checkpoint}/config.json has model_type {model_type!r}, "
                              "expected 'clip'")
        os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers/huggingface_hub read it: never download
        from transformers import CLIPModel, CLIPTokenizer
        from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

        try:
            self.tokenizer = CLIPTokenizer.from_pretrained(str(checkpoint), local_files_only=True)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"zeroshot.image.checkpoint: {checkpoint}: cannot load the CLIP tokenizer "
                              f"(vocab.json + merges.txt or tokenizer.json): {str(exc).splitlines()[0]}") from None
        self.model = CLIPModel.from_pretrained(str(checkpoint), local_files_only=True).eval()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.image_size = int(self.model.config.vision_config.image_size)
        self.max_text = int(self.model.config.text_config.max_position_embeddings)
        mean, std = list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD)
        processor = checkpoint / "preprocessor_config.json"
        if processor.is_file():  # the checkpoint's own normalisation, when it ships one
            settings = json.loads(processor.read_text())
            mean, std = settings.get("image_mean", mean), settings.get("image_std", std)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.checkpoint = checkpoint

    def preprocess(self, unit: np.ndarray) -> torch.Tensor:
        """0..1 tiles [B, 3, h, w] -> CLIP ``pixel_values`` [B, 3, S, S] (bicubic resize, mean/std)."""
        x = torch.from_numpy(np.ascontiguousarray(unit, dtype=np.float32))
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = torch.nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic",
                                                align_corners=False, antialias=True).clamp(0.0, 1.0)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings [C, d]."""
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_text,
                                return_tensors="pt").to(self.device)
        out = _features(self.model.get_text_features(input_ids=tokens["input_ids"],
                                                     attention_mask=tokens["attention_mask"]))
        return torch.nn.functional.normalize(out.float(), dim=-1)

    @torch.no_grad()
    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings [B, d]."""
        out = _features(self.model.get_image_features(pixel_values=pixel_values.to(self.device)))
        return torch.nn.functional.normalize(out.float(), dim=-1)

    def tile_probs(self, unit: np.ndarray, texts: Sequence[str], temperature: float, batch_size: int = 64) -> np.ndarray:
        """Per tile, softmax over ``texts`` of cosine similarity / ``temperature``: [T, C] float64."""
        text = self.text_embeddings(texts)
        out = np.zeros((len(unit), len(texts)), dtype=np.float64)
        for start in range(0, len(unit), batch_size):
            image = self.image_embeddings(self.preprocess(unit[start:start + batch_size]))
            logits = image @ text.T / temperature
            out[start:start + len(image)] = torch.softmax(logits.double(), dim=-1).cpu().numpy()
        return out


# --------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------


@register
class ImageZeroShot(ZeroShotMethod):
    """CLIP zero-shot land use from the region image tiles (module docstring)."""

    name = "image"

    def checkpoint(self) -> Path:
        """The configured checkpoint directory (ConfigError when unset)."""
        path = self.config.zeroshot.image.checkpoint
        if path is None:
            raise ConfigError("zeroshot.image.checkpoint: not set; the image method needs your CLIP weights "
                              "(a Hugging Face CLIP directory written by save_pretrained), nothing is downloaded")
        return Path(path)

    def score(self, prompts: RegionPrompts) -> ZeroShotOutput:
        """Pooled per-region CLIP distributions; regions without tiles are rejected (``no_image``)."""
        from landuse.spark.io import require_table
        from landuse.pretraining.image_embeddings import pool_regions

        cfg, checkpoint = self.config.zeroshot.image, self.checkpoint()
        patches_dir = require_table(self.config, T_IMAGE_PATCHES, "imagery")
        band_names = patch_band_names(self.config, patches_dir)
        rgb_indices(band_names, cfg.rgb_bands)  # a wrong band map fails before the model loads
        region_ids = np.asarray(prompts.region_ids, dtype=np.int64)
        tiles = read_rgb_tiles(patches_dir, band_names, cfg.rgb_bands, regions=region_ids.tolist())
        scorer = ClipScorer(checkpoint)
        ranges = band_ranges(tiles.pixels) if len(tiles.pixels) else np.tile([0.0, 1.0], (3, 1))
        tile_probs = scorer.tile_probs(scale_to_unit(tiles.pixels, ranges), prompts.class_texts,
                                       self.config.zeroshot.temperature, cfg.batch_size) if len(tiles.pixels) \
            else np.zeros((0, len(prompts.classes)))
        m = tiles.memberships
        pooled = pool_regions(m["region_id"].to_numpy(), m["tile"].to_numpy(), m["overlap"].to_numpy(),
                              m["valid_fraction"].to_numpy(), tile_probs, all_regions=region_ids.tolist()).set_index("region_id")
        pooled = pooled.loc[region_ids]
        scored = pooled["has_image"].to_numpy(dtype=bool)
        probs = np.zeros((len(region_ids), len(prompts.classes)), dtype=np.float64)
        if scored.any():
            rows = np.stack(pooled["vector"].to_numpy()[scored]).astype(np.float64)
            probs[scored] = rows / rows.sum(axis=1, keepdims=True)  # float32 pooling: back to an exact sum of 1
        rejects = pd.DataFrame({"region_id": region_ids[~scored], "reason": "no_image", "raw": ""},
                               columns=list(REJECT_COLUMNS)).astype({"region_id": "int64"})
        usage = {
            "method": self.name, "checkpoint": str(checkpoint), "device": scorer.device,
            "image_size": scorer.image_size, "rgb_bands": list(cfg.rgb_bands), "band_names": band_names,
            "band_ranges": {b: [round(float(lo), 6), round(float(hi), 6)] for b, (lo, hi) in zip(cfg.rgb_bands, ranges)},
            "percentiles": list(PERCENTILES), "temperature": self.config.zeroshot.temperature,
            "tiles": len(tiles.pixels), "memberships": len(m), "regions": len(region_ids),
            "scored": int(scored.sum()), "rejects": {"no_image": int((~scored).sum())} if not scored.all() else {},
        }
        log.info("image zero-shot: %d tiles, %d/%d regions scored", usage["tiles"], usage["scored"], usage["regions"])
        return ZeroShotOutput(probs=probs, scored=scored, rejects=rejects, usage=usage)
