"""``landuse run transfer``: pretrain on a source city, fine-tune on the target (see landuse.training.transfer).

Settings are the target config's ``transfer`` section; each flag sets one of its keys
(``--splits 3`` is ``transfer.splits=3``, ``--source-config a.yaml`` is ``transfer.source_config=[a.yaml]``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from landuse.config import ConfigError, TransferConfig, load_config
from landuse.entrypoints.common import flag_overrides, guarded, log
from landuse.logs import setup_logging
from landuse.training.signals import kill_runs_on_sigterm

DESCRIPTION = ("cross-city transfer: pretrain training.variant on --source-config, fine-tune on --config at "
               "training fractions vs training from scratch; table + KL plot -> results/transfer/, MLflow")
SETTINGS = tuple(f.name for f in fields(TransferConfig))  # every key of `transfer`; each flag's dest is one


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, e.g. 0.1,0.5, got {text!r}") from exc
    if not values or any(not 0 < v < 0.95 for v in values):
        raise argparse.ArgumentTypeError(f"fractions must lie in (0, 0.95), got {text!r}")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(f.strip() for f in text.split(",") if f.strip())


def build_parser() -> argparse.ArgumentParser:
    """The transfer command's arguments: each settings flag sets the ``transfer`` key of its dest."""
    parser = argparse.ArgumentParser(prog="landuse run transfer", description=DESCRIPTION)
    parser.add_argument("--config", "-c", action="append", required=True, metavar="YAML",
                        help="target city config; repeat to layer")
    flags = parser.add_argument_group("settings", "each flag sets transfer.<key> (defaults: the target config's "
                                                  "transfer section); a trailing transfer.<key>=value wins over the flag")
    # default None everywhere: an absent flag must not override the config files' value
    flags.add_argument("--source-config", action="append", default=None, metavar="YAML",
                       help="source city config (pretraining); repeat to layer (transfer.source_config; required "
                            "here or in the config)")
    flags.add_argument("--source-set", action="append", default=None, metavar="key=value",
                       help="an override for the source config (repeatable; transfer.source_set); trailing "
                            "key=value go to the target")
    flags.add_argument("--fractions", type=_fractions, default=None,
                       help="target training fractions (transfer.fractions, default: 0.1,0.3,0.5,0.7,0.9)")
    flags.add_argument("--splits", type=int, default=None, help="random target splits per fraction "
                       "(transfer.splits; default: the target's training.splits)")
    flags.add_argument("--features", type=_names, default=None,
                       help="node-feature modalities comparable across cities (transfer.features, default: "
                            "image,geo; poi/flow embeddings are trained per city and do not line up)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for the target config")
    return parser


@kill_runs_on_sigterm  # SIGTERM ends the MLflow runs KILLED instead of leaving them RUNNING
def main(argv: list[str] | None = None) -> int:
    """``landuse run transfer --config TARGET.yaml --source-config SOURCE.yaml [options] [key=value ...]``."""
    from landuse.training.transfer import transfer_experiment

    args = build_parser().parse_args(argv)

    def body() -> int:
        # only the assembled tables are read: raw inputs need not be present
        target = load_config(args.config, [*flag_overrides(args, "transfer", SETTINGS), *args.overrides],
                             check_inputs=False)
        settings = target.transfer
        if not settings.source_config:
            raise ConfigError(f"{args.config[-1]}: transfer.source_config: required: the source city's config "
                              "(--source-config SOURCE.yaml or transfer.source_config: [SOURCE.yaml])")
        source = load_config(list(settings.source_config), list(settings.source_set), check_inputs=False)
        setup_logging(target.log_level)
        target.work_dir.mkdir(parents=True, exist_ok=True)
        (target.work_dir / "resolved_config.json").write_text(json.dumps(target.redacted_dict(), indent=2, sort_keys=True) + "\n")
        log.info("transfer: %s -> %s", source.name, target.name)
        _, md_path = transfer_experiment(target, source)
        print(md_path.read_text())
        print(f"transfer: tables + plot -> {md_path.parent}; MLflow -> {target.mlflow_uri} "
              f"(experiment {target.mlflow.experiment}, run transfer:{source.name}->{target.name})")
        return 0

    return guarded(body)
