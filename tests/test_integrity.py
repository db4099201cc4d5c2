"""Content fingerprints of outputs (manifest ``parts``), their verification, and the replace/delete guards."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import landuse.manifest as manifest_module
from landuse.config import Config, StorageConfig
from landuse.manifest import (
    PARTS_KEY,
    IntegrityError,
    UnsafeOutputError,
    commit_dir,
    discard_dir,
    read_manifest,
    staging_dir,
    verify_output,
    write_manifest,
)
from landuse.runner import Stage, StageContext, no_spark, run_stage
from landuse.spark.io import read_pandas, require_table, table_path
from landuse.storage import location, write_parquet
from tests.cluster.s3 import BUCKET, moto_s3  # noqa: F401  (fixture)

PARTS = [f"part-0000{i}-{uuid.UUID(int=i)}.c000.snappy.parquet" for i in range(3)]


def trips_stage(rows_per_part: int = 100, name: str = "ingest") -> Stage:
    """A stage writing table ``trips`` as three Parquet parts (plus Spark-like side files)."""

    @no_spark
    def run(ctx: StageContext) -> None:
        out = ctx.out("trips")
        for i, part in enumerate(PARTS):
            write_parquet(pa.table({"trip": list(range(i * rows_per_part, (i + 1) * rows_per_part))}), out / part)
        (out / "_SUCCESS").write_text("")

    return Stage(name=name, description="", run=run, outputs=lambda c: {"trips": table_path(c, "trips")})


def flows_stage(seen: list[int]) -> Stage:
    @no_spark
    def run(ctx: StageContext) -> None:
        seen.append(len(read_pandas(ctx.config, "trips", "ingest")))
        write_parquet(pa.table({"n": [seen[-1]]}), ctx.out("flows") / "part-00000.parquet")

    return Stage(name="flows", description="", run=run, outputs=lambda c: {"flows": table_path(c, "flows")},
                 upstream=("ingest",))


@pytest.fixture
def work(tmp_path: Path) -> tuple[Config, dict[str, Stage]]:
    config = Config(name="t", work_dir=tmp_path / "work")
    registry = {"ingest": trips_stage(), "flows": flows_stage([])}
    assert run_stage(registry["ingest"], config, registry).status == "ran"
    return config, registry


def test_manifest_records_every_file_with_size_and_sha256(work) -> None:
    config, _ = work
    trips = table_path(config, "trips")
    parts = read_manifest(trips)[PARTS_KEY]
    assert sorted(parts) == sorted([*PARTS, "_SUCCESS"])
    for rel, record in parts.items():
        assert record["bytes"] == (trips / rel).stat().st_size
        assert record["sha256"] == manifest_module.sha256_file(trips / rel)
    require_table(config, "trips", "ingest")  # intact: verifies


def test_deleted_part_is_detected_and_the_stage_refuses(work) -> None:
    """The audit case: one of three parts deleted; reading trips (and running flows) must refuse."""
    config, registry = work
    trips = table_path(config, "trips")
    (trips / PARTS[1]).unlink()
    expected = (f"table trips ({trips}): part {PARTS[1]} is missing (manifest lists 3 parts, 2 found); "
                "rerun `landuse run ingest --force`")
    with pytest.raises(IntegrityError) as caught:
        read_pandas(config, "trips", "ingest")
    assert str(caught.value) == expected and "\n" not in str(caught.value)
    with pytest.raises(IntegrityError, match="part .* is missing"):
        run_stage(registry["flows"], config, registry, force=True)
    assert not table_path(config, "flows").exists()


def test_truncated_part_is_detected(work) -> None:
    config, _ = work
    part = table_path(config, "trips") / PARTS[2]
    size = part.stat().st_size
    with open(part, "r+b") as handle:
        handle.truncate(size - 10)
    with pytest.raises(IntegrityError, match=f"table trips .*: part {PARTS[2]} has {size - 10} bytes, the manifest "
                                             f"{size} \\(truncated or rewritten\\); rerun `landuse run ingest --force`"):
        require_table(config, "trips", "ingest")


def test_extra_part_is_detected(work) -> None:
    config, _ = work
    trips = table_path(config, "trips")
    (trips / "part-00009-stray.snappy.parquet").write_bytes((trips / PARTS[0]).read_bytes())
    with pytest.raises(IntegrityError, match="part part-00009-stray.snappy.parquet is not in the manifest "
                                             "\\(manifest lists 3 parts, 4 found\\)"):
        require_table(config, "trips", "ingest")


def test_bit_flip_of_the_same_size_is_detected(work) -> None:
    config, _ = work
    part = table_path(config, "trips") / PARTS[0]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=f"part {PARTS[0]} changed since it was written"):
        require_table(config, "trips", "ingest")


def test_unchanged_table_verifies_from_the_hash_cache(work, monkeypatch) -> None:
    config, registry = work
    calls: list[Path] = []
    real = manifest_module.sha256_file

    def counting(path: Path, *args) -> str:
        calls.append(Path(path))
        return real(path, *args)

    monkeypatch.setattr(manifest_module, "sha256_file", counting)
    manifest_module._SHARED.clear()  # a fresh process: the cache comes from <work_dir>/.hashcache.json
    for _ in range(3):
        require_table(config, "trips", "ingest")
    assert run_stage(registry["ingest"], config, registry).status == "unchanged"
    assert calls == []  # hashed once, when written; the commit handed the hashes to the cache
    part = table_path(config, "trips") / PARTS[0]
    os.utime(part, ns=(part.stat().st_atime_ns, part.stat().st_mtime_ns + 1_000_000))  # touched, same bytes
    require_table(config, "trips", "ingest")
    assert calls == [part.resolve()]  # only the touched part is read again, and it still matches
    require_table(config, "trips", "ingest")
    assert len(calls) == 1


def test_damaged_own_output_is_not_skipped_as_unchanged(work) -> None:
    config, registry = work
    (table_path(config, "trips") / PARTS[1]).unlink()
    assert run_stage(registry["ingest"], config, registry).status == "ran"  # repaired without --force
    require_table(config, "trips", "ingest")


def test_delta_log_files_are_part_of_the_fingerprint(tmp_path: Path) -> None:
    final = tmp_path / "tables" / "trips"
    staged = staging_dir(final)
    pq.write_table(pa.table({"a": [1]}), staged / "part-00000.parquet")
    (staged / "_delta_log").mkdir()
    (staged / "_delta_log" / "00000000000000000000.json").write_text('{"commitInfo":{}}\n')
    write_manifest(staged, {"stage": "ingest"})
    commit_dir(staged, final)
    assert "_delta_log/00000000000000000000.json" in read_manifest(final)[PARTS_KEY]
    (final / "_delta_log" / "00000000000000000000.json").unlink()
    with pytest.raises(IntegrityError, match="file _delta_log/00000000000000000000.json is missing "
                                             "\\(manifest lists 1 files, 0 found\\)"):
        verify_output(final, "table trips", "landuse run ingest --force")


def test_manifest_without_parts_is_not_verified(tmp_path: Path) -> None:
    """Outputs committed before parts were recorded stay readable (rerun the stage to fingerprint them)."""
    config = Config(name="t", work_dir=tmp_path)
    trips = table_path(config, "trips")
    trips.mkdir(parents=True)
    pq.write_table(pa.table({"a": [1]}), trips / "part-00000.parquet")
    (trips / "_manifest.json").write_text(json.dumps({"stage": "ingest", "fingerprint": "x"}))
    assert len(read_pandas(config, "trips", "ingest")) == 1


@pytest.mark.parametrize("name", ["../victim", "a/../../b", "/etc", "rejects/..", "./x", "rejects//x", "C:/x"])
def test_table_names_that_leave_the_tables_dir_are_refused(tmp_path: Path, name: str) -> None:
    config = Config(name="t", work_dir=tmp_path)
    with pytest.raises(UnsafeOutputError, match="not a relative name inside"):
        table_path(config, name)
    assert table_path(config, "rejects/trips_a") == tmp_path / "tables" / "rejects" / "trips_a"


def test_commit_refuses_to_replace_a_foreign_directory(tmp_path: Path) -> None:
    final = tmp_path / "tables" / "trips"
    final.mkdir(parents=True)
    (final / "thesis.txt").write_text("mine")
    staged = staging_dir(final)
    write_manifest(staged, {"stage": "x"})
    with pytest.raises(UnsafeOutputError, match=f"{final}: not a landuse output \\(no manifest\\) and not empty"):
        commit_dir(staged, final)
    assert (final / "thesis.txt").read_text() == "mine"
    discard_dir(staged)
    # empty, or a landuse output: replaced
    (final / "thesis.txt").unlink()
    for _ in range(2):
        staged = staging_dir(final)
        write_manifest(staged, {"stage": "x"})
        commit_dir(staged, final)
    assert sorted(p.name for p in final.parent.iterdir()) == ["trips"]


def test_runner_refuses_foreign_output_before_running(tmp_path: Path) -> None:
    config = Config(name="t", work_dir=tmp_path)
    trips = table_path(config, "trips")
    trips.mkdir(parents=True)
    (trips / "notes.txt").write_text("mine")
    with pytest.raises(UnsafeOutputError, match=f"stage ingest: output trips \\({trips}\\): not a landuse output"):
        run_stage(trips_stage(), config)
    assert (trips / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in trips.parent.iterdir()) == ["trips"]  # no staging directory left


def test_outputs_outside_the_work_dir_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "table"
    stage = Stage(name="demo", description="", run=no_spark(lambda ctx: None), outputs=lambda c: {"t": outside})
    with pytest.raises(UnsafeOutputError, match="output t .* is outside work_dir"):
        run_stage(stage, Config(name="t", work_dir=tmp_path / "work"))
    assert not outside.parent.exists()
    work = Stage(name="demo", description="", run=no_spark(lambda ctx: None), outputs=lambda c: {"t": tmp_path / "work"})
    with pytest.raises(UnsafeOutputError, match="contains work_dir"):  # the work dir itself is not an output
        run_stage(work, Config(name="t", work_dir=tmp_path / "work"))


def test_an_output_holding_the_work_dir_is_refused(tmp_path: Path) -> None:
    """synth.dir set to a parent of work_dir would take the work dir with it on the next replace."""
    from landuse.config import SynthConfig

    city = tmp_path / "all"
    config = Config(name="t", work_dir=city / "work", synth=SynthConfig(enabled=True, dir=city))
    stage = Stage(name="synth", description="", run=no_spark(lambda ctx: None), outputs=lambda c: {"synth": c.synth.dir})
    with pytest.raises(UnsafeOutputError, match=rf"output synth \({city}\) contains work_dir"):
        run_stage(stage, config)


def test_discard_dir_only_removes_staging_directories(tmp_path: Path) -> None:
    keep = tmp_path / "data"
    keep.mkdir()
    with pytest.raises(UnsafeOutputError, match="not a staging directory"):
        discard_dir(keep)
    assert keep.is_dir()


def test_memory_store_outputs_are_verified(tmp_path: Path) -> None:
    """A URI work dir whose store has no ETags (memory://): parts carry sha256 of the bytes."""
    from landuse.storage import remove_tree

    work = location(f"memory://integrity/{tmp_path.name}")
    config = Config(name="t", work_dir=work, storage=StorageConfig(local_dir=tmp_path / "driver"))
    try:
        assert run_stage(trips_stage(), config).status == "ran"
        trips = table_path(config, "trips")
        assert all("sha256" in r for r in read_manifest(trips)[PARTS_KEY].values())
        require_table(config, "trips", "ingest")
        (trips / PARTS[0]).write_bytes(b"x" * (trips / PARTS[0]).stat().st_size)
        with pytest.raises(IntegrityError, match=f"part {PARTS[0]} changed"):
            require_table(config, "trips", "ingest")
    finally:
        remove_tree(work)


def test_s3_outputs_record_published_etags_and_are_verified(moto_s3, monkeypatch, tmp_path: Path) -> None:  # noqa: F811
    for key, value in moto_s3.credentials_env().items():
        monkeypatch.setenv(key, value)
    storage = StorageConfig(endpoint_url=moto_s3.endpoint, path_style=True, local_dir=tmp_path / "driver")
    root = location(f"s3a://{BUCKET}/{uuid.uuid4().hex[:8]}", storage)
    config = Config(name="integrity-s3", work_dir=root, storage=storage)  # the lock lives in the local driver dir
    registry = {"ingest": trips_stage(), "flows": flows_stage(seen := [])}
    assert run_stage(registry["ingest"], config, registry).status == "ran"
    trips = table_path(config, "trips")
    parts = read_manifest(trips)[PARTS_KEY]
    assert sorted(parts) == sorted([*PARTS, "_SUCCESS"]) and all(r.get("etag") for r in parts.values())
    assert run_stage(registry["flows"], config, registry).status == "ran" and seen == [300]
    assert run_stage(registry["ingest"], config, registry).status == "unchanged"
    (trips / PARTS[1]).unlink()
    with pytest.raises(IntegrityError, match=f"part {PARTS[1]} is missing \\(manifest lists 3 parts, 2 found\\)"):
        run_stage(registry["flows"], config, registry, force=True)
    assert seen == [300]  # flows never computed on the 200 remaining trips


def test_trainer_reads_are_verified(tmp_path: Path) -> None:
    """The trainer's reader (landuse.data.reader) checks a training table against its manifest too."""
    from landuse.data.reader import _require

    config = Config(name="t", work_dir=tmp_path / "work")

    @no_spark
    def run(ctx: StageContext) -> None:
        for i, part in enumerate(PARTS):
            write_parquet(pa.table({"region_id": [i]}), ctx.out("edges_adjacency") / part)

    stage = Stage(name="regions", description="", run=run,
                  outputs=lambda c: {"edges_adjacency": table_path(c, "edges_adjacency")})
    assert run_stage(stage, config, {"regions": stage}).status == "ran"
    assert _require(config.tables_dir, "edges_adjacency") == table_path(config, "edges_adjacency")
    (table_path(config, "edges_adjacency") / PARTS[2]).unlink()
    with pytest.raises(IntegrityError, match=r"table edges_adjacency .*part .* is missing.*landuse run regions --force"):
        _require(config.tables_dir, "edges_adjacency")
