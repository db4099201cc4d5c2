"""Stage runner: manifests, skip-when-unchanged, --force, and atomic outputs under failure and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from landuse.config import Config
from landuse.manifest import read_manifest, recover_dir
from landuse.runner import Stage, StageContext, no_spark, run_stage


def make_stage(target: Path, calls: list[int], inputs: list[Path] | None = None, fail: bool = False) -> Stage:
    @no_spark
    def run(ctx: StageContext) -> None:
        calls.append(1)
        out = ctx.out("table")
        (out / "part-0.txt").write_text(f"run {len(calls)}\n")
        if fail:
            raise RuntimeError("boom")
        ctx.summary["rows_written"] = 1

    return Stage(
        name="demo",
        description="test stage",
        run=run,
        outputs=lambda config: {"table": target},
        config_keys=("seed",),
        inputs=lambda config: inputs or [],
    )


def test_manifest_and_skip_and_force(tmp_path: Path) -> None:
    src = tmp_path / "input.csv"
    src.write_text("a,b\n1,2\n")
    target = tmp_path / "out" / "table"
    calls: list[int] = []
    config = Config(name="t", work_dir=tmp_path, seed=3)
    stage = make_stage(target, calls, [src])

    first = run_stage(stage, config)
    assert first.status == "ran"
    manifest = read_manifest(target)
    assert manifest is not None
    assert manifest["stage"] == "demo" and manifest["seed"] == 3 and manifest["rows_written"] == 1
    assert str(src) in manifest["input_hashes"]
    assert {"fingerprint", "config_hash", "started", "seconds", "landuse_version"} <= set(manifest)

    assert run_stage(stage, config).status == "unchanged"
    assert len(calls) == 1
    assert run_stage(stage, config, force=True).status == "ran"
    assert len(calls) == 2

    # a changed input or config reruns the stage
    src.write_text("a,b\n1,3\n")
    assert run_stage(stage, config).status == "ran"
    assert run_stage(stage, Config(name="t", work_dir=tmp_path, seed=4)).status == "ran"
    assert len(calls) == 4
    # nothing left behind beside the output
    assert sorted(p.name for p in target.parent.iterdir()) == ["table"]


def test_failed_stage_keeps_previous_output(tmp_path: Path) -> None:
    target = tmp_path / "out" / "table"
    config = Config(name="t", work_dir=tmp_path)
    run_stage(make_stage(target, []), config)
    before = (target / "part-0.txt").read_text()
    with pytest.raises(RuntimeError, match="boom"):
        run_stage(make_stage(target, [], fail=True), config, force=True)
    assert (target / "part-0.txt").read_text() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["table"]


def test_missing_input_is_named(tmp_path: Path) -> None:
    from landuse.config import ConfigError

    stage = make_stage(tmp_path / "t", [], [tmp_path / "gone.csv"])
    with pytest.raises(ConfigError, match="stage demo: input path not found: .*gone.csv"):
        run_stage(stage, Config(name="t", work_dir=tmp_path))


KILLED_STAGE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from landuse.config import Config
    from landuse.runner import Stage, run_stage, no_spark

    target = Path(sys.argv[1])

    @no_spark
    def run(ctx):
        out = ctx.out("table")
        for i in range(1000):
            (out / f"part-{i:04d}.txt").write_text("new\\n")
            if i == 3:
                print("WRITING", flush=True)
            time.sleep(0.05)

    stage = Stage(name="slow", description="", run=run, outputs=lambda c: {"table": target})
    run_stage(stage, Config(name="t", work_dir=target.parent, seed=int(sys.argv[2])), force=True)
    """
)


def test_sigkill_mid_write_leaves_previous_output_intact(tmp_path: Path) -> None:
    target = tmp_path / "table"
    good = make_stage(target, [])
    run_stage(good, Config(name="t", work_dir=tmp_path))
    before = read_manifest(target)

    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_STAGE, str(target), "9"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "WRITING"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # the previous output is whole and untouched; the staging dir is a sibling, never the target
    assert read_manifest(target) == before
    assert sorted(p.name for p in target.iterdir()) == ["_manifest.json", "part-0.txt"]
    assert any(p.name.startswith(".staging-") for p in tmp_path.iterdir())
    recover_dir(target)  # the next stage run cleans the leftovers
    assert not any(p.name.startswith(".staging-") for p in tmp_path.iterdir())


def test_kill_between_renames_is_recovered(tmp_path: Path) -> None:
    target = tmp_path / "table"
    run_stage(make_stage(target, []), Config(name="t", work_dir=tmp_path))
    before = json.dumps(read_manifest(target))
    # simulate a crash after the first rename of commit_dir (old output moved aside)
    os.rename(target, tmp_path / ".old-table-deadbeef")
    assert not target.exists()
    recover_dir(target)
    assert json.dumps(read_manifest(target)) == before
