"""``landuse run pretrain``: MMGR-style encoder pretraining and H_img from the encoder (``image_embeddings``).

Reads ``image_patches`` (imagery stage, ``embeddings.image.patches``) and ``poi_regions`` (pois
stage; with Spark: the POIs are placed on tiles on the executors and only per-tile token counts
reach the driver, see :func:`landuse.data.patches.poi_tile_tokens`); pretrains an image encoder
with intra- (two augmentations) and inter-modal (tile vs. its POI set) NT-Xent, or loads an
external checkpoint (``--external`` + ``--band-map``); then encodes every tile and pools per region
weighted by overlap × valid fraction into ``tables/image_embeddings`` (the columns of
``image_features``). Settings are flags (defaults in parentheses); the run is
tracked in MLflow and resumes from the latest checkpoint in ``--checkpoint-dir``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from landuse.config import ConfigError
from landuse.entrypoints.common import add_config_args, guarded, load_from_args
from landuse.training.signals import kill_runs_on_sigterm

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The pretrain command's arguments."""
    parser = argparse.ArgumentParser(prog="landuse run pretrain",
                                     description="MMGR-style image-encoder pretraining; H_img from the encoder")
    add_config_args(parser)
    parser.add_argument("--encoder", default="smallcnn", choices=["smallcnn", "resnet50", "vit"],
                        help="image encoder (smallcnn for CPU; resnet50 / vit for GPU)")
    parser.add_argument("--encoder-args", default="{}", metavar="JSON",
                        help='architecture arguments, e.g. \'{"width": 64}\' or \'{"layers": [1,1,1,1], "small_input": true}\'')
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--tau", type=float, default=0.5, help="NT-Xent temperature (0.5)")
    parser.add_argument("--w-intra", type=float, default=0.5, help="weight of image-image NT-Xent (0.5)")
    parser.add_argument("--w-inter", type=float, default=0.5, help="weight of image-POI NT-Xent (0.5)")
    parser.add_argument("--crop-min", type=float, default=0.5, help="smallest random-resized-crop area fraction (0.5)")
    parser.add_argument("--jitter-gain", type=float, default=0.05, help="band-wise gain jitter 1 ± U(gain) (0.05)")
    parser.add_argument("--jitter-offset", type=float, default=0.1, help="band-wise offset jitter, in band stds (0.1)")
    parser.add_argument("--band-dropout", type=float, default=0.1, help="probability a band is dropped (set to its mean) (0.1)")
    parser.add_argument("--poi-pooling", default="set2set", choices=["set2set", "attention"])
    parser.add_argument("--poi-level", type=int, default=None, help="POI category level (default embeddings.poi.level)")
    parser.add_argument("--seed", type=int, default=None, help="default: the config's seed")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--checkpoint-dir", default=None, help="default <work_dir>/checkpoints/pretrain")
    parser.add_argument("--external", default=None, metavar="PATH", help="encoder state_dict to use instead of pretraining")
    parser.add_argument("--band-map", default=None, metavar="JSON",
                        help='with --external: encoder channel -> raster band role or 0-based index, e.g. \'{"0": "red", "1": "green", "2": "blue"}\'')
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    return parser


def _json(text: str, flag: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{flag}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{flag}: expected a JSON object, got {text!r}")
    return value


@kill_runs_on_sigterm  # SIGTERM ends the MLflow runs KILLED instead of leaving them RUNNING
def main(argv: list[str] | None = None) -> int:
    """``landuse run pretrain --config conf/X.yaml [--encoder smallcnn] [--epochs 10] [--external PATH --band-map JSON]``."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        import contextlib

        import pyarrow.parquet as pq
        import torch

        from landuse.data.augment import MultispectralAugment
        from landuse.data.patches import load_training_patches
        from landuse.models.encoders import MMGRModel, POISetEncoder, load_external_encoder, make_encoder
        from landuse.spark.session import build_session
        from landuse.training.image_embeddings import T_IMAGE_EMBEDDINGS, region_image_embeddings, write_image_embeddings
        from landuse.training.pretrain import PretrainSettings, pretrain

        config = load_from_args(args)
        if config.inputs.imagery is None:
            raise ConfigError("inputs.imagery: pretrain needs a raster (and the imagery stage's image_patches)")
        encoder_kw = _json(args.encoder_args, "--encoder-args")
        if (args.external is None) != (args.band_map is None):
            raise ConfigError("--external and --band-map go together")
        seed = config.seed if args.seed is None else args.seed
        torch.manual_seed(seed)
        level = args.poi_level or config.embeddings.poi.level
        start = time.time()
        spark = build_session(config)  # the POIs are placed on tiles by Spark (only per-tile counts are collected)
        try:
            patches, stride, roles = load_training_patches(config.tables_dir, str(config.inputs.imagery.path), level,
                                                           spark=spark)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        checkpoint_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else config.driver_dir / "checkpoints" / "pretrain"
        try:
            augment = MultispectralAugment(crop_scale=(args.crop_min, 1.0), gain=args.jitter_gain,
                                           offset=args.jitter_offset, band_dropout=args.band_dropout)
        except ValueError as exc:
            raise ConfigError(f"augmentation flags: {exc}") from None
        settings = PretrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, tau=args.tau,
                                    w_intra=args.w_intra, w_inter=args.w_inter, seed=seed)
        tracking = contextlib.nullcontext()
        mlflow = None
        if not args.no_track:
            import mlflow

            from landuse.training.tracking import setup_mlflow

            setup_mlflow(config)
            tracking = mlflow.start_run(run_name=f"pretrain-{args.external and 'external' or args.encoder}")
        with tracking:
            if args.external:
                try:
                    encoder = load_external_encoder(args.external, args.encoder, _json(args.band_map, "--band-map"),
                                                    in_bands=patches.bands, band_roles=roles, **encoder_kw)
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"--external: {exc}") from None
                history: list[float] = []
            else:
                encoder = make_encoder(args.encoder, patches.bands, **encoder_kw)
                encoder.set_normalization(*patches.band_stats())
                model = MMGRModel(encoder, POISetEncoder(max(len(patches.vocabulary), 1), pooling=args.poi_pooling))
                model.to(args.device)
                try:
                    history = pretrain(model, patches.pixels.to(args.device), patches.poi_tokens, settings,
                                       augment=augment, checkpoint_dir=checkpoint_dir, tracker=mlflow)
                except ValueError as exc:  # a checkpoint written with other settings
                    raise ConfigError(str(exc)) from None
                encoder = model.image_encoder.to("cpu")
            params = {"encoder": args.encoder, "encoder_args": json.dumps(encoder_kw), "external": args.external or "",
                      "band_map": args.band_map or "", "poi_level": level, "poi_pooling": args.poi_pooling,
                      "tiles": len(patches), "tile_stride": stride, **{k: v for k, v in vars(settings).items()},
                      **{f"augment_{k}": v for k, v in asdict(augment).items()}}
            if mlflow is not None:
                mlflow.log_params({k: str(v) for k, v in params.items()})
            regions_dir = config.tables_dir / "regions"
            all_regions = pq.read_table(regions_dir, columns=["region_id"]).column(0).to_numpy() if regions_dir.is_dir() else None
            table = region_image_embeddings(encoder, config.tables_dir / "image_patches", all_regions=all_regions)
            out = write_image_embeddings(table, config.tables_dir / T_IMAGE_EMBEDDINGS,
                                         {**params, "loss_history": history, "checkpoint_dir": str(checkpoint_dir),
                                          "band_roles": roles})
            if mlflow is not None:
                mlflow.log_metric("image_embedding_regions", float(table["has_image"].sum()))
        losses = " ".join(f"{v:.4f}" for v in history)
        print(f"pretrain: {len(patches)} tiles, encoder {args.encoder}{' (external)' if args.external else ''}, "
              f"{len(history)} epoch(s){' loss ' + losses if history else ''}")
        print(f"pretrain: image_embeddings {len(table)} regions ({int(table['has_image'].sum())} with image), "
              f"{encoder.out_dim}-d -> {out} in {time.time() - start:.1f}s")
        return 0

    return guarded(body)
