"""Method ``image``: a tiny CLIP checkpoint written by the test, scored on a hand-made image_patches table."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest
import torch

from landuse.config import Config, ConfigError, ImageZeroShotConfig, ZeroShotConfig
from landuse.zeroshot.base import RegionPrompts, method
from landuse.zeroshot.image import ClipScorer, ImageZeroShot, band_ranges, scale_to_unit

CLASSES = ["Residential", "Commercial", "Industrial"]
BANDS = ["blue", "green", "red", "nir"]  # the table's band order (manifest patch_bands)
SIZE = 16  # tile pixels; the model sees 32 (resized)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """ClipScorer sets HF_HUB_OFFLINE=1; restore the environment after each test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight CLIP with tiny text/vision towers and a character-level CLIP tokenizer, saved offline."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    directory = tmp_path_factory.mktemp("clip")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {token: i for i, token in enumerate(letters + [f"{c}</w>" for c in letters]
                                                + ["<|startoftext|>", "<|endoftext|>"])}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")  # no merges: character tokens
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), unk_token="<|endoftext|>")
    tokenizer.save_pretrained(str(directory))
    eos, bos = vocab["<|endoftext|>"], vocab["<|startoftext|>"]
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 64, "eos_token_id": eos,
                     "bos_token_id": bos, "pad_token_id": eos},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(str(directory))
    return directory


def write_patches(work: Path, rows: list[tuple[int, int, int, float, float, np.ndarray]], manifest: bool = True) -> None:
    """An image_patches table as the imagery stage writes it (schema IMAGE_PATCHES_SCHEMA) plus its manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from landuse.constants import MANIFEST_FILE

    table = pa.table({
        "region_id": pa.array([r[0] for r in rows], pa.int64()),
        "tile_row": pa.array([r[1] for r in rows], pa.int32()),
        "tile_col": pa.array([r[2] for r in rows], pa.int32()),
        "overlap": pa.array([r[3] for r in rows], pa.float32()),
        "valid_fraction": pa.array([r[4] for r in rows], pa.float32()),
        "bands": pa.array([len(BANDS)] * len(rows), pa.int32()),
        "size": pa.array([SIZE] * len(rows), pa.int32()),
        "pixels": pa.array([r[5].astype(np.float32).ravel().tolist() for r in rows], pa.list_(pa.float32())),
    })
    out = work / "tables" / "image_patches"
    out.mkdir(parents=True)
    pq.write_table(table, out / "part-00000.parquet", row_group_size=2)  # several record batches
    if manifest:
        (out / MANIFEST_FILE).write_text(json.dumps({"patch_bands": BANDS, "patch_size": SIZE}))


def tile(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(100, 3000, size=(len(BANDS), SIZE, SIZE)).astype(np.float32)


def config(work: Path, checkpoint: Path | None, **image: object) -> Config:
    return Config(name="zs", work_dir=work, zeroshot=ZeroShotConfig(
        method="image", temperature=0.05, image=ImageZeroShotConfig(checkpoint=checkpoint, batch_size=2, **image)))


def prompts(region_ids: list[int]) -> RegionPrompts:
    return RegionPrompts(region_ids=np.asarray(region_ids, dtype=np.int64), paragraphs=[""] * len(region_ids),
                         prompts=[""] * len(region_ids), classes=list(CLASSES),
                         class_texts=[f"this is an area dominated by {c.lower()}" for c in CLASSES])


def test_pooled_tile_scores(tmp_path: Path, checkpoint: Path) -> None:
    tiles = {key: tile(i) for i, key in enumerate([(0, 0), (0, 1), (1, 0), (5, 5)])}
    rows = [(1, 0, 0, 1.0, 1.0, tiles[(0, 0)]), (1, 0, 1, 0.5, 0.8, tiles[(0, 1)]),
            (2, 0, 1, 0.5, 0.8, tiles[(0, 1)]),  # tile (0, 1) shared by regions 1 and 2
            (2, 1, 0, 0.25, 1.0, tiles[(1, 0)]), (9, 5, 5, 1.0, 1.0, tiles[(5, 5)])]  # region 9 not prompted
    write_patches(tmp_path, rows)
    scorer = method("image", config(tmp_path, checkpoint))
    assert isinstance(scorer, ImageZeroShot)
    out = scorer.score(prompts([2, 1, 3]))  # region 3 has no tiles

    assert out.probs.shape == (3, 3) and out.scored.tolist() == [True, True, False]
    np.testing.assert_allclose(out.probs.sum(axis=1), [1, 1, 0], atol=1e-9)
    assert out.rejects.to_dict("records") == [{"region_id": 3, "reason": "no_image", "raw": ""}]
    assert out.usage["tiles"] == 3 and out.usage["memberships"] == 4 and out.usage["image_size"] == 32
    assert out.usage["rejects"] == {"no_image": 1} and json.loads(json.dumps(out.usage))["scored"] == 2

    # the same numbers straight from the model: RGB = red, green, blue = bands 2, 1, 0, 2-98 % per band
    # over the three distinct tiles, CLIP forward, softmax(cos / T), overlap x valid_fraction mean
    from transformers import CLIPModel, CLIPTokenizer

    rgb = np.stack([tiles[k][[2, 1, 0]] for k in [(0, 0), (0, 1), (1, 0)]])
    lo, hi = np.percentile(rgb.transpose(1, 0, 2, 3).reshape(3, -1), [2, 98], axis=1)
    unit = np.clip((rgb - lo[None, :, None, None]) / (hi - lo)[None, :, None, None], 0, 1)
    clip = ClipScorer(checkpoint, device="cpu")
    pixel_values = clip.preprocess(unit)
    assert pixel_values.shape == (3, 3, 32, 32)
    restored = pixel_values * clip.std + clip.mean  # CLIP mean/std undone: 0..1 again
    assert restored.min() >= -1e-5 and restored.max() <= 1 + 1e-5
    model = CLIPModel.from_pretrained(str(checkpoint), local_files_only=True).eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(checkpoint), local_files_only=True)
    text = tokenizer(prompts([1]).class_texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        direct = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"], pixel_values=pixel_values)
    per_tile = torch.softmax(direct.image_embeds @ direct.text_embeds.T / 0.05, dim=-1).numpy()
    assert not np.allclose(per_tile[0], per_tile[1], atol=1e-3)  # tiles differ: pooling is tested for real
    region1 = (1.0 * per_tile[0] + 0.4 * per_tile[1]) / 1.4
    region2 = (0.4 * per_tile[1] + 0.25 * per_tile[2]) / 0.65
    np.testing.assert_allclose(out.probs[0], region2, atol=1e-5)
    np.testing.assert_allclose(out.probs[1], region1, atol=1e-5)


def test_scaling_ignores_padding_and_maps_to_unit() -> None:
    pixels = np.stack([np.random.default_rng(0).uniform(10, 20, size=(3, 8, 8))]).astype(np.float32)
    pixels[0, :, :2, :] = 0  # padding rows (0 in every band) do not drag the low percentile down
    ranges = band_ranges(pixels)
    assert (ranges[:, 0] > 10).all() and (ranges[:, 1] < 20).all()
    unit = scale_to_unit(pixels, ranges)
    assert unit.min() == 0 and unit.max() == 1 and unit.dtype == np.float32


def test_missing_band_and_missing_checkpoint(tmp_path: Path, checkpoint: Path) -> None:
    write_patches(tmp_path, [(1, 0, 0, 1.0, 1.0, tile(0))])
    with pytest.raises(ConfigError, match=r"band 'swir1' is not in the image_patches table \(bands available: "
                                          r"blue, green, red, nir\)"):
        method("image", config(tmp_path, checkpoint, rgb_bands=("red", "green", "swir1"))).score(prompts([1]))
    with pytest.raises(ConfigError, match="zeroshot.image.checkpoint: not set.*your CLIP weights") as info:
        method("image", config(tmp_path, None)).score(prompts([1]))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="not a Hugging Face CLIP directory"):
        method("image", config(tmp_path, tmp_path / "openai/clip-vit-base-patch32")).score(prompts([1]))


def test_band_order_from_the_imagery_band_map(tmp_path: Path, checkpoint: Path) -> None:
    """Without patch_bands in the manifest the bands come from inputs.imagery (ordered by band number)."""
    from landuse.config import InputsConfig, SourceConfig
    from landuse.zeroshot.image import patch_band_names

    write_patches(tmp_path, [(1, 0, 0, 1.0, 1.0, tile(0))], manifest=False)
    band_map = MappingProxyType({"nir": 4, "red": 3, "green": 2, "blue": 1})  # frozen, as loaded configs are
    cfg = Config(name="zs", work_dir=tmp_path, inputs=InputsConfig(imagery=SourceConfig(
        path=tmp_path / "x.tif", adapter="raster", options=MappingProxyType({"band_map": band_map}))))
    assert patch_band_names(cfg, tmp_path / "tables" / "image_patches") == BANDS
    with pytest.raises(ConfigError, match="no patch_bands"):
        patch_band_names(config(tmp_path, checkpoint), tmp_path / "tables" / "image_patches")
