"""A real Spark standalone cluster on 127.0.0.1: one master and two workers, started from pyspark's own
``bin/spark-class`` (no Spark download, no manual setup) for the whole test session.

* every daemon binds to 127.0.0.1 (``SPARK_LOCAL_IP`` and ``--host``) on free ports, web UIs included
  (the master's serves the JSON state the tests read);
* each worker has one core, 1 GiB for executors and its own ``--work-dir``: executors are separate
  JVMs launched by the workers, with their stdout/stderr and fetched files (``--jars``,
  ``--py-files``) under ``<work-dir>/<app-id>/<executor-id>/``;
* every process is started in its own session and stopped by its process group at teardown (the
  executors a worker launched go with it); the daemon logs stay under the session's tmp path and are
  added to the report of any failing test that used the cluster.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cluster.s3 import free_port, moto_s3  # noqa: F401  (moto_s3 is a fixture for this package)

TELEMETRY_ENV = {"DO_NOT_TRACK": "true", "SCARF_NO_ANALYTICS": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
WORKERS = 2
WORKER_CORES = 1
WORKER_MEMORY = "1g"
START_TIMEOUT_S = 120


def pyspark_home() -> Path:
    """The pyspark package directory: a complete SPARK_HOME (bin/, jars/) as pip installs it."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def spark_env(**extra: str) -> dict[str, str]:
    """Environment for Spark daemons and spark-submit: pyspark's SPARK_HOME, 127.0.0.1, this interpreter."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SPARK_HOME", "SPARK_CONF_DIR", "PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET",
                        "PYSPARK_SUBMIT_ARGS", "SPARK_MASTER_HOST", "SPARK_WORKER_DIR")}
    env.update(SPARK_HOME=str(pyspark_home()), SPARK_LOCAL_IP="127.0.0.1", SPARK_LOCAL_HOSTNAME="127.0.0.1",
               PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable, **TELEMETRY_ENV)
    env.update(extra)
    return env


@dataclass
class Daemon:
    name: str
    process: subprocess.Popen
    log: Path


@dataclass
class StandaloneCluster:
    """A running master and its workers."""

    root: Path
    master_url: str = ""  # spark://127.0.0.1:PORT
    ui_url: str = ""  # http://127.0.0.1:PORT (master web UI; /json is its state)
    work_dirs: list[Path] = field(default_factory=list)  # one per worker, in start order
    daemons: list[Daemon] = field(default_factory=list)

    # -- state ---------------------------------------------------------------------------------
    def state(self) -> dict:
        """The master's JSON state (workers, active and completed applications)."""
        with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=10) as response:
            return json.load(response)

    def alive_workers(self) -> list[dict]:
        return [w for w in self.state().get("workers", []) if w.get("state") == "ALIVE"]

    def _master_ready(self, log: Path) -> bool:
        """The master's own account of its URLs (Spark moves to the next port when one is taken),
        then its JSON state saying ALIVE (before that the UI may serve HTML at /json/)."""
        text = log.read_text(errors="replace") if log.exists() else ""
        master = re.search(r"Starting Spark master at (spark://\S+)", text)
        ui = re.search(r"MasterWebUI to \S+, and started at (http://\S+)", text)
        if not (master and ui):
            return False
        self.master_url, self.ui_url = master.group(1), ui.group(1).rstrip("/")
        try:
            return self.state().get("status") == "ALIVE"
        except ValueError:  # not JSON yet
            return False

    def executor_dirs(self, app_id: str) -> dict[int, list[Path]]:
        """Per worker (index into work_dirs): the executor directories it made for ``app_id``."""
        return {i: sorted(p for p in (wd / app_id).glob("*") if p.is_dir()) for i, wd in enumerate(self.work_dirs)}

    def log_tails(self, chars: int = 3000) -> str:
        """Tails of the daemon logs and of every executor's stderr, for failure reports."""
        parts = []
        for daemon in self.daemons:
            text = daemon.log.read_text(errors="replace") if daemon.log.exists() else "(no log)"
            parts.append(f"--- {daemon.name} ({daemon.log})\n{text[-chars:]}")
        for wd in self.work_dirs:
            for stderr in sorted(wd.glob("app-*/*/stderr")):
                parts.append(f"--- executor {stderr}\n{stderr.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    # -- lifecycle -----------------------------------------------------------------------------
    def _spawn(self, name: str, cls: str, args: list[str], **env: str) -> Daemon:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            process = subprocess.Popen([str(pyspark_home() / "bin" / "spark-class"), cls, *args], stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root,
                                       env=spark_env(**env), start_new_session=True)
        daemon = Daemon(name, process, log)
        self.daemons.append(daemon)
        return daemon

    def _wait(self, what: str, ready, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [d for d in self.daemons if d.process.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead[0].name} exited {dead[0].process.returncode} while waiting for "
                                   f"{what}\n{self.log_tails()}")
            try:
                if ready():
                    return
            except (OSError, ValueError):  # not listening yet / not JSON yet
                pass
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.log_tails()}")

    def start(self, workers: int = WORKERS) -> StandaloneCluster:
        port, ui_port = free_port(), free_port()
        self.master_url, self.ui_url = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
        # Daemon JVMs only schedule: a small heap is plenty (executors get spark.executor.memory).
        small = {"SPARK_DAEMON_MEMORY": "256m"}
        master = self._spawn("master", "org.apache.spark.deploy.master.Master",
                             ["--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui_port)], **small)
        self._wait("the master (ALIVE in its JSON state)", lambda: self._master_ready(master.log))
        for i in range(workers):
            work_dir = self.root / f"worker-{i}"
            work_dir.mkdir(parents=True, exist_ok=True)
            self.work_dirs.append(work_dir)
            self._spawn(f"worker-{i}", "org.apache.spark.deploy.worker.Worker",
                        ["--host", "127.0.0.1", "--port", str(free_port()), "--webui-port", str(free_port()),
                         "--cores", str(WORKER_CORES), "--memory", WORKER_MEMORY, "--work-dir", str(work_dir),
                         self.master_url], **small)
        self._wait(f"{workers} ALIVE workers", lambda: len(self.alive_workers()) >= workers)
        return self

    def drop_fetched_jars(self) -> None:
        """Delete the jars executors fetched into their directories (``--jars``: ~370 MB per executor,
        mostly the AWS SDK bundle); their logs stay."""
        for work_dir in self.work_dirs:
            for jar in work_dir.glob("app-*/*/*.jar"):
                jar.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop workers (and the executors they launched), then the master; SIGKILL what lingers."""
        for daemon in reversed(self.daemons):
            if daemon.process.poll() is None:
                try:
                    os.killpg(daemon.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for daemon in reversed(self.daemons):
            try:
                daemon.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            # the group may hold children (executors) even after the daemon itself has gone
            try:
                os.killpg(daemon.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                daemon.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def _java_missing() -> str | None:
    from landuse.spark.session import SessionError, check_java

    try:
        check_java()
    except SessionError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    """A Spark standalone master and two 1-core workers on 127.0.0.1 for the whole session."""
    if not (pyspark_home() / "bin" / "spark-class").exists():
        pytest.skip(f"pyspark has no bin/spark-class ({pyspark_home()})")
    problem = _java_missing()
    if problem:
        pytest.skip(problem)
    cluster = StandaloneCluster(root=tmp_path_factory.mktemp("standalone"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        cluster.drop_fetched_jars()
        print(f"\nstandalone cluster logs kept under {cluster.root / 'logs'} (worker dirs {cluster.root}/worker-*)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failing test that used the cluster gets the master/worker logs and executor stderr in its report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "standalone_cluster" in getattr(item, "fixturenames", ()):
        cluster = getattr(item, "funcargs", {}).get("standalone_cluster")
        if isinstance(cluster, StandaloneCluster):
            report.sections.append(("standalone cluster logs", cluster.log_tails()))
