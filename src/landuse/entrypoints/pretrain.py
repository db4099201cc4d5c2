"""``landuse run pretrain``: MMGR-style encoder pretraining and H_img from the encoder (``image_embeddings``).

Reads ``image_patches`` (imagery stage, ``embeddings.image.patches``) and ``poi_regions`` (pois
stage; with Spark: the POIs are placed on tiles on the executors and only per-tile token counts
reach the driver, see :func:`landuse.data.patches.poi_tile_tokens`); pretrains an image encoder
with intra- (two augmentations) and inter-modal (tile vs. its POI set) NT-Xent, or loads an
external checkpoint (``pretrain.external`` + ``pretrain.band_map``); then encodes every tile and
pools per region weighted by overlap × valid fraction into ``tables/image_embeddings`` (the
columns of ``image_features``). Settings are the config's ``pretrain`` section; each flag sets one
of its keys (``--epochs 5`` is ``pretrain.epochs=5``). The run is tracked in MLflow and resumes
from the latest checkpoint in ``pretrain.checkpoint_dir``; the ``image_embeddings`` manifest
records the hash of the settings (``config_hash``), so assemble's fingerprint follows them.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, fields
from pathlib import Path

from landuse.config import ConfigError, PretrainConfig
from landuse.entrypoints.common import add_config_args, flag_overrides, guarded, load_from_args
from landuse.training.signals import kill_runs_on_sigterm

log = logging.getLogger(__name__)
SETTINGS = tuple(f.name for f in fields(PretrainConfig))  # every key of `pretrain`; each flag's dest is one


def build_parser() -> argparse.ArgumentParser:
    """The pretrain command's arguments: each settings flag sets the ``pretrain`` key of its dest."""
    parser = argparse.ArgumentParser(prog="landuse run pretrain",
                                     description="MMGR-style image-encoder pretraining; H_img from the encoder")
    add_config_args(parser)
    flags = parser.add_argument_group("settings", "each flag sets pretrain.<key> (defaults: the config's pretrain "
                                                  "section); a trailing pretrain.<key>=value wins over the flag")
    # default None everywhere: an absent flag must not override the config files' value
    flags.add_argument("--encoder", default=None, choices=["smallcnn", "resnet50", "vit"],
                       help="image encoder (smallcnn for CPU; resnet50 / vit for GPU) (pretrain.encoder)")
    flags.add_argument("--encoder-args", default=None, metavar="JSON",
                       help='architecture arguments, e.g. \'{"width": 64}\' or \'{"layers": [1,1,1,1], "small_input": true}\' '
                            "(pretrain.encoder_args)")
    flags.add_argument("--epochs", type=int, default=None, help="pretraining epochs (pretrain.epochs, 10)")
    flags.add_argument("--batch-size", type=int, default=None, help="tiles per batch (pretrain.batch_size, 64)")
    flags.add_argument("--lr", type=float, default=None, help="Adam learning rate (pretrain.lr, 1e-3)")
    flags.add_argument("--tau", type=float, default=None, help="NT-Xent temperature (pretrain.tau, 0.5)")
    flags.add_argument("--w-intra", type=float, default=None, help="weight of image-image NT-Xent (pretrain.w_intra, 0.5)")
    flags.add_argument("--w-inter", type=float, default=None, help="weight of image-POI NT-Xent (pretrain.w_inter, 0.5)")
    flags.add_argument("--crop-min", type=float, default=None,
                       help="smallest random-resized-crop area fraction (pretrain.crop_min, 0.5)")
    flags.add_argument("--jitter-gain", type=float, default=None,
                       help="band-wise gain jitter 1 ± U(gain) (pretrain.jitter_gain, 0.05)")
    flags.add_argument("--jitter-offset", type=float, default=None,
                       help="band-wise offset jitter, in band stds (pretrain.jitter_offset, 0.1)")
    flags.add_argument("--band-dropout", type=float, default=None,
                       help="probability a band is dropped (set to its mean) (pretrain.band_dropout, 0.1)")
    flags.add_argument("--poi-pooling", default=None, choices=["set2set", "attention"],
                       help="pooling of a tile's POI set (pretrain.poi_pooling, set2set)")
    flags.add_argument("--poi-level", type=int, default=None,
                       help="POI category level (pretrain.poi_level; default embeddings.poi.level)")
    flags.add_argument("--seed", type=int, default=None, help="pretraining seed (pretrain.seed; default: the config's seed)")
    flags.add_argument("--device", default=None, help="torch device: cpu, cuda (pretrain.device, cpu)")
    flags.add_argument("--checkpoint-dir", default=None,
                       help="checkpoints (pretrain.checkpoint_dir; default <work_dir>/checkpoints/pretrain)")
    flags.add_argument("--external", default=None, metavar="PATH",
                       help="encoder state_dict to use instead of pretraining (pretrain.external)")
    flags.add_argument("--band-map", default=None, metavar="JSON",
                       help='with --external: encoder channel -> raster band role or 0-based index, e.g. '
                            '\'{"0": "red", "1": "green", "2": "blue"}\' (pretrain.band_map)')
    flags.add_argument("--no-track", dest="track", action="store_const", const=False, default=None,
                       help="do not log to MLflow (pretrain.track=false)")
    return parser


def _json(text: str, flag: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{flag}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{flag}: expected a JSON object, got {text!r}")
    return value


def settings_overrides(args: argparse.Namespace) -> list[str]:
    """The ``pretrain.<key>=value`` overrides of the settings flags given in ``args`` (JSON flags parsed)."""
    parsed = argparse.Namespace(**vars(args))
    for key, flag in (("encoder_args", "--encoder-args"), ("band_map", "--band-map")):
        if getattr(args, key) is not None:
            setattr(parsed, key, _json(getattr(args, key), flag))
    return flag_overrides(parsed, "pretrain", SETTINGS)


@kill_runs_on_sigterm  # SIGTERM ends the MLflow runs KILLED instead of leaving them RUNNING
def main(argv: list[str] | None = None) -> int:
    """``landuse run pretrain --config conf/X.yaml [--encoder smallcnn] [--epochs 10] [pretrain.key=value ...]``."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        import contextlib

        import pyarrow.parquet as pq
        import torch

        from landuse.data.augment import MultispectralAugment
        from landuse.data.patches import load_training_patches
        from landuse.models.encoders import MMGRModel, POISetEncoder, load_external_encoder, make_encoder
        from landuse.spark.session import build_session
        from landuse.training.image_embeddings import (
            PRETRAIN_CONFIG_KEYS, T_IMAGE_EMBEDDINGS, region_image_embeddings, write_image_embeddings,
        )
        from landuse.training.pretrain import PretrainSettings, pretrain

        config = load_from_args(args, settings_overrides(args))
        cfg = config.pretrain
        if config.inputs.imagery is None:
            raise ConfigError("inputs.imagery: pretrain needs a raster (and the imagery stage's image_patches)")
        encoder_kw = dict(cfg.encoder_args)
        seed = config.seed if cfg.seed is None else cfg.seed
        torch.manual_seed(seed)
        level = cfg.poi_level or config.embeddings.poi.level
        start = time.time()
        spark = build_session(config)  # the POIs are placed on tiles by Spark (only per-tile counts are collected)
        try:
            patches, stride, roles = load_training_patches(config.tables_dir, str(config.inputs.imagery.path), level,
                                                           spark=spark)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        checkpoint_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else config.driver_dir / "checkpoints" / "pretrain"
        # ranges checked by PretrainConfig: no ValueError here
        augment = MultispectralAugment(crop_scale=(cfg.crop_min, 1.0), gain=cfg.jitter_gain,
                                       offset=cfg.jitter_offset, band_dropout=cfg.band_dropout)
        settings = PretrainSettings(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, tau=cfg.tau,
                                    w_intra=cfg.w_intra, w_inter=cfg.w_inter, seed=seed)
        external = str(cfg.external) if cfg.external is not None else ""
        band_map = json.dumps(dict(cfg.band_map)) if cfg.band_map is not None else ""
        tracking = contextlib.nullcontext()
        mlflow = None
        if cfg.track:
            import mlflow

            from landuse.training.tracking import setup_mlflow

            setup_mlflow(config)
            tracking = mlflow.start_run(run_name=f"pretrain-{external and 'external' or cfg.encoder}")
        with tracking:
            if external:
                try:
                    encoder = load_external_encoder(external, cfg.encoder, dict(cfg.band_map or {}),
                                                    in_bands=patches.bands, band_roles=roles, **encoder_kw)
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"pretrain.external: {exc}") from None
                history: list[float] = []
            else:
                encoder = make_encoder(cfg.encoder, patches.bands, **encoder_kw)
                encoder.set_normalization(*patches.band_stats())
                model = MMGRModel(encoder, POISetEncoder(max(len(patches.vocabulary), 1), pooling=cfg.poi_pooling))
                model.to(cfg.device)
                try:
                    history = pretrain(model, patches.pixels.to(cfg.device), patches.poi_tokens, settings,
                                       augment=augment, checkpoint_dir=checkpoint_dir, tracker=mlflow)
                except ValueError as exc:  # a checkpoint written with other settings
                    raise ConfigError(str(exc)) from None
                encoder = model.image_encoder.to("cpu")
            params = {"encoder": cfg.encoder, "encoder_args": json.dumps(encoder_kw), "external": external,
                      "band_map": band_map, "poi_level": level, "poi_pooling": cfg.poi_pooling,
                      "tiles": len(patches), "tile_stride": stride, **{k: v for k, v in vars(settings).items()},
                      **{f"augment_{k}": v for k, v in asdict(augment).items()}}
            if mlflow is not None:
                mlflow.log_params({k: str(v) for k, v in params.items()})
            regions_dir = config.tables_dir / "regions"
            all_regions = pq.read_table(regions_dir, columns=["region_id"]).column(0).to_numpy() if regions_dir.is_dir() else None
            table = region_image_embeddings(encoder, config.tables_dir / "image_patches", all_regions=all_regions)
            # the settings' hash: a changed pretrain setting changes this manifest, so assemble
            # (whose inputs include it with embeddings.image.source=encoder) reruns
            out = write_image_embeddings(table, config.tables_dir / T_IMAGE_EMBEDDINGS,
                                         {**params, "loss_history": history, "checkpoint_dir": str(checkpoint_dir),
                                          "band_roles": roles, "config_keys": list(PRETRAIN_CONFIG_KEYS),
                                          "config_hash": config.section_hash(*PRETRAIN_CONFIG_KEYS)})
            if mlflow is not None:
                mlflow.log_metric("image_embedding_regions", float(table["has_image"].sum()))
        losses = " ".join(f"{v:.4f}" for v in history)
        print(f"pretrain: {len(patches)} tiles, encoder {cfg.encoder}{' (external)' if external else ''}, "
              f"{len(history)} epoch(s){' loss ' + losses if history else ''}")
        print(f"pretrain: image_embeddings {len(table)} regions ({int(table['has_image'].sum())} with image), "
              f"{encoder.out_dim}-d -> {out} in {time.time() - start:.1f}s")
        return 0

    return guarded(body)
