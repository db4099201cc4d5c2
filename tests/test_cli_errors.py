"""Every user-fixable failure is one ``error:`` line on stderr and exit code 2, never a traceback.

Through the real CLI (``landuse.cli.main`` in-process, or the ``landuse`` script where the
process matters: the YAML bomb under a memory limit, SIGTERM during training):

* config values: ``spark.shuffle_partitions=0``, ``spark.driver_memory=lots``, bad ``spark.conf``
  values, an unknown ``study.crs``, a billion-laughs YAML and a recursive alias;
* the disk: a full disk (``/dev/full`` behind the resolved-config file: a real ENOSPC from the
  kernel), an unwritable work dir (chmod 0o500; as root, where chmod does not stop writes, a
  directory of /sys where the kernel refuses mkdir, else the test skips) and a work dir under a
  regular file (ENOTDIR, any user);
* damaged tables and inputs behind Spark: a truncated, a bit-flipped and a deleted Parquet part of
  ``tables/pois`` (written by ingest) read by ``landuse run pois`` -- caught by the manifest's part
  records, and, with those records gone (a table from an older version), by Spark's Parquet reader,
  whose Java error the CLI translates -- and a truncated GeoTIFF whose header is intact read by
  ``landuse run imagery`` (the error is raised in a Python worker);
* SIGTERM during ``landuse run train``: the parent and nested MLflow runs end KILLED, exit 143.

Failures that are not the user's (a bug) keep their traceback: :func:`guarded` re-raises them.
The Spark cases share one tiny synthetic city (``synth.scale=tiny``, no trips) built by
``landuse pipeline`` in this process; each damages its own copy of the work dir.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from landuse.cli import main

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DO_NOT_TRACK": "true", "SCARF_NO_ANALYTICS": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}

# The tiny synthetic London without trips, buildings and plans: the stages these tests need, cheaply.
CONFIG = """\
name: cli_errors
work_dir: {work}
synth: {{enabled: true, profile: london, scale: tiny, dir: "${{work_dir}}/city"}}
study: {{crs: "EPSG:27700"}}
spark: {{shuffle_partitions: 2, driver_memory: 1g}}
inputs:
  regions: {{adapter: polygons, path: "${{synth.dir}}/regions/regions.gpkg", options: {{id_column: region_id}}}}
  pois: {{adapter: os_pointx, path: "${{synth.dir}}/pois/pointx.csv"}}
  landuse:
    adapter: landuse_codes
    path: "${{synth.dir}}/landuse/landuse.gpkg"
    options: {{code_column: LANDUSE, class_map_path: {repo}/conf/classmaps/london_ukmap.csv}}
  imagery: {{adapter: landsat8_oli, path: "${{synth.dir}}/imagery/landsat8_oli.tif"}}
embeddings:
  poi: {{epochs: 2, workers: 1}}
training: {{epochs: 20, splits: 1, progress: false}}
"""

BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
name: bomb
"""


def landuse_cmd() -> list[str]:
    exe = shutil.which("landuse", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "landuse.cli"]


def write_config(root: Path, work: Path) -> Path:
    path = root / "cli_errors.yaml"
    path.write_text(CONFIG.format(repo=REPO, work=work))
    return path


def assert_one_error_line(err: str, *needles: str) -> str:
    """Exactly one ``error:`` line, containing every needle; no traceback anywhere on stderr."""
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # conf/synthetic_london.yaml names its class map relative to the repository


# --------------------------------------------------------------------------------------------
# Config values (no Spark: refused at load, before any JVM starts)
# --------------------------------------------------------------------------------------------


CONFIG_CASES = {
    "shuffle_partitions=0": (["spark.shuffle_partitions=0"], None, "spark.shuffle_partitions"),
    "driver_memory=lots": (["spark.driver_memory=lots"], None, "spark.driver_memory"),
    "driver_memory too small": (["spark.driver_memory=64m"], None, "spark.driver_memory"),
    "executor memory in spark.conf": ([], "spark:\n  conf: {spark.executor.memory: 1x}\n",
                                      "spark.conf.spark.executor.memory"),
    "partitions in spark.conf": ([], "spark:\n  conf: {spark.sql.shuffle.partitions: '-4'}\n",
                                 "spark.conf.spark.sql.shuffle.partitions"),
    "unknown crs": (["study.crs=EPSG:999999"], None, "study.crs"),
    "recursive alias": ([], "spark: &s\n  conf: *s\n", "layer.yaml"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_values_are_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overrides, layer, key = CONFIG_CASES[case]
    config = write_config(tmp_path, tmp_path / "work")
    args = ["run", "regions", "--config", str(config)]
    if layer is not None:
        (tmp_path / "layer.yaml").write_text(layer)
        args += ["--config", str(tmp_path / "layer.yaml")]
    assert main(args + overrides) == 2
    assert_one_error_line(capsys.readouterr().err, key)
    assert not (tmp_path / "work" / "tables").exists()  # refused before any stage ran


def test_valid_sizes_are_accepted(tmp_path: Path) -> None:
    from landuse.config import load_config

    config = load_config(write_config(tmp_path, tmp_path / "work"), ["spark.driver_memory=2gb", "study.crs=EPSG:32650"])
    assert config.spark.driver_memory == "2gb" and config.study.crs == "EPSG:32650"


def test_yaml_bomb_is_refused_quickly_within_a_memory_limit(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)

    def limit_memory() -> None:  # a regression fails here instead of eating the machine
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    start = time.monotonic()
    proc = subprocess.run(landuse_cmd() + ["config", "--config", str(bomb)], capture_output=True, text=True,
                          timeout=120, env=ENV, cwd=REPO, preexec_fn=limit_memory)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert_one_error_line(proc.stderr, str(bomb), "alias")
    assert time.monotonic() - start < 60


# --------------------------------------------------------------------------------------------
# The disk: full, read-only, not a directory
# --------------------------------------------------------------------------------------------


def test_full_disk_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full not available")
    work = tmp_path / "work"
    work.mkdir()
    # Every write to /dev/full fails with ENOSPC: the kernel's own full disk, no root needed.
    (work / "resolved_config.json").symlink_to("/dev/full")
    assert main(["run", "regions", "--config", str(write_config(tmp_path, work))]) == 2
    assert_one_error_line(capsys.readouterr().err, "cannot write", str(work), "no space left on device")


def _unwritable_dir(tmp_path: Path) -> Path:
    """A directory this process cannot create entries in, or skip (root ignores chmod)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        (locked / "probe").mkdir()
    except PermissionError:
        return locked
    (locked / "probe").rmdir()
    # Root: chmod does not stop writes. sysfs refuses mkdir even to root (EPERM) where mounted.
    candidate = Path("/sys") / f"landuse-test-{os.getpid()}"
    try:
        candidate.mkdir()
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return candidate
        pytest.skip(f"running as root and {candidate.parent} is not refused ({exc}); no unwritable directory")
    candidate.rmdir()
    pytest.skip("running as root and no directory refuses writes")


def test_unwritable_work_dir_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parent = _unwritable_dir(tmp_path)
    try:
        work = parent / "work"
        assert main(["run", "regions", "--config", str(write_config(tmp_path, work))]) == 2
        line = assert_one_error_line(capsys.readouterr().err, "cannot write", str(parent))
        assert "permission denied" in line or "not permitted" in line
    finally:
        (tmp_path / "locked").chmod(0o700)


def test_work_dir_under_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    work = tmp_path / "a-file" / "work"  # refused by the kernel for root too (ENOTDIR)
    assert main(["run", "regions", "--config", str(write_config(tmp_path, work))]) == 2
    assert_one_error_line(capsys.readouterr().err, "cannot write", str(work), "not a directory")


# --------------------------------------------------------------------------------------------
# Bugs keep their traceback
# --------------------------------------------------------------------------------------------


class Py4JJavaError(Exception):
    """Stands in for py4j's class (matched by name, like the real one)."""


class PythonException(Exception):
    """Stands in for pyspark's captured worker exception."""


PythonException.__module__ = "pyspark.errors.exceptions.captured"


@pytest.mark.parametrize("exc", [
    RuntimeError("a bug"),
    KeyError("column"),
    OSError(errno.EIO, "Input/output error"),
    Py4JJavaError("org.apache.spark.SparkException: Job aborted\nCaused by: java.lang.NullPointerException\n"),
    # A crashed Python worker ends with an EOFException: a bug, not a truncated file.
    Py4JJavaError("org.apache.spark.SparkException: Python worker exited unexpectedly (crashed)\n"
                  "Caused by: java.io.EOFException\n\tat org.apache.parquet.hadoop.X\n"),
    PythonException("Traceback (most recent call last):\n  File \"x.py\"\nKeyError: 'region_id'\n"),
], ids=["runtime", "key", "eio", "npe", "worker-crash", "worker-keyerror"])
def test_bugs_keep_their_traceback(exc: Exception) -> None:
    from landuse.entrypoints.common import guarded

    def body() -> int:
        raise exc

    with pytest.raises(type(exc)):
        guarded(body)


def test_user_error_in_a_worker_is_its_own_line(capsys: pytest.CaptureFixture[str]) -> None:
    from landuse.entrypoints.common import guarded

    def body() -> int:
        raise PythonException("Traceback (most recent call last):\n  File \"x.py\"\n"
                              "landuse.errors.CorruptInputError: /data/x.tif: cannot be read; restore it\n")

    assert guarded(body) == 2
    assert_one_error_line(capsys.readouterr().err, "/data/x.tif: cannot be read; restore it")


@pytest.mark.parametrize("module, name", [("landuse.manifest", "IntegrityError"), ("landuse.locks", "LockError"),
                                          ("landuse.serving.integrity", "ArtifactIntegrityError")])
def test_integrity_lock_and_artifact_errors_are_user_errors(module: str, name: str) -> None:
    import importlib

    from landuse.entrypoints.common import user_errors

    assert getattr(importlib.import_module(module), name) in user_errors()


# --------------------------------------------------------------------------------------------
# Damaged files behind Spark (a tiny synthetic city, built once)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def city(spark, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, work dir) of the tiny synthetic city after ``landuse pipeline``."""
    root = tmp_path_factory.mktemp("cli-errors-city")
    work = root / "work"
    config = write_config(root, work)
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        assert main(["pipeline", "--config", str(config)]) == 0
    finally:
        os.chdir(cwd)
    return config, work


def copy_work(city: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the city's work dir (each test damages its own)."""
    config, work = city
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    return config, copy


def largest_part(table: Path) -> Path:
    parts = sorted(table.glob("part-*.parquet"), key=lambda p: p.stat().st_size)
    assert parts, f"no part files in {table}"
    return parts[-1]


def unverified(table: Path) -> None:
    """Make ``table`` look written before part records: no parts in its manifest, no Hadoop .crc files.

    Then nothing checks the files before Spark reads them, and the Parquet reader itself must notice.
    """
    from landuse.constants import MANIFEST_FILE
    from landuse.manifest import PARTS_KEY

    manifest = json.loads((table / MANIFEST_FILE).read_text())
    manifest.pop(PARTS_KEY, None)
    (table / MANIFEST_FILE).write_text(json.dumps(manifest))
    for crc in table.glob(".*.crc"):
        crc.unlink()


def truncate(path: Path) -> None:
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def bit_flip(path: Path) -> None:
    """Flip every 7th byte of the column chunks (between the leading magic and the footer), same size.

    Parquet pages carry no checksum by default: flips inside plain values go unnoticed, so the
    damage covers every chunk, page headers included, which the reader must reject.
    """
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    for i in range(4, len(data) - 8 - footer, 7):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def delete(path: Path) -> None:
    path.unlink()


DAMAGE = {
    # Tables with part records: the manifest check names the part before Spark reads it.
    "truncated": (truncate, True, ()),
    "deleted": (delete, True, ()),
    # Without part records: Spark's Parquet reader fails, and the CLI translates its Java error.
    "truncated-unverified": (truncate, False, ("not a valid Parquet file",)),
    "bit-flipped-unverified": (bit_flip, False, ("corrupt",)),
    "deleted-unverified": (delete, False, ("file not found",)),
}


def test_damaged_parquet_part_is_one_line_for_the_whole_process(city, tmp_path: Path) -> None:
    """The audit's case end to end: nothing but the error line about the failure on stderr, no Java stack."""
    config, work = copy_work(city, tmp_path)
    table = work / "tables" / "pois"
    part = largest_part(table)
    unverified(table)
    truncate(part)
    proc = subprocess.run(landuse_cmd() + ["run", "pois", "--config", str(config), f"work_dir={work}", "--force"],
                          capture_output=True, text=True, timeout=600, env=ENV, cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert_one_error_line(proc.stderr, part.name, "not a valid Parquet file", "landuse run ingest")
    assert not [line for line in proc.stderr.splitlines() if line.startswith("\tat ") or "Caused by" in line], \
        proc.stderr[-3000:]


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_parquet_part_read_by_a_later_stage(city, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    case: str) -> None:
    damage, verified, needles = DAMAGE[case]
    config, work = copy_work(city, tmp_path)
    table = work / "tables" / "pois"  # written by ingest, read by the pois stage
    part = largest_part(table)
    if not verified:
        unverified(table)
    damage(part)
    capsys.readouterr()
    assert main(["run", "pois", "--config", str(config), f"work_dir={work}", "--force"]) == 2
    # The fix names the stage that writes the table.
    assert_one_error_line(capsys.readouterr().err, part.name, "landuse run ingest", *needles)


def test_truncated_geotiff_with_intact_header(city, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import rasterio
    import rasterio.shutil

    config, work = copy_work(city, tmp_path)
    tif = work / "city" / "imagery" / "landsat8_oli.tif"
    # CreateCopy writes the header and directory first, so the cut leaves them intact.
    rasterio.shutil.copy(str(tif), str(tmp_path / "front.tif"), driver="GTiff")
    os.replace(tmp_path / "front.tif", tif)
    truncate(tif)
    with rasterio.open(tif) as src:  # the header still opens: only the pixels are gone
        assert src.count == 7
    capsys.readouterr()
    assert main(["run", "imagery", "--config", str(config), f"work_dir={work}", "--force"]) == 2
    assert_one_error_line(capsys.readouterr().err, str(tif), "truncated or corrupt", "inputs.imagery")


# --------------------------------------------------------------------------------------------
# SIGTERM during training
# --------------------------------------------------------------------------------------------


def _runs(db: Path) -> list[tuple[str, str, str | None]]:
    """(run id, status, parent run id) of every run in the SQLite tracking store (read-only)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute(
                "SELECT r.run_uuid, r.status, t.value FROM runs r LEFT JOIN tags t "
                "ON t.run_uuid = r.run_uuid AND t.key = 'mlflow.parentRunId'").fetchall()
    except sqlite3.Error:  # the store is still being created
        return []
    return [(run, status, parent) for run, status, parent in rows]


def test_sigterm_during_train_marks_runs_killed(city, tmp_path: Path) -> None:
    config, work = copy_work(city, tmp_path)
    db = work / "mlflow.db"
    before = {run for run, _, _ in _runs(db)}
    proc = subprocess.Popen(landuse_cmd() + ["run", "train", "--config", str(config), f"work_dir={work}",
                                             "training.epochs=1000000", "--force"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None:
            new = [r for r in _runs(db) if r[0] not in before]
            if any(parent for _, status, parent in new if status == "RUNNING"):  # parent and nested both exist
                break
            time.sleep(1)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        new = [r for r in _runs(db) if r[0] not in before]
        assert any(parent for _, _, parent in new), "no nested MLflow run started"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    runs = [r for r in _runs(db) if r[0] not in before]
    assert len(runs) >= 2 and {status for _, status, _ in runs} == {"KILLED"}, runs


def test_sigterm_handler_is_restored() -> None:
    from landuse.training.signals import kill_runs_on_sigterm, runs_killed_on_sigterm

    previous = signal.getsignal(signal.SIGTERM)
    with runs_killed_on_sigterm():
        assert signal.getsignal(signal.SIGTERM) is not previous
    assert signal.getsignal(signal.SIGTERM) is previous

    @kill_runs_on_sigterm
    def body() -> object:
        return signal.getsignal(signal.SIGTERM)

    assert body() is not previous
    assert signal.getsignal(signal.SIGTERM) is previous


def test_sigterm_handler_ends_nested_runs_killed(tmp_path: Path) -> None:
    import mlflow

    from landuse.training.signals import SIGTERM_EXIT, runs_killed_on_sigterm

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        # an experiment of this store (the process may still hold another store's active experiment id)
        experiment_id = mlflow.create_experiment("sigterm")
        with pytest.raises(SystemExit) as exit_info, runs_killed_on_sigterm():
            with mlflow.start_run(experiment_id=experiment_id) as parent, \
                    mlflow.start_run(nested=True, experiment_id=experiment_id) as child:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises here
        assert exit_info.value.code == SIGTERM_EXIT
        client = mlflow.MlflowClient()
        assert [client.get_run(r.info.run_id).info.status for r in (parent, child)] == ["KILLED", "KILLED"]
        assert mlflow.active_run() is None
    finally:
        mlflow.set_tracking_uri(before)
