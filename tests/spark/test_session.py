"""Session builder: local defaults, UTC, Kryo, engine resolution, Sedona registration when jars exist."""

from __future__ import annotations

import os

import pytest

from landuse.config import Config, SparkConfig, SpatialConfig
from landuse.spark.session import (
    ENGINE_CONF_KEY,
    SessionError,
    build_session,
    java_major_version,
    resolve_engine,
    sedona_available,
)


def test_local_session_settings(spark) -> None:
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.serializer") == "org.apache.spark.serializer.KryoSerializer"
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"
    assert spark.sparkContext.master.startswith("local")
    assert os.environ["DO_NOT_TRACK"] == "true"
    assert os.environ["SCARF_NO_ANALYTICS"] == "true"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"


def test_engine_resolution_without_sedona(spark) -> None:
    if sedona_available(spark):
        pytest.skip("Sedona jars are on the classpath; the no-Sedona path is not reachable here")
    assert spark.conf.get(ENGINE_CONF_KEY) == "builtin"
    assert resolve_engine(spark, "auto") == "builtin"
    assert resolve_engine(spark, "builtin") == "builtin"
    with pytest.raises(SessionError, match="spatial.engine=sedona but Sedona's JVM classes are not on the classpath"):
        resolve_engine(spark, "sedona")


def test_builder_joins_the_active_session(spark, tmp_path) -> None:
    config = Config(name="again", work_dir=tmp_path, spark=SparkConfig(shuffle_partitions=2), spatial=SpatialConfig("builtin"))
    again = build_session(config)
    assert again.sparkContext is spark.sparkContext
    assert again.conf.get(ENGINE_CONF_KEY) == "builtin"


@pytest.mark.sedona
def test_sedona_registration(spark) -> None:
    if not os.environ.get("SEDONA_JARS") or not sedona_available(spark):
        pytest.skip("needs Sedona jars: set SEDONA_JARS to local sedona-spark-shaded-3.5 + geotools-wrapper jar paths")
    assert resolve_engine(spark, "auto") == "sedona"
    assert spark.sql("SELECT ST_AsText(ST_Point(1.0, 2.0)) AS wkt").first()["wkt"] == "POINT (1 2)"


def test_java_is_detected() -> None:
    assert java_major_version() in (8, 11, 17)
