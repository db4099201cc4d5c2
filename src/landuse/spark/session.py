"""The only place a SparkSession is built and Apache Sedona registered.

* ``local[*]`` by default; no master is set when the process was launched by ``spark-submit``
  (which passes ``spark.master`` itself) or runs on Databricks (where a session already exists).
* UTC session time zone, Kryo serialisation, Arrow enabled, shuffle partitions from config.
* JVM jars beyond pyspark's own (Sedona, Delta Lake, hadoop-aws) are fetched once at install time by
  ``make jars`` (``mvn dependency:copy`` of ``jvm/pom.xml``) into ``jvm/jars``; a local session puts
  every jar of that folder (or of ``$LANDUSE_JARS_DIR``, plus any listed in ``$SEDONA_JARS``) on the
  driver and executor classpath. Nothing is downloaded at run time. Under ``spark-submit`` or on
  Databricks the cluster supplies its jars (``--jars`` / cluster libraries).
* Sedona is used when its JVM classes are on the classpath; ``spatial.engine`` chooses ``auto``
  (Sedona when present), ``sedona`` (required) or ``builtin``. The choice is logged. Delta Lake's SQL
  extension and catalog are configured when its jar is among the local jars.
* Telemetry of Sedona / MLflow / Scarf is switched off before anything is imported or started.
* A local master (``local``, ``local[...]``) listens on the loopback interface only: driver RPC and
  block manager via ``spark.driver.bindAddress`` / ``spark.driver.host`` = 127.0.0.1, and the Spark UI
  via ``SPARK_LOCAL_IP`` (Spark 3.5 has no UI host setting: its UI binds to ``$SPARK_LOCAL_IP`` or
  0.0.0.0, whatever bindAddress says). Setting either driver key in ``spark.conf`` turns this off (an
  explicit ``$SPARK_LOCAL_IP`` is kept). Cluster masters are left as they are.
"""

from __future__ import annotations

import logging
import os
import shutil
import re
import subprocess
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from landuse.config import Config, SparkConfig
from pathlib import Path

from landuse.constants import ENV_JARS_DIR, ENV_SEDONA_JARS, TELEMETRY_ENV

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

SEDONA_CONTEXT_CLASS = "org.apache.sedona.spark.SedonaContext"
SEDONA_KRYO_REGISTRATOR = "org.apache.sedona.core.serde.SedonaKryoRegistrator"
ENGINE_CONF_KEY = "landuse.spatial.engine"  # where the resolved engine is recorded on the session
FORMAT_CONF_KEY = "landuse.storage.format"  # the resolved table format ("delta-<version>" or "parquet")
DELTA_TABLE_CLASS = "io.delta.tables.DeltaTable"
SUPPORTED_JAVA = (8, 11, 17)
DELTA_SQL_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
LOOPBACK = "127.0.0.1"
DRIVER_NETWORK_KEYS = ("spark.driver.bindAddress", "spark.driver.host")
_LOCAL_MASTER = re.compile(r"local(\[[^\]]*\])?")
# The repository's jar folder (`make jars`), found from the package for source/editable installs.
REPO_JARS_DIR = Path(__file__).resolve().parents[3] / "jvm" / "jars"


class SessionError(RuntimeError):
    """The session cannot be built as configured (no Java, Sedona required but absent, ...)."""


# Sizes as Spark's JavaUtils.byteStringAs reads them (512m, 4g, 2gb): a whole number and a unit.
_SIZE = re.compile(r"(\d+)([kmgtp])b?", re.IGNORECASE)
_SIZE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
# Spark needs 1.5 x 300 MiB of reserved memory in the driver heap, or SparkContext refuses to start.
MIN_DRIVER_MEMORY = 512 << 20
# Common settings whose values can be checked without a JVM: what Spark would reject, or misread.
_SIZE_KEYS = ("spark.driver.memory", "spark.executor.memory", "spark.driver.memoryOverhead",
              "spark.executor.memoryOverhead", "spark.executor.pyspark.memory", "spark.memory.offHeap.size",
              "spark.driver.maxResultSize", "spark.kryoserializer.buffer.max", "spark.sql.files.maxPartitionBytes")
_POSITIVE_INT_KEYS = ("spark.sql.shuffle.partitions", "spark.default.parallelism", "spark.executor.cores",
                      "spark.driver.cores", "spark.task.cpus")
_COUNT_KEYS = ("spark.executor.instances",)  # 0 is valid (dynamic allocation starts from none)
_MASTER = re.compile(r"local(\[(\*|[1-9]\d*)(,\s*[1-9]\d*)?\])?|local-cluster\[.+\]|yarn|"
                     r"(spark|k8s|mesos)://\S+")


def size_bytes(text: str) -> int | None:
    """Bytes of a Spark size string (``512m``, ``4g``, ``2gb``), or None when it is not one."""
    match = _SIZE.fullmatch(text.strip())
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()] if match else None


def jvm_memory(text: str) -> str:
    """A size as the JVM's ``-Xmx`` takes it (``2gb`` -> ``2g``): the launcher passes driver memory verbatim."""
    match = _SIZE.fullmatch(text.strip())
    return f"{match.group(1)}{match.group(2).lower()}" if match else text


def _value_problem(key: str, value: str) -> str | None:
    """Why Spark would reject ``value`` for ``key`` (a short phrase with an example), or None."""
    text = str(value).strip()
    if key == "spark.driver.memory":
        # The launcher passes it verbatim as -Xmx: a bare number would be bytes, so a unit is required.
        size = size_bytes(text)
        if size is None:
            return f"expected a size such as 512m, 4g or 2gb, got {text!r}"
        if size < MIN_DRIVER_MEMORY:
            return f"{text} is too small: Spark's driver needs at least 512m"
    elif key in _SIZE_KEYS:
        # Other sizes may be bare numbers (Spark applies the key's default unit); 0 means "no limit" for some.
        if size_bytes(text) is None and not text.isdigit():
            return f"expected a size such as 512m, 4g or 2gb, got {text!r}"
    elif key in _POSITIVE_INT_KEYS:
        if not text.isdigit() or int(text) <= 0:
            return f"expected a positive integer, got {text!r}"
    elif key in _COUNT_KEYS:
        if not text.isdigit():
            return f"expected a whole number, got {text!r}"
    elif key.endswith(".enabled") and key.startswith("spark."):
        if text.lower() not in ("true", "false"):
            return f"expected true or false, got {text!r}"
    elif key == "spark.master" and not _MASTER.fullmatch(text):
        return f"expected local[*], local[N], spark://HOST:PORT, yarn or k8s://URL, got {text!r}"
    return None


def spark_setting_problems(spark_cfg: SparkConfig) -> list[tuple[str, str]]:
    """(key, problem) for every ``spark:`` setting Spark would reject, keys relative to ``spark.``.

    Run at config load (``SparkConfig._problems``) and again in :func:`build_session`, so a bad
    value is one line naming the key instead of a JVM that fails to start or a Java stack trace.
    """
    problems: list[tuple[str, str]] = []
    if not spark_cfg.app_name.strip():
        problems.append(("app_name", "must not be empty"))
    if spark_cfg.master is not None and not _MASTER.fullmatch(spark_cfg.master.strip()):
        problems.append(("master", _value_problem("spark.master", spark_cfg.master) or "not a Spark master"))
    if spark_cfg.shuffle_partitions <= 0:
        problems.append(("shuffle_partitions", f"must be a positive integer (e.g. 8), got {spark_cfg.shuffle_partitions}"))
    if spark_cfg.arrow_batch_size <= 0:
        problems.append(("arrow_batch_size", f"must be a positive integer (e.g. 50000), got {spark_cfg.arrow_batch_size}"))
    problem = _value_problem("spark.driver.memory", spark_cfg.driver_memory)
    if problem:
        problems.append(("driver_memory", problem))
    for key, value in spark_cfg.conf.items():
        problem = _value_problem(key, value)
        if problem:
            problems.append((f"conf.{key}", problem))
    return problems


def disable_telemetry() -> None:
    """Set the telemetry opt-out variables (idempotent; call before importing Sedona/MLflow)."""
    for key, value in TELEMETRY_ENV.items():
        os.environ.setdefault(key, value)


def java_major_version() -> int | None:
    """Major version of the ``java`` Spark will launch, or None when there is none."""
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.path.exists(java):
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    for token in out.replace('"', " ").split():
        head = token.split(".")[0]
        if head.isdigit() and ("." in token or token.isdigit()):
            major = int(head)
            return int(token.split(".")[1]) if major == 1 else major
    return None


def check_java() -> None:
    """Raise :class:`SessionError` with the fix when Java is missing or unsupported by Spark 3.5."""
    major = java_major_version()
    fix = "install OpenJDK 17 (Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless) and set JAVA_HOME"
    if major is None:
        raise SessionError(f"Java not found: Spark needs Java {'/'.join(map(str, SUPPORTED_JAVA))}; {fix}")
    if major not in SUPPORTED_JAVA:
        raise SessionError(f"Java {major} found but Spark 3.5 needs Java 8, 11 or 17; {fix}")


def local_jars() -> list[str]:
    """Jar paths for a local session: ``$LANDUSE_JARS_DIR`` (or ``jvm/jars``) plus ``$SEDONA_JARS``."""
    folder = Path(os.environ.get(ENV_JARS_DIR) or REPO_JARS_DIR)
    jars = sorted(str(p) for p in folder.glob("*.jar")) if folder.is_dir() else []
    jars += [p.strip() for p in os.environ.get(ENV_SEDONA_JARS, "").split(",") if p.strip()]
    return jars


def _has_jar(jars: list[str], artifact: str) -> bool:
    return any(Path(j).name.startswith(artifact) for j in jars)


def _launched_externally() -> bool:
    """True under spark-submit (gateway started by the JVM) or on Databricks."""
    return "PYSPARK_GATEWAY_PORT" in os.environ or "DATABRICKS_RUNTIME_VERSION" in os.environ


def is_local_master(master: str | None) -> bool:
    """``local``, ``local[N]``, ``local[*]``, ``local[N,F]`` (not ``local-cluster[...]`` nor cluster URLs)."""
    return master is not None and _LOCAL_MASTER.fullmatch(master.strip()) is not None


def loopback_settings(master: str | None, user_conf: Mapping[str, str]) -> dict[str, str]:
    """Driver bind/advertised address 127.0.0.1 for a local master, unless ``spark.conf`` sets either."""
    if not is_local_master(master) or any(key in user_conf for key in DRIVER_NETWORK_KEYS):
        return {}
    return {key: LOOPBACK for key in DRIVER_NETWORK_KEYS}


@contextmanager
def _ui_on_loopback(enabled: bool) -> Iterator[None]:
    """``SPARK_LOCAL_IP=127.0.0.1`` while the JVM is launched (the UI's bind host), unless already set."""
    if not enabled or "SPARK_LOCAL_IP" in os.environ:
        yield
        return
    os.environ["SPARK_LOCAL_IP"] = LOOPBACK
    try:
        yield
    finally:
        os.environ.pop("SPARK_LOCAL_IP", None)


def build_session(config: Config) -> "SparkSession":
    """Build (or join) the SparkSession for ``config`` and resolve the spatial-join engine."""
    disable_telemetry()
    from pyspark.sql import SparkSession

    spark_cfg: SparkConfig = config.spark
    problems = spark_setting_problems(spark_cfg)  # configs built in code skip load_config's checks
    if problems:
        key, problem = problems[0]
        raise SessionError(f"spark.{key}: {problem}")
    active = SparkSession.getActiveSession()
    if active is None and not _launched_externally():
        check_java()
    builder = SparkSession.builder.appName(spark_cfg.app_name)
    master = spark_cfg.master
    if spark_cfg.master:
        builder = builder.master(spark_cfg.master)
    elif active is None and not _launched_externally():
        builder = builder.master("local[*]")
        master = "local[*]"
    master = spark_cfg.conf.get("spark.master", master)  # a spark.conf entry overrides the builder's master
    fresh_local = active is None and not _launched_externally() and is_local_master(master)
    if active is None and not _launched_externally():
        # Local mode: Python workers must run this interpreter (the venv with landuse installed),
        # not whatever `python3` is first on PATH. Clusters configure their own.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    jars = local_jars() if active is None and not _launched_externally() else []
    if active is None and not _launched_externally() and not jars:
        log.info("no JVM jars found (run `make jars`): builtin spatial engine, Parquet tables, no s3a://")
    expects_sedona = _has_jar(jars, "sedona-spark") or "sedona" in spark_cfg.conf.get("spark.jars.packages", "")
    extensions: list[str] = []  # Sedona registers itself in resolve_engine (SedonaContext.create)
    settings = {
        "spark.sql.session.timeZone": "UTC",
        "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
        "spark.sql.shuffle.partitions": str(spark_cfg.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(spark_cfg.arrow_batch_size),
        "spark.ui.showConsoleProgress": "false",
        # A generated method over the JVM's 8,000-byte JIT limit runs interpreted (measured: ingest's
        # parse 3x slower); above this Spark splits the stage's code instead of one huge method.
        "spark.sql.codegen.hugeMethodLimit": "8000",
        "spark.driver.memory": jvm_memory(spark_cfg.driver_memory),
        # Executors inherit the opt-outs too (Sedona checks them in the JVM and in Python workers).
        **{f"spark.executorEnv.{k}": v for k, v in TELEMETRY_ENV.items()},
    }
    if jars:
        settings["spark.jars"] = ",".join(jars)
    if _has_jar(jars, "delta-spark"):
        extensions.append(DELTA_SQL_EXTENSION)
        settings["spark.sql.catalog.spark_catalog"] = DELTA_CATALOG
    if extensions:
        settings["spark.sql.extensions"] = ",".join(extensions)
    if expects_sedona:
        settings["spark.kryo.registrator"] = SEDONA_KRYO_REGISTRATOR
    settings.update(storage_settings(config))
    loopback = loopback_settings(master, spark_cfg.conf) if fresh_local else {}
    settings.update(loopback)
    settings.update(dict(spark_cfg.conf))
    settings["spark.driver.memory"] = jvm_memory(settings["spark.driver.memory"])
    for key, value in settings.items():
        builder = builder.config(key, value)
    with _ui_on_loopback(bool(loopback)):
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    if fresh_local:
        _quiet_task_failure_logs(spark)
    engine = resolve_engine(spark, config.spatial.engine)
    spark.conf.set(ENGINE_CONF_KEY, engine)
    table_format = resolve_table_format(spark, config.storage.format)
    spark.conf.set(FORMAT_CONF_KEY, table_format)
    log.info(
        "spark %s master=%s shuffle_partitions=%s spatial engine=%s tables=%s",
        spark.version,
        spark.sparkContext.master,
        spark.conf.get("spark.sql.shuffle.partitions"),
        engine,
        table_format,
    )
    return spark


# Loggers that echo a failed task's stack trace on the console. In local mode a failed task fails
# its job, and the driver's exception carries the same Java cause chain: the CLI prints it as one
# line (a damaged file) or as its traceback (a bug), so the echo only buries that line.
TASK_FAILURE_LOGGERS = (
    "org.apache.spark.executor.Executor",
    "org.apache.spark.scheduler.TaskSetManager",
    "org.apache.spark.storage.BlockManager",
    "org.apache.spark.api.python.PythonRunner",
    "org.apache.spark.sql.execution.python",
    "org.apache.spark.sql.execution.datasources.FileFormatWriter",
)


def _quiet_task_failure_logs(spark: "SparkSession") -> None:
    """Raise :data:`TASK_FAILURE_LOGGERS` to FATAL (local sessions only; clusters retry tasks, keep their logs)."""
    try:
        jvm = _jvm(spark)
        fatal = jvm.org.apache.logging.log4j.Level.FATAL
        for name in TASK_FAILURE_LOGGERS:
            jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, fatal)
    except Exception:  # noqa: BLE001 - another logging backend: keep Spark's default output
        log.debug("could not quiet Spark's task-failure loggers", exc_info=True)


def storage_settings(config: Config) -> dict[str, str]:
    """Hadoop settings for an object-store ``work_dir`` (s3a endpoint, path style) from ``storage``."""
    from landuse.storage import spark_hadoop_settings

    return dict(spark_hadoop_settings(config.storage))


def _jvm(spark: "SparkSession") -> Any:
    """The session's py4j JVM view (None only before the gateway starts or after it stops)."""
    jvm = spark.sparkContext._jvm
    if jvm is None:
        raise SessionError("the Spark session has no JVM gateway (stopped?)")
    return jvm


def _jvm_class(spark: "SparkSession", name: str) -> Any:
    jvm = _jvm(spark)
    loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
    return jvm.java.lang.Class.forName(name, False, loader)


def delta_version(spark: "SparkSession") -> str | None:
    """The Delta Lake version on the session's classpath, or None without Delta."""
    try:
        cls = _jvm_class(spark, DELTA_TABLE_CLASS)
    except Exception:  # py4j wraps ClassNotFoundException in a generic error
        return None
    return str(cls.getPackage().getImplementationVersion() or "unknown")


def resolve_table_format(spark: "SparkSession", requested: str) -> str:
    """``delta-<version>`` when Delta Lake is used for Spark-written tables, else ``parquet``."""
    version = delta_version(spark) if requested != "parquet" else None
    if requested == "delta" and version is None:
        raise SessionError(
            "storage.format=delta but Delta Lake's JVM classes are not on the classpath: run `make jars`, "
            "or pass delta-spark_2.12 and delta-storage with spark-submit --jars, or set storage.format=auto"
        )
    # Delta writes need its SQL extension and catalog, static settings a running session cannot
    # take: local sessions get them from build_session, spark-submit users pass them (docs/cluster.md).
    configured = DELTA_SQL_EXTENSION in (spark.conf.get("spark.sql.extensions", "") or "")
    if version and not configured:
        fix = (f"--conf spark.sql.extensions={DELTA_SQL_EXTENSION} "
               f"--conf spark.sql.catalog.spark_catalog={DELTA_CATALOG}")
        if requested == "delta":
            raise SessionError(f"storage.format=delta but Delta's SQL extension is not configured: add {fix}")
        log.info("Delta Lake jars present but its SQL extension is not configured (%s): Parquet tables", fix)
        return "parquet"
    return f"delta-{version}" if version else "parquet"


def session_table_format(spark: "SparkSession") -> str:
    """The table format resolved by :func:`build_session` (``parquet`` if unknown)."""
    return spark.conf.get(FORMAT_CONF_KEY, "parquet") or "parquet"


def sedona_available(spark: "SparkSession") -> bool:
    """Whether Sedona's JVM classes are loadable in this session."""
    try:
        _jvm_class(spark, SEDONA_CONTEXT_CLASS)
        return True
    except Exception:  # py4j raises a generic Py4JJavaError for ClassNotFoundException
        return False


def resolve_engine(spark: "SparkSession", requested: str) -> str:
    """Pick the spatial-join engine and register Sedona's SQL functions when it is chosen."""
    present = sedona_available(spark)
    if requested == "builtin" or (requested == "auto" and not present):
        if requested == "auto":
            log.info("Sedona JVM classes not on the classpath: using the builtin spatial-join engine")
        return "builtin"
    if not present:
        raise SessionError(
            "spatial.engine=sedona but Sedona's JVM classes are not on the classpath: add "
            "run `make jars` (fetches them into jvm/jars), or pass them with spark-submit --jars, or "
            "set spatial.engine=auto"
        )
    from sedona.spark import SedonaContext

    SedonaContext.create(spark)
    return "sedona"


def session_engine(spark: "SparkSession") -> str:
    """The engine resolved by :func:`build_session` for this session (``builtin`` if unknown)."""
    return spark.conf.get(ENGINE_CONF_KEY, "builtin") or "builtin"
