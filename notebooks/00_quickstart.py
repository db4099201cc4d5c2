# Databricks notebook source
# MAGIC %md
# MAGIC # landuse — quick start
# MAGIC Runs every pipeline stage for one config (the synthetic city by default). On Databricks the
# MAGIC cluster's SparkSession is reused (no master is set); locally a `local[*]` session is built.

# COMMAND ----------

try:
    dbutils.widgets.text("config", "conf/synthetic_shenzhen.yaml", "config file")  # noqa: F821
    dbutils.widgets.text("overrides", "", "key=value overrides, space-separated")  # noqa: F821
    CONFIG = dbutils.widgets.get("config")  # noqa: F821
    OVERRIDES = dbutils.widgets.get("overrides").split()  # noqa: F821
except NameError:  # not on Databricks: plain Python / Jupyter
    CONFIG, OVERRIDES = "conf/synthetic_shenzhen.yaml", []

# COMMAND ----------

from landuse.entrypoints.pipeline import main

exit_code = main(["--config", CONFIG, *OVERRIDES])
assert exit_code == 0, f"pipeline failed with exit code {exit_code}"
