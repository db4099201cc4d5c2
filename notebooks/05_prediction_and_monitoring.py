# Databricks notebook source
# MAGIC %md
# MAGIC # 05 — prediction and monitoring
# MAGIC Predicts every region's land-use distribution with a registered model (the `champion` by
# MAGIC default), then compares it with the plan (`inputs.planned`): a region is flagged when its
# MAGIC predicted dominant class differs from the planned one by a margin of at least
# MAGIC `monitoring.threshold`. Both are stages of the DAG (`predict`, `monitor`): the maps go to
# MAGIC `<work_dir>/maps/predictions/` and `<work_dir>/maps/monitoring/`. On the synthetic city the injected
# MAGIC deviations score the flags.

# COMMAND ----------

from landuse.notebook import Notebook

nb = Notebook(globals())
params = nb.widgets({"config": "conf/synthetic_shenzhen.yaml", "overrides": "", "model": ""})

# COMMAND ----------

import shlex

from landuse.notebook import stage_results
from landuse.runner import run_pipeline
from landuse.spark.io import read_pandas
from landuse.stages import STAGES
from landuse.serving.predict import GEOJSON_FILE, MAP_OUTPUT, T_PREDICTIONS, model_uri

if params["model"]:  # the model widget is the override predict.model
    params["overrides"] = f"{params['overrides']} {shlex.quote('predict.model=' + params['model'])}"
config = nb.load(params)
# the DAG's predict stage: skipped when the model resolves to the same version and the tables are unchanged
(result,) = run_pipeline(config, STAGES, only=["predict"])
nb.show(stage_results([result]), "stages")
predictions = read_pandas(config, T_PREDICTIONS, "predict")
geojson = result.outputs[MAP_OUTPUT] / GEOJSON_FILE
nb.show(predictions.head(20), f"predictions from {model_uri(config)} -> {result.outputs[T_PREDICTIONS]}, {geojson}")
nb.show(predictions["dominant_class"].value_counts().rename_axis("dominant_class").reset_index(name="regions"),
        "predicted dominant class")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Planned vs predicted

# COMMAND ----------

from landuse.monitoring.run import MAP_FILE, MAPS_OUTPUT, T_MONITORING

(result,) = run_pipeline(config, STAGES, only=["monitor"])  # disabled without inputs.planned
assert result.status != "disabled", "monitor needs inputs.planned in the config"
flags = read_pandas(config, T_MONITORING, "monitor")
nb.show(flags[flags["deviation"]].sort_values("margin", ascending=False), "regions departing from the plan")
nb.image(result.outputs[MAPS_OUTPUT] / MAP_FILE, "planned vs predicted: deviations in red")

# COMMAND ----------

import pandas as pd

from landuse.monitoring.planned import precision_recall

truth_file = config.synth.dir / "truth" / "planned_deviations.csv"
if config.synth.enabled and truth_file.is_file():
    scores = precision_recall(flags, pd.read_csv(truth_file))
    nb.show(pd.DataFrame([scores]), "flags vs the injected deviations (synthetic truth)")
