"""One writer per work dir and per stage: file locks held by the pipeline and by each stage run.

``landuse pipeline`` holds the work dir's lock exclusively. ``landuse run STAGE`` holds it shared
plus the stage's own lock (``.landuse.<stage>.lock``) exclusively: two runs of one stage, or a
stage run beside a pipeline, are refused; different stages may run at once (independent tasks of
the generated Databricks job run in parallel on one driver).

The lock is ``fcntl.flock`` on ``<work_dir>/.landuse.lock`` (for a URI work dir, on the local
``driver_dir``: object stores have no locks, so two *machines* sharing one ``s3a://`` work dir are
not kept apart). The file also holds a JSON record of the holder (pid, host, command, since), which
a refused run prints in its one-line error. A second process that asks for a held lock is refused
at once (:class:`LockError`); it does not wait.

The kernel drops an ``flock`` when its process dies (even by SIGKILL), so a lock is never left held
by a dead process; the record it leaves behind is replaced by the next holder, with a warning naming
the dead one. Within one process the lock is re-entrant: the pipeline holds it and each of its
``run_stage`` calls takes it again without blocking.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from landuse.storage import is_local

if TYPE_CHECKING:
    from landuse.config import Config

log = logging.getLogger(__name__)

LOCK_FILE = ".landuse.lock"


class LockError(Exception):
    """Another process holds the work dir's lock (one line naming the holder)."""


@dataclass
class _Held:
    fd: int
    depth: int
    pid: int


_HELD: dict[str, _Held] = {}  # resolved lock path -> this process's hold


def lock_path(config: "Config") -> Path:
    """The lock file of ``config``'s work dir (the local driver dir when the work dir is a URI)."""
    base = config.work_dir if is_local(config.work_dir) else config.driver_dir
    return Path(base) / LOCK_FILE


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _read_record(fd: int) -> dict[str, Any] | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 1 << 16).decode("utf-8", errors="replace")
        record = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_record(fd: int, record: dict[str, Any]) -> None:
    data = (json.dumps(record, sort_keys=True) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def describe_holder(record: dict[str, Any] | None) -> str:
    """``pid 123 on host h (landuse run flows, since 2025-01-01T10:00:00Z)`` for a holder record."""
    if not record:
        return "another process (it has not written its pid yet)"
    return (f"pid {record.get('pid', '?')} on host {record.get('host', '?')} "
            f"({record.get('command', '?')}, since {record.get('since', '?')})")


def _default_command() -> str:
    # The program name only: argv can carry key=value overrides, and those may be secrets.
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


@contextlib.contextmanager
def path_lock(path: Path, label: str, command: str | None = None, shared: bool = False) -> Iterator[Path]:
    """Hold the lock ``path`` (created if needed) for the ``with`` body; re-entrant in one process.

    ``label`` names what is locked in messages (the work dir). ``shared``: any number of shared
    holders, no exclusive one; only an exclusive holder writes its record.

    Raises:
        LockError: another process holds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    held = _HELD.get(key)
    if held is not None and held.pid == os.getpid():
        held.depth += 1
        try:
            yield path
        finally:
            held.depth -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise
        record = _read_record(fd)
        for _ in range(10):  # the holder writes its record right after taking the lock
            if record:
                break
            time.sleep(0.05)
            record = _read_record(fd)
        os.close(fd)
        if not record and not shared:  # shared holders write no record: single-stage runs hold it
            raise LockError(f"work dir {label} is in use by one or more `landuse run STAGE` processes; wait for "
                            f"them to finish or stop them (lock file {path})") from None
        hint = ""
        if record and record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int) \
                and not _pid_alive(record["pid"]):
            hint = " (that pid has exited; a child process it started still holds the lock)"
        raise LockError(f"work dir {label} is in use by {describe_holder(record)}{hint}; wait for it to finish "
                        f"or stop it (lock file {path})") from None
    if shared:
        previous = _read_record(fd)
        if previous:  # no exclusive holder can exist now: the record was left by a dead one
            log.warning("work dir %s: recovered the lock left by %s, which no longer holds it", label,
                        describe_holder(previous))
            os.ftruncate(fd, 0)
        _HELD[key] = _Held(fd=fd, depth=1, pid=os.getpid())
        try:
            yield path
        finally:
            _HELD.pop(key, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return
    try:
        previous = _read_record(fd)
        if previous:
            # The kernel released the flock when its holder died; only its record is left.
            log.warning("work dir %s: recovered the lock left by %s, which no longer holds it", label,
                        describe_holder(previous))
        _write_record(fd, {"pid": os.getpid(), "host": socket.gethostname(), "command": command or _default_command(),
                           "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "work_dir": label})
    except BaseException:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        raise
    _HELD[key] = _Held(fd=fd, depth=1, pid=os.getpid())
    try:
        yield path
    finally:
        _HELD.pop(key, None)
        try:
            os.ftruncate(fd, 0)  # an empty record: released cleanly
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


@contextlib.contextmanager
def work_dir_lock(config: "Config", command: str | None = None, shared: bool = False) -> Iterator[Path]:
    """Hold ``config``'s work dir lock for the ``with`` body (see the module docstring).

    ``command`` is recorded for a refused run to print (default: the program name).

    Raises:
        LockError: another process holds it.
    """
    with path_lock(lock_path(config), str(config.work_dir), command, shared=shared) as path:
        yield path


@contextlib.contextmanager
def stage_lock(config: "Config", stage: str, command: str | None = None) -> Iterator[Path]:
    """Hold the work dir's lock shared and ``stage``'s own lock exclusively (``landuse run STAGE``).

    Raises:
        LockError: a pipeline holds the work dir, or another process runs the same stage.
    """
    with work_dir_lock(config, command, shared=True):
        with path_lock(lock_path(config).with_name(f".landuse.{stage}.lock"), str(config.work_dir), command) as path:
            yield path


def is_held(config: "Config") -> bool:
    """Whether this process holds ``config``'s work dir lock."""
    path = lock_path(config)
    held = _HELD.get(str(path.resolve())) if path.parent.exists() else None
    return held is not None and held.pid == os.getpid()
