# Databricks notebook source
# MAGIC %md
# MAGIC # 03 — training and ablation
# MAGIC Trains every variant of `training.variants` (default: the 14 thesis variants) on
# MAGIC `training.features` over `training.splits` splits, tracked in MLflow; the model of
# MAGIC `training.variant` is registered and becomes `champion` only if its validation KL improves.
# MAGIC The paper's protocol (30 splits × 400 epochs × 14 variants) takes a while: for a quick look set
# MAGIC e.g. `training.splits=2 training.epochs=50 training.variants=[None,GCN_adj,Adj-Tri-GCN]` in
# MAGIC `overrides`. Needs notebook 02 first. With `force` false an unchanged experiment is not retrained
# MAGIC (the stage runner compares its fingerprint: training config + input tables).

# COMMAND ----------

from landuse.notebook import Notebook

nb = Notebook(globals())
params = nb.widgets({"config": "conf/synthetic_shenzhen.yaml", "overrides": "", "force": ("false", ["false", "true"])})

# COMMAND ----------

import json

from landuse.runner import run_pipeline
from landuse.stages import STAGES
from landuse.training.experiments import read_results_csv

config = nb.load(params)
# the ablation stage of the DAG: skipped when the training config and tables are unchanged
(result,) = run_pipeline(config, STAGES, force=params["force"] == "true", only=["ablation"])
md_path = result.outputs["ablation"] / "ablation.md"
table = read_results_csv(md_path.with_suffix(".csv"))
model = json.loads((md_path.parent / "run.json").read_text()).get("model") or {}

# COMMAND ----------

from landuse.report.html import redact_uri, results_table

nb.show(results_table(table, "variant"), "ablation: test metrics, mean ± std over splits")
nb.markdown(md_path.read_text())
print(f"tables: {md_path.parent}")
print(f"MLflow: {redact_uri(config.mlflow_uri)} (experiment {config.mlflow.experiment})")
if model.get("version"):
    print(f"registered {config.training.registered_model} v{model['version']} (val KL {model['val_kl']:.5f}, "
          f"{'new champion' if model['champion'] else 'champion unchanged'})")

# COMMAND ----------

for png in sorted(md_path.parent.glob(f"curves_{config.training.variant}_*.png")):
    nb.image(png, f"{png.stem}: train / validation / test KL per epoch, mean ± std over splits")
