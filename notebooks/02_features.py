# Databricks notebook source
# MAGIC %md
# MAGIC # 02 — features
# MAGIC Runs the DAG's features section (`section_stages("features")`: the representation stages `flow-embeddings`,
# MAGIC `poi-embeddings`, `poi-features`, `imagery`, `location`, `buildings`, `pretrain` when H_img comes from the
# MAGIC encoder, and `assemble`, which writes the Petastorm-ready training tables; then shows the node-feature
# MAGIC modalities and the tensors the trainer reads. Needs notebook 01 (or `landuse pipeline`) first.

# COMMAND ----------

from landuse.notebook import Notebook

nb = Notebook(globals())
params = nb.widgets({"config": "conf/synthetic_shenzhen.yaml", "overrides": "", "force": ("false", ["false", "true"])})

# COMMAND ----------

from landuse.runner import run_pipeline
from landuse.stages import STAGES, section_stages
from landuse.notebook import stage_results

config = nb.load(params)
results = run_pipeline(config, STAGES, force=params["force"] == "true", only=section_stages("features"))
nb.show(stage_results(results), "stages")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Node features
# MAGIC One row per region; a region lacking a modality has zeros and its flag false.

# COMMAND ----------

from landuse.data.reader import load_graph
from landuse.notebook import graph_shapes, modalities

nb.show(modalities(config), "node_features: modalities (from its manifest)")
graph = load_graph(config.tables_dir)
nb.show(graph_shapes(graph), f"load_graph: {graph.num_nodes} regions, classes {', '.join(graph.classes)}")
