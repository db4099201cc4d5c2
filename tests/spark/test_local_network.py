"""Local sessions listen on the loopback interface only (driver RPC, block manager, Spark UI)."""

from __future__ import annotations

import shutil
import subprocess
from urllib.parse import urlparse

import pytest

from landuse.spark.session import is_local_master, loopback_settings

LOOPBACK = {"spark.driver.bindAddress": "127.0.0.1", "spark.driver.host": "127.0.0.1"}


def test_local_session_binds_driver_and_ui_to_loopback(spark) -> None:
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.driver.bindAddress") == "127.0.0.1"
    assert conf.get("spark.driver.host") == "127.0.0.1"
    url = spark.sparkContext.uiWebUrl
    if url is None:  # UI disabled: nothing listens
        return
    assert urlparse(url).hostname == "127.0.0.1"
    if shutil.which("ss") is None:
        pytest.skip("ss not available to check the UI's listening address")
    port = urlparse(url).port
    listening = [line.split()[3] for line in subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout.splitlines()
                 if line.split()[3].endswith(f":{port}")]
    assert listening and all("127.0.0.1" in address for address in listening), listening


@pytest.mark.parametrize("master", ["local", "local[2]", "local[*]", "local[4,2]"])
def test_local_masters_get_loopback(master: str) -> None:
    assert is_local_master(master)
    assert loopback_settings(master, {}) == LOOPBACK


@pytest.mark.parametrize("master", [None, "yarn", "spark://host:7077", "k8s://https://api:6443", "local-cluster[2,1,1024]"])
def test_cluster_masters_unchanged(master) -> None:
    assert loopback_settings(master, {}) == {}


@pytest.mark.parametrize("user", [{"spark.driver.bindAddress": "0.0.0.0"}, {"spark.driver.host": "10.0.0.5"}])
def test_user_setting_wins(user: dict[str, str]) -> None:
    assert loopback_settings("local[*]", user) == {}
