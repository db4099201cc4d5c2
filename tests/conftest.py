"""Shared fixtures: one local Spark session for the whole test run, built by landuse.spark.session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

for _key, _value in {"DO_NOT_TRACK": "true", "SCARF_NO_ANALYTICS": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}.items():
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (configs in conf/ are relative to it)."""
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data with the real NYC data; tests needing it skip with the reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (expected ../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):
    """A session-scoped local SparkSession (2 shuffle partitions, builtin engine unless SEDONA_JARS)."""
    from landuse.config import Config, SparkConfig, SpatialConfig
    from landuse.spark.session import build_session

    work = tmp_path_factory.mktemp("spark-work")
    config = Config(
        name="tests",
        work_dir=work,
        spark=SparkConfig(app_name="landuse-tests", master="local[2]", shuffle_partitions=2, driver_memory="2g"),
        spatial=SpatialConfig(engine="auto"),
    )
    session = build_session(config)
    # Test inputs are kilobytes: compiling whole-stage code costs more than interpreting it
    # (about half the run time of the Spark tests). Production sessions keep codegen on.
    session.conf.set("spark.sql.codegen.wholeStage", "false")
    yield session
    session.stop()
