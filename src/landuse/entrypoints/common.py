"""Shared argument handling for stage entry points: ``--config`` files, ``--force``, ``key=value``."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from landuse.config import Config, ConfigError, iter_input_paths, load_config, override_item
from landuse.errors import CorruptInputError
from landuse.logs import setup_logging
from landuse.spark.session import SessionError, disable_telemetry

if TYPE_CHECKING:
    from landuse.runner import StageResult

log = logging.getLogger("landuse")

# Errors a user can fix; printed as one line, never a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, SessionError, FileNotFoundError, CorruptInputError)

# The config of the command being run (set by load_from_args): error lines name the stage to rerun.
_CURRENT: dict[str, Config] = {}


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config`` (repeatable, merged in order), ``--force`` and trailing ``key=value`` overrides."""
    parser.add_argument("--config", "-c", action="append", required=True, metavar="YAML",
                        help="config file; repeat to layer (e.g. conf/synthetic_london.yaml conf/cluster.yaml)")
    parser.add_argument("--force", action="store_true", help="rerun even if inputs and config are unchanged")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. seed=7")


def flag_overrides(args: argparse.Namespace, section: str, keys: Iterable[str]) -> list[str]:
    """``section.key=value`` overrides for the flags given on the command line.

    A settings flag's ``dest`` is its config key and its argparse default is None (not given), so
    the config files' values stand unless a flag is passed: ``--epochs 5`` is ``pretrain.epochs=5``.
    """
    return [override_item(f"{section}.{key}", getattr(args, key)) for key in keys if getattr(args, key, None) is not None]


def load_from_args(args: argparse.Namespace, flags: Sequence[str] = ()) -> Config:
    """Load the config named by parsed args, set up logging, record the resolved config.

    ``flags``: overrides from settings flags (see :func:`flag_overrides`), applied before the
    trailing ``key=value`` overrides, so an explicit ``key=value`` wins over a flag.
    """
    config = load_config(args.config, [*flags, *args.overrides])
    _CURRENT["config"] = config
    setup_logging(config.log_level)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    resolved = config.work_dir / "resolved_config.json"
    resolved.write_text(json.dumps(config.redacted_dict(), indent=2, sort_keys=True) + "\n")
    log.info("config %s resolved -> %s", ", ".join(args.config), resolved)
    return config


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that describe bad input (config, files, rows), printed as one line."""
    from landuse.ingest.errors import IngestError
    from landuse.spark.schemas import SchemaError
    from landuse.spatial.overlay import OverlayError
    from landuse.monitoring.planned import MonitoringError
    from landuse.spatial.regions import RegionsError

    from landuse.locks import LockError
    from landuse.manifest import IntegrityError
    from landuse.serving.integrity import ArtifactIntegrityError

    return USER_ERRORS + (IngestError, SchemaError, OverlayError, RegionsError, MonitoringError, IntegrityError,
                          LockError, ArtifactIntegrityError)


# --------------------------------------------------------------------------------------------
# Failures that arrive wrapped (a JVM stack trace, a Python worker's traceback, an errno) but
# are the user's to fix: a damaged file, a missing file, a full or read-only disk. Each maps to
# one line naming the file; anything not recognised here stays a traceback (a bug to report).
# --------------------------------------------------------------------------------------------

# (fragment of a Java exception class or message, problem) for a file that cannot be decoded.
_JAVA_CORRUPT = (
    ("org.apache.hadoop.fs.ChecksumException", "checksum mismatch: the file changed after it was written (corrupt)"),
    ("org.apache.parquet.io.ParquetDecodingException", "Parquet data cannot be decoded (corrupt)"),
    ("is not a Parquet file", "not a valid Parquet file (truncated or overwritten)"),
    ("Not a Parquet file", "not a valid Parquet file (truncated or overwritten)"),
    ("can not read class org.apache.parquet.format", "Parquet metadata cannot be read (corrupt)"),
    ("Could not read footer", "Parquet footer cannot be read (truncated or corrupt)"),
    ("FAILED_TO_UNCOMPRESS", "a compressed page cannot be decompressed (corrupt)"),
    ("org.xerial.snappy.SnappyIOException", "a compressed page cannot be decompressed (corrupt)"),
    ("java.io.EOFException", "the file ends early (truncated)"),
    ("could not decode the dictionary", "Parquet data cannot be decoded (corrupt)"),
    # Spark's wrapper around any failure while reading one file (FAILED_READ_FILE): last resort.
    ("Encountered error while reading file", "the file cannot be read (corrupt, or not the format expected)"),
)
# Java exceptions for a file that disappeared after a table listed it.
_JAVA_MISSING = ("java.io.FileNotFoundException", "org.apache.spark.SparkFileNotFoundException",
                 "DeltaFileNotFoundException")
# (message fragment, reason) of Java write failures.
_JAVA_WRITE = (
    ("No space left on device", "no space left on device"),
    ("Disk quota exceeded", "disk quota exceeded"),
    ("Read-only file system", "read-only file system"),
    ("java.nio.file.AccessDeniedException", "permission denied"),
    ("Permission denied", "permission denied"),
    ("Mkdirs failed to create", "cannot create the directory"),
)
# pyarrow's messages for a damaged Parquet file read on the driver.
_ARROW_CORRUPT = ("Parquet magic bytes not found", "Couldn't deserialize thrift", "Unexpected end of stream",
                  "Corrupt snappy", "Parquet file size is 0 bytes", "Invalid column metadata",
                  "Could not open Parquet input source")
_WRITE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                 errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                 errno.EPERM: "operation not permitted", errno.ENOTDIR: "a parent of it is a file, not a directory",
                 errno.EISDIR: "it is a directory"}
_PATH = re.compile(r"(?:(?:file|s3a?|hdfs|gs|abfss?|dbfs):/+)?/[^\s,;'\"()\[\]]+")
# The last "module.Class: message" line of a Python worker's traceback.
_WORKER_EXC = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.*)$", re.MULTILINE)


def _one_line(text: str) -> str:
    """The first non-empty line of ``text`` (an error line never spans lines)."""
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "").strip()


def _local(path: str) -> str:
    """``file:/tmp/x`` -> ``/tmp/x``; URIs of other schemes stay as they are."""
    return re.sub(r"^file:/+", "/", path).rstrip(".:")


def _fix_for(path: str) -> str:
    """How to repair ``path``: the config key of an input, or the stage that writes a table."""
    config = _CURRENT.get("config")
    if config is None:
        return "restore the file, or rerun the stage that wrote it with --force"
    target = Path(_local(path))
    try:
        for key, source in iter_input_paths(config):
            if str(source) and (target == Path(str(source)) or Path(str(source)) in target.parents):
                return f"restore {key} ({source}) from its source"
        from landuse.stages import STAGES

        for name, stage in STAGES.items():
            for output in stage.outputs(config).values():
                out = Path(_local(str(output)))
                if target == out or out in target.parents:
                    return f"rerun the stage that writes it: landuse run {name} --force"
    except Exception:  # noqa: BLE001 - only a hint: never hide the error line behind a second error
        pass
    return "restore the file, or rerun the stage that wrote it with --force"


def _path_in(text: str, prefer: str = "") -> str | None:
    """The first file path in ``text``; in ``prefer`` (one line of it) first, then files over folders."""
    for chunk in (prefer, text):
        paths = [_local(p) for p in _PATH.findall(chunk or "")]
        files = [p for p in paths if re.search(r"\.(parquet|tiff?|gpkg|csv|json|jp2|vrt)$", p, re.IGNORECASE)]
        if files or paths:
            return (files or paths)[0]
    return None


def _work_dir_hint() -> str:
    config = _CURRENT.get("config")
    return str(config.work_dir) if config is not None else "the work directory"


def _os_error_line(exc: OSError) -> str | None:
    """``cannot write <path>: <reason>; <fix>`` for a full disk or an unwritable directory."""
    reason = _WRITE_ERRNOS.get(exc.errno or -1)
    if reason is None:
        return None
    path = exc.filename or _work_dir_hint()
    if exc.errno in (errno.EACCES, errno.EPERM) and exc.filename and os.path.isfile(exc.filename) \
            and not os.access(exc.filename, os.R_OK):
        return f"cannot read {path}: {reason}; make it readable for this user"
    fix = ("free some space or set work_dir to a larger disk" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
           else "set work_dir to a directory path" if exc.errno in (errno.ENOTDIR, errno.EISDIR)
           else "make it writable for this user or set work_dir to a writable directory")
    return f"cannot write {path}: {reason}; {fix}"


def _java_line(text: str) -> str | None:
    """One line for a JVM failure caused by a damaged, missing or unwritable file; None otherwise."""
    lines = text.splitlines()
    crashed = "Python worker exited unexpectedly" in text  # EOFException then means a crash, not a file
    for fragment, problem in _JAVA_CORRUPT:
        if fragment == "java.io.EOFException" and (crashed or "org.apache.parquet" not in text):
            continue
        line = next((ln for ln in lines if fragment in ln), None)
        if line is not None:
            path = _path_in(text, line)
            if path:
                return f"{path}: {problem}; {_fix_for(path)}"
    for fragment in _JAVA_MISSING:
        line = next((ln for ln in lines if fragment in ln), None)
        if line is not None:
            path = _path_in(text, line)
            if path:
                return f"{path}: file not found (deleted or moved after it was listed); {_fix_for(path)}"
    for fragment, reason in _JAVA_WRITE:
        line = next((ln for ln in lines if fragment in ln), None)
        if line is not None:
            path = _path_in(line) or _work_dir_hint()
            return (f"cannot write {path}: {reason}; "
                    + ("free some space or set work_dir to a larger disk" if "space" in reason or "quota" in reason
                       else "make it writable for this user or set work_dir to a writable directory"))
    return None


def _worker_line(text: str) -> str | None:
    """A Python worker's user error (its last ``Class: message`` line), as the driver would print it."""
    matches = _WORKER_EXC.findall(text)
    if not matches:
        return None
    qualified, message = matches[-1]
    name = qualified.rsplit(".", 1)[-1]
    if any(cls.__name__ == name for cls in user_errors()):
        return message
    if name in ("PermissionError", "OSError") and message.startswith("[Errno"):
        number = re.match(r"\[Errno (\d+)\] [^:]*(?:: '(.*)')?", message)
        if number:
            return _os_error_line(OSError(int(number.group(1)), os.strerror(int(number.group(1))), number.group(2)))
    return None


def describe_user_error(exc: BaseException) -> str | None:
    """One ``error:`` line for a wrapped failure the user can fix (see the tables above), or None."""
    module = type(exc).__module__ or ""
    names = {cls.__name__ for cls in type(exc).__mro__}
    try:
        if "Py4JJavaError" in names or module.startswith("pyspark.errors"):
            text = str(exc)
            if "PythonException" in names:
                return _worker_line(text)
            error_class = getattr(exc, "getErrorClass", lambda: None)()
            if error_class == "PATH_NOT_FOUND" or "[PATH_NOT_FOUND]" in text:
                path = _path_in(_one_line(text)) or "a path"
                return f"{path}: file not found; {_fix_for(path)}"
            return _java_line(text)
        if module.startswith("pyarrow") and any(f in str(exc) for f in _ARROW_CORRUPT):
            file = _path_in(str(exc))
            where = f"{file}: " if file else ""
            fix = _fix_for(file) if file else "restore the file, or rerun the stage that wrote it with --force"
            return f"{where}not a readable Parquet file ({_one_line(str(exc))}); {fix}"
        if isinstance(exc, OSError):
            return _os_error_line(exc)
    except Exception:  # noqa: BLE001 - e.g. the JVM is gone: fall back to the traceback
        log.debug("could not describe %s", type(exc).__name__, exc_info=True)
    return None


def guarded(body: Callable[[], int]) -> int:
    """Run ``body``; user errors print one line to stderr and return exit code 2.

    Besides :func:`user_errors`, failures recognised by :func:`describe_user_error` (a damaged or
    missing file behind a Spark or pyarrow error, a full or read-only disk) print one line too;
    everything else propagates with its traceback.
    """
    disable_telemetry()
    _CURRENT.clear()  # an earlier command's config (in-process callers) must not name this one's fix
    try:
        return body()
    except user_errors() as exc:
        print(f"error: {_one_line(str(exc)) or type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        line = describe_user_error(exc)
        if line is None:
            raise
        log.debug("%s", type(exc).__name__, exc_info=True)  # the full trace for --log-level DEBUG
        print(f"error: {_one_line(line)}", file=sys.stderr)
        return 2


def stage_main(
    stage_name: str,
    argv: list[str] | None,
    *,
    parser: argparse.ArgumentParser | None = None,
    overrides: Callable[[argparse.Namespace], Sequence[str]] = lambda args: (),
    summary: Callable[[Config, "StageResult"], None] | None = None,
) -> int:
    """Entry point body shared by every stage: parse argv, run the one stage through the runner.

    ``parser``: a stage's own parser (built with :func:`add_config_args`) when it has settings flags;
    ``overrides`` turns those flags into ``key=value`` config overrides (a trailing ``key=value``
    wins); ``summary`` prints what the stage produced, read from its committed outputs (also when
    the stage was skipped as unchanged).
    """
    from landuse.runner import run_stage
    from landuse.stages import STAGES

    if parser is None:
        parser = argparse.ArgumentParser(prog=f"landuse run {stage_name}", description=STAGES[stage_name].description)
        add_config_args(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        from landuse.locks import stage_lock

        config = load_from_args(args, overrides(args))
        with stage_lock(config, stage_name, command=f"landuse run {stage_name}"):
            result = run_stage(STAGES[stage_name], config, STAGES, force=args.force)
        if result.status == "disabled":
            print(f"{stage_name}: disabled by config ({STAGES[stage_name].description})")
            return 0
        if summary is not None:
            summary(config, result)
        for name, path in result.outputs.items():
            print(f"{stage_name}: {result.status} {name} -> {path}")
        return 0

    return guarded(body)
