# Databricks notebook source
# MAGIC %md
# MAGIC # 05 — prediction and monitoring
# MAGIC Predicts every region's land-use distribution with a registered model (the `champion` by
# MAGIC default), then compares it with the plan (`inputs.planned`): a region is flagged when its
# MAGIC predicted dominant class differs from the planned one by a margin of at least
# MAGIC `monitoring.threshold`. On the synthetic city the injected deviations score the flags.

# COMMAND ----------

from landuse.notebook import Notebook

nb = Notebook(globals())
params = nb.widgets({"config": "conf/synthetic_shenzhen.yaml", "overrides": "", "model": ""})

# COMMAND ----------

from landuse.training.predict import predict
from landuse.training.tracking import setup_mlflow

config = nb.load(params)
setup_mlflow(config)
model_uri = params["model"] or f"models:/{config.training.registered_model}@champion"
predictions, parquet, geojson = predict(config, model_uri)
nb.show(predictions.head(20), f"predictions from {model_uri} -> {parquet}, {geojson}")
nb.show(predictions["dominant_class"].value_counts().rename_axis("dominant_class").reset_index(name="regions"),
        "predicted dominant class")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Planned vs predicted

# COMMAND ----------

from landuse.entrypoints.monitor import main as monitor
from landuse.monitoring.run import MAP_FILE, T_MONITORING
from landuse.spark.io import read_pandas

assert monitor(nb.argv) == 0, "monitor failed (see the error above)"
flags = read_pandas(config, T_MONITORING, "monitor")
nb.show(flags[flags["deviation"]].sort_values("margin", ascending=False), "regions departing from the plan")
nb.image(config.work_dir / MAP_FILE, "planned vs predicted: deviations in red")

# COMMAND ----------

import pandas as pd

from landuse.monitoring.planned import precision_recall

truth_file = config.synth.dir / "truth" / "planned_deviations.csv"
if config.synth.enabled and truth_file.is_file():
    scores = precision_recall(flags, pd.read_csv(truth_file))
    nb.show(pd.DataFrame([scores]), "flags vs the injected deviations (synthetic truth)")
