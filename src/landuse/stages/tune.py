"""Stage ``tune``: model selection on validation KL only; the test set touched once (landuse.training.tune).

Searches variant × lr × dropout × weight decay × width (the ``tune:`` section) on the assembled
training tables, retrains the best setting once on the full protocol, reports its test metrics and
registers it (tag ``selected_by=tune``). Writes ``<work_dir>/results/tune/`` (``trials.csv``,
``best.json``, ``tune.md``, the final model's per-class errors and curves). The runner skips the
search while the tune / training / labels settings, the seed and the input tables are unchanged
(``--force`` searches again). A step of ``landuse pipeline`` when ``tune.enabled`` is true;
``landuse run tune`` runs it regardless.
"""

from __future__ import annotations

import json

from landuse.config import Config
from landuse.runner import Stage, StageContext, no_spark
from landuse.stages.experiments import results_outputs

KIND = "tune"  # landuse.training.tune.KIND: results/tune/
DESCRIPTION = ("search variant x lr x dropout x weight decay x width (tune:) on validation KL only; retrain the best "
               "once on training.splits splits, report its test metrics, register it (tag selected_by=tune)")


def enabled(config: Config) -> bool:
    """A pipeline step when ``tune.enabled`` and there are regions (hence training tables)."""
    return config.tune.enabled and config.inputs.regions is not None


@no_spark  # trials read the Petastorm shards; no Spark session
def run(ctx: StageContext) -> None:
    """Search, retrain the best once, register it; files into the stage's staging directory."""
    from landuse.training.tune import FAILED, run_tune

    result = run_tune(ctx.config, out=ctx.out(KIND))
    model = result.final.get("model") or {}
    ctx.summary.update({
        "summary_line": result.summary_line(),
        "best_setting": result.best.setting.as_dict(),
        "trials": len(result.trials),
        "trials_failed": sum(r.state == FAILED for r in result.trials),
        "skipped_variants": result.skipped,
        "mlflow_run_id": json.loads(result.best_path.read_text()).get("run_id"),  # the parent run tune:<name>
    })
    if model.get("version"):
        ctx.summary["registered"] = {"name": ctx.config.training.registered_model,
                                     **{k: model[k] for k in ("version", "champion") if k in model}}


STAGE = Stage(
    name="tune",
    description=DESCRIPTION,
    run=run,
    outputs=results_outputs(KIND),
    config_keys=("seed", "training", "labels", "tune"),
    upstream=("assemble",),
    enabled=enabled,
    group="model",
)
