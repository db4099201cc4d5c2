"""Atomic directory outputs and their manifests.

Every stage output is a directory. A stage fills a *staging* directory next to the final one,
the runner writes the manifest into it last, and :func:`commit_dir` publishes it:

* **Local (POSIX) filesystem**: two renames on the same filesystem. If the process dies before the
  first rename, the previous output is untouched; if it dies between the two, :func:`recover_dir`
  (run before every stage) moves the previous output back.
* **Object store** (``s3a://`` and other fsspec URIs, where rename is a non-atomic copy): the
  manifest is the commit point. Publishing deletes the final output's manifest first, replaces its
  files by server-side copies of the staged ones, and copies the manifest **last**. A reader only
  trusts a directory that has a manifest (:func:`is_committed`); if the process dies mid-publish,
  the final directory has none, and :func:`recover_dir` rolls the complete staged copy forward. A
  staging directory without a manifest (the stage died while writing) is discarded.

Either way a reader sees the old complete output or the new complete one, never a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from landuse.constants import MANIFEST_FILE
from landuse.storage import copy_tree, is_local, remove_tree

_STAGING = ".staging-"
_OLD = ".old-"


def staging_dir(final: Path) -> Path:
    """A fresh, empty staging directory beside ``final`` (same filesystem, so rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    path = final.parent / f"{_STAGING}{final.name}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def is_committed(directory: Path, name: str = MANIFEST_FILE) -> bool:
    """Whether ``directory`` holds a committed output (its manifest, written last, is present)."""
    return (directory / name).exists()


def commit_dir(staged: Path, final: Path) -> None:
    """Replace ``final`` by ``staged`` atomically (see module docstring)."""
    if not is_local(final):
        _publish(staged, final)
        return
    old = final.parent / f"{_OLD}{final.name}-{uuid.uuid4().hex[:8]}"
    if final.exists():
        os.rename(final, old)
    os.rename(staged, final)
    if old.exists():
        remove_tree(old)


def _publish(staged: Path, final: Path) -> None:
    """Object-store commit: drop the old manifest, replace the files, copy the manifest last."""
    if not is_committed(staged):
        raise RuntimeError(f"cannot publish {staged}: it has no {MANIFEST_FILE}")
    old_manifest = final / MANIFEST_FILE
    if old_manifest.exists():
        old_manifest.unlink()  # from here on, readers see no committed output until the copy is done
    remove_tree(final)
    copy_tree(staged, final, skip=(MANIFEST_FILE,))
    (final / MANIFEST_FILE).write_text((staged / MANIFEST_FILE).read_text())
    remove_tree(staged)


def recover_dir(final: Path) -> None:
    """Finish or undo an interrupted commit and remove stale staging directories of ``final``."""
    parent = final.parent
    if not parent.is_dir():
        return
    staged = list(parent.glob(f"{_STAGING}{final.name}-*"))
    if not is_local(final):
        complete = [s for s in staged if is_committed(s)]
        if complete and not is_committed(final):
            # Died mid-publish: the staged copy is complete (its manifest is there), roll it forward.
            newest = max(complete, key=lambda s: json.loads((s / MANIFEST_FILE).read_text()).get("started", ""))
            _publish(newest, final)
            staged.remove(newest)
        for stale in staged:
            remove_tree(stale)
        return
    olds = sorted(parent.glob(f"{_OLD}{final.name}-*"), key=lambda p: p.stat().st_mtime)
    if olds and not final.exists():
        os.rename(olds.pop(), final)
    for stale in olds + staged:
        remove_tree(stale)


def discard_dir(staged: Path) -> None:
    """Remove a staging directory after a failed stage."""
    remove_tree(staged)


def write_manifest(directory: Path, manifest: dict[str, Any], name: str = MANIFEST_FILE) -> Path:
    """Write ``manifest`` as pretty, key-sorted JSON into ``directory``."""
    path = directory / name
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_manifest(directory: Path, name: str = MANIFEST_FILE) -> dict[str, Any] | None:
    """The manifest of a committed output, or None when absent or unreadable."""
    path = directory / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Content hash of one file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class HashCache:
    """File content hashes cached by (path, size, mtime) so unchanged big inputs hash once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._data: dict[str, list[Any]] = json.loads(path.read_text())
        except (OSError, ValueError):
            self._data = {}

    def file_hash(self, file: Path) -> str:
        """sha256 of ``file``, reusing the cached value when size and mtime are unchanged."""
        stat = file.stat()
        key = str(file.resolve())
        entry = self._data.get(key)
        if entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
            return str(entry[2])
        value = sha256_file(file)
        self._data[key] = [stat.st_size, stat.st_mtime_ns, value]
        return value

    def path_hash(self, path: Path) -> str:
        """Hash of a file, or of every file under a directory (relative names included)."""
        if path.is_file():
            return self.file_hash(path)
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(path)).encode())
            digest.update(self.file_hash(file).encode())
        return digest.hexdigest()

    def save(self) -> None:
        """Persist the cache (best effort: a lost cache only costs re-hashing)."""
        try:
            if not is_local(self.path):
                self.path.write_text(json.dumps(self._data))  # one PUT: atomic on object stores
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._data))
            os.replace(tmp, self.path)
        except OSError:
            pass


def fingerprint(parts: Iterable[Any]) -> str:
    """Stable short hash of JSON-serialisable parts."""
    text = json.dumps(list(parts), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def now_iso() -> str:
    """UTC timestamp for manifests."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
