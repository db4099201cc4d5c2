"""One writer per work dir (landuse.locks): refusal naming the holder, re-entrancy, dead holders recovered."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from landuse.config import Config
from landuse.entrypoints.common import user_errors
from landuse.locks import LOCK_FILE, LockError, is_held, lock_path, work_dir_lock
from landuse.runner import Stage, StageContext, no_spark, run_pipeline, run_stage

REPO = Path(__file__).resolve().parents[1]
LANDUSE = Path(sys.executable).parent / "landuse"

# Holds the lock of the work dir argv[1] until the file argv[2] appears (or 60 s pass).
HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from landuse.config import Config
    from landuse.locks import work_dir_lock

    with work_dir_lock(Config(name="t", work_dir=Path(sys.argv[1])), command="holder script"):
        print("HELD", flush=True)
        deadline = time.time() + 60
        while not Path(sys.argv[2]).exists() and time.time() < deadline:
            time.sleep(0.05)
    """
)

# `landuse run synth` (the real CLI) whose generation waits for the file argv[1] (so it holds the lock meanwhile).
SLOW_CLI = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import landuse.synth

    real = landuse.synth.generate

    def waiting(*args, **kwargs):
        print("GENERATING", flush=True)
        deadline = time.time() + 60
        while not Path(sys.argv[1]).exists() and time.time() < deadline:
            time.sleep(0.05)
        return real(*args, **kwargs)

    landuse.synth.generate = waiting
    from landuse.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)


def _start(code: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    return proc


def _wait_for(proc: subprocess.Popen, line: str) -> None:
    assert proc.stdout is not None
    got = proc.stdout.readline().strip()
    assert got == line, (got, proc.stderr.read() if proc.poll() is not None else "")


def _stage(target: Path, calls: list[str], name: str = "demo") -> Stage:
    @no_spark
    def run(ctx: StageContext) -> None:
        calls.append(name)
        (ctx.out("t") / "x.txt").write_text(name)

    return Stage(name=name, description="", run=run, outputs=lambda c: {"t": target})


def test_second_process_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    work, go = tmp_path / "work", tmp_path / "go"
    holder = _start(HOLDER, str(work), str(go))
    try:
        _wait_for(holder, "HELD")
        config = Config(name="t", work_dir=work)
        with pytest.raises(LockError) as caught:
            with work_dir_lock(config):
                pass
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"work dir {work} is in use by pid {holder.pid} on host {socket.gethostname()} "
                                  f"(holder script, since ")
        with pytest.raises(LockError, match=f"in use by pid {holder.pid}"):
            run_stage(_stage(work / "tables" / "t", []), config)
        assert not (work / "tables").exists()  # refused before touching anything
    finally:
        go.touch()
        holder.wait(timeout=30)
    assert holder.returncode == 0
    with work_dir_lock(Config(name="t", work_dir=work)):  # released: free again
        pass


def test_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    config = Config(name="t", work_dir=tmp_path)
    calls: list[str] = []
    registry = {"a": _stage(tmp_path / "tables" / "a", calls, "a"), "b": _stage(tmp_path / "tables" / "b", calls, "b")}
    with work_dir_lock(config, command="outer"):
        assert is_held(config)
        results = run_pipeline(config, registry)
        assert run_stage(registry["a"], config, registry, force=True).status == "ran"
        record = json.loads(lock_path(config).read_text())
        assert record["pid"] == os.getpid() and record["command"] == "outer"  # inner takes did not rewrite it
    assert [r.status for r in results] == ["ran", "ran"] and calls == ["a", "b", "a"]
    assert not is_held(config) and lock_path(config).read_text() == ""  # released cleanly: empty record


def test_lock_of_a_killed_process_is_recovered_with_a_warning(tmp_path: Path, caplog) -> None:
    work = tmp_path / "work"
    holder = _start(HOLDER, str(work), str(tmp_path / "never"))
    _wait_for(holder, "HELD")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    assert json.loads((work / LOCK_FILE).read_text())["pid"] == holder.pid  # its record is left behind
    caplog.set_level(logging.WARNING, logger="landuse.locks")
    with work_dir_lock(Config(name="t", work_dir=work)):
        assert json.loads((work / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"recovered the lock left by pid {holder.pid}" in caplog.text


def test_stale_record_of_a_dead_pid_is_recovered(tmp_path: Path, caplog) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tmp_path.joinpath(LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                        "command": "landuse run flows", "since": "2020-01-01T00:00:00Z"}))
    caplog.set_level(logging.WARNING, logger="landuse.locks")
    calls: list[str] = []
    assert run_stage(_stage(tmp_path / "tables" / "t", calls), Config(name="t", work_dir=tmp_path)).status == "ran"
    assert f"recovered the lock left by pid {dead.pid}" in caplog.text and "landuse run flows" in caplog.text


def test_uri_work_dir_locks_the_local_driver_dir(tmp_path: Path) -> None:
    from landuse.config import StorageConfig
    from landuse.storage import location

    config = Config(name="t", work_dir=location("memory://locks/x"), storage=StorageConfig(local_dir=tmp_path / "drv"))
    assert lock_path(config) == tmp_path / "drv" / LOCK_FILE
    with work_dir_lock(config):
        assert (tmp_path / "drv" / LOCK_FILE).is_file()


@pytest.mark.xfail(LockError not in user_errors(), strict=True,
                   reason="landuse.locks.LockError is not yet one of the CLI's one-line user errors (entrypoints/common.py)")
def test_two_cli_runs_on_one_work_dir_one_refuses_in_one_line(tmp_path: Path) -> None:
    """Two real `landuse run synth` processes: the first holds the lock while generating, the second refuses."""
    work, go = tmp_path / "work", tmp_path / "go"
    argv = ["run", "synth", "--config", str(REPO / "conf/synthetic_london.yaml"), f"work_dir={work}",
            f"synth.dir={work}/city", "synth.scale=tiny"]
    first = _start(SLOW_CLI, str(go), *argv)
    try:
        _wait_for(first, "GENERATING")
        second = subprocess.run([str(LANDUSE), *argv], capture_output=True, text=True, cwd=REPO, timeout=120)
    finally:
        go.touch()
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()  # log lines (INFO config resolved) go to stderr too
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in second.stderr, second.stderr
    assert errors[0].startswith(f"error: work dir {work} is in use by pid {first.pid} on host ")
    assert "(landuse run synth, since " in errors[0]
    assert "synth: ran synth" in out
