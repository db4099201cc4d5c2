"""Stage ``pretrain``: MMGR-style image-encoder pretraining and H_img from the encoder (``image_embeddings``).

Enabled when the config takes H_img from the encoder (``embeddings.image.source: encoder``, with
``inputs.imagery``); ``assemble`` then depends on it, so a changed ``pretrain`` setting reruns
pretrain, assemble and everything downstream. Reads ``image_patches`` (imagery stage) and
``poi_regions`` (pois stage; the POIs are placed on tiles by Spark and only per-tile token counts
reach the driver, see :func:`landuse.data.patches.poi_tile_tokens`); pretrains an image encoder
with intra- (two augmentations) and inter-modal (tile vs. its POI set) NT-Xent, or loads an
external checkpoint (``pretrain.external`` + ``pretrain.band_map``); then encodes every tile and
pools per region weighted by overlap × valid fraction into ``tables/image_embeddings`` (the
columns of ``image_features``). The run is tracked in MLflow (``pretrain.track``) and resumes from
the latest checkpoint in ``pretrain.checkpoint_dir`` (default: a directory per set of settings
under ``<driver_dir>/checkpoints/pretrain/``, so only more epochs resume).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

from landuse.config import Config, ConfigError
from landuse.runner import Stage, StageContext
from landuse.spark.io import table_path
from landuse.pretraining.image_embeddings import PRETRAIN_CONFIG_KEYS, T_IMAGE_EMBEDDINGS

log = logging.getLogger(__name__)


def enabled(config: Config) -> bool:
    """Pretrain when H_img comes from the encoder and there is a raster."""
    return config.inputs.imagery is not None and config.embeddings.image.source == "encoder"


# settings a run may change and still continue a checkpoint (epochs: a longer run resumes)
RESUMABLE = ("epochs", "checkpoint_dir", "track", "device")


def default_checkpoint_dir(config: Config) -> Path:
    """``<driver_dir>/checkpoints/pretrain/<hash>``: one directory per set of settings a checkpoint
    depends on, so a changed setting in the DAG starts afresh while more epochs resume."""
    from landuse.manifest import fingerprint

    settings = {k: v for k, v in config.to_dict()["pretrain"].items() if k not in RESUMABLE}
    key = fingerprint([settings, config.seed, config.embeddings.poi.level])[:12]
    return config.driver_dir / "checkpoints" / "pretrain" / key


def run(ctx: StageContext) -> None:
    """Pretrain (or load) the encoder, embed every tile, pool per region into ``image_embeddings``."""
    import pyarrow.parquet as pq
    import torch

    from landuse.data.augment import MultispectralAugment
    from landuse.data.patches import load_training_patches
    from landuse.models.encoders import ImageEncoder, MMGRModel, POISetEncoder, load_external_encoder, make_encoder
    from landuse.pretraining.image_embeddings import region_image_embeddings, write_image_embeddings_table
    from landuse.pretraining.pretrain import PretrainSettings, pretrain

    config = ctx.config
    cfg = config.pretrain
    assert config.inputs.imagery is not None  # enabled() checked it
    encoder_kw = dict(cfg.encoder_args)
    seed = config.seed if cfg.seed is None else cfg.seed
    torch.manual_seed(seed)
    level = cfg.poi_level or config.embeddings.poi.level
    start = time.time()
    try:  # the POIs are placed on tiles by Spark (only per-tile counts are collected)
        patches, stride, roles = load_training_patches(config.tables_dir, str(config.inputs.imagery.path), level,
                                                       spark=ctx.spark)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    checkpoint_dir = default_checkpoint_dir(config) if cfg.checkpoint_dir is None else Path(cfg.checkpoint_dir)
    # ranges checked by PretrainConfig: no ValueError here
    augment = MultispectralAugment(crop_scale=(cfg.crop_min, 1.0), gain=cfg.jitter_gain,
                                   offset=cfg.jitter_offset, band_dropout=cfg.band_dropout)
    settings = PretrainSettings(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, tau=cfg.tau,
                                w_intra=cfg.w_intra, w_inter=cfg.w_inter, seed=seed)
    external = str(cfg.external) if cfg.external is not None else ""
    band_map = json.dumps(dict(cfg.band_map)) if cfg.band_map is not None else ""
    tracking: contextlib.AbstractContextManager = contextlib.nullcontext()
    mlflow: ModuleType | None = None  # the mlflow module when tracked
    if cfg.track:
        import mlflow as tracked

        from landuse.training.tracking import setup_mlflow

        setup_mlflow(config)
        mlflow = tracked
        tracking = tracked.start_run(run_name=f"pretrain-{external and 'external' or cfg.encoder}")
    with tracking:
        if external:
            try:
                encoder: ImageEncoder = load_external_encoder(external, cfg.encoder, dict(cfg.band_map or {}),
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
                  "tiles": len(patches), "tile_stride": stride, **dict(vars(settings).items()),
                  **{f"augment_{k}": v for k, v in asdict(augment).items()}}
        if mlflow is not None:
            mlflow.log_params({k: str(v) for k, v in params.items()})
        regions_dir = config.tables_dir / "regions"
        all_regions = pq.read_table(regions_dir, columns=["region_id"]).column(0).to_numpy() if regions_dir.is_dir() else None
        table = region_image_embeddings(encoder, config.tables_dir / "image_patches", all_regions=all_regions)
        facts = write_image_embeddings_table(table, ctx.out(T_IMAGE_EMBEDDINGS))
        if mlflow is not None:
            mlflow.log_metric("image_embedding_regions", float(table["has_image"].sum()))
    # the manifest (the runner writes it) records how the encoder was made; serving rebuilds it from there
    ctx.summary.update({**params, **facts, "loss_history": history, "checkpoint_dir": str(checkpoint_dir),
                        "band_roles": roles, "config_keys": list(PRETRAIN_CONFIG_KEYS),
                        "encoder_dim": encoder.out_dim, "pretrain_seconds": round(time.time() - start, 3)})


STAGE = Stage(
    name="pretrain",
    description="MMGR-style image-encoder pretraining (NT-Xent image-image + image-POI) -> image_embeddings "
                "(with embeddings.image.source=encoder)",
    run=run,
    outputs=lambda config: {T_IMAGE_EMBEDDINGS: table_path(config, T_IMAGE_EMBEDDINGS)},
    config_keys=PRETRAIN_CONFIG_KEYS,
    inputs=lambda config: [config.pretrain.external] if config.pretrain.external is not None else [],
    upstream=("regions", "pois", "imagery"),
    enabled=enabled,
    group="model",
)
