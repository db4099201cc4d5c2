# Databricks notebook source
# MAGIC %md
# MAGIC # 04 — evaluation and maps
# MAGIC The experiment tables (train / ablation / fusion, per-class errors) and the maps of the run
# MAGIC report: true vs predicted dominant land use, per-region error and mixed-use entropy. Runs the DAG's
# MAGIC `predict` (with the champion model; skipped when the champion and the tables are unchanged) and
# MAGIC `report` stages (`<work_dir>/report/`, logged to MLflow unless `report.mlflow=false`). Needs notebook 03.

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

from landuse.notebook import stage_results
from landuse.runner import run_pipeline
from landuse.stages import STAGES

# the DAG's predict and report stages: each is skipped when its inputs (the champion, the tables) are unchanged
results = run_pipeline(config, STAGES, only=["predict", "report"])
nb.show(stage_results(results), "stages")

# COMMAND ----------

from landuse.manifest import read_manifest
from landuse.report.html import REPORT_FILE

out = results[-1].outputs["report"]  # <work_dir>/report/: report.html with its figures beside it
manifest = read_manifest(out)
for name in manifest["figures"]:
    nb.image(out / name, name)
for item in manifest["missing"]:
    print(f"not available: {item}")
print(f"full report: {out / REPORT_FILE}")
