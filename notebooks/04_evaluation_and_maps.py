# Databricks notebook source
# MAGIC %md
# MAGIC # 04 — evaluation and maps
# MAGIC The experiment tables (train / ablation / fusion, per-class errors) and the maps of the run
# MAGIC report: true vs predicted dominant land use, per-region error and mixed-use entropy. Predicts
# MAGIC with the champion model first when `tables/predictions` does not exist yet. Needs notebook 03.

# COMMAND ----------

from landuse.notebook import Notebook

nb = Notebook(globals())
params = nb.widgets({"config": "conf/synthetic_shenzhen.yaml", "overrides": ""})

# COMMAND ----------

from landuse.notebook import read_results
from landuse.report.html import per_class_display, results_table
from landuse.training.experiments import results_dir

config = nb.load(params)
for kind, by in (("train", "variant"), ("ablation", "variant"), ("fusion", "features")):
    out = results_dir(config, kind)
    if (out / f"{kind}.csv").is_file():
        nb.show(results_table(read_results(out / f"{kind}.csv"), by), f"{kind}: test metrics, mean ± std over splits")
    if (out / "per_class_errors.csv").is_file():
        nb.show(per_class_display(read_results(out / "per_class_errors.csv")),
                f"{kind}: per-class errors (test regions)")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Predictions and maps

# COMMAND ----------

from landuse.training.predict import T_PREDICTIONS, predict
from landuse.training.tracking import setup_mlflow

if not (config.tables_dir / T_PREDICTIONS).is_dir():
    setup_mlflow(config)
    predict(config, f"models:/{config.training.registered_model}@champion")

# COMMAND ----------

from landuse.manifest import read_manifest
from landuse.report.html import build_report

report = build_report(config)
manifest = read_manifest(report.parent)
for name in manifest["figures"]:
    nb.image(report.parent / name, name)
for item in manifest["missing"]:
    print(f"not available: {item}")
print(f"full report: {report}")
