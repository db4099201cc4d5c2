"""The pipeline's stages, in run order. Each stage's logic lives in its domain subpackage."""

from __future__ import annotations

from pathlib import Path

from landuse.config import Config
from landuse.constants import SYNTH_MANIFEST_FILE
from landuse.manifest import read_manifest
from landuse.runner import Stage, StageContext, no_spark


@no_spark
def _run_synth(ctx: StageContext) -> None:
    from landuse.synth import generate

    cfg = ctx.config.synth
    manifest = generate(cfg.profile, cfg.scale, ctx.config.seed, ctx.out("synth"), progress=True)
    ctx.summary["counts"] = manifest.get("counts", {})


def _synth_outputs(config: Config) -> dict[str, Path]:
    return {"synth": config.synth.dir}


SYNTH = Stage(
    name="synth",
    description="generate the synthetic city (raw inputs in real formats + ground truth)",
    run=_run_synth,
    outputs=_synth_outputs,
    config_keys=("seed", "synth.profile", "synth.scale"),
    enabled=lambda config: config.synth.enabled,
)

STAGES: dict[str, Stage] = {stage.name: stage for stage in (SYNTH,)}


def synth_manifest(config: Config) -> dict | None:
    """The generator's own manifest of the configured synthetic city, if generated."""
    return read_manifest(config.synth.dir, SYNTH_MANIFEST_FILE)
