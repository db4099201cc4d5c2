"""Batch scoring on Spark: the region table built from the work dir's tables, scored by ``spark_udf``.

:func:`region_table_spark` builds the same region table that :func:`landuse.serving.pyfunc.table_for_graph`
builds on the driver (columns: :mod:`landuse.serving.region_table`), but on Spark: each edge table is
grouped by its source region (``collect_list`` of ``struct(target, weight)``, sorted by target) and
left-joined onto ``node_features``; regions without edges get empty lists. Edges never reach the driver.

:func:`score_spark` scores a region table with ``mlflow.pyfunc.spark_udf``. A graph model builds its
operators from the rows of ONE ``predict`` call (a region's neighbours, two hops for ``SAGE_adj2``,
must be rows of the same call), and ``spark_udf`` calls ``predict`` once per Arrow batch — by default
at most ``spark.sql.execution.arrow.maxRecordsPerBatch`` rows of one partition. So the table is
scored as ONE group: one partition, and the batch limit raised above its row count for that job (the
result is checkpointed before the limit is restored, so a recomputation can never split it). Scoring
disjoint groups together is exact (no edges join them), splitting one is not; with the default
``unknown_neighbours='error'`` a split group fails loudly (a neighbour that is not a row) instead of
scoring silently differently.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from landuse.config import Config, ConfigError
from landuse.serving.region_table import EDGE_COLUMNS, LABELS, REGION_ID

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from landuse.serving.pyfunc import ModelSpec

log = logging.getLogger(__name__)
ARROW_BATCH_KEY = "spark.sql.execution.arrow.maxRecordsPerBatch"
_PREDICTION = "_prediction"
# the model's one-line refusal as it appears inside a Spark task's Python traceback
_REFUSAL = re.compile(r"MlflowException: (.+)$", re.MULTILINE)


def region_table_spark(spark: SparkSession, config: Config, spec: ModelSpec) -> DataFrame:
    """The region table of every region in the work dir's ``node_features``, built on Spark.

    Columns in the order of the model's signature: ``region_id``, per modality feature list
    (``array<double>``) and flag, per edge set the neighbour ids (``array<long>``, sorted) and
    weights, and ``labels`` (``label_lag`` models: ``y`` where ``has_label``, else empty).
    Raises ConfigError (one line) for a missing table or column, or an edge endpoint that is not a
    region of ``node_features`` (as ``landuse run predict`` does).
    """
    from pyspark.sql import functions as F

    from landuse.data.reader import EDGE_TABLES, PRODUCERS, T_NODE_FEATURES
    from landuse.data.tables import HAS_LABEL, Y
    from landuse.spark.io import read_table

    nodes = read_table(spark, config, T_NODE_FEATURES, PRODUCERS[T_NODE_FEATURES])
    _check_classes(config, spec)
    needed = [REGION_ID, *(c for item in spec.layout for c in (item["column"], item["flag"]))]
    needed += [Y, HAS_LABEL] if spec.label_lag else []
    missing = [c for c in needed if c not in nodes.columns]
    if missing:
        raise ConfigError(f"table {T_NODE_FEATURES} has no column {missing[0]!r}, which the model needs "
                          f"(its features: {', '.join(spec.features)}); rerun `landuse run assemble` with those features")
    columns = [F.col(REGION_ID).cast("long").alias(REGION_ID)]
    for item in spec.layout:
        columns += [F.col(item["column"]).cast("array<double>").alias(item["column"]),
                    F.col(item["flag"]).cast("boolean").alias(item["flag"])]
    table = nodes.select(*columns, *([F.col(Y), F.col(HAS_LABEL)] if spec.label_lag else []))
    ids = nodes.select(F.col(REGION_ID).cast("long").alias("_id"))
    for name in spec.edge_sets:
        edge_table, src, dst, weight = EDGE_TABLES[name]
        to_col, weight_col = EDGE_COLUMNS[name]
        edges = read_table(spark, config, edge_table, PRODUCERS[edge_table])
        _check_endpoints(edges, ids, edge_table, src, dst)
        # array_sort orders the structs by their first field: the neighbour lists come sorted by target id
        pairs = F.struct(F.col(dst).cast("long").alias("t"), F.col(weight).cast("double").alias("w"))
        grouped = (edges.groupBy(F.col(src).cast("long").alias(REGION_ID))
                   .agg(F.array_sort(F.collect_list(pairs)).alias("_e")))
        picked = [F.col("_e.t").alias(to_col)] + ([F.col("_e.w").alias(weight_col)] if weight_col else [])
        table = table.join(grouped.select(REGION_ID, *picked), REGION_ID, "left")
        table = table.withColumn(to_col, F.coalesce(F.col(to_col), F.array().cast("array<long>")))
        if weight_col:
            table = table.withColumn(weight_col, F.coalesce(F.col(weight_col), F.array().cast("array<double>")))
    if spec.label_lag:
        table = table.withColumn(LABELS, F.when(F.col(HAS_LABEL), F.col(Y).cast("array<double>"))
                                 .otherwise(F.array().cast("array<double>"))).drop(Y, HAS_LABEL)
    return table.select(*input_columns(spec))


def input_columns(spec: ModelSpec) -> list[str]:
    """The region-table columns the model reads, in its signature's order."""
    names = [REGION_ID, *(c for item in spec.layout for c in (item["column"], item["flag"]))]
    for edge_set in spec.edge_sets:
        to_col, weight_col = EDGE_COLUMNS[edge_set]
        names += [to_col] + ([weight_col] if weight_col else [])
    return names + ([LABELS] if spec.label_lag else [])


def _check_classes(config: Config, spec: ModelSpec) -> None:
    """The class names stored with node_features must be the model's (as load_graph checks for predict)."""
    import json

    from landuse.data.reader import T_NODE_FEATURES
    from landuse.data.tables import CLASSES_KEY
    from landuse.storage import parquet_files, parquet_schema

    files = parquet_files(config.tables_dir / T_NODE_FEATURES)
    metadata = (parquet_schema(files[0]).metadata or {}) if files else {}
    if CLASSES_KEY in metadata and json.loads(metadata[CLASSES_KEY]) != list(spec.classes):
        raise ConfigError(f"table {T_NODE_FEATURES}: classes {json.loads(metadata[CLASSES_KEY])} differ from the "
                          f"model's {list(spec.classes)}")


def _check_endpoints(edges: DataFrame, ids: DataFrame, table: str, src: str, dst: str) -> None:
    """ConfigError naming the first edge endpoint that is not a region (one id reaches the driver)."""
    from pyspark.sql import functions as F

    for column in (src, dst):
        unknown = (edges.select(F.col(column).cast("long").alias("_id")).distinct()
                   .join(ids, "_id", "left_anti").limit(1).collect())
        if unknown:
            raise ConfigError(f"table {table}: {column} {unknown[0]['_id']} is not a region in node_features")


def result_schema(model_uri: str, name: str | None = None):
    """(the Spark StructType of the model's output, the input column names), from its signature.

    ``model_uri``: a verified local model directory (:func:`score_spark` passes one, ``name`` being
    the URI it came from, for messages); reading the MLmodel (YAML) runs nothing of the model."""
    from mlflow.models import Model
    from pyspark.sql.types import (
        BooleanType,
        DoubleType,
        LongType,
        StringType,
        StructField,
        StructType,
    )

    from landuse.serving.pyfunc import FORMAT

    model = Model.load(model_uri)
    if (model.metadata or {}).get("format") != FORMAT or model.signature is None:
        raise ConfigError(f"--model {name or model_uri}: not an inductive landuse region model; retrain with `landuse run train`")
    types = {"long": LongType(), "double": DoubleType(), "string": StringType(), "boolean": BooleanType()}
    fields = [StructField(col.name, types[col.type.name], True)
              for col in model.signature.outputs.inputs]
    return StructType(fields), model.signature.inputs.input_names()


def pinned_uri(model_uri: str) -> str:
    """``models:/NAME@ALIAS`` as ``models:/NAME/VERSION`` (the version the alias points at now), so the
    driver and the executors load the same version; any other URI, or an unknown alias, unchanged."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    match = re.fullmatch(r"models:/([^/@]+)@([^/]+)", model_uri)
    if not match:
        return model_uri
    try:
        version = MlflowClient().get_model_version_by_alias(match[1], match[2]).version
    except MlflowException:
        return model_uri
    return f"models:/{match[1]}/{version}"


def score_spark(spark: SparkSession, regions: DataFrame, model_uri: str,
                params: dict[str, Any] | None = None) -> DataFrame:
    """The model's prediction table for a region table: ``region_id`` and the output columns, flattened.

    The whole table is one scoring group (module docstring): one partition, one Arrow batch, one
    ``predict`` call. The result is checkpointed (computed) here, while the batch limit is raised.
    Raises ConfigError with the model's one-line refusal when the table does not fit.

    The model is verified first (:func:`landuse.serving.integrity.verified_model_dir`:
    ArtifactIntegrityError when its artifacts differ from the registry's sha256 record) and
    ``spark_udf`` gets that verified local copy, never the URI (which it would download again).
    """
    from landuse.serving.integrity import no_pickle, verified_model_dir

    with verified_model_dir(model_uri) as local, no_pickle():
        return _score_spark(spark, regions, str(local), model_uri, params)


def _score_spark(spark: SparkSession, regions: DataFrame, local: str, model_uri: str,
                 params: dict[str, Any] | None) -> DataFrame:
    """:func:`score_spark` on a verified local model directory ``local`` (``model_uri`` names it in messages)."""
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    schema, inputs = result_schema(local, model_uri)
    udf = mlflow.pyfunc.spark_udf(spark, local, result_type=schema, env_manager="local", params=params)
    # only the columns the model reads (a missing one is the model's one-line refusal, naming it)
    regions = regions.select(*[c for c in regions.columns if c in inputs]).persist()  # counted, then scored
    previous = spark.conf.get(ARROW_BATCH_KEY, None)
    try:
        rows = regions.count()
        if rows == 0:
            raise ConfigError("region table: no rows")
        # one struct argument: spark_udf then hands predict a DataFrame with the struct's field names
        # (several column arguments would be renamed positionally after the signature's columns)
        scored = regions.repartition(1).select(udf(F.struct(*regions.columns)).alias(_PREDICTION))
        # read when the job runs, so raised only around the checkpoint that computes the scores once
        spark.conf.set(ARROW_BATCH_KEY, str(rows + 1))
        done = scored.select(f"{_PREDICTION}.*").localCheckpoint(eager=True)
    except Exception as exc:
        # the model's refusal arrives inside a Python worker's traceback wrapped by PySpark / Py4J
        refusal = _REFUSAL.findall(str(exc)) if not isinstance(exc, ConfigError) else []
        if refusal:
            raise ConfigError(f"--model {model_uri}: {refusal[-1].strip()}") from None
        raise
    finally:
        if previous is None:
            spark.conf.unset(ARROW_BATCH_KEY)
        else:
            spark.conf.set(ARROW_BATCH_KEY, previous)
        regions.unpersist()
    log.info("score: %d regions scored by %s in one predict call", rows, model_uri)
    return done
