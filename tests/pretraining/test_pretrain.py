"""MMGR-style pretraining, augmentations, patch streaming and overlap-weighted pooling (tiny, CPU)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from landuse.data.augment import MultispectralAugment
from landuse.data.patches import iter_patch_batches, load_patch_set, token_batch
from landuse.models.encoders import MMGRModel, POISetEncoder, SmallCNN
from landuse.pretraining.image_embeddings import pool_regions, region_image_embeddings, write_image_embeddings
from landuse.pretraining.pretrain import PretrainSettings, latest_checkpoint, nt_xent, pretrain

BANDS, SIZE = 4, 16


def synthetic_tiles(n: int = 42, seed: int = 0) -> tuple[torch.Tensor, list[list[int]], np.ndarray]:
    """Three 'land uses' as textures (stripes, checker, smooth + band ratio) with correlated POI tokens."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    pixels, tokens, kinds = [], [], []
    for i in range(n):
        kind = i % 3
        base = [np.sin(yy * 1.5 + rng.uniform(0, 6)), ((yy // 2 + xx // 2) % 2) * 2 - 1.0,
                np.cos(xx * 0.3 + rng.uniform(0, 6)) * 0.3][kind]
        tile = np.stack([base * (b + 1) * (0.5 if kind == 2 else 1) + rng.normal(0, 0.2, (SIZE, SIZE)) for b in range(BANDS)])
        pixels.append(tile.astype(np.float32))
        tokens.append([] if i % 7 == 6 else list(rng.choice([3 * kind, 3 * kind + 1, 3 * kind + 2], size=rng.integers(1, 5))))
        kinds.append(kind)
    return torch.from_numpy(np.stack(pixels)), tokens, np.asarray(kinds)


def make_model(seed: int = 0) -> MMGRModel:
    torch.manual_seed(seed)
    return MMGRModel(SmallCNN(BANDS, width=8, out_dim=16), POISetEncoder(9, emb_dim=8, out_dim=16), proj_dim=16)


def test_nt_xent_matches_hand_computation() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    tau = 0.5
    z = [np.array(v) / np.linalg.norm(v) for v in ([1, 0], [0, 1], [1, 1], [0, 1])]
    positive = {0: 2, 1: 3, 2: 0, 3: 1}
    losses = []
    for i in range(4):
        logits = {k: float(z[i] @ z[k]) / tau for k in range(4) if k != i}
        losses.append(-(logits[positive[i]] - math.log(sum(math.exp(v) for v in logits.values()))))
    assert float(nt_xent(a, b, tau)) == pytest.approx(np.mean(losses), rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        nt_xent(a[:1], b[:1])


def test_augment_keeps_shape_and_is_seeded() -> None:
    x, _, _ = synthetic_tiles(6)
    aug = MultispectralAugment(band_dropout=0.5)
    one = aug(x, torch.Generator().manual_seed(3))
    two = aug(x, torch.Generator().manual_seed(3))
    other = aug(x, torch.Generator().manual_seed(4))
    assert one.shape == x.shape and one.dtype == x.dtype
    assert torch.equal(one, two) and not torch.equal(one, other)
    # band dropout keeps at least one band per sample
    dropped = MultispectralAugment(crop_scale=(1, 1), hflip=0, vflip=0, gain=0, offset=0, band_dropout=1.0)(x, torch.Generator().manual_seed(0))
    assert ((dropped.abs().sum(dim=(-2, -1)) > 0).sum(1) == 1).all()
    identity = MultispectralAugment(crop_scale=(1, 1), crop_ratio=(1, 1), hflip=0, vflip=0, gain=0, offset=0, band_dropout=0)
    assert torch.allclose(identity(x, torch.Generator().manual_seed(0)), x, atol=1e-5)


def test_pretraining_loss_decreases() -> None:
    pixels, tokens, _ = synthetic_tiles()
    model = make_model()
    model.image_encoder.set_normalization(*[s for s in (pixels.mean((0, 2, 3)), pixels.std((0, 2, 3)))])
    history = pretrain(model, pixels, tokens, PretrainSettings(epochs=5, batch_size=14, lr=3e-3))
    assert len(history) == 5 and all(np.isfinite(history))
    assert history[-1] < history[0]


def test_resume_after_interruption_matches_uninterrupted(tmp_path) -> None:
    torch.set_num_threads(1)
    pixels, tokens, _ = synthetic_tiles(20)
    settings = PretrainSettings(epochs=4, batch_size=8, lr=2e-3, seed=1)
    full = make_model()
    want = pretrain(full, pixels, tokens, settings, checkpoint_dir=tmp_path / "a")
    first = pretrain(make_model(), pixels, tokens, settings, checkpoint_dir=tmp_path / "b", stop_after=2)
    assert len(first) == 2 and latest_checkpoint(tmp_path / "b").name == "epoch-0002.pt"
    resumed = make_model(seed=99)  # fresh weights: everything must come from the checkpoint
    got = pretrain(resumed, pixels, tokens, settings, checkpoint_dir=tmp_path / "b")
    assert got == pytest.approx(want, rel=0, abs=1e-6)
    for (name, p), q in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(p.float(), q.float(), atol=1e-6), name
    with pytest.raises(ValueError, match="other settings"):
        pretrain(make_model(), pixels, tokens, PretrainSettings(epochs=5, batch_size=8, lr=1e-2, seed=1), checkpoint_dir=tmp_path / "b")


def test_incomplete_last_batch_and_batch_of_one(caplog) -> None:
    pixels, tokens, _ = synthetic_tiles(9)
    # 9 = 4 + 4 + 1: the batch of one is skipped with a note; 9 = 5 + 4 trains on all
    with caplog.at_level("INFO", logger="landuse.pretraining.pretrain"):
        history = pretrain(make_model(), pixels, tokens, PretrainSettings(epochs=1, batch_size=4))
    assert np.isfinite(history[0])
    assert "skips a batch of 1 sample" in caplog.text
    assert np.isfinite(pretrain(make_model(), pixels, tokens, PretrainSettings(epochs=1, batch_size=5))[0])


def test_overlap_weighted_pooling_by_hand() -> None:
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    # region 10: tile 0 (overlap 1, valid 1) + tile 1 (overlap 0.5, valid 0.5) -> weights 1, 0.25
    # region 20: tile 2 (overlap 0.4, valid 0) -> no valid pixels; region 30: no tiles
    table = pool_regions(np.array([10, 10, 20]), np.array([0, 1, 2]), np.array([1.0, 0.5, 0.4]),
                         np.array([1.0, 0.5, 0.0]), emb, tile_pixels=4, all_regions=[10, 20, 30])
    assert table["region_id"].tolist() == [10, 20, 30]
    np.testing.assert_allclose(table["vector"][0], [1 / 1.25, 0.25 / 1.25], rtol=1e-6)
    np.testing.assert_allclose(table["vector"][1], [0, 0])
    assert table["has_image"].tolist() == [True, False, False]
    assert table["n_pixels"].tolist() == [6, 2, 0]
    np.testing.assert_allclose(table["coverage"], [1.25 / 1.5, 0, 0])


def _write_patch_table(path, pixels: torch.Tensor, rows: list[tuple[int, int, int, float, float]]) -> None:
    """image_patches rows (region, tile_row, tile_col, overlap, valid) with tile i = tile_row * 10 + tile_col."""
    path.mkdir(parents=True)
    frame = pd.DataFrame({
        "region_id": np.array([r[0] for r in rows], np.int64), "tile_row": np.array([r[1] for r in rows], np.int32),
        "tile_col": np.array([r[2] for r in rows], np.int32), "overlap": np.array([r[3] for r in rows], np.float32),
        "valid_fraction": np.array([r[4] for r in rows], np.float32), "bands": np.full(len(rows), BANDS, np.int32),
        "size": np.full(len(rows), SIZE, np.int32),
        "pixels": [pixels[r[1] * 10 + r[2]].numpy().ravel() for r in rows],
    })
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path / "part-0.parquet", row_group_size=3)


def test_patch_stream_and_region_embeddings(tmp_path) -> None:
    pixels, _, _ = synthetic_tiles(12)
    rows = [(1, 0, 0, 1.0, 1.0), (1, 0, 1, 0.5, 1.0), (2, 0, 1, 0.5, 1.0), (2, 1, 0, 0.2, 0.5), (3, 1, 1, 1.0, 1.0)]
    path = tmp_path / "image_patches"
    _write_patch_table(path, pixels, rows)
    batches = list(iter_patch_batches(path, batch_size=2))
    assert sum(len(b.region_id) for b in batches) == 5 and batches[0].pixels.shape[1:] == (BANDS, SIZE, SIZE)
    patch_set = load_patch_set(path, batch_size=2)
    assert patch_set.tiles.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert torch.equal(patch_set.pixels[2], pixels[10])
    encoder = SmallCNN(BANDS, width=8, out_dim=6).eval()
    table = region_image_embeddings(encoder, path, batch_size=2, all_regions=[1, 2, 3, 4])
    with torch.no_grad():
        e = encoder(torch.stack([pixels[0], pixels[1], pixels[10]])).numpy()
    np.testing.assert_allclose(table["vector"][0], (e[0] + 0.5 * e[1]) / 1.5, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(table["vector"][1], (0.5 * e[1] + 0.1 * e[2]) / 0.6, rtol=1e-4, atol=1e-6)
    assert table["has_image"].tolist() == [True, True, True, False]
    out = write_image_embeddings(table, tmp_path / "tables" / "image_embeddings", {"encoder": "smallcnn"})
    written = pq.read_table(out)
    assert written.schema.field("vector").type == pa.list_(pa.field("element", pa.float32(), nullable=False))
    assert written.num_rows == 4 and (out / "_manifest.json").is_file()


def test_token_batch() -> None:
    # POIs -> tiles (the former tiles_of_pixels) is covered against Spark in test_patches_spark.py
    tokens, index = token_batch([[2, 3], [], [1]])
    assert tokens.tolist() == [2, 3, 1] and index.tolist() == [0, 0, 2]


# ---------------------------------------------------------------------------------------------
# settings: the config's `pretrain` section; the command's flags are overrides of its keys
# ---------------------------------------------------------------------------------------------


def test_pretrain_defaults_are_the_former_flag_defaults_and_every_key_has_a_flag() -> None:
    from dataclasses import fields

    from landuse.config import PretrainConfig
    from landuse.entrypoints.pretrain import SETTINGS, build_parser

    cfg = PretrainConfig()
    assert (cfg.encoder, cfg.epochs, cfg.batch_size, cfg.lr, cfg.tau, cfg.w_intra, cfg.w_inter) == \
        ("smallcnn", 10, 64, 1e-3, 0.5, 0.5, 0.5)
    assert (cfg.crop_min, cfg.jitter_gain, cfg.jitter_offset, cfg.band_dropout, cfg.poi_pooling, cfg.device) == \
        (0.5, 0.05, 0.1, 0.1, "set2set", "cpu")
    assert cfg.poi_level is cfg.seed is cfg.checkpoint_dir is cfg.external is cfg.band_map is None
    assert dict(cfg.encoder_args) == {} and cfg.track
    dests = {a.dest for a in build_parser()._actions} - {"help", "config", "force", "overrides"}
    assert dests == set(SETTINGS) == {f.name for f in fields(PretrainConfig)}
    # no flag given: no override, the config files' values stand
    assert all(getattr(build_parser().parse_args(["--config", "x.yaml"]), key) is None for key in SETTINGS)


def test_pretrain_flags_equal_key_value_overrides(repo_root, tmp_path) -> None:
    from landuse.config import load_config
    from landuse.entrypoints.pretrain import build_parser, settings_overrides

    conf = str(repo_root / "conf/synthetic_london.yaml")
    args = build_parser().parse_args([
        "--config", conf, "--encoder", "resnet50", "--encoder-args", '{"layers": [1, 1, 1, 1], "small_input": true}',
        "--epochs", "5", "--batch-size", "16", "--lr", "1e-5", "--tau", "0.2", "--w-intra", "0.3", "--w-inter", "0.7",
        "--crop-min", "0.4", "--jitter-gain", "0.2", "--jitter-offset", "0.05", "--band-dropout", "0.25",
        "--poi-pooling", "attention", "--poi-level", "2", "--seed", "7", "--device", "cuda",
        "--checkpoint-dir", str(tmp_path / "ck"), "--external", str(tmp_path / "enc.pt"),
        "--band-map", '{"0": "red", "1": 2}', "--no-track", f"work_dir={tmp_path}"])
    keys = ["pretrain.encoder=resnet50", "pretrain.encoder_args={layers: [1, 1, 1, 1], small_input: true}",
            "pretrain.epochs=5", "pretrain.batch_size=16", "pretrain.lr=1e-5", "pretrain.tau=0.2",
            "pretrain.w_intra=0.3", "pretrain.w_inter=0.7", "pretrain.crop_min=0.4", "pretrain.jitter_gain=0.2",
            "pretrain.jitter_offset=0.05", "pretrain.band_dropout=0.25", "pretrain.poi_pooling=attention",
            "pretrain.poi_level=2", "pretrain.seed=7", "pretrain.device=cuda", f"pretrain.checkpoint_dir={tmp_path}/ck",
            f"pretrain.external={tmp_path}/enc.pt", 'pretrain.band_map={"0": red, "1": 2}', "pretrain.track=false",
            f"work_dir={tmp_path}"]
    by_flags = load_config(conf, settings_overrides(args) + args.overrides, check_inputs=False)
    by_keys = load_config(conf, keys, check_inputs=False)
    assert by_flags.to_dict() == by_keys.to_dict()
    assert by_flags.pretrain.lr == 1e-5 and dict(by_flags.pretrain.band_map) == {"0": "red", "1": 2}
    assert dict(by_flags.pretrain.encoder_args) == {"layers": [1, 1, 1, 1], "small_input": True}
    assert by_flags.to_dict()["pretrain"] != load_config(conf, [f"work_dir={tmp_path}"], check_inputs=False).to_dict()["pretrain"]
    # a trailing key=value wins over the flag
    args = build_parser().parse_args(["--config", conf, "--epochs", "5", "pretrain.epochs=6"])
    assert load_config(conf, settings_overrides(args) + args.overrides, check_inputs=False).pretrain.epochs == 6


@pytest.mark.parametrize("argv, expected", [
    (["--epochs", "-1"], "pretrain.epochs: must be >= 0"),
    (["pretrain.epochs=many"], "pretrain.epochs: expected an integer"),
    (["--band-dropout", "1.5"], "pretrain.band_dropout: must be a probability in [0, 1], got 1.5"),
    (["--crop-min", "0"], "pretrain.crop_min: must be in (0, 1]"),
    (["--w-intra", "0", "--w-inter", "0"], "pretrain.w_inter: w_intra and w_inter must not both be 0"),
    (["--poi-level", "4"], "pretrain.poi_level: must be 1, 2 or 3"),
    (["--external", "enc.pt"], "pretrain.band_map: external and band_map go together"),
    (["pretrain.encoder=vgg"], "pretrain.encoder: 'vgg' is not one of smallcnn, resnet50, vit"),
    (["--encoder-args", "{width: 3"], "--encoder-args: not JSON"),
    (["pretrain.encoder_args=3"], "pretrain.encoder_args: expected a mapping"),
])
def test_bad_pretrain_setting_is_a_one_line_error_naming_the_key(repo_root, tmp_path, capsys, argv, expected) -> None:
    from landuse.entrypoints.pretrain import main

    code = main(["--config", str(repo_root / "conf/synthetic_london.yaml"), f"work_dir={tmp_path}", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and expected in err, err


def test_resolved_config_json_holds_the_pretrain_and_transfer_sections(repo_root, tmp_path) -> None:
    import json

    from landuse.entrypoints.common import load_from_args
    from landuse.entrypoints.pretrain import build_parser, settings_overrides

    args = build_parser().parse_args(["--config", str(repo_root / "conf/synthetic_london.yaml"), "--epochs", "5",
                                      "--no-track", f"work_dir={tmp_path}", "pretrain.lr=0.01"])
    load_from_args(args, settings_overrides(args))
    resolved = json.loads((tmp_path / "resolved_config.json").read_text())
    assert resolved["pretrain"]["epochs"] == 5 and resolved["pretrain"]["lr"] == 0.01
    assert resolved["pretrain"]["track"] is False and resolved["pretrain"]["batch_size"] == 64
    assert resolved["transfer"]["fractions"] == [0.1, 0.3, 0.5, 0.7, 0.9] and resolved["transfer"]["source_config"] == []


def test_pretrain_settings_change_the_image_embeddings_config_hash(repo_root, tmp_path) -> None:
    """The pretrain stage's config hash covers PRETRAIN_CONFIG_KEYS; assemble (encoder H_img) depends on the stage."""
    from landuse.config import load_config
    from landuse.pretraining.image_embeddings import PRETRAIN_CONFIG_KEYS

    def config(*overrides: str):
        return load_config(repo_root / "conf/synthetic_london.yaml",
                           [f"work_dir={tmp_path}", "embeddings.image.source=encoder", *overrides], check_inputs=False)

    def digest(cfg) -> str:
        return cfg.section_hash(*PRETRAIN_CONFIG_KEYS)

    base = config()
    for changed in ("pretrain.lr=0.01", "pretrain.epochs=11", "pretrain.band_dropout=0.2", "seed=7",
                    "embeddings.poi.level=2", "pretrain.encoder_args={width: 32}"):
        assert digest(config(changed)) != digest(base), changed
    for unrelated in ("training.lr=0.01", "assemble.shard_rows=8192"):
        assert digest(config(unrelated)) == digest(base), unrelated
    # assemble depends on the pretrain stage (whose fingerprint is these keys' hash) when H_img comes from
    # the encoder, so a changed setting reruns pretrain and assemble (tests/stages/test_dag_e2e.py runs it)
    from landuse.stages import STAGES

    assert "pretrain" in STAGES["assemble"].upstream and STAGES["pretrain"].config_keys == PRETRAIN_CONFIG_KEYS
    assert STAGES["pretrain"].enabled(base) and not STAGES["pretrain"].enabled(config("embeddings.image.source=statistics"))
