"""A moto S3 server on 127.0.0.1 for tests that use ``s3a://`` work dirs (reusable helper).

``moto_server`` (from ``moto[server]`` in the venv) is started as a child process on a free port;
nothing outside this machine is contacted. :class:`MotoS3` gives the endpoint, a boto3 client, the
``spark.hadoop.fs.s3a.*`` settings that point Spark's S3A filesystem (hadoop-aws from ``make jars``)
at it, the ``AWS_*`` credential environment, and a download of a prefix into a local folder for
comparisons.

Use the ``moto_s3`` fixture (session-scoped) after importing it into a conftest::

    from tests.cluster.s3 import moto_s3  # noqa: F401  (fixture)

or :func:`moto_server` as a context manager.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

BUCKET = "landuse-test"  # S3 bucket names need at least 3 characters
ACCESS_KEY = "landuse-test-key"  # moto accepts any credentials
SECRET_KEY = "landuse-test-secret"
REGION = "us-east-1"
MOTO_SERVER = Path(sys.executable).parent / "moto_server"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MotoS3:
    """A running moto S3 server."""

    endpoint: str  # http://127.0.0.1:PORT
    process: subprocess.Popen
    log: Path

    def client(self):
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def create_bucket(self, name: str = BUCKET) -> str:
        """Create ``name`` unless it exists; returns the name."""
        client = self.client()
        if name not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=name)
        return name

    def spark_conf(self) -> dict[str, str]:
        """``spark.hadoop.fs.s3a.*`` settings for S3A against this server (plain HTTP, path style)."""
        return {
            "spark.hadoop.fs.s3a.endpoint": self.endpoint,
            "spark.hadoop.fs.s3a.endpoint.region": REGION,
            "spark.hadoop.fs.s3a.path.style.access": "true",
            "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
            "spark.hadoop.fs.s3a.access.key": ACCESS_KEY,
            "spark.hadoop.fs.s3a.secret.key": SECRET_KEY,
            "spark.hadoop.fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        }

    def credentials_env(self) -> dict[str, str]:
        """Credentials and region as the standard ``AWS_*`` variables (read by boto3, s3fs and
        hadoop-aws alike). The endpoint is left out on purpose: code under test must get it from its
        own configuration (:meth:`endpoint_env` adds it for clients that should simply find it)."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def endpoint_env(self) -> dict[str, str]:
        """``credentials_env`` plus ``AWS_ENDPOINT_URL(_S3)`` (boto3 >= 1.28 and pyarrow honour them)."""
        return {**self.credentials_env(), "AWS_ENDPOINT_URL": self.endpoint, "AWS_ENDPOINT_URL_S3": self.endpoint}

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under ``prefix``."""
        paginator = self.client().get_paginator("list_objects_v2")
        return [obj["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
                for obj in page.get("Contents", [])]

    def download(self, bucket: str, prefix: str, dest: Path) -> Path:
        """Copy every object under ``prefix`` to ``dest`` (keys relative to the prefix); returns ``dest``."""
        client = self.client()
        prefix = prefix.strip("/")
        for key in self.keys(bucket, f"{prefix}/" if prefix else ""):
            rel = key[len(prefix):].lstrip("/") if prefix else key
            if not rel or key.endswith("/"):  # directory markers
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(target))
        return dest

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"


def _wait_ready(endpoint: str, process: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited {process.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"moto_server did not answer on {endpoint} within {timeout:.0f} s:\n"
                       f"{log.read_text(errors='replace')[-4000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)  # its own session (start_new_session): only its processes
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


@contextmanager
def moto_server(log_dir: Path, port: int | None = None) -> Iterator[MotoS3]:
    """Run ``moto_server -H 127.0.0.1 -p PORT`` for the duration of the block."""
    if not MOTO_SERVER.exists():
        raise FileNotFoundError(f"moto_server not found beside the interpreter ({MOTO_SERVER}); "
                                "install moto[server] (requirements.txt)")
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "moto_server.log"
    env = {**os.environ, "DO_NOT_TRACK": "true", "SCARF_NO_ANALYTICS": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(log, "wb") as out:
        process = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(endpoint, process, log)
        yield MotoS3(endpoint=endpoint, process=process, log=log)
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A moto S3 server on 127.0.0.1 for the whole session, with the bucket ``landuse-test``."""
    if not MOTO_SERVER.exists():
        pytest.skip(f"moto_server not found beside the interpreter ({MOTO_SERVER}); install moto[server]")
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        server.create_bucket(BUCKET)
        yield server
