"""The whole pipeline on a real multi-worker Spark standalone cluster, compared with local mode.

``standalone_cluster`` (tests/cluster/conftest.py) is a master and two 1-core workers on 127.0.0.1,
started from pyspark's ``bin/spark-class``. The pipeline (``jobs/pipeline.py``, synthetic Shenzhen,
tiny scale) is submitted to it exactly as docs/cluster.md says a cluster job is submitted:
``spark-submit --master spark://... --py-files dist/landuse-<v>.zip --jars jvm/jars/*.jar``, driver
in client mode in the repository root, executors as separate JVMs on the workers, Python workers
running this venv's interpreter. The same submit with ``--master local[2]`` is the reference, and
every output (each table of every stage, and the synthetic city) is compared between the two.

The cluster run's ``work_dir`` is parametrised: ``local`` (a directory both workers see: they run on
this machine) and ``s3a`` (``s3a://landuse-test/...`` on a moto S3 server, tests/cluster/s3.py),
which skips, saying why, while ``landuse.config`` cannot hold an s3a:// work_dir.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import landuse
from tests.cluster.conftest import StandaloneCluster, pyspark_home, spark_env
from tests.cluster.s3 import BUCKET, MotoS3

REPO = Path(__file__).resolve().parents[2]
CONFIG = "conf/synthetic_shenzhen.yaml"
# Tiny city, two shuffle partitions; one gensim worker so that Word2Vec / Doc2Vec are deterministic
# (with a fixed seed; see landuse.features.word2vec / doc2vec) and the embedding tables comparable.
OVERRIDES = ["synth.scale=tiny", "spark.shuffle_partitions=2", "embeddings.flow.workers=1",
             "embeddings.poi.workers=1"]
SUBMIT_TIMEOUT_S = 600  # per spark-submit; a quiet 2-core machine needs about 1-2 minutes
RTOL = ATOL = 1e-9  # floats: Spark sums in shuffle-fetch order, which may differ between the runs
TELEMETRY = {"DO_NOT_TRACK": "true", "SCARF_NO_ANALYTICS": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
SEDONA_KRYO_REGISTRATOR = "org.apache.sedona.core.serde.SedonaKryoRegistrator"
DELTA_CONF = {"spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
              "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog"}
EXECUTOR_CONF = {"spark.executor.memory": "1g", "spark.executor.cores": "1", "spark.cores.max": "2"}

pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------------------------
# spark-submit
# ----------------------------------------------------------------------------------------------


@dataclass
class Submitted:
    """One finished spark-submit: its output and event log."""

    stdout: str
    stderr: str
    seconds: float
    event_log: Path | None  # the application's event log (JSON lines)

    def app_id(self) -> str:
        for event in events(self.event_log):
            if event.get("Event") == "SparkListenerApplicationStart":
                return event["App ID"]
        raise AssertionError(f"no SparkListenerApplicationStart in {self.event_log}")


def events(path: Path | None) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path else []


def jars() -> list[str]:
    from landuse.spark.session import local_jars

    return local_jars()


def submit(master: str, script: Path | str, args: list[str], *, py_files: Path, logs: Path,
           conf: dict[str, str] | None = None, env: dict[str, str] | None = None, with_jars: bool = True) -> Submitted:
    """``spark-submit --master MASTER [--jars jvm/jars/*.jar] --py-files ZIP SCRIPT ARGS`` from the
    repository root; its output, command line and event log under ``logs``."""
    logs.mkdir(parents=True, exist_ok=True)
    event_dir = logs / "events"
    event_dir.mkdir(exist_ok=True)
    settings = {
        "spark.ui.enabled": "false",
        # Kilobyte inputs: compiling whole-stage code costs more than it saves (as in tests/conftest.py).
        "spark.sql.codegen.wholeStage": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": event_dir.as_uri(),
        **{f"spark.executorEnv.{k}": v for k, v in TELEMETRY.items()},
    }
    jar_list = jars() if with_jars else []
    if any(Path(j).name.startswith("sedona-spark") for j in jar_list):
        settings["spark.kryo.registrator"] = SEDONA_KRYO_REGISTRATOR  # docs/cluster.md: pass it with --jars
    if any(Path(j).name.startswith("delta-spark") for j in jar_list):
        # build_session configures Delta's SQL extension and catalog only for local sessions (from
        # jvm/jars); with --jars they are passed like this (Delta's own spark-submit instructions).
        settings.update(DELTA_CONF)
    settings.update(conf or {})
    cmd = [str(pyspark_home() / "bin" / "spark-submit"), "--master", master, "--driver-memory", "1g",
           "--py-files", str(py_files)]
    if jar_list:
        cmd += ["--jars", ",".join(jar_list)]
    for key, value in settings.items():
        cmd += ["--conf", f"{key}={value}"]
    cmd += [str(script), *args]
    (logs / "command.txt").write_text(" ".join(cmd) + "\n")
    start = time.monotonic()
    # its own session, so that a timeout ends spark-submit's JVM and the Python driver it started
    proc = subprocess.Popen(cmd, cwd=REPO, env=spark_env(**(env or {})), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=SUBMIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        (logs / "stdout.txt").write_text(stdout)
        (logs / "stderr.txt").write_text(stderr)
        pytest.fail(f"spark-submit {script} --master {master} ran past {SUBMIT_TIMEOUT_S} s (logs: {logs})\n"
                    f"--- stdout\n{stdout[-3000:]}\n--- stderr\n{stderr[-5000:]}")
    seconds = time.monotonic() - start
    (logs / "stdout.txt").write_text(stdout)
    (logs / "stderr.txt").write_text(stderr)
    if proc.returncode != 0:
        pytest.fail(f"spark-submit {script} --master {master} exited {proc.returncode} (logs: {logs})\n"
                    f"--- stdout\n{stdout[-3000:]}\n--- stderr\n{stderr[-8000:]}")
    logs_found = sorted(p for p in event_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    return Submitted(stdout, stderr, seconds, logs_found[-1] if logs_found else None)


def pipeline_args(work_dir: str, *extra: str) -> list[str]:
    return ["--config", CONFIG, f"work_dir={work_dir}", *OVERRIDES, *extra]


def pipeline_outputs(stdout: str, roots: dict[str, str]) -> dict[str, tuple[str, str]]:
    """``{output key: (stage, status)}`` from jobs/pipeline.py's summary table; an output's key is its
    path relative to the longest matching location of ``roots`` (``{location: key prefix}``), e.g.
    ``{work_dir: "", synth_dir: "city"}`` gives ``tables/flows`` and ``city``."""
    from landuse.stages import STAGES

    found = {}
    for line in stdout.splitlines():
        match = re.match(r"^(\S+)\s+(\S+)\s+[\d.]+\s+(\S+)$", line)
        if match and match.group(1) in STAGES and match.group(2) != "disabled":  # a disabled stage has no output
            stage, status, path = match.groups()
            hits = [(root, key) for root, key in roots.items() if path == root or path.startswith(root.rstrip("/") + "/")]
            assert hits, f"output {path} of {stage} is under none of {sorted(roots)}"
            root, key = max(hits, key=lambda hit: len(hit[0]))
            found["/".join(filter(None, [key, path[len(root):].strip("/")]))] = (stage, status)
    return found


# ----------------------------------------------------------------------------------------------
# fixtures: the --py-files zip and the local-mode reference run
# ----------------------------------------------------------------------------------------------


def _build_zip(out: Path) -> Path:
    """The Makefile's zip recipe, for interpreters outside the repository's .venv."""
    import zipfile

    target = out / f"landuse-{landuse.__version__}.zip"
    src = REPO / "src"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted((src / "landuse").rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
                z.write(p, p.relative_to(src).as_posix())
    return target


@pytest.fixture(scope="module")
def landuse_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``dist/landuse-<version>.zip`` as ``make dist`` builds it (into a temporary DIST_DIR)."""
    out = tmp_path_factory.mktemp("dist")
    if shutil.which("make") and Path(sys.executable).parent.resolve() == (REPO / ".venv" / "bin").resolve():
        proc = subprocess.run(["make", "-o", ".venv/.installed", "dist", f"DIST_DIR={out}"], cwd=REPO,
                              env={**os.environ, **TELEMETRY}, capture_output=True, text=True, timeout=600,
                              check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        target = out / f"landuse-{landuse.__version__}.zip"
    else:
        target = _build_zip(out)
    assert target.is_file()
    return target


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory, landuse_zip: Path) -> tuple[Path, Submitted]:
    """The same pipeline submit with ``--master local[2]`` (work_dir on local disk)."""
    root = tmp_path_factory.mktemp("local-reference")
    work = root / "work"
    run = submit("local[2]", "jobs/pipeline.py", pipeline_args(str(work)), py_files=landuse_zip, logs=root / "logs")
    print(f"\nlocal[2] pipeline: {run.seconds:.0f} s")
    return work, run


# ----------------------------------------------------------------------------------------------
# comparing outputs
# ----------------------------------------------------------------------------------------------


def _sort_cell(value):
    """An orderable stand-in for a cell: (type tag, value); floats rounded so that ~1e-12 noise sorts alike."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (0, 0)
    if isinstance(value, (bool, np.bool_)):
        return (1, bool(value))
    if isinstance(value, (int, np.integer)):
        return (2, int(value))
    if isinstance(value, (float, np.floating)):
        return (2, float(f"{float(value):.6g}"))
    if isinstance(value, (str, bytes)):
        return (3, value) if isinstance(value, str) else (4, value)
    if isinstance(value, dict):
        return (5, tuple(sorted((k, _sort_cell(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple, np.ndarray)):
        return (6, tuple(_sort_cell(v) for v in value))
    if isinstance(value, pd.Timestamp):
        return (7, value.value)
    return (8, repr(value))


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in a content-defined order (categorical partition columns as plain values)."""
    frame = frame.copy()
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(object)
    keys = [tuple(_sort_cell(v) for v in row) for row in frame.itertuples(index=False, name=None)]
    order = sorted(range(len(frame)), key=keys.__getitem__)
    return frame.iloc[order].reset_index(drop=True)


def _floats(values) -> np.ndarray | None:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return None
    return array


def _cells_differ(a, b) -> float | None:
    """None when equal (floats within RTOL/ATOL); else the size of the difference (inf: not numeric)."""
    if a is None or b is None:
        return None if a is None and b is None else math.inf
    if isinstance(a, bytes) and isinstance(b, bytes):
        if a == b:
            return None
        import shapely

        try:  # WKB geometries: equal coordinates within tolerance
            ga, gb = shapely.from_wkb(a), shapely.from_wkb(b)
        except (shapely.errors.GEOSException, TypeError, ValueError):  # not WKB
            return math.inf
        return None if ga.equals_exact(gb, ATOL) else math.inf
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return math.inf
        diffs = [d for k in a if (d := _cells_differ(a[k], b[k])) is not None]
        return max(diffs) if diffs else None
    if isinstance(a, (list, tuple, np.ndarray)) and isinstance(b, (list, tuple, np.ndarray)):
        if len(a) != len(b):
            return math.inf
        fa, fb = _floats(a), _floats(b)
        if fa is not None and fb is not None and fa.shape == fb.shape:
            if np.allclose(fa, fb, rtol=RTOL, atol=ATOL, equal_nan=True):
                return None
            return float(np.nanmax(np.abs(fa - fb)))
        diffs = [d for x, y in zip(a, b) if (d := _cells_differ(x, y)) is not None]
        return max(diffs) if diffs else None
    if isinstance(a, (float, np.floating)) or isinstance(b, (float, np.floating)):
        fa, fb = float(a), float(b)
        if (math.isnan(fa) and math.isnan(fb)) or math.isclose(fa, fb, rel_tol=RTOL, abs_tol=ATOL):
            return None
        return abs(fa - fb)
    return None if a == b else math.inf


def compare_frames(a: pd.DataFrame, b: pd.DataFrame) -> tuple[str, list[str]]:
    """("identical" | "close" | "differs", problems)."""
    if list(a.columns) != list(b.columns):
        return "differs", [f"columns {list(a.columns)} != {list(b.columns)}"]
    if len(a) != len(b):
        return "differs", [f"{len(a)} rows != {len(b)} rows"]
    a, b = canonical(a), canonical(b)
    problems, exact = [], True
    for column in a.columns:
        if a[column].dtype != b[column].dtype:
            problems.append(f"{column}: dtype {a[column].dtype} != {b[column].dtype}")
            continue
        left, right = a[column].to_numpy(), b[column].to_numpy()
        if left.dtype.kind in "biuM":
            bad = int((left != right).sum())
            if bad:
                problems.append(f"{column}: {bad} rows differ")
            continue
        if left.dtype.kind == "f":
            same = (left == right) | (np.isnan(left) & np.isnan(right))
            if not same.all():
                exact = False
                if not np.allclose(left, right, rtol=RTOL, atol=ATOL, equal_nan=True):
                    problems.append(f"{column}: max |diff| {np.nanmax(np.abs(left - right)):.3g}")
            continue
        diffs = [_cells_differ(x, y) for x, y in zip(left, right)]
        bad = [d for d in diffs if d is not None]
        if bad:
            problems.append(f"{column}: {len(bad)} rows differ (max |diff| {max(bad):.3g})")
        elif not all(_exactly(x, y) for x, y in zip(left, right)):
            exact = False
    return ("differs" if problems else "identical" if exact else "close"), problems


def _exactly(a, b) -> bool:
    if isinstance(a, (list, tuple, np.ndarray)) and isinstance(b, (list, tuple, np.ndarray)):
        return len(a) == len(b) and all(_exactly(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_exactly(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _read_file(path: Path) -> pd.DataFrame | bytes:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pandas()
    if path.suffix == ".gpkg":  # GeoPackages carry write timestamps: compare their features
        import geopandas as gpd

        frame = gpd.read_file(path)
        plain = pd.DataFrame(frame)
        plain["geometry"] = frame.geometry.to_wkb().to_numpy()
        return plain
    return path.read_bytes()


def delta_stale_files(table: Path) -> list[str]:
    """Data files of a Delta table that its log does not list as current (a fresh table has none), so
    that reading the directory as plain Parquet reads exactly the table."""
    log = table / "_delta_log"
    if not log.is_dir():
        return []
    assert not list(log.glob("*.checkpoint*.parquet")), f"{log}: checkpoints are not read here"
    current: set[str] = set()
    for commit in sorted(log.glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line) if line.strip() else {}
            if "add" in action:
                current.add(urllib.parse.unquote(action["add"]["path"]))
            if "remove" in action:
                current.discard(urllib.parse.unquote(action["remove"]["path"]))
    files = {p.relative_to(table).as_posix() for p in table.rglob("*.parquet")
             if not any(part.startswith(("_", ".")) for part in p.relative_to(table).parts)}
    # Delta may leave a 0-row, schema-only file of an empty task outside the log: harmless to readers
    return sorted(f for f in files - current if pq.read_metadata(table / f).num_rows > 0)


def _data_files(root: Path) -> list[str]:
    """Files under ``root`` except those under ``_``/``.``-prefixed names: run bookkeeping
    (``_manifest.json``, ``_SUCCESS``, ``.crc``, ``_delta_log/``) and side files such as the gensim
    models in ``_model/`` (pickles, not compared: the vectors they produced are, in the table)."""
    return sorted(rel.as_posix() for rel in (p.relative_to(root) for p in root.rglob("*") if p.is_file())
                  if not any(part.startswith(("_", ".")) for part in rel.parts))


def compare_output(reference: Path, other: Path) -> tuple[str, list[str]]:
    """Compare one output: a Parquet table directory, or a directory of files (the synthetic city)."""
    if not other.exists():
        return "differs", [f"missing: {other}"]
    ref_files = _data_files(reference)
    is_table = all(f.endswith(".parquet") for f in ref_files)  # the city also holds CSV, GeoPackage, GeoTIFF
    problems: list[str] = []
    verdicts: list[str] = []
    for root in (reference, other):
        stale = delta_stale_files(root)
        if stale:
            problems.append(f"{root}: Parquet files outside the Delta table's current version: {stale[:3]}")
    ref_manifest = json.loads((reference / "_manifest.json").read_text())
    other_manifest = json.loads((other / "_manifest.json").read_text())
    for key in ("stage", "rows", "schema"):
        if ref_manifest.get(key) != other_manifest.get(key):
            problems.append(f"_manifest.json {key}: {ref_manifest.get(key)} != {other_manifest.get(key)}")
    if is_table:
        verdict, found = compare_frames(pq.read_table(reference).to_pandas(), pq.read_table(other).to_pandas())
        return ("differs" if problems else verdict), problems + found
    other_files = _data_files(other)
    if ref_files != other_files:
        return "differs", problems + [f"files {sorted(set(ref_files) ^ set(other_files))} in only one run"]
    for name in ref_files:
        if name == "manifest.json":  # the generator's: compare it without paths and timings
            a, b = (json.loads((root / name).read_text()) for root in (reference, other))
            drop = {"files", "timings"}  # files: sha256 of GeoPackages (write timestamps); timings
            a, b = ({k: v for k, v in d.items() if k not in drop} for d in (a, b))
            verdicts.append("identical" if a == b else "differs")
            if a != b:
                problems.append(f"{name}: keys differ: {sorted(k for k in a if a.get(k) != b.get(k))}")
            continue
        left, right = _read_file(reference / name), _read_file(other / name)
        if isinstance(left, bytes):
            verdicts.append("identical" if left == right else "differs")
            if left != right:
                problems.append(f"{name}: bytes differ")
        else:
            verdict, found = compare_frames(left, right)
            verdicts.append(verdict)
            problems += [f"{name}: {p}" for p in found]
    verdict = "differs" if problems else "close" if "close" in verdicts else "identical"
    return verdict, problems


# ----------------------------------------------------------------------------------------------
# work_dir kinds
# ----------------------------------------------------------------------------------------------


def s3a_unsupported(overrides: list[str]) -> str | None:
    """Why ``landuse.config`` cannot take this s3a:// work_dir yet (None when it can)."""
    from landuse.config import ConfigError, load_config

    try:
        config = load_config([REPO / CONFIG], [*OVERRIDES, *overrides], check_inputs=False)
    except (ConfigError, ImportError, TypeError, ValueError) as exc:
        return f"landuse.config does not accept an s3a:// work_dir yet: {type(exc).__name__}: {exc}"
    for name, value in (("work_dir", config.work_dir), ("tables_dir", config.tables_dir)):
        if not str(value).startswith("s3a://"):
            return (f"landuse.config does not keep s3a:// work_dir URIs yet ({name} resolves to "
                    f"{str(value)!r})")
    return None


@dataclass
class ClusterWork:
    """Where the cluster run writes, and how its outputs are brought to a local folder to compare."""

    work_dir: str  # what the config gets: a local path or s3a://bucket/prefix
    roots: dict[str, str]  # pipeline output locations -> output key prefix (see pipeline_outputs)
    local: dict[str, Path]  # output key prefix -> local folder holding it (after fetch)
    args: list[str]  # extra config overrides
    conf: dict[str, str]  # extra spark-submit --conf
    env: dict[str, str]  # extra environment of spark-submit
    fetch: Callable[[], object]  # (): download remote outputs into the local folders

    def path(self, key: str) -> Path:
        prefix = max((p for p in self.local if key == p or key.startswith(p + "/") or p == ""), key=len)
        return self.local[prefix] / key[len(prefix):].strip("/")


@pytest.fixture(params=["local", "s3a"])
def cluster_work(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ClusterWork:
    """The cluster run's work_dir: a local directory both workers see, or s3a:// on a moto server."""
    monkeypatch.chdir(REPO)
    if request.param == "local":
        work = tmp_path / "cluster-work"  # both workers run on this machine: a local path is shared
        return ClusterWork(str(work), {str(work): ""}, {"": work}, [], {}, {}, lambda: None)
    prefix = f"cluster-{os.getpid()}-{int(time.time())}"
    uri = f"s3a://{BUCKET}/{prefix}"
    city, driver = tmp_path / "city", tmp_path / "driver"

    def settings(endpoint: str) -> list[str]:
        # the generator writes local files (synth.dir must be local); driver-side files go to
        # storage.local_dir; endpoint and addressing come from the storage section, credentials
        # from the environment (README "Tables and storage")
        return [f"synth.dir={city}", f"storage.endpoint_url={endpoint}", "storage.path_style=true",
                f"storage.local_dir={driver}"]

    reason = s3a_unsupported([f"work_dir={uri}", *settings("http://127.0.0.1:9")])  # loading contacts nothing
    if reason:
        print(f"\nSKIP s3a: {reason}")
        pytest.skip(reason)
    if not any(Path(j).name.startswith("hadoop-aws") for j in jars()):
        pytest.skip("no hadoop-aws jar in jvm/jars (run `make jars`): Spark cannot open s3a://")
    s3: MotoS3 = request.getfixturevalue("moto_s3")
    mirror = tmp_path / "s3-mirror"
    # executors are launched by the workers, not by spark-submit: they get the credentials this way
    conf = {f"spark.executorEnv.{k}": v for k, v in s3.credentials_env().items()}
    return ClusterWork(uri, {uri: "", str(city): "city"}, {"": mirror, "city": city}, settings(s3.endpoint), conf,
                       s3.credentials_env(), lambda: s3.download(BUCKET, prefix, mirror))


# ----------------------------------------------------------------------------------------------
# tests
# ----------------------------------------------------------------------------------------------


def test_executors_are_separate_jvms_on_both_workers(standalone_cluster: StandaloneCluster, landuse_zip: Path,
                                                     tmp_path: Path) -> None:
    """A probe job: tasks run in executor JVMs on both workers, with this venv's Python, landuse from
    the --py-files zip and the telemetry opt-outs in their environment."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, os, sys\n"
        "from pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.getOrCreate()\n"
        "def where(i):\n"
        "    import landuse\n"
        "    return json.dumps({'pid': os.getpid(), 'ppid': os.getppid(), 'python': sys.executable,\n"
        "                       'landuse': landuse.__file__, 'cwd': os.getcwd(),\n"
        "                       'telemetry': [os.environ.get(k) for k in ('DO_NOT_TRACK', 'SCARF_NO_ANALYTICS',\n"
        "                                                                 'MLFLOW_DISABLE_TELEMETRY')]})\n"
        "rows = spark.sparkContext.parallelize(range(16), 16).map(where).collect()\n"
        "print('DRIVER', json.dumps({'pid': os.getpid()}))\n"
        "for row in rows: print('TASK', row)\n"
    )
    run = submit(standalone_cluster.master_url, probe, [], py_files=landuse_zip, logs=tmp_path / "logs",
                 conf=EXECUTOR_CONF, with_jars=False)  # pure Python: no jars to ship
    tasks = [json.loads(line.split(" ", 1)[1]) for line in run.stdout.splitlines() if line.startswith("TASK ")]
    driver = json.loads(next(line.split(" ", 1)[1] for line in run.stdout.splitlines() if line.startswith("DRIVER ")))
    assert len(tasks) == 16
    assert {t["python"] for t in tasks} == {sys.executable}
    assert {t["telemetry"] == ["true"] * 3 for t in tasks} == {True}
    assert all(t["landuse"].endswith(f"landuse-{landuse.__version__}.zip/landuse/__init__.py") for t in tasks)
    # Python workers' parents are the executor JVMs: not the driver, one per worker
    assert driver["pid"] not in {t["ppid"] for t in tasks}
    workers_used = {wd for t in tasks for wd in standalone_cluster.work_dirs if t["cwd"].startswith(str(wd) + "/")}
    assert workers_used == set(standalone_cluster.work_dirs), sorted({t["cwd"] for t in tasks})
    app_id = run.app_id()
    for i, dirs in standalone_cluster.executor_dirs(app_id).items():
        assert dirs, f"worker-{i} launched no executor for {app_id}"
        assert all((d / "stderr").is_file() and (d / landuse_zip.name).is_file() for d in dirs), dirs


def test_pipeline_on_cluster_equals_local_mode(standalone_cluster: StandaloneCluster, landuse_zip: Path,
                                               local_reference: tuple[Path, Submitted], cluster_work: ClusterWork,
                                               tmp_path: Path) -> None:
    """jobs/pipeline.py on the two-worker cluster: every stage runs, both workers run tasks, and every
    output equals the local[2] run's (exactly, or floats within 1e-9)."""
    ref_work, ref_run = local_reference
    run = submit(standalone_cluster.master_url, "jobs/pipeline.py", pipeline_args(cluster_work.work_dir, *cluster_work.args),
                 py_files=landuse_zip, logs=tmp_path / "cluster-logs", conf={**EXECUTOR_CONF, **cluster_work.conf},
                 env=cluster_work.env)
    print(f"\ncluster pipeline (work_dir {cluster_work.work_dir}): {run.seconds:.0f} s; "
          f"local[2] reference: {ref_run.seconds:.0f} s")

    # every stage ran, with the same outputs as the reference
    ref_outputs = pipeline_outputs(ref_run.stdout, {str(ref_work): ""})
    outputs = pipeline_outputs(run.stdout, cluster_work.roots)
    assert ref_outputs and {status for _, status in ref_outputs.values()} == {"ran"}, ref_run.stdout[-3000:]
    assert outputs == ref_outputs, run.stdout[-3000:]

    # executors on both workers ran tasks: the event log's task ends per executor, the worker work
    # dirs' executor directories per worker
    app_id = run.app_id()
    tasks_per_executor: dict[str, int] = {}
    for event in events(run.event_log):
        if event.get("Event") == "SparkListenerTaskEnd":
            executor = event["Task Info"]["Executor ID"]
            tasks_per_executor[executor] = tasks_per_executor.get(executor, 0) + 1
    per_worker = {f"worker-{i}": {f"executor {d.name}": tasks_per_executor.get(d.name, 0) for d in dirs}
                  for i, dirs in standalone_cluster.executor_dirs(app_id).items()}
    print(f"tasks per worker and executor: {per_worker}")
    assert "driver" not in tasks_per_executor, "tasks ran in the driver"
    for worker, executors in per_worker.items():
        assert sum(executors.values()) > 0, f"{worker} ran no task of {app_id}: {per_worker}"
    completed = {a["id"]: a for a in standalone_cluster.state().get("completedapps", [])}
    assert completed.get(app_id, {}).get("state") == "FINISHED", completed.get(app_id)

    # every output equal to the reference
    cluster_work.fetch()
    verdicts, failures = {}, []
    for key, (stage, _) in sorted(ref_outputs.items()):
        verdict, problems = compare_output(ref_work / key, cluster_work.path(key))
        verdicts[key] = verdict
        if verdict == "differs":
            failures.append(f"{key} ({stage}): " + "; ".join(problems[:5]))
    width = max(map(len, verdicts))
    summary = "\n".join(f"  {key:<{width}}  {verdict}" for key, verdict in verdicts.items())
    (tmp_path / "comparison.txt").write_text(summary + "\n")
    print(f"outputs compared with local[2] (identical: exact; close: floats within {RTOL:g}):\n{summary}")
    assert not failures, "outputs differ from the local[2] run:\n" + "\n".join(failures)
