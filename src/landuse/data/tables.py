"""The Petastorm-ready training tables: ``node_features`` shards and ``edges_flow``.

``node_features`` has one row per region, sorted by region id (row i = graph node i), with only
numeric scalar and fixed-length array columns, as Petastorm's ``make_batch_reader`` requires:

* ``region_id`` int64;
* per modality present: ``h_<m>`` list<float32> (same length on every row) and its bool flag
  ``has_<m>`` (the four original modalities keep their historic names, see :data:`ORIGINAL_COLUMNS`);
  a region missing from a modality table gets a zero vector and flag False;
* ``y`` list<float32> (one entry per class, zeros where unlabelled), ``coverage`` float64 (0 where
  unlabelled) and ``has_label`` bool (coverage > 0).

The class names travel in the Arrow/Parquet schema metadata under :data:`CLASSES_KEY` (JSON list)
and the modalities under :data:`MODALITIES_KEY` (JSON {name: [column, flag]}), set by
:func:`assemble_node_features` and written into every shard by :func:`write_shards`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from landuse.storage import write_parquet

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

NODE_REGION_ID = "region_id"
Y = "y"
HAS_LABEL = "has_label"
COVERAGE = "coverage"
VECTOR = "vector"  # the embedding column of every modality input table
CLASSES_KEY = b"landuse.classes"
MODALITIES_KEY = b"landuse.modalities"

# The original modalities' (feature column in node_features, flag column in both the input and
# node_features); every other modality m uses (h_<m>, has_<m>), see modality_columns.
ORIGINAL_COLUMNS: dict[str, tuple[str, str]] = {
    "poi": ("h_poi", "has_pois"),
    "image": ("h_img", "has_image"),
    "geo": ("h_geo", "has_geo"),
    "flow": ("h_flow", "has_flow"),
}


def modality_columns(name: str) -> tuple[str, str]:
    """(feature column, flag column) of modality ``name``: historic names for the original four, else h_<name>, has_<name>."""
    return ORIGINAL_COLUMNS.get(name, (f"h_{name}", f"has_{name}"))


def _positions(what: str, node_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Row index in the sorted ``node_ids`` of each id; ValueError on duplicates or unknown ids."""
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{what}: duplicate region ids, e.g. {int(unique[counts > 1][0])}")
    pos = np.searchsorted(node_ids, ids)
    inside = pos < len(node_ids)
    known = np.zeros(len(ids), dtype=bool)
    known[inside] = node_ids[pos[inside]] == ids[inside]
    if not known.all():
        raise ValueError(f"{what}: {int((~known).sum())} region ids not among the regions, e.g. {int(ids[~known][0])}")
    return pos


def list_array(matrix: np.ndarray) -> pa.ListArray:
    """A [N, d] float32 matrix as a list<float32> column."""
    n, d = matrix.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * d, pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), pa.float32()))


def modality_table(region_ids: np.ndarray, vectors: np.ndarray, present: np.ndarray, flag: str) -> pd.DataFrame:
    """A modality input table: one row per region — region_id, vector (float32; zeros where absent), ``flag``."""
    vectors = np.where(np.asarray(present, dtype=bool)[:, None], vectors, 0.0).astype(np.float32)
    return pd.DataFrame({NODE_REGION_ID: np.asarray(region_ids, dtype=np.int64), VECTOR: list(vectors),
                         flag: np.asarray(present, dtype=bool)})


def _modality(name: str, frame: pd.DataFrame, node_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vectors [N, d] float32, flags [N] bool) for one modality table, aligned to ``node_ids``."""
    flag = modality_columns(name)[1]
    missing = {NODE_REGION_ID, VECTOR, flag} - set(frame.columns)
    if missing:
        raise ValueError(f"modality {name}: missing columns {sorted(missing)} (has: {list(frame.columns)})")
    pos = _positions(f"modality {name}", node_ids, frame[NODE_REGION_ID].to_numpy(np.int64))
    vectors = frame[VECTOR].to_numpy()
    present = frame[VECTOR].notna().to_numpy()
    dims = {len(v) for v in vectors[present]}
    if len(dims) != 1:
        raise ValueError(f"modality {name}: vectors must all have one length, found lengths {sorted(dims) or 'none'}")
    features = np.zeros((len(node_ids), dims.pop()), dtype=np.float32)
    flags = np.zeros(len(node_ids), dtype=bool)
    flags[pos] = frame[flag].eq(True).to_numpy() & present
    keep = flags[pos]
    # Rows flagged absent carry no information: zero them so no stale value or NaN reaches training.
    if keep.any():
        features[pos[keep]] = np.stack(vectors[keep]).astype(np.float32)
    if not np.isfinite(features).all():
        raise ValueError(f"modality {name}: non-finite values in vectors of flagged regions")
    return features, flags


def assemble_node_features(
    region_ids: np.ndarray,
    modalities: dict[str, pd.DataFrame],
    labels: pd.DataFrame | None,
    classes: Sequence[str],
) -> pa.Table:
    """Join the modality tables and labels into one row per region (see the module docstring).

    ``modalities`` maps a modality name to a table with region_id, vector and the modality's flag
    (:func:`modality_columns`), in the column order wanted; ``labels`` has region_id, one column per class and coverage (None: no labels).
    Raises ``ValueError`` for duplicate ids, ids outside ``region_ids``, ragged vectors, unknown
    modalities or missing label columns.
    """
    bad = [m for m in modalities if not m.replace("_", "").isalnum()]
    if bad:
        raise ValueError(f"modality name {bad[0]!r}: use letters, digits and _ only")
    node_ids = np.sort(np.asarray(region_ids, dtype=np.int64))
    _positions("regions", node_ids, node_ids)  # duplicate check
    columns: dict[str, pa.Array] = {NODE_REGION_ID: pa.array(node_ids, pa.int64())}
    for name in modalities:
        features, flags = _modality(name, modalities[name], node_ids)
        column, flag = modality_columns(name)
        columns[column] = list_array(features)
        columns[flag] = pa.array(flags, pa.bool_())
    y = np.zeros((len(node_ids), len(classes)), dtype=np.float32)
    coverage = np.zeros(len(node_ids), dtype=np.float64)
    if labels is not None:
        missing = {NODE_REGION_ID, COVERAGE, *classes} - set(labels.columns)
        if missing:
            raise ValueError(f"labels: missing columns {sorted(missing)} (has: {list(labels.columns)})")
        pos = _positions("labels", node_ids, labels[NODE_REGION_ID].to_numpy(np.int64))
        y[pos] = labels[list(classes)].to_numpy(np.float32)
        coverage[pos] = labels[COVERAGE].to_numpy(np.float64)
        if not (np.isfinite(y).all() and np.isfinite(coverage).all()):
            raise ValueError("labels: non-finite class shares or coverage")
    columns[Y] = list_array(y)
    columns[COVERAGE] = pa.array(coverage, pa.float64())
    columns[HAS_LABEL] = pa.array(coverage > 0, pa.bool_())
    table = pa.table(columns)
    layout = {name: list(modality_columns(name)) for name in modalities}
    return table.replace_schema_metadata({CLASSES_KEY: json.dumps(list(classes)).encode(),
                                          MODALITIES_KEY: json.dumps(layout).encode()})


def table_modalities(schema: pa.Schema) -> dict[str, tuple[str, str]]:
    """Modality -> (column, flag) of a node_features schema (from its metadata; else the original four present)."""
    metadata = schema.metadata or {}
    if MODALITIES_KEY in metadata:
        return {k: (v[0], v[1]) for k, v in json.loads(metadata[MODALITIES_KEY]).items()}
    return {m: cols for m, cols in ORIGINAL_COLUMNS.items() if cols[0] in schema.names}


def write_shards(table: pa.Table, directory: Path, row_group_rows: int, shard_rows: int) -> list[Path]:
    """Write ``table`` as ``part-00000.parquet``, ``part-00001.parquet``, … into ``directory``.

    Each file has at most ``shard_rows`` rows in row groups of at most ``row_group_rows`` rows; the
    schema metadata (class names) goes into every file. An empty table still gets one (empty) file
    so readers see the schema. Returns the files in order.
    """
    if row_group_rows <= 0 or shard_rows <= 0:
        raise ValueError(f"write_shards: row_group_rows and shard_rows must be > 0, got {row_group_rows}, {shard_rows}")
    files = []
    for index, start in enumerate(range(0, max(table.num_rows, 1), shard_rows)):
        path = directory / f"part-{index:05d}.parquet"
        write_parquet(table.slice(start, shard_rows), path, row_group_size=row_group_rows)
        files.append(path)
    return files


def flow_edges(flows: "DataFrame", source: str | None, weight: str) -> "DataFrame":
    """``edges_flow`` from ``flows``: (o_region int64, d_region int64, weight double).

    Keeps one trip ``source`` (None: all sources) and sums ``weight`` (``daily_avg`` or
    ``trips``) per (o_region, d_region). The diagonal is kept: the graph operators decide about it.
    """
    from pyspark.sql import functions as F

    if weight not in flows.columns:
        raise ValueError(f"flow_edges: weight column {weight!r} not in flows (has: {', '.join(flows.columns)})")
    selected = flows if source is None else flows.where(F.col("source") == source)
    return selected.groupBy("o_region", "d_region").agg(F.sum(weight).cast("double").alias("weight")).select(
        F.col("o_region").cast("long").alias("o_region"), F.col("d_region").cast("long").alias("d_region"), "weight"
    )


def node_manifest(table: pa.Table, classes: Sequence[str]) -> dict[str, Any]:
    """JSON-serialisable summary of a node_features table: counts, dims per modality, class names."""

    def true_count(column: str) -> int:
        return int(np.count_nonzero(table.column(column).to_numpy(zero_copy_only=False)))

    modalities = {
        name: {
            "column": column,
            "dim": len(table.column(column)[0]) if table.num_rows else 0,
            "flag": flag,
            "regions": true_count(flag),
        }
        for name, (column, flag) in table_modalities(table.schema).items()
    }
    return {"regions": table.num_rows, "labelled": true_count(HAS_LABEL), "classes": list(classes), "modalities": modalities}
