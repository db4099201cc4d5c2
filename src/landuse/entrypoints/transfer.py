"""``landuse run transfer``: the transfer stage (landuse.stages.transfer): pretrain on a source city, fine-tune on the target.

Settings are the target config's ``transfer`` section; each flag sets one of its keys
(``--splits 3`` is ``transfer.splits=3``, ``--source-config a.yaml`` is ``transfer.source_config=[a.yaml]``).
The runner skips an unchanged transfer (same settings, source config and tables of both cities) and
the command prints the committed results again; ``--force`` reruns it.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from landuse.config import TransferConfig, load_config
from landuse.entrypoints.common import flag_overrides
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
    parser.add_argument("--force", action="store_true", help="rerun even if settings and tables are unchanged")
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


def settings_overrides(args: argparse.Namespace) -> list[str]:
    """The ``transfer.<key>=value`` overrides of the settings flags given in ``args``.

    ``landuse run transfer`` needs a source city: without one (flag, trailing override or config) it
    is a one-line error naming ``transfer.source_config``, not a stage disabled by config.
    """
    from landuse.pretraining.transfer import load_source_config

    flags = flag_overrides(args, "transfer", SETTINGS)
    # only the assembled tables are read: the source city's raw inputs need not be present
    load_source_config(load_config(args.config, [*flags, *args.overrides], check_inputs=False), origin=args.config[-1])
    return flags


def summary(config, result) -> None:  # config: landuse.config.Config; result: landuse.runner.StageResult
    """Print the transfer table and where it went, from the committed output (also when unchanged)."""
    from landuse.manifest import read_manifest

    out = result.outputs["transfer"]
    facts = read_manifest(out) or {}
    print((out / "transfer.md").read_text())
    if result.status == "unchanged":
        print("transfer: settings, source config and tables unchanged since the last run; its results stand "
              "(--force reruns)")
    print(f"transfer: tables + plot -> {out}; MLflow -> {config.mlflow_uri} "
          f"(experiment {config.mlflow.experiment}, run transfer:{facts.get('source')}->{config.name})")


@kill_runs_on_sigterm  # SIGTERM ends the MLflow runs KILLED instead of leaving them RUNNING
def main(argv: list[str] | None = None) -> int:
    """``landuse run transfer --config TARGET.yaml --source-config SOURCE.yaml [options] [key=value ...]``."""
    from landuse.entrypoints.common import stage_main

    return stage_main("transfer", argv, parser=build_parser(), overrides=settings_overrides, summary=summary)
