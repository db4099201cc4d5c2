"""Bring-your-own region embeddings: a user's table keyed by region id becomes a modality.

``inputs.embeddings: {NAME: {path, id_column, columns}}`` — a Parquet or CSV file with one row per
region: the id (matched against the regions' own ids, i.e. the values of
``inputs.regions.options.id_column``, compared as text, integers without a trailing ``.0``) and the
vector, either one list/array column or several numeric columns. The result is a modality table
(``region_id``, ``vector``, ``has_<NAME>``); regions the file lacks get ``has_<NAME>`` False.

Rows that cannot be used are never dropped silently: rows whose id is not a region
(``unknown_region``), repeats of an id (``duplicate_id``, the first row is kept) and rows with a
missing or non-finite value (``non_finite``) are returned as rejects with the reason and the raw
row, and rows in = kept + rejected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from landuse.config import ExternalEmbeddingConfig
from landuse.data.tables import modality_table
from landuse.ingest.errors import IngestError
from landuse.spark.schemas import RAW, REASON, REGION_ID, SOURCE, SOURCE_ID

UNKNOWN_REGION = "unknown_region"
DUPLICATE_ID = "duplicate_id"
NON_FINITE = "non_finite"


@dataclass(frozen=True)
class ExternalEmbedding:
    """A read user embedding: the modality table, its rejects and the accounting."""

    table: pd.DataFrame  # region_id, vector, has_<name>: one row per region
    rejects: pd.DataFrame  # source, reason, raw
    rows_in: int
    kept: int
    dim: int


def _id_text(values: pd.Series) -> pd.Series:
    """Ids as the text the regions table keeps (integers as integers, even when read as floats)."""
    if pd.api.types.is_float_dtype(values.dtype):
        finite = np.isfinite(values.to_numpy(float))
        whole = finite & (values.to_numpy(float) == np.round(np.where(finite, values.to_numpy(float), 0)))
        return pd.Series(np.where(whole, values.fillna(0).astype(np.int64).astype(str), values.astype(str)),
                         index=values.index)
    return values.astype(str).str.strip()


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise IngestError(f"{path}: embedding file not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq") or path.is_dir():
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as exc:  # pyarrow / pandas raise many types for a bad file
        raise IngestError(f"{path}: unreadable embedding table ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def _vectors(frame: pd.DataFrame, cfg: ExternalEmbeddingConfig, where: str) -> np.ndarray:
    """[rows, d] float64 (NaN where a value is missing) from a list column or numeric columns."""
    if cfg.columns:
        missing = [c for c in cfg.columns if c not in frame.columns]
        if missing:
            raise IngestError(f"{where}: missing column {missing[0]!r} (has: {', '.join(map(str, frame.columns[:12]))})")
        columns = list(cfg.columns)
    else:
        lists = [c for c in frame.columns if c != cfg.id_column and frame[c].map(lambda v: isinstance(v, (list, np.ndarray))).any()]
        if len(lists) == 1:
            values = frame[lists[0]].to_numpy()
            dims = {len(v) for v in values if isinstance(v, (list, np.ndarray))}
            if len(dims) != 1:
                raise IngestError(f"{where}: column {lists[0]!r}: vectors of different lengths {sorted(dims)[:5]}")
            d = dims.pop()
            out = np.full((len(frame), d), np.nan)
            for i, v in enumerate(values):
                if isinstance(v, (list, np.ndarray)):
                    out[i] = np.asarray(v, dtype=np.float64)
            return out
        columns = [c for c in frame.columns if c != cfg.id_column and pd.api.types.is_numeric_dtype(frame[c])]
        if not columns:
            raise IngestError(f"{where}: no vector column (a list column, or numeric columns besides {cfg.id_column!r})")
    bad = [c for c in columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise IngestError(f"{where}: column {bad[0]!r} is not numeric")
    return frame[columns].to_numpy(np.float64)


def read_external_embedding(name: str, cfg: ExternalEmbeddingConfig, regions: pd.DataFrame) -> ExternalEmbedding:
    """The modality table of one user embedding, aligned to ``regions`` (region_id, source_id)."""
    where = f"inputs.embeddings.{name} ({cfg.path})"
    frame = _read(Path(cfg.path))
    if cfg.id_column not in frame.columns:
        raise IngestError(f"{where}: missing id column {cfg.id_column!r} (has: {', '.join(map(str, frame.columns[:12]))})")
    vectors = _vectors(frame, cfg, where)
    ids = _id_text(frame[cfg.id_column])
    lookup = dict(zip(regions[SOURCE_ID].astype(str), regions[REGION_ID].astype(np.int64)))
    region = ids.map(lookup)
    reason = pd.Series(None, index=frame.index, dtype=object)
    reason[~np.isfinite(vectors).all(axis=1)] = NON_FINITE
    reason[region.isna()] = UNKNOWN_REGION
    reason[reason.isna() & ids.duplicated(keep="first") & region.notna()] = DUPLICATE_ID
    keep = reason.isna().to_numpy()
    if not keep.any():
        example = ids.iloc[0] if len(ids) else "none"
        raise IngestError(f"{where}: no row matches a region (e.g. id {example!r}; region ids look like "
                          f"{regions[SOURCE_ID].astype(str).iloc[0]!r}); check id_column")
    node_ids = np.sort(regions[REGION_ID].to_numpy(np.int64))
    pos = np.searchsorted(node_ids, region[keep].to_numpy(np.int64))
    aligned = np.zeros((len(node_ids), vectors.shape[1]), dtype=np.float32)
    aligned[pos] = vectors[keep]
    present = np.zeros(len(node_ids), dtype=bool)
    present[pos] = True
    table = modality_table(node_ids, aligned, present, f"has_{name}")
    bad = frame[~keep]
    rejects = pd.DataFrame({
        SOURCE: f"embeddings.{name}",
        REASON: reason[~keep].to_numpy(),
        RAW: [json.dumps({k: _plain(v) for k, v in row.items()}) for row in bad.to_dict("records")],
    })
    out = ExternalEmbedding(table, rejects, len(frame), int(keep.sum()), int(vectors.shape[1]))
    assert out.rows_in == out.kept + len(out.rejects)
    return out


def _plain(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
