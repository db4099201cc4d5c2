"""Entry-point body shared by ``train``, ``ablation`` and ``fusion`` (see landuse.stages.experiments)."""

from __future__ import annotations

import json

from landuse.entrypoints.common import stage_main


def experiment_main(kind: str, argv: list[str] | None) -> int:
    """Parse ``--config ... [key=value ...]``, run the experiment stage, print its Markdown table."""

    def summary(config, result) -> None:  # config: landuse.config.Config; result: landuse.runner.StageResult
        out = result.outputs[kind]
        print((out / f"{kind}.md").read_text())
        if result.status == "unchanged":
            print(f"{kind}: training config and input tables unchanged since the last run; its results stand "
                  "(--force retrains)")
        print(f"{kind}: tables -> {out}; MLflow -> {config.mlflow_uri} (experiment {config.mlflow.experiment})")
        model = json.loads((out / "run.json").read_text()).get("model") or {}
        if result.status == "ran" and model.get("version"):
            state = "new champion" if model["champion"] else "champion unchanged"
            print(f"{kind}: registered {config.training.registered_model} v{model['version']} "
                  f"(val KL {model['val_kl']:.5f}, {state})")

    return stage_main(kind, argv, summary=summary)
