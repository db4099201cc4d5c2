"""``landuse run pretrain``: the pretrain stage (landuse.stages.pretrain) with its settings as flags.

Settings are the config's ``pretrain`` section; each flag sets one of its keys (``--epochs 5`` is
``pretrain.epochs=5``). The stage runs when H_img comes from the encoder
(``embeddings.image.source: encoder``); the runner skips it when its settings and inputs are
unchanged, and ``assemble`` (and everything after it) reruns when they change.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import fields

from landuse.config import ConfigError, PretrainConfig
from landuse.entrypoints.common import add_config_args, flag_overrides
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
                       help="checkpoints (pretrain.checkpoint_dir; default <work_dir>/checkpoints/pretrain/<settings hash>)")
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


def summary(config, result) -> None:  # config: landuse.config.Config; result: landuse.runner.StageResult
    """Print the pretraining's outcome from the committed table's manifest."""
    from landuse.manifest import read_manifest
    from landuse.pretraining.image_embeddings import T_IMAGE_EMBEDDINGS

    out = result.outputs[T_IMAGE_EMBEDDINGS]
    facts = read_manifest(out) or {}
    history = facts.get("loss_history") or []
    losses = " ".join(f"{v:.4f}" for v in history)
    external = " (external)" if facts.get("external") else ""
    print(f"pretrain: {facts.get('tiles')} tiles, encoder {facts.get('encoder')}{external}, "
          f"{len(history)} epoch(s){' loss ' + losses if history else ''}")
    print(f"pretrain: image_embeddings {facts.get('rows')} regions ({facts.get('regions_with_image')} with image), "
          f"{facts.get('dim')}-d -> {out}{' (unchanged)' if result.status == 'unchanged' else ''}")


@kill_runs_on_sigterm  # SIGTERM ends the MLflow runs KILLED instead of leaving them RUNNING
def main(argv: list[str] | None = None) -> int:
    """``landuse run pretrain --config conf/X.yaml [--encoder smallcnn] [--epochs 10] [pretrain.key=value ...]``."""
    from landuse.entrypoints.common import stage_main

    return stage_main("pretrain", argv, parser=build_parser(), overrides=settings_overrides, summary=summary)
