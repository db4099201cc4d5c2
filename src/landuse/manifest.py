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

**Only landuse outputs are ever replaced.** :func:`commit_dir` (and the synthetic generator) replace
an existing directory only when it is empty or a landuse output (it has a ``_manifest.json``, or the
generator's ``manifest.json``); anything else raises :class:`UnsafeOutputError` and nothing is
touched. :func:`discard_dir` only removes staging directories.

**Content fingerprints.** :func:`write_manifest` records every file of the output (``parts``: relative
name, size, and a checksum — sha256 locally, the store's ETag on object stores, set from the final
objects when publishing). :func:`verify_output` checks a committed output against that record (a
missing, extra, truncated or changed file raises :class:`IntegrityError`, one line naming the table,
the file and the command that rebuilds it); unchanged local files are not re-read, their hashes come
from the :class:`HashCache` (keyed by path, size and mtime).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

from landuse.constants import MANIFEST_FILE, SYNTH_MANIFEST_FILE
from landuse.storage import copy_tree, file_details, is_local, remove_tree, sha256_remote

log = logging.getLogger(__name__)

_STAGING = ".staging-"
_OLD = ".old-"
PARTS_KEY = "parts"  # manifest key: {relative file name: {"bytes": n, "sha256" | "etag": checksum}}
SYNTH_GENERATOR = "landuse.synth"  # generator.name in the synthetic city's manifest.json


class IntegrityError(Exception):
    """A committed output's files differ from its manifest, or an output path is unsafe (one line)."""


class UnsafeOutputError(IntegrityError):
    """Refusal to replace or delete a directory that is not a landuse output, or a path outside the work dir."""


NOT_OURS = ("not a landuse output (no manifest) and not empty; refusing to replace it "
            "(choose another directory or empty it)")


def is_landuse_output(directory: Any) -> bool:
    """Whether ``directory`` holds a landuse output: a readable ``_manifest.json``, or the generator's manifest."""
    if read_manifest(directory) is not None:
        return True
    synth = read_manifest(directory, SYNTH_MANIFEST_FILE)
    return synth is not None and isinstance(synth.get("generator"), dict) and synth["generator"].get("name") == SYNTH_GENERATOR


def _is_empty(directory: Any) -> bool:
    if is_local(directory):
        return not any(Path(directory).iterdir())
    return not file_details(directory)


def check_replaceable(final: Any, label: str | None = None) -> None:
    """Raise :class:`UnsafeOutputError` unless ``final`` is absent, an empty directory or a landuse output.

    ``label`` prefixes the one-line message (default: the path itself).
    """
    where = label or str(final)
    if is_local(final):
        path = Path(final)
        if not path.exists():
            return  # absent (a dangling symlink included: replacing it loses no data)
        if not path.is_dir():
            raise UnsafeOutputError(f"{where}: is a file, not a landuse output directory; refusing to replace it "
                                    "(choose another directory)")
    elif not final.exists():
        return
    if _is_empty(final) or is_landuse_output(final):
        return
    raise UnsafeOutputError(f"{where}: {NOT_OURS}")


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
    """Replace ``final`` by ``staged`` atomically (see module docstring).

    Raises:
        UnsafeOutputError: ``final`` exists, is not empty and is not a landuse output (nothing is touched).
    """
    if not is_local(final):
        if not _interrupted_publish(final, staged):
            check_replaceable(final)
        _publish(staged, final)
        return
    check_replaceable(final)
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
    manifest = json.loads((staged / MANIFEST_FILE).read_text())
    if isinstance(manifest.get(PARTS_KEY), dict):
        # A server-side copy gets its own ETag (multipart uploads): record the published objects'.
        manifest[PARTS_KEY] = _published_parts(manifest[PARTS_KEY], final)
    (final / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    remove_tree(staged)


def _published_parts(parts: dict[str, Any], final: Any) -> dict[str, Any]:
    """``parts`` with the checksums of the copies under ``final``; a copy of another size is an error."""
    found = file_details(final)
    out = {}
    for rel, record in parts.items():
        now = found.get(rel)
        if now is None or now["bytes"] != record.get("bytes"):
            raise IntegrityError(f"publishing {final}: copy of {rel} is missing or has another size")
        out[rel] = {**record, "etag": now["etag"]} if "etag" in record and "etag" in now else record
    return out


def _interrupted_publish(final: Any, staged: Any = None) -> bool:
    """Whether ``final`` (object store, no manifest) is a publish that died: a complete staged copy is beside it."""
    if is_committed(final) or not final.parent.exists():
        return False
    return any(s != staged and is_committed(s) for s in final.parent.glob(f"{_STAGING}{final.name}-*"))


def recover_dir(final: Path) -> None:
    """Finish or undo an interrupted commit and remove stale staging directories of ``final``."""
    parent = final.parent
    if not parent.is_dir():
        return
    staged = list(parent.glob(f"{_STAGING}{final.name}-*"))
    if not is_local(final):
        complete = [s for s in staged if is_committed(s)]
        if complete and not is_committed(final):
            # Died mid-publish: the staged copy is complete (its manifest is there), roll it forward
            # (the manifest-less final is the half-copied output, so _publish may replace it).
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
    """Remove a staging directory after a failed stage (only ever a directory made by :func:`staging_dir`)."""
    if not staged.name.startswith(_STAGING):
        raise UnsafeOutputError(f"{staged}: not a staging directory; refusing to delete it")
    remove_tree(staged)


def write_manifest(directory: Path, manifest: dict[str, Any], name: str = MANIFEST_FILE) -> Path:
    """Write ``manifest`` as pretty, key-sorted JSON into ``directory``.

    A ``_manifest.json`` also records the directory's files under ``parts`` (unless the caller set it):
    size and sha256 (local) or the store's ETag, so readers can verify the output (:func:`verify_output`).
    """
    if name == MANIFEST_FILE and PARTS_KEY not in manifest:
        manifest = {**manifest, PARTS_KEY: content_record(directory)}
    path = directory / name
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return path


def _is_content(rel: str) -> bool:
    """Files that are part of an output: all but its manifest and leftovers of an interrupted commit."""
    first = rel.split("/", 1)[0]
    return rel != MANIFEST_FILE and not first.startswith((_STAGING, _OLD))


def _sha256_many(files: list[Path], hasher: Any) -> list[str]:
    """sha256 of many files, on a few threads (hashlib releases the GIL on big blocks)."""
    if len(files) < 4:
        return [hasher(f) for f in files]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
        return list(pool.map(hasher, files))


def content_record(directory: Any, cache: "HashCache | None" = None) -> dict[str, dict[str, Any]]:
    """``{relative name: {"bytes": size, "sha256" | "etag": checksum}}`` of the files of ``directory``."""
    details = {rel: d for rel, d in file_details(directory).items() if _is_content(rel)}
    if is_local(directory):
        names = sorted(details)
        hasher = cache.file_hash if cache is not None else sha256_file
        digests = _sha256_many([Path(directory) / rel for rel in names], hasher)
        return {rel: {"bytes": details[rel]["bytes"], "sha256": digest} for rel, digest in zip(names, digests)}
    out = {}
    for rel, detail in sorted(details.items()):
        if "etag" in detail:
            out[rel] = {"bytes": detail["bytes"], "etag": detail["etag"]}
        else:  # a store without cheap checksums (e.g. memory://): hash the bytes
            out[rel] = {"bytes": detail["bytes"], "sha256": sha256_remote(directory, rel)}
    return out


def verify_output(directory: Any, what: str, rerun: str, cache: "HashCache | None" = None) -> None:
    """Check the files of a committed output against its manifest's ``parts``; one-line error on a mismatch.

    ``what`` names it in the message (``table trips``), ``rerun`` is the command that rebuilds it. An
    output without a manifest, or with one written before ``parts`` were recorded, is not checked.
    Local checksums come from ``cache`` (files whose size and mtime are unchanged are not read again).

    Raises:
        IntegrityError: a file listed in the manifest is missing, has another size or another checksum,
            or a file is there that the manifest does not list.
    """
    manifest = read_manifest(directory)
    parts = manifest.get(PARTS_KEY) if isinstance(manifest, dict) else None
    if not isinstance(parts, dict):
        return
    found = {rel: d for rel, d in file_details(directory).items() if _is_content(rel)}
    head = f"{what} ({directory})"
    tail = f"; rerun `{rerun}`"

    def counts(rel: str) -> tuple[str, int, int]:
        parquet = rel.endswith(".parquet")
        kind = "part" if parquet else "file"
        listed = sum(1 for r in parts if r.endswith(".parquet") == parquet)
        present = sum(1 for r in found if r.endswith(".parquet") == parquet)
        return kind, listed, present

    missing = sorted(set(parts) - set(found))
    if missing:
        kind, listed, present = counts(missing[0])
        more = f"; {len(missing) - 1} more missing" if len(missing) > 1 else ""
        raise IntegrityError(f"{head}: {kind} {missing[0]} is missing (manifest lists {listed} {kind}s, "
                             f"{present} found{more}){tail}")
    extra = sorted(set(found) - set(parts))
    if extra:
        kind, listed, present = counts(extra[0])
        raise IntegrityError(f"{head}: {kind} {extra[0]} is not in the manifest (manifest lists {listed} "
                             f"{kind}s, {present} found){tail}")
    for rel in sorted(parts):
        if found[rel]["bytes"] != parts[rel].get("bytes"):
            kind = counts(rel)[0]
            raise IntegrityError(f"{head}: {kind} {rel} has {found[rel]['bytes']} bytes, the manifest "
                                 f"{parts[rel].get('bytes')} (truncated or rewritten){tail}")
    by_sha = sorted(rel for rel, record in parts.items() if "sha256" in record and
                    not ("etag" in record and "etag" in found[rel]))
    if is_local(directory):
        root = Path(directory).resolve()
        digests: dict[str, str] = {}
        if cache is not None:  # hits on this thread; only the misses are read, on a few threads
            for rel in by_sha:
                hit = cache.lookup(str(root / rel), found[rel]["bytes"], found[rel]["mtime_ns"])
                if hit is not None:
                    digests[rel] = hit
        misses = [rel for rel in by_sha if rel not in digests]
        for rel, digest in zip(misses, _sha256_many([root / rel for rel in misses], lambda f: sha256_file(f))):
            digests[rel] = digest
            if cache is not None:
                cache.store(str(root / rel), found[rel]["bytes"], found[rel]["mtime_ns"], digest)
    else:
        digests = {rel: sha256_remote(directory, rel) for rel in by_sha}
    for rel in sorted(parts):
        record = parts[rel]
        if rel in digests:
            ok = record["sha256"] == digests[rel]
        elif "etag" in record and "etag" in found[rel]:
            ok = record["etag"] == found[rel]["etag"]
        else:
            continue  # no checksum we can compare (e.g. a store that stopped sending ETags): size only
        if not ok:
            raise IntegrityError(f"{head}: {counts(rel)[0]} {rel} changed since it was written (its checksum "
                                 f"differs from the manifest){tail}")


_SHARED: dict[str, "HashCache"] = {}


def work_dir_cache(work_dir: Any) -> "HashCache | None":
    """The process-wide :class:`HashCache` of a local work dir (``<work_dir>/.hashcache.json``); None for URIs.

    One instance per work dir, so the many table reads of one process parse the cache file once.
    """
    if not is_local(work_dir):
        return None
    path = Path(work_dir).resolve() / ".hashcache.json"
    cache = _SHARED.get(str(path))
    if cache is None:
        cache = _SHARED[str(path)] = HashCache(path)
    return cache


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
        self._data: dict[str, list[Any]] = self._load()
        self._dirty: dict[str, list[Any] | None] = {}  # changed since load: merged into the file on save

    def _load(self) -> dict[str, list[Any]]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def file_hash(self, file: Path) -> str:
        """sha256 of ``file``, reusing the cached value when size and mtime are unchanged."""
        stat = file.stat()
        key = str(file.resolve())
        entry = self._data.get(key)
        if entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
            return str(entry[2])
        value = sha256_file(file)
        self._set(key, [stat.st_size, stat.st_mtime_ns, value])
        return value

    def lookup(self, key: str, size: int, mtime_ns: int) -> str | None:
        """The cached hash of the file at resolved path ``key`` if its size and mtime are unchanged."""
        entry = self._data.get(key)
        if entry and entry[0] == size and entry[1] == mtime_ns:
            return str(entry[2])
        return None

    def store(self, key: str, size: int, mtime_ns: int, digest: str) -> None:
        """Remember the hash of the file at resolved path ``key`` with the size and mtime it was read at."""
        self._set(key, [size, mtime_ns, digest])

    def _set(self, key: str, entry: list[Any] | None) -> None:
        if entry is None:
            self._data.pop(key, None)
        else:
            self._data[key] = entry
        self._dirty[key] = entry

    def adopt(self, final: Path, parts: dict[str, Any]) -> None:
        """Remember the sha256 of a just-committed local output's files (hashed in staging, then renamed).

        Rename keeps size and mtime, so the files' first verification reads nothing; entries of files
        that the previous version of ``final`` had and this one has not are dropped.
        """
        if not is_local(final):
            return
        root = Path(final).resolve()
        prefix = str(root) + os.sep
        for key in [k for k in self._data if k.startswith(prefix)]:
            if key[len(prefix):].replace(os.sep, "/") not in parts:
                self._set(key, None)
        for rel, record in parts.items():
            if "sha256" not in record:
                continue
            file = root / rel
            try:
                stat = file.stat()
            except OSError:
                continue
            if stat.st_size == record.get("bytes"):
                self._set(str(file), [stat.st_size, stat.st_mtime_ns, record["sha256"]])

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
        """Persist the cache (best effort: a lost cache only costs re-hashing).

        Only this instance's changes are merged into the file as it is now, so two instances (or a
        reader process beside a stage) do not drop each other's entries.
        """
        if not self._dirty:
            return
        try:
            data = self._load()
            for key, entry in self._dirty.items():
                if entry is None:
                    data.pop(key, None)
                else:
                    data[key] = entry
            self._data.update({k: v for k, v in data.items() if k not in self._dirty})
            if not is_local(self.path):
                self.path.write_text(json.dumps(data))  # one PUT: atomic on object stores
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
                tmp.write_text(json.dumps(data))
                os.replace(tmp, self.path)
            self._dirty = {}
        except OSError:
            pass


def fingerprint(parts: Iterable[Any]) -> str:
    """Stable short hash of JSON-serialisable parts."""
    text = json.dumps(list(parts), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def now_iso() -> str:
    """UTC timestamp for manifests."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
