"""``landuse run tune``: the tune stage (landuse.stages.tune): model selection on validation KL, test touched once.

Runs the stage even when ``tune.enabled`` is false (that flag makes tune a step of ``landuse
pipeline``); an unchanged search is skipped and its committed results are printed again (``--force``
searches again). The last stdout line is ``best_variant=... val_kl=... test_kl=...``, read from the
committed ``best.json``.
"""

from __future__ import annotations

import json

from landuse.entrypoints.common import stage_main
from landuse.training.signals import kill_runs_on_sigterm


@kill_runs_on_sigterm  # SIGTERM ends the MLflow runs KILLED instead of leaving them RUNNING
def main(argv: list[str] | None = None) -> int:
    """``landuse run tune --config conf/X.yaml [--force] [key=value ...]``; the last stdout line is ``best_variant=... test_kl=...``."""
    from landuse.training.tune import summary_line_of

    last: list[str] = []

    def summary(config, result) -> None:  # config: landuse.config.Config; result: landuse.runner.StageResult
        out = result.outputs["tune"]
        best = json.loads((out / "best.json").read_text())
        print((out / "tune.md").read_text())
        if result.status == "unchanged":
            print("tune: tune/training config and input tables unchanged since the last search; its results stand "
                  "(--force searches again)")
        print(f"tune: trials -> {out / 'trials.csv'}; best -> {out / 'best.json'}; "
              f"MLflow -> {config.mlflow_uri} (experiment {config.mlflow.experiment}, run tune:{config.name})")
        model = best["final"].get("model") or {}
        if result.status == "ran" and model.get("version"):
            state = "new champion" if model.get("champion") else "champion unchanged"
            print(f"tune: registered {config.training.registered_model} v{model['version']} "
                  f"(val KL {model['val_kl']:.5f}, {state}; tag selected_by=tune)")
        for variant, why in (best.get("skipped") or {}).items():
            print(f"tune: skipped {variant}: {why}")
        last.append(summary_line_of(best))

    # `landuse run tune` runs the search whatever tune.enabled says (a trailing tune.enabled=... still wins)
    code = stage_main("tune", argv, overrides=lambda args: ["tune.enabled=true"], summary=summary)
    if code == 0 and last:
        print(last[0])  # after the runner's status lines: scripts and benchmarks parse the last line
    return code
