"""Where outputs live: a local directory or a URI on any fsspec filesystem, behind one small API.

``work_dir`` may be a local path (``work/nyc``) or a URI (``s3a://bucket/landuse/nyc``, ``gs://``,
``abfss://`` — any scheme fsspec knows, with its package installed; ``s3``/``s3a`` ship with landuse
through ``s3fs``). :func:`location` turns the configured string into a path object: a plain
:class:`pathlib.Path` for local directories, a :class:`upath.UPath` (universal_pathlib: the pathlib
API over fsspec) for URIs. Code joins, lists and reads them the same way; Spark gets ``str(path)``
(``s3a://…``, read through hadoop-aws on the executors), pyarrow gets the filesystem from
:func:`arrow_filesystem`.

What differs between the two is only how an output directory is committed
(:mod:`landuse.manifest`): two renames on a POSIX filesystem, copy-then-manifest on an object
store, where rename is neither atomic nor cheap.

Credentials are never part of the config: s3fs and hadoop-aws both read the standard
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` environment variables (or an instance profile).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Iterator, Mapping

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from landuse.config import StorageConfig

# "scheme://..." or "dbfs:/...": a URI. A Windows drive ("C:\\") has a one-letter scheme, which
# we do not treat as a URI.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")
S3_SCHEMES = ("s3", "s3a", "s3n")


def is_uri(value: object) -> bool:
    """True for ``scheme://…`` strings (``file://`` included), False for plain paths."""
    return bool(_URI.match(str(value)))


def is_local(path: Any) -> bool:
    """Whether ``path`` is on the local filesystem (a pathlib path, or a ``file://`` UPath)."""
    if isinstance(path, PurePath):
        return True
    protocol = getattr(path, "protocol", "")
    return protocol in ("", "file", "local")


def fsspec_options(scheme: str, storage: "StorageConfig | None") -> dict[str, Any]:
    """fsspec keyword arguments for ``scheme`` from the ``storage`` config section."""
    if storage is None:
        from landuse.config import StorageConfig

        storage = StorageConfig()
    options: dict[str, Any] = dict(storage.options)
    if scheme in S3_SCHEMES:
        # Spark's executors write behind this process's back: a cached listing would hide their files.
        options.setdefault("use_listings_cache", False)
        if storage.endpoint_url:
            options.setdefault("endpoint_url", storage.endpoint_url)
        if storage.path_style:
            options.setdefault("config_kwargs", {"s3": {"addressing_style": "path"}})
    return options


def location(value: str | os.PathLike[str], storage: "StorageConfig | None" = None) -> Any:
    """A path object for a configured location: ``Path`` when local, ``UPath`` for a URI."""
    text = os.fspath(value) if not isinstance(value, str) else value
    if not is_uri(text):
        return Path(text)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    from upath import UPath

    scheme = text.split(":", 1)[0].lower()
    return UPath(text, **fsspec_options(scheme, storage))


def uri(path: Any) -> str:
    """The string Spark and the logs use for ``path`` (``s3a://bucket/key`` or a local path)."""
    return str(path)


def arrow_filesystem(path: Any) -> tuple["pafs.FileSystem | None", str]:
    """``(filesystem, path)`` for pyarrow: ``(None, local path)`` or an fsspec-backed filesystem."""
    if is_local(path):
        return None, str(path)
    import pyarrow.fs as pafs

    return pafs.PyFileSystem(pafs.FSSpecHandler(path.fs)), path.path


@contextlib.contextmanager
def local_copy(directory: Any) -> Iterator[Path]:
    """``directory`` itself when local, else a temporary local copy of its files (removed on exit).

    For readers that only work on local files: Petastorm 0.13.1 hands an fsspec filesystem to
    pyarrow's legacy ``ParquetDataset`` options, which pyarrow 14 refuses for non-local stores. The
    tables it reads (node features, edges, patches) are driver-sized, so a download is cheap.
    """
    if is_local(directory):
        yield Path(directory)
        return
    with tempfile.TemporaryDirectory(prefix="landuse-") as tmp:
        target = Path(tmp) / directory.name
        for rel in list_files(directory):
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            directory.fs.get_file(f"{directory.path.rstrip('/')}/{rel}", str(target / rel))
        yield target


def parquet_files(directory: Any) -> list[Any]:
    """The data files of a table directory, sorted, skipping ``_``/``.``-prefixed names (logs, manifests)."""
    if not directory.exists():
        return []
    files = [
        p for p in directory.rglob("*.parquet")
        if not any(part.startswith(("_", ".")) for part in p.relative_to(directory).parts)
    ]
    return sorted(files, key=str)


def parquet_metadata(file: Any) -> "pq.FileMetaData":
    """The footer metadata of one Parquet file (local or remote)."""
    import pyarrow.parquet as pq

    filesystem, name = arrow_filesystem(file)
    return pq.read_metadata(name, filesystem=filesystem)


def parquet_schema(file: Any) -> "pa.Schema":
    """The Arrow schema (with its key-value metadata) of one Parquet file."""
    import pyarrow.parquet as pq

    filesystem, name = arrow_filesystem(file)
    return pq.read_schema(name, filesystem=filesystem)


def read_parquet(path: Any, columns: list[str] | None = None) -> "pa.Table":
    """A Parquet file or table directory as one Arrow table (driver-sized tables only)."""
    import pyarrow.parquet as pq

    filesystem, name = arrow_filesystem(path)
    if filesystem is not None and path.is_dir():
        # pyarrow's dataset discovery on a PyFileSystem would also open _delta_log/*.json etc.
        files = [arrow_filesystem(f)[1] for f in parquet_files(path)]
        return pq.ParquetDataset(files, filesystem=filesystem).read(columns=columns)
    return pq.read_table(name, columns=columns, filesystem=filesystem)


def write_parquet(table: "pa.Table", file: Any, **kwargs: Any) -> None:
    """Write one Arrow table to the Parquet file ``file`` (parent directories created)."""
    import pyarrow.parquet as pq

    if is_local(file):
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, str(file), **kwargs)
        return
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **kwargs)
    file.write_bytes(buffer.getvalue())


def remove_tree(path: Any) -> None:
    """Delete a directory tree (local or remote); a missing one is fine."""
    if is_local(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        path.fs.rm(path.path, recursive=True)
    except FileNotFoundError:
        pass


# Keys fsspec filesystems use for a content checksum in ``info()`` / ``find(detail=True)``, best first:
# s3fs (ETag), gcsfs (md5Hash, crc32c), adlfs (content_settings.content_md5 is nested; etag at top).
_CHECKSUM_KEYS = ("ETag", "etag", "md5Hash", "crc32c")


def file_details(directory: Any) -> dict[str, dict[str, Any]]:
    """``{relative name: {"bytes": size, "etag": checksum or absent}}`` of every file under ``directory``.

    Local: one ``stat`` per file (no content read), which also gives ``mtime_ns``. Object store: one listing, whose entries carry the
    size and, where the store exposes one cheaply (S3's ETag, GCS's md5Hash), a checksum.
    """
    if is_local(directory):
        root = Path(directory)
        out: dict[str, dict[str, Any]] = {}
        for dirpath, _, names in os.walk(root):
            for name in names:
                file = Path(dirpath) / name
                try:
                    stat = file.stat()
                except OSError:  # vanished (or a dangling link) while listing
                    continue
                out[file.relative_to(root).as_posix()] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        return out
    base = directory.path.rstrip("/")
    try:
        found = directory.fs.find(base, detail=True)
    except FileNotFoundError:
        return {}
    out = {}
    for name, info in found.items():
        if name.endswith("/") or info.get("type") == "directory":
            continue
        entry: dict[str, Any] = {"bytes": int(info.get("size") or 0)}
        for key in _CHECKSUM_KEYS:
            if info.get(key):
                entry["etag"] = str(info[key]).strip('"')
                break
        out[name[len(base) + 1:]] = entry
    return out


def sha256_remote(directory: Any, rel: str, chunk: int = 1 << 20) -> str:
    """sha256 of one file of a directory on an fsspec filesystem (read in chunks)."""
    import hashlib

    digest = hashlib.sha256()
    with directory.fs.open(f"{directory.path.rstrip('/')}/{rel}", "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def is_within(path: Any, root: Any, *, allow_equal: bool = False) -> bool:
    """Whether ``path`` lies inside ``root`` (resolved locally; a key-prefix check for URIs, no ``..``)."""
    if is_local(path) != is_local(root):
        return False
    if is_local(path):
        try:
            rel = Path(path).resolve().relative_to(Path(root).resolve())
        except ValueError:
            return False
        return allow_equal or rel != Path(".")
    text, base = str(path).rstrip("/"), str(root).rstrip("/")
    if ".." in text.split("/"):
        return False
    return (allow_equal and text == base) or text.startswith(base + "/")


def list_files(directory: Any) -> list[str]:
    """Relative names of every file under ``directory`` (sorted)."""
    if is_local(directory):
        root = Path(directory)
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    base = directory.path.rstrip("/")
    # Stores list "directory marker" objects (keys ending in "/", e.g. Delta's _delta_log/_commits/):
    # they are not files and cannot be copied as such.
    return sorted(f[len(base) + 1:] for f in directory.fs.find(base) if not f.endswith("/"))


def copy_tree(source: Any, target: Any, skip: tuple[str, ...] = ()) -> None:
    """Copy every file of ``source`` into ``target`` on the same filesystem (server-side on stores)."""
    fs = source.fs
    for rel in list_files(source):
        if rel in skip:
            continue
        fs.copy(f"{source.path.rstrip('/')}/{rel}", f"{target.path.rstrip('/')}/{rel}")


def spark_hadoop_settings(storage: "StorageConfig") -> Mapping[str, str]:
    """``spark.hadoop.fs.s3a.*`` settings equivalent to the ``storage`` section (endpoint, path style)."""
    settings: dict[str, str] = {}
    if storage.endpoint_url:
        settings["spark.hadoop.fs.s3a.endpoint"] = storage.endpoint_url
        if storage.endpoint_url.startswith("http://"):
            settings["spark.hadoop.fs.s3a.connection.ssl.enabled"] = "false"
    if storage.path_style:
        settings["spark.hadoop.fs.s3a.path.style.access"] = "true"
    return settings
