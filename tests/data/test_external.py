"""Bring-your-own region embeddings: ids matched as text, rejects with reasons, rows in = kept + rejected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from landuse.config import ExternalEmbeddingConfig
from landuse.data.external import read_external_embedding
from landuse.ingest.errors import IngestError

REGIONS = pd.DataFrame({"region_id": [10, 11, 12], "source_id": ["1000100", "1000200", "1000300"]})


def test_csv_numeric_columns_with_rejects(tmp_path: Path) -> None:
    path = tmp_path / "emb.csv"
    pd.DataFrame({"GEOID": [1000100.0, 1000300.0, 1000300.0, 9999999.0, 1000200.0],
                  "e0": [1.0, 2.0, 5.0, 1.0, np.nan], "e1": [0.5, 0.25, 5.0, 1.0, 1.0]}).to_csv(path, index=False)
    got = read_external_embedding("dgi", ExternalEmbeddingConfig(path=path, id_column="GEOID"), REGIONS)
    assert got.rows_in == 5 and got.kept == 2 and len(got.rejects) == 3 and got.dim == 2
    assert sorted(got.rejects["reason"]) == ["duplicate_id", "non_finite", "unknown_region"]
    assert json.loads(got.rejects["raw"].iloc[0])  # the raw row survives as JSON
    table = got.table.set_index("region_id")
    assert table["has_dgi"].tolist() == [True, False, True]
    np.testing.assert_allclose(table.loc[12, "vector"], [2.0, 0.25])  # the first of the duplicates is kept
    np.testing.assert_allclose(table.loc[11, "vector"], [0, 0])


def test_parquet_list_column(tmp_path: Path) -> None:
    path = tmp_path / "emb.parquet"
    pd.DataFrame({"region_id": ["1000100", "1000200"], "vector": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}).to_parquet(path)
    got = read_external_embedding("mine", ExternalEmbeddingConfig(path=path), REGIONS)
    assert got.dim == 3 and got.kept == 2 and got.table["has_mine"].sum() == 2


@pytest.mark.parametrize("frame, cfg, message", [
    (pd.DataFrame({"id": ["1000100"], "e0": [1.0]}), {}, "missing id column 'region_id'"),
    (pd.DataFrame({"region_id": ["x"], "e0": [1.0]}), {}, "no row matches a region"),
    (pd.DataFrame({"region_id": ["1000100"], "e0": [1.0]}), {"columns": ("e9",)}, "missing column 'e9'"),
    (pd.DataFrame({"region_id": ["1000100"], "name": ["a"]}), {}, "no vector column"),
])
def test_one_line_errors(tmp_path: Path, frame: pd.DataFrame, cfg: dict, message: str) -> None:
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(IngestError, match=message) as info:
        read_external_embedding("bad", ExternalEmbeddingConfig(path=path, **cfg), REGIONS)
    assert "\n" not in str(info.value) and "inputs.embeddings.bad" in str(info.value)
