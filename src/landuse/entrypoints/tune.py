"""``landuse run tune``: model selection on validation KL; the test set touched once (see landuse.training.tune)."""

from __future__ import annotations

import argparse

from landuse.entrypoints.common import add_config_args, guarded, load_from_args
from landuse.locks import work_dir_lock
from landuse.training.signals import kill_runs_on_sigterm

DESCRIPTION = ("search variant x lr x dropout x weight decay x width (tune:) on validation KL only; retrain the best "
               "once on training.splits splits, report its test metrics, register it (tag selected_by=tune)")


@kill_runs_on_sigterm  # SIGTERM ends the MLflow runs KILLED instead of leaving them RUNNING
def main(argv: list[str] | None = None) -> int:
    """``landuse run tune --config conf/X.yaml [key=value ...]``; the last stdout line is ``best_variant=... test_kl=...``."""
    from landuse.training.tune import run_tune

    parser = argparse.ArgumentParser(prog="landuse run tune", description=DESCRIPTION)
    add_config_args(parser)  # --force is accepted for symmetry: a search always runs
    args = parser.parse_args(argv)

    def body() -> int:
        config = load_from_args(args)
        with work_dir_lock(config, command="landuse run tune"):
            result = run_tune(config)
        print(result.markdown_path.read_text())
        model = result.final.get("model") or {}
        print(f"tune: trials -> {result.markdown_path.parent / 'trials.csv'}; best -> {result.best_path}; "
              f"MLflow -> {config.mlflow_uri} (experiment {config.mlflow.experiment}, run tune:{config.name})")
        if model.get("version"):
            state = "new champion" if model.get("champion") else "champion unchanged"
            print(f"tune: registered {config.training.registered_model} v{model['version']} "
                  f"(val KL {model['val_kl']:.5f}, {state}; tag selected_by=tune)")
        for variant, why in result.skipped.items():
            print(f"tune: skipped {variant}: {why}")
        print(result.summary_line())
        return 0

    return guarded(body)
