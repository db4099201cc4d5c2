"""The trainer's input: ``node_features`` and the edge tables, read through Petastorm.

Every table is read with ``petastorm.make_batch_reader`` + ``petastorm.pytorch.DataLoader`` (the
single-threaded ``dummy`` pool, no row-group shuffling), concatenated and its row count checked
against the Parquet footers (see :func:`read_columns`). Petastorm does not promise an order, so
nodes are sorted by region id after reading: node i = ``region_ids[i]``, the order the
``assemble`` stage wrote. Edge endpoints (region ids) are mapped to those node indices.

Petastorm 0.13.1 with pyarrow 14, as checked here: list<float32> columns arrive as ``[B, d]``
float32 tensors; bool columns arrive as uint8 (turned back into bool here); an empty table yields
no batches; non-Parquet files beginning with ``_`` or ``.`` (``_manifest.json``, Spark's
``_SUCCESS`` and ``.crc``) are ignored. It emits pyarrow FutureWarnings and INFO logs on every
reader, silenced while reading.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from landuse.data.tables import CLASSES_KEY, COVERAGE, HAS_LABEL, NODE_REGION_ID, Y, table_modalities
from landuse.storage import local_copy, location, parquet_metadata, parquet_schema

log = logging.getLogger(__name__)
T_NODE_FEATURES = "node_features"
# edge set -> (table, source id column, target id column, weight column)
EDGE_TABLES: dict[str, tuple[str, str, str, str]] = {
    "adjacency": ("edges_adjacency", "region_id_a", "region_id_b", "shared_length_m"),
    "flow": ("edges_flow", "o_region", "d_region", "weight"),
    "distance_decay": ("edges_distance_decay", "region_id_a", "region_id_b", "weight"),
}
# table -> the `landuse run` stage that writes it (for error messages)
PRODUCERS = {T_NODE_FEATURES: "assemble", "edges_adjacency": "regions", "edges_flow": "assemble",
             "edges_distance_decay": "regions"}


@dataclass
class GraphData:
    """One region graph, full-batch: node tensors in region-id order and edge lists per edge set."""

    region_ids: torch.Tensor  # [N] int64, node i = region_ids[i]
    features: dict[str, torch.Tensor]  # modality -> [N, d] float32
    flags: dict[str, torch.Tensor]  # modality -> [N] bool
    y: torch.Tensor  # [N, C] float32
    has_label: torch.Tensor  # [N] bool
    coverage: torch.Tensor  # [N] float64
    edges: dict[str, tuple[torch.Tensor, torch.Tensor]]  # name -> (edge_index [2, E] int64, weight [E] float32)
    classes: list[str]

    @property
    def num_nodes(self) -> int:
        """N, the number of regions."""
        return int(self.region_ids.shape[0])

    def subgraph(self, rows: np.ndarray | torch.Tensor) -> GraphData:
        """The graph induced by the node positions ``rows`` (in that order): their tensors and the edges
        among them, renumbered to 0..len(rows)-1; edges to nodes outside ``rows`` are dropped."""
        rows = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        position = torch.full((self.num_nodes,), -1, dtype=torch.long)
        position[rows] = torch.arange(len(rows))
        edges = {}
        for name, (index, weight) in self.edges.items():
            mapped = position[index]
            inside = (mapped >= 0).all(0)
            edges[name] = (mapped[:, inside], weight[inside])
        return GraphData(region_ids=self.region_ids[rows], features={k: v[rows] for k, v in self.features.items()},
                         flags={k: v[rows] for k, v in self.flags.items()}, y=self.y[rows],
                         has_label=self.has_label[rows], coverage=self.coverage[rows], edges=edges,
                         classes=list(self.classes))

    def to(self, device: torch.device | str) -> GraphData:
        """A copy with every tensor on ``device``."""
        return GraphData(
            region_ids=self.region_ids.to(device),
            features={k: v.to(device) for k, v in self.features.items()},
            flags={k: v.to(device) for k, v in self.flags.items()},
            y=self.y.to(device),
            has_label=self.has_label.to(device),
            coverage=self.coverage.to(device),
            edges={k: (i.to(device), w.to(device)) for k, (i, w) in self.edges.items()},
            classes=list(self.classes),
        )


@contextlib.contextmanager
def _quiet_petastorm() -> Iterator[None]:
    """Silence petastorm's per-reader pyarrow deprecation warnings and INFO logs."""
    logger = logging.getLogger("petastorm")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def _require(tables_dir: Path, table: str) -> Path:
    """The table's directory, its files checked against its manifest; a ValueError naming the stage
    that writes it when absent, an IntegrityError naming the part when damaged."""
    from landuse.manifest import verify_output, work_dir_cache

    path = tables_dir / table
    if not path.is_dir() or not _parquet_files(path):
        raise ValueError(f"table {table} not found at {path}: run `landuse run {PRODUCERS[table]}` first")
    cache = work_dir_cache(tables_dir.parent)  # tables_dir is <work_dir>/tables
    try:
        verify_output(path, f"table {table}", f"landuse run {PRODUCERS[table]} --force", cache)
    finally:
        if cache is not None:
            cache.save()
    return path


def _parquet_files(path: Path) -> list[Path]:
    """The data files of a Parquet directory (what petastorm reads: not ``_*`` or ``.*``)."""
    return sorted((f for f in path.glob("*.parquet") if not f.name.startswith(("_", "."))), key=str)


def read_columns(path: Path, columns: Sequence[str], batch_size: int, attempts: int = 3) -> dict[str, torch.Tensor]:
    """The named columns of the Parquet directory ``path``, read through Petastorm and concatenated.

    Row order is the reader's (not guaranteed); an empty table gives empty 1-d tensors. The row
    count is checked against the Parquet footers: petastorm 0.13.1's pools can end a pass early
    (a race between its ventilator thread and ``get_results``; the thread pool lost the last row
    groups in about a third of the passes here), so a short pass is retried, then refused.
    """
    from petastorm import make_batch_reader
    from petastorm.pytorch import DataLoader

    expected = sum(parquet_metadata(f).num_rows for f in _parquet_files(path))
    # schema_fields are regexes matched against whole names; anchor them so "weight" never picks up
    # "weight_norm" (and petastorm's old-vs-new matching warning stays quiet).
    fields = [re.escape(c) + "$" for c in columns]
    for attempt in range(1, attempts + 1):
        with _quiet_petastorm():
            # The dummy pool reads on this thread: the race window is smallest, no threads to leak.
            with local_copy(path) as local:
                reader = make_batch_reader(
                    "file://" + str(local.resolve()), schema_fields=fields, num_epochs=1,
                    shuffle_row_groups=False, reader_pool_type="dummy",
                )
                with DataLoader(reader, batch_size=batch_size) as loader:  # its __exit__ stops the reader quietly
                    batches = list(loader)
        got = sum(len(b[columns[0]]) for b in batches)
        if got == expected:
            break
        log.warning("petastorm read %d of %d rows from %s (attempt %d of %d)", got, expected, path, attempt, attempts)
    else:
        raise RuntimeError(f"petastorm read {got} of {expected} rows from {path} in {attempts} attempts")
    if not batches:
        return {c: torch.empty(0) for c in columns}
    return {c: torch.cat([b[c] for b in batches]) for c in columns}


def _classes(path: Path, requested: Sequence[str] | None) -> list[str]:
    """Class names from the node_features schema metadata, checked against ``requested``."""
    metadata = parquet_schema(_parquet_files(path)[0]).metadata or {}
    stored = json.loads(metadata[CLASSES_KEY]) if CLASSES_KEY in metadata else None
    if stored is None:
        if requested is None:
            raise ValueError(f"{path}: no class names in the schema metadata ({CLASSES_KEY.decode()}); pass classes")
        return list(requested)
    if requested is not None and list(requested) != stored:
        raise ValueError(f"{path}: classes {list(requested)} differ from the table's {stored}")
    return list(stored)


def _edges(tables_dir: Path, name: str, region_ids: np.ndarray, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(edge_index [2, E] node indices, weight [E] float32) of one edge set."""
    table, src, dst, weight = EDGE_TABLES[name]
    cols = read_columns(_require(tables_dir, table), (src, dst, weight), batch_size)
    index = []
    for column in (src, dst):
        ids = cols[column].long().numpy()
        pos = np.searchsorted(region_ids, ids)
        known = pos < len(region_ids)
        known[known] = region_ids[pos[known]] == ids[known]
        if not known.all():
            raise ValueError(f"table {table}: {column} {int(ids[~known][0])} is not a region in node_features "
                             f"({int((~known).sum())} unknown endpoints)")
        index.append(pos)
    edge_index = torch.from_numpy(np.stack(index).astype(np.int64).reshape(2, -1))
    return edge_index, cols[weight].to(torch.float32)


def load_graph(
    tables_dir: Path,
    classes: Sequence[str] | None = None,
    batch_size: int = 4096,
    edges: Sequence[str] | None = None,
) -> GraphData:
    """Read ``node_features`` and edge sets from ``tables_dir`` (``<work_dir>/tables``).

    ``classes``: None takes the names stored with node_features; given names must match them.
    ``edges``: names from :data:`EDGE_TABLES`; each named set must exist. None loads every edge
    table present and skips the others. Raises ValueError for a missing table (naming the stage
    that writes it) or an edge endpoint that is not a region in node_features.
    """
    tables_dir = location(tables_dir) if isinstance(tables_dir, str) else tables_dir
    unknown = set(edges or ()) - set(EDGE_TABLES)
    if unknown:
        raise ValueError(f"unknown edge sets {sorted(unknown)} (known: {', '.join(EDGE_TABLES)})")
    path = _require(tables_dir, T_NODE_FEATURES)
    class_names = _classes(path, classes)
    present = table_modalities(parquet_schema(_parquet_files(path)[0]))
    columns = [NODE_REGION_ID, Y, COVERAGE, HAS_LABEL, *(c for cols in present.values() for c in cols)]
    cols = read_columns(path, columns, batch_size)
    if cols[NODE_REGION_ID].numel() == 0:
        raise ValueError(f"table {T_NODE_FEATURES} at {path} has no rows")
    order = torch.argsort(cols[NODE_REGION_ID])
    cols = {k: v[order] for k, v in cols.items()}
    region_ids = cols[NODE_REGION_ID].long()
    if (region_ids[1:] == region_ids[:-1]).any():
        raise ValueError(f"table {T_NODE_FEATURES}: duplicate region ids")
    if cols[Y].shape[1] != len(class_names):
        raise ValueError(f"table {T_NODE_FEATURES}: y has {cols[Y].shape[1]} columns for {len(class_names)} classes")
    if edges is None:
        edges = [n for n, (table, *_) in EDGE_TABLES.items() if (tables_dir / table).is_dir()]
    ids = region_ids.numpy()
    return GraphData(
        region_ids=region_ids,
        features={m: cols[f].float() for m, (f, _) in present.items()},
        flags={m: cols[flag].bool() for m, (_, flag) in present.items()},
        y=cols[Y].float(),
        has_label=cols[HAS_LABEL].bool(),
        coverage=cols[COVERAGE].double(),
        edges={name: _edges(tables_dir, name, ids, batch_size) for name in edges},
        classes=class_names,
    )
