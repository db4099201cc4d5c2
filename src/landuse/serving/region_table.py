"""The region table: what a served model scores — one row per region with its features and its edges.

Columns (only those the model needs are required; its signature names them):

* ``region_id`` int64, unique;
* per modality the ``node_features`` columns: ``h_<m>`` (list of floats, the modality's width) and
  ``has_<m>`` (bool) — e.g. ``h_poi`` / ``has_pois``, see :func:`landuse.data.tables.modality_columns`;
* per edge set the region's neighbours as region ids (and weights where the operator uses them):
  ``adjacent`` (contiguity, both directions listed), ``flow_to`` + ``flow_weight`` (the region's
  out-flows; in-flows follow from the other rows), ``decay_to`` + ``decay_weight`` (distance decay);
* ``labels`` (``label_lag`` models only): the region's known land-use distribution, or an empty list.

Graph models aggregate over the neighbours listed in the table, so regions the model never saw can
be scored; a neighbour id that is not a row of the table is an error unless the caller asks to drop it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from landuse.data.reader import GraphData

REGION_ID = "region_id"
LABELS = "labels"
# edge set -> (neighbour-id column, weight column or None for binary edges)
EDGE_COLUMNS: dict[str, tuple[str, str | None]] = {
    "adjacency": ("adjacent", None),
    "flow": ("flow_to", "flow_weight"),
    "distance_decay": ("decay_to", "decay_weight"),
}
UNKNOWN_NEIGHBOURS = ("error", "drop")


class RegionTableError(ValueError):
    """A region table that does not fit the model: one line naming the column, the region and the problem."""


def region_table(graph: GraphData, layout: Sequence[Mapping[str, Any]], edge_sets: Sequence[str],
                 labels: bool = False, rows: np.ndarray | None = None) -> pd.DataFrame:
    """The region table of ``graph`` (all nodes, or the node positions ``rows`` with the edges among them).

    ``layout``: ``[{"modality", "column", "flag", "width"}, ...]`` as in the model spec. ``labels``:
    add the ``labels`` column (every labelled region's distribution; empty lists elsewhere).
    """
    n = graph.num_nodes
    missing = [item["modality"] for item in layout if item["modality"] not in graph.features]
    missing += [name for name in edge_sets if name not in graph.edges]
    if missing:
        raise RegionTableError(f"the model needs {', '.join(map(repr, missing))}, which the graph does not have "
                               f"(modalities: {', '.join(graph.features) or 'none'}; edges: {', '.join(graph.edges) or 'none'})")
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    keep = np.zeros(n, dtype=bool)
    keep[rows] = True
    ids = graph.region_ids.numpy()
    table: dict[str, Any] = {REGION_ID: ids[rows].astype(np.int64)}
    for item in layout:
        values = graph.features[item["modality"]].numpy()[rows].astype(np.float64)
        table[item["column"]] = list(values)
        table[item["flag"]] = graph.flags[item["modality"]].numpy()[rows].astype(bool)
    for name in edge_sets:
        to_col, weight_col = EDGE_COLUMNS[name]
        index, weight = (t.numpy() for t in graph.edges[name])
        inside = keep[index[0]] & keep[index[1]]
        src, dst, w = index[0][inside], index[1][inside], weight[inside].astype(np.float64)
        order = np.argsort(src, kind="stable")
        counts = np.bincount(src, minlength=n)[rows]
        # per source node in `rows` order: its slice of the source-sorted edges
        starts = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n))])[rows]
        dst_ids, w_sorted = ids[dst[order]], w[order]
        table[to_col] = [dst_ids[s:s + c].astype(np.int64) for s, c in zip(starts, counts)]
        if weight_col:
            table[weight_col] = [w_sorted[s:s + c] for s, c in zip(starts, counts)]
    if labels:
        y, known = graph.y.numpy().astype(np.float64), graph.has_label.numpy()
        table[LABELS] = [y[i] if known[i] else np.zeros(0) for i in rows]
    return pd.DataFrame(table)


def as_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows (lists instead of arrays), e.g. for ``/invocations`` ``dataframe_records``."""
    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.tolist()
        return value.item() if isinstance(value, np.generic) else value

    return [{k: plain(v) for k, v in row.items()} for row in table.to_dict(orient="records")]


def _column(table: pd.DataFrame, name: str, why: str) -> pd.Series:
    if name not in table.columns:
        raise RegionTableError(f"region table: missing column {name!r} ({why}); columns given: "
                               f"{', '.join(map(str, table.columns))}")
    return table[name]


def _lists(table: pd.DataFrame, name: str, ids: np.ndarray, why: str, dtype: type) -> list[np.ndarray]:
    """A list-valued column as one array per row; a null or non-list cell is an error naming the region."""
    out: list[np.ndarray] = []
    for region, value in zip(ids, _column(table, name, why)):
        if value is None or (np.isscalar(value) and not isinstance(value, (str, bytes))):
            raise RegionTableError(f"region table: region {region}: column {name!r} must be a list, got {value!r}")
        try:
            out.append(np.asarray(value, dtype=dtype).reshape(-1))
        except (TypeError, ValueError):
            raise RegionTableError(f"region table: region {region}: column {name!r} holds non-numeric values") from None
    return out


def graph_from_table(table: pd.DataFrame, layout: Sequence[Mapping[str, Any]], edge_sets: Sequence[str],
                     classes: Sequence[str], labels: bool = False, unknown_neighbours: str = "error") -> GraphData:
    """The region table as graph tensors (node i = row i), checked against the model's layout.

    Raises :class:`RegionTableError` (one line) for a missing column, a null or duplicate region id,
    a feature list of the wrong width or with non-finite values, weight lists that do not match
    their neighbour lists, a neighbour that is not a row (unless ``unknown_neighbours="drop"``), or
    a label list of the wrong length.
    """
    if unknown_neighbours not in UNKNOWN_NEIGHBOURS:
        raise RegionTableError(f"unknown_neighbours must be one of {UNKNOWN_NEIGHBOURS}, got {unknown_neighbours!r}")
    if len(table) == 0:
        raise RegionTableError("region table: no rows")
    raw_ids = _column(table, REGION_ID, "the region's id")
    if raw_ids.isna().any():
        raise RegionTableError(f"region table: row {int(np.flatnonzero(raw_ids.isna().to_numpy())[0])}: region_id is null")
    try:
        ids = raw_ids.to_numpy().astype(np.int64)
    except (TypeError, ValueError):
        raise RegionTableError("region table: region_id must be integers") from None
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise RegionTableError(f"region table: region_id {int(unique[counts > 1][0])} appears "
                               f"{int(counts[counts > 1][0])} times")
    n, c = len(ids), len(classes)
    features, flags = {}, {}
    for item in layout:
        column, width, modality = item["column"], int(item["width"]), item["modality"]
        rows = _lists(table, column, ids, f"the {modality!r} features, {width} floats", np.float32)
        bad = [i for i, r in enumerate(rows) if r.shape[0] != width]
        if bad:
            raise RegionTableError(f"region table: region {ids[bad[0]]}: column {column!r} has {rows[bad[0]].shape[0]} "
                                   f"values; the model's feature layout expects {width} ({modality})")
        matrix = np.stack(rows) if rows else np.zeros((0, width), np.float32)
        if not np.isfinite(matrix).all():
            raise RegionTableError(f"region table: region {ids[int(np.flatnonzero(~np.isfinite(matrix).all(1))[0])]}: "
                                   f"column {column!r} holds NaN or infinite values")
        features[modality] = torch.from_numpy(matrix)
        flag = _column(table, item["flag"], f"whether the region has {modality!r} data")
        if flag.isna().any():
            raise RegionTableError(f"region table: region {ids[int(np.flatnonzero(flag.isna().to_numpy())[0])]}: "
                                   f"{item['flag']!r} is null")
        flags[modality] = torch.from_numpy(flag.to_numpy().astype(bool))
    order = np.argsort(ids)
    edges = {}
    for name in edge_sets:
        to_col, weight_col = EDGE_COLUMNS[name]
        targets = _lists(table, to_col, ids, f"the region's {name} neighbours as region ids", np.int64)
        lengths = np.array([len(t) for t in targets], dtype=np.int64)
        dst_ids = np.concatenate(targets) if n else np.zeros(0, np.int64)
        src = np.repeat(np.arange(n), lengths)
        if weight_col:
            weights = _lists(table, weight_col, ids, f"the weights of {to_col!r}", np.float32)
            uneven = np.flatnonzero(np.array([len(w) for w in weights]) != lengths)
            if len(uneven):
                raise RegionTableError(f"region table: region {ids[uneven[0]]}: {weight_col!r} has {len(weights[uneven[0]])} "
                                       f"values for {lengths[uneven[0]]} ids in {to_col!r}")
            weight = np.concatenate(weights).astype(np.float32) if n else np.zeros(0, np.float32)
            if not np.isfinite(weight).all() or (weight < 0).any():
                raise RegionTableError(f"region table: region {ids[src[np.flatnonzero(~(np.isfinite(weight) & (weight >= 0)))[0]]]}: "
                                       f"{weight_col!r} holds a negative or non-finite weight")
        else:
            weight = np.ones(len(dst_ids), np.float32)
        pos = np.searchsorted(ids, dst_ids, sorter=order)
        pos = np.clip(pos, 0, n - 1)
        found = ids[order[pos]] == dst_ids
        if not found.all():
            if unknown_neighbours == "error":
                first = int(np.flatnonzero(~found)[0])
                raise RegionTableError(
                    f"region table: region {ids[src[first]]} lists neighbour {int(dst_ids[first])} in {to_col!r}, which is "
                    f"not a row of the table ({int((~found).sum())} such ids); add those regions, or pass "
                    "params {'unknown_neighbours': 'drop'} to ignore neighbours outside the table")
            src, pos, weight = src[found], pos[found], weight[found]
        index = np.stack([src, order[pos]]).astype(np.int64)
        edges[name] = (torch.from_numpy(index.reshape(2, -1)), torch.from_numpy(weight))
    y = torch.zeros(n, c)
    has_label = torch.zeros(n, dtype=torch.bool)
    if labels:
        rows = _lists(table, LABELS, ids, f"the known land-use distribution ({c} floats) or an empty list", np.float32)
        for i, row in enumerate(rows):
            if row.shape[0] not in (0, c):
                raise RegionTableError(f"region table: region {ids[i]}: {LABELS!r} has {row.shape[0]} values; "
                                       f"the model's classes are {list(classes)}")
            if row.shape[0]:
                y[i], has_label[i] = torch.from_numpy(row), True
    return GraphData(region_ids=torch.from_numpy(ids), features=features, flags=flags, y=y, has_label=has_label,
                     coverage=has_label.double(), edges=edges, classes=list(classes))
