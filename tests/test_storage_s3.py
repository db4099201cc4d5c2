"""Tables on an object store: the runner's commit protocol and real stages against a local S3 server.

A moto S3 server on 127.0.0.1 (started by the ``moto_s3`` fixture) stands in for S3 / MinIO; Spark
reaches it through ``s3a://`` (hadoop-aws from ``make jars``), the driver through s3fs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pandas as pd
import pytest

from landuse.config import Config, StorageConfig, load_config
from landuse.manifest import commit_dir, is_committed, read_manifest, recover_dir, staging_dir, write_manifest
from landuse.runner import Stage, StageContext, no_spark, run_pipeline, run_stage
from landuse.storage import is_local, is_uri, list_files, location
from tests.cluster.s3 import BUCKET, moto_s3  # noqa: F401  (fixture)


def test_location_keeps_local_paths_and_parses_uris() -> None:
    assert location("work/x") == Path("work/x") and is_local(location("work/x"))
    assert location("file:///tmp/x") == Path("/tmp/x")
    remote = location("s3a://bucket/prefix", StorageConfig(endpoint_url="http://127.0.0.1:1", path_style=True))
    assert str(remote / "tables" / "t") == "s3a://bucket/prefix/tables/t" and not is_local(remote)
    assert remote.storage_options["endpoint_url"] == "http://127.0.0.1:1"
    assert is_uri("abfss://c@a.dfs.core.windows.net/p") and is_uri("dbfs:/x") and not is_uri("C:\\x")


def test_config_work_dir_uri_and_local_driver_dir(repo_root: Path) -> None:
    config = load_config(repo_root / "conf/synthetic_shenzhen.yaml",
                         ["work_dir=s3a://bucket/run", "synth.dir=/tmp/city", "storage.endpoint_url=http://127.0.0.1:9"],
                         check_inputs=False)
    assert str(config.tables_dir) == "s3a://bucket/run/tables"
    assert config.driver_dir == Path("work") / config.name  # results, reports, mlflow.db stay local
    assert config.mlflow_uri.startswith("sqlite:///") and config.to_dict()["work_dir"] == "s3a://bucket/run"
    from landuse.config import ConfigError

    with pytest.raises(ConfigError, match="synth.dir: .* must be a local directory"):
        load_config(repo_root / "conf/synthetic_shenzhen.yaml", ["work_dir=s3a://bucket/run"], check_inputs=False)


@pytest.fixture
def s3_root(moto_s3, monkeypatch):  # noqa: F811
    """A fresh ``s3a://landuse-test/<uuid>`` prefix with the server's credentials in the environment."""
    for key, value in moto_s3.credentials_env().items():
        monkeypatch.setenv(key, value)
    storage = StorageConfig(endpoint_url=moto_s3.endpoint, path_style=True)
    return location(f"s3a://{BUCKET}/{uuid.uuid4().hex[:8]}", storage), storage


def _stage(target, calls: list[int], fail: bool = False) -> Stage:
    @no_spark
    def run(ctx: StageContext) -> None:
        calls.append(1)
        (ctx.out("table") / "part-0.txt").write_text(f"run {len(calls)}\n")
        (ctx.out("table") / "sub" / "part-1.txt").write_text("nested\n")
        if fail:
            raise RuntimeError("boom")

    return Stage(name="demo", description="", run=run, outputs=lambda config: {"table": target})


def test_runner_commits_skips_and_keeps_previous_output_on_s3(s3_root) -> None:
    root, storage = s3_root
    config = Config(name="t", work_dir=root, storage=storage)
    target, calls = root / "tables" / "demo", []
    assert run_stage(_stage(target, calls), config).status == "ran"
    assert is_committed(target) and list_files(target) == ["_manifest.json", "part-0.txt", "sub/part-1.txt"]
    assert run_stage(_stage(target, calls), config).status == "unchanged"
    with pytest.raises(RuntimeError, match="boom"):
        run_stage(_stage(target, calls, fail=True), config, force=True)
    assert (target / "part-0.txt").read_text() == "run 1\n"  # the failed run left the output alone
    assert [p.name for p in target.parent.iterdir()] == ["demo"]  # and no staging directory behind


def test_interrupted_publish_rolls_forward(s3_root, monkeypatch) -> None:
    root, _ = s3_root
    final = root / "tables" / "t"
    old = staging_dir(final)
    (old / "part-0.txt").write_text("old\n")
    write_manifest(old, {"started": "1", "v": "old"})
    commit_dir(old, final)
    new = staging_dir(final)
    (new / "part-0.txt").write_text("new\n")
    (new / "part-1.txt").write_text("new\n")
    write_manifest(new, {"started": "2", "v": "new"})

    import landuse.manifest as manifest_module

    def crash(source, target, skip=()):  # dies after the old manifest and files are gone
        raise KeyboardInterrupt("killed mid-copy")

    monkeypatch.setattr(manifest_module, "copy_tree", crash)
    with pytest.raises(KeyboardInterrupt):
        commit_dir(new, final)
    assert not is_committed(final)  # readers see no table, never a half one
    monkeypatch.undo()
    recover_dir(final)
    assert read_manifest(final)["v"] == "new" and (final / "part-1.txt").read_text() == "new\n"
    assert [p.name for p in final.parent.iterdir()] == ["t"]


KILLED = textwrap.dedent(
    """
    import sys, time
    from landuse.config import Config, StorageConfig
    from landuse.runner import Stage, run_stage, no_spark
    from landuse.storage import location

    storage = StorageConfig(endpoint_url=sys.argv[2], path_style=True)
    target = location(sys.argv[1], storage)

    @no_spark
    def run(ctx):
        for i in range(1000):
            (ctx.out("table") / f"part-{i:04d}.txt").write_text("new\\n")
            if i == 3:
                print("WRITING", flush=True)
            time.sleep(0.05)

    stage = Stage(name="slow", description="", run=run, outputs=lambda c: {"table": target})
    run_stage(stage, Config(name="t", work_dir=target.parent, storage=storage), force=True)
    """
)


def test_sigkill_mid_write_on_s3_leaves_previous_output(s3_root, moto_s3) -> None:  # noqa: F811
    root, storage = s3_root
    target = root / "tables" / "slow"
    run_stage(_stage(target, []), Config(name="t", work_dir=root, storage=storage))
    before = read_manifest(target)
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(target), moto_s3.endpoint],
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout is not None and proc.stdout.readline().strip() == "WRITING"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert read_manifest(target) == before
    assert list_files(target) == ["_manifest.json", "part-0.txt", "sub/part-1.txt"]
    assert any(p.name.startswith(".staging-slow") for p in target.parent.iterdir())
    recover_dir(target)  # no manifest in the staging dir: it was never complete, so it is dropped
    assert read_manifest(target) == before
    assert [p.name for p in target.parent.iterdir() if p.name != ".hashcache.json"] == ["slow"]


@pytest.mark.slow
def test_spark_stages_on_s3_equal_local(spark, s3_root, moto_s3, repo_root, tmp_path) -> None:  # noqa: F811
    """regions, ingest and flows with work_dir on s3a:// (Delta tables) give the local run's tables."""
    root, _ = s3_root
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()  # the shared session learns the endpoint
    for key, value in moto_s3.spark_conf().items():
        hadoop.set(key.removeprefix("spark.hadoop."), value)
    from landuse.stages import STAGES

    common = [f"synth.dir={tmp_path / 'city'}", "synth.scale=tiny", "spark.shuffle_partitions=2"]
    local = load_config(repo_root / "conf/synthetic_shenzhen.yaml", [f"work_dir={tmp_path / 'local'}", *common])
    remote = load_config(repo_root / "conf/synthetic_shenzhen.yaml",
                         [f"work_dir={root}", f"storage.endpoint_url={moto_s3.endpoint}", "storage.path_style=true",
                          f"storage.local_dir={tmp_path / 'driver'}", *common])
    only = ["synth", "regions", "ingest", "flows"]
    run_pipeline(local, STAGES, only=only)
    results = run_pipeline(remote, STAGES, only=only)
    assert {r.status for r in results if r.name != "synth"} == {"ran"}  # synth.dir is shared (local)
    assert [r.status for r in run_pipeline(remote, STAGES, only=only)] == ["unchanged"] * len(only)
    from landuse.spark.io import read_table

    for table, producer in [("regions", "regions"), ("trips", "ingest"), ("flows", "flows")]:
        a = read_table(spark, local, table, producer).drop("geometry").toPandas()
        b = read_table(spark, remote, table, producer).drop("geometry").toPandas()
        keys = [c for c in a.columns if a[c].map(lambda v: v is None or isinstance(v, (str, int, float))).all()]
        pd.testing.assert_frame_equal(a.sort_values(keys).reset_index(drop=True),
                                      b.sort_values(keys).reset_index(drop=True), check_exact=False, rtol=1e-12)
        manifest = read_manifest(remote.tables_dir / table)
        assert manifest["rows"] == len(b) and manifest["table_format"] == read_manifest(local.tables_dir / table)["table_format"]
    assert (remote.tables_dir / "trips" / "_delta_log").exists() == manifest["table_format"].startswith("delta")
