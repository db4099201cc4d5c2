"""Entry-point body shared by ``train``, ``ablation`` and ``fusion`` (see landuse.training.experiments)."""

from __future__ import annotations

import argparse

from landuse.entrypoints.common import add_config_args, guarded, load_from_args

DESCRIPTIONS = {
    "train": "train training.variant on training.features over K splits; log, register (champion if better)",
    "ablation": "the thesis ablation: every variant of training.variants; table as CSV + Markdown, MLflow",
    "fusion": "the fusion ablation M_P, M_PI, M_PIG, M_PIGF (training.fusion) with training.variant",
}


def experiment_main(kind: str, argv: list[str] | None) -> int:
    """Parse ``--config ... [key=value ...]``, run the experiment, print its Markdown table."""
    from landuse.training.experiments import run_experiment

    parser = argparse.ArgumentParser(prog=f"landuse run {kind}", description=DESCRIPTIONS[kind])
    add_config_args(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        from landuse.locks import work_dir_lock

        config = load_from_args(args)
        with work_dir_lock(config, command=f"landuse run {kind}"):  # one writer per work dir
            _, md_path, model = run_experiment(config, kind, force=args.force)
        print(md_path.read_text())
        print(f"{kind}: tables -> {md_path.parent}; MLflow -> {config.mlflow_uri} (experiment {config.mlflow.experiment})")
        if model and model.get("version"):
            state = "new champion" if model["champion"] else "champion unchanged"
            print(f"{kind}: registered {config.training.registered_model} v{model['version']} "
                  f"(val KL {model['val_kl']:.5f}, {state})")
        return 0

    return guarded(body)
