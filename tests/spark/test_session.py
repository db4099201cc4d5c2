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


def test_engine_resolution_without_sedona(spark, monkeypatch) -> None:
    """The no-Sedona path, reached on any session by making Sedona's classes look absent."""
    from landuse.spark import session

    assert spark.conf.get(ENGINE_CONF_KEY) == ("sedona" if sedona_available(spark) else "builtin")
    monkeypatch.setattr(session, "sedona_available", lambda _spark: False)
    assert resolve_engine(spark, "auto") == "builtin"
    assert resolve_engine(spark, "builtin") == "builtin"
    with pytest.raises(
        SessionError,
        match=r"spatial.engine=sedona but Sedona's JVM classes are not on the classpath: .*run `make jars`",
    ):
        resolve_engine(spark, "sedona")


def test_builder_joins_the_active_session(spark, tmp_path) -> None:
    config = Config(name="again", work_dir=tmp_path, spark=SparkConfig(shuffle_partitions=2), spatial=SpatialConfig("builtin"))
    before = spark.conf.get(ENGINE_CONF_KEY)
    try:
        again = build_session(config)
        assert again.sparkContext is spark.sparkContext
        assert again.conf.get(ENGINE_CONF_KEY) == "builtin"
    finally:
        # The session is shared by the whole test run: later tests must see the engine it resolved.
        spark.conf.set(ENGINE_CONF_KEY, before)


@pytest.mark.sedona
def test_sedona_registration(spark) -> None:
    """With the jars of jvm/jars (``make jars``) the tests' session resolves the Sedona engine."""
    from landuse.spark.session import session_engine
    from tests.spatial.helpers import require_sedona

    require_sedona(spark)
    assert session_engine(spark) == "sedona"
    assert resolve_engine(spark, "auto") == "sedona"
    assert resolve_engine(spark, "sedona") == "sedona"
    assert spark.sql("SELECT ST_AsText(ST_Point(1.0, 2.0)) AS wkt").first()["wkt"] == "POINT (1 2)"


def test_java_is_detected() -> None:
    assert java_major_version() in (8, 11, 17)


def _fake_java(tmp_path, version_line: str):
    bin_dir = tmp_path / "jdk" / "bin"
    bin_dir.mkdir(parents=True)
    java = bin_dir / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(0o755)
    return tmp_path / "jdk"


def test_unsupported_java_is_explained(tmp_path, monkeypatch) -> None:
    from landuse.spark.session import check_java

    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path, 'openjdk version "21.0.2" 2024-01-16')))
    assert java_major_version() == 21
    with pytest.raises(SessionError, match=r"Java 21 found but Spark 3.5 needs Java 8, 11 or 17; install OpenJDK 17"):
        check_java()
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path / "old", 'java version "1.8.0_392"')))
    assert java_major_version() == 8
    check_java()


def test_missing_java_is_explained(tmp_path, monkeypatch) -> None:
    from landuse.spark.session import check_java

    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(SessionError, match="Java not found: Spark needs Java 8/11/17; install OpenJDK 17"):
        check_java()


def test_make_java_check_message(tmp_path, repo_root) -> None:
    import subprocess

    jdk = _fake_java(tmp_path, 'openjdk version "21.0.2"')
    proc = subprocess.run(
        ["make", "-s", "java-check", f"JAVA_HOME={jdk}"],
        cwd=repo_root, capture_output=True, text=True,
    )
    assert proc.returncode != 0
    assert "Java 21.0.2 found, but Spark 3.5 needs Java 17 (or 8/11)" in proc.stdout
