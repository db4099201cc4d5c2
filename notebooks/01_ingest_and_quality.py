# Databricks notebook source
# MAGIC %md
# MAGIC # 01 — ingest and data quality
# MAGIC Runs the DAG's ingest section (`section_stages("ingest")`: `synth`, `regions`, `ingest`, `flows`, `pois`,
# MAGIC `labels`) for the config in the `config` widget (the synthetic city by default; unchanged stages are skipped), then shows what
# MAGIC came in: rows in / kept / rejected per source, the most frequent reject reasons, how many trips
# MAGIC joined to regions, and label coverage.

# COMMAND ----------

from landuse.notebook import Notebook

nb = Notebook(globals())
params = nb.widgets({"config": "conf/synthetic_shenzhen.yaml", "overrides": "", "force": ("false", ["false", "true"])})

# COMMAND ----------

from landuse.runner import run_pipeline
from landuse.stages import STAGES, section_stages
from landuse.notebook import stage_results

config = nb.load(params)
results = run_pipeline(config, STAGES, force=params["force"] == "true", only=section_stages("ingest"))
nb.show(stage_results(results), "stages")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Rows in / kept / rejected
# MAGIC Every row read is either kept or written to `tables/rejects/<source>/` with a reason
# MAGIC (`rows_in = kept + rejected`).

# COMMAND ----------

from landuse.notebook import ingest_summary, reject_reasons

nb.show(ingest_summary(config), "rows in / kept / rejected per source")
nb.show(reject_reasons(nb.spark(config), config), "top reject reasons (tables/rejects)")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Join and label coverage

# COMMAND ----------

from landuse.notebook import flow_coverage, label_coverage

nb.show(flow_coverage(config), "flows: trips joined to an origin and a destination region")
nb.show(label_coverage(config), "labels: coverage and mean class shares")
