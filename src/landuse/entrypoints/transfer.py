"""``landuse run transfer``: pretrain on a source city, fine-tune on the target (see landuse.training.transfer)."""

from __future__ import annotations

import argparse
import json

from landuse.config import ConfigError, load_config
from landuse.entrypoints.common import guarded, log
from landuse.logs import setup_logging
from landuse.training.signals import kill_runs_on_sigterm

DESCRIPTION = ("cross-city transfer: pretrain training.variant on --source-config, fine-tune on --config at "
               "training fractions vs training from scratch; table + KL plot -> results/transfer/, MLflow")


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, e.g. 0.1,0.5, got {text!r}") from exc
    if not values or any(not 0 < v < 0.95 for v in values):
        raise argparse.ArgumentTypeError(f"fractions must lie in (0, 0.95), got {text!r}")
    return values


@kill_runs_on_sigterm  # SIGTERM ends the MLflow runs KILLED instead of leaving them RUNNING
def main(argv: list[str] | None = None) -> int:
    """``landuse run transfer --config TARGET.yaml --source-config SOURCE.yaml [options] [key=value ...]``."""
    from landuse.training.transfer import DEFAULT_FEATURES, DEFAULT_FRACTIONS, transfer_experiment

    parser = argparse.ArgumentParser(prog="landuse run transfer", description=DESCRIPTION)
    parser.add_argument("--config", "-c", action="append", required=True, metavar="YAML",
                        help="target city config; repeat to layer")
    parser.add_argument("--source-config", action="append", required=True, metavar="YAML",
                        help="source city config (pretraining); repeat to layer")
    parser.add_argument("--source-set", action="append", default=[], metavar="key=value",
                        help="an override for the source config (repeatable); trailing key=value go to the target")
    parser.add_argument("--fractions", type=_fractions, default=DEFAULT_FRACTIONS,
                        help="target training fractions (default: 0.1,0.3,0.5,0.7,0.9)")
    parser.add_argument("--splits", type=int, default=None, help="random target splits per fraction "
                        "(default: the target's training.splits)")
    parser.add_argument("--features", default=",".join(DEFAULT_FEATURES),
                        help="node-feature modalities comparable across cities (default: image,geo; poi/flow "
                             "embeddings are trained per city and do not line up)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for the target config")
    args = parser.parse_args(argv)

    def body() -> int:
        # only the assembled tables are read: raw inputs need not be present
        target = load_config(args.config, args.overrides, check_inputs=False)
        source = load_config(args.source_config, args.source_set, check_inputs=False)
        setup_logging(target.log_level)
        if args.splits is not None and args.splits <= 0:
            raise ConfigError("--splits must be > 0")
        features = tuple(f.strip() for f in args.features.split(",") if f.strip())
        target.work_dir.mkdir(parents=True, exist_ok=True)
        (target.work_dir / "resolved_config.json").write_text(json.dumps(target.redacted_dict(), indent=2, sort_keys=True) + "\n")
        log.info("transfer: %s -> %s", source.name, target.name)
        _, md_path = transfer_experiment(target, source, args.fractions, args.splits, features)
        print(md_path.read_text())
        print(f"transfer: tables + plot -> {md_path.parent}; MLflow -> {target.mlflow_uri} "
              f"(experiment {target.mlflow.experiment}, run transfer:{source.name}->{target.name})")
        return 0

    return guarded(body)
