"""Stage ``synth``: generate the configured synthetic city (raw inputs in real formats + truth)."""

from __future__ import annotations

from pathlib import Path

from landuse.config import Config
from landuse.runner import Stage, StageContext, no_spark
from landuse.synth.generator import GENERATOR_VERSION


@no_spark
def run(ctx: StageContext) -> None:
    """Generate into the staging directory; the runner commits it to ``synth.dir``."""
    from landuse.synth import generate

    cfg = ctx.config.synth
    manifest = generate(cfg.profile, cfg.scale, ctx.config.seed, ctx.out("synth"), progress=True)
    ctx.summary["counts"] = manifest.get("counts", {})


def outputs(config: Config) -> dict[str, Path]:
    """The city directory."""
    return {"synth": config.synth.dir}


STAGE = Stage(
    name="synth",
    description="generate the synthetic city (raw inputs in real formats + ground truth)",
    run=run,
    outputs=outputs,
    config_keys=("seed", "synth.profile", "synth.scale"),
    enabled=lambda config: config.synth.enabled,
    version=GENERATOR_VERSION,
)
