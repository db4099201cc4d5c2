# Databricks notebook source
# MAGIC %md
# MAGIC # 03 — training and ablation
# MAGIC Trains every variant of `training.variants` (default: the 14 thesis variants) on
# MAGIC `training.features` over `training.splits` splits, tracked in MLflow; the model of
# MAGIC `training.variant` is registered and becomes `champion` only if its validation KL improves.
# MAGIC The paper's protocol (30 splits × 400 epochs × 14 variants) takes a while: for a quick look set
# MAGIC e.g. `training.splits=2 training.epochs=50 training.variants=[None,GCN_adj,Adj-Tri-GCN]` in
# MAGIC `overrides`. Needs notebook 02 first. With `force` false an unchanged experiment is not retrained.

# COMMAND ----------

from landuse.notebook import Notebook

nb = Notebook(globals())
params = nb.widgets({"config": "conf/synthetic_shenzhen.yaml", "overrides": "", "force": ("false", ["false", "true"])})

# COMMAND ----------

from landuse.training.experiments import run_experiment

config = nb.load(params)
table, md_path, model = run_experiment(config, "ablation", force=params["force"] == "true")

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
