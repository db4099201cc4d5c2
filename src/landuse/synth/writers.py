"""Byte-deterministic writers: delimited text built column-wise with Arrow, GeoPackages, checksums."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path
from typing import Iterator, Sequence, TypeAlias

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyogrio

# GeoPackage writers stamp gpkg_contents.last_change with the current time unless told otherwise.
FIXED_OGR_DATE = "2020-01-01T00:00:00.000Z"

Column: TypeAlias = pa.Array | str


def fixed_decimal(values: np.ndarray, ndigits: int) -> pa.Array:
    """Format floats with exactly ``ndigits`` decimals (like ``'%.{n}f'``), vectorised via integers."""
    scale = 10**ndigits
    scaled = np.rint(np.asarray(values, dtype=np.float64) * scale).astype(np.int64)
    negative = scaled < 0
    magnitude = np.abs(scaled)
    whole = pc.cast(pa.array(magnitude // scale), pa.string())
    sign = pc.if_else(pa.array(negative), "-", "")
    if ndigits == 0:
        return pc.binary_join_element_wise(sign, whole, "")
    frac = pc.utf8_lpad(pc.cast(pa.array(magnitude % scale), pa.string()), width=ndigits, padding="0")
    return pc.binary_join_element_wise(sign, whole, ".", frac, "")


def as_text(values: np.ndarray | pa.Array) -> pa.Array:
    """Integers (or already-text values) as a string array."""
    array = values if isinstance(values, pa.Array) else pa.array(values)
    return array if pa.types.is_string(array.type) else pc.cast(array, pa.string())


def quote_if_needed(values: pa.Array, sep: str) -> pa.Array:
    """RFC-4180 quoting, only for values containing the separator, a quote or a line break."""
    needs = pc.or_(pc.or_(pc.match_substring(values, sep), pc.match_substring(values, '"')),
                   pc.match_substring(values, "\n"))
    if not pc.any(needs).as_py():
        return values
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(values, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, values)


def encode_lines(columns: Sequence[Column], sep: str) -> pa.Array:
    """One ``sep``-joined, newline-terminated text line per row; str columns broadcast to every row."""
    return pc.binary_join_element_wise(pc.binary_join_element_wise(*columns, sep), "", "\n")


def _line_bytes(lines: pa.Array) -> memoryview:
    """The contiguous bytes behind a string array of lines (no copy)."""
    if isinstance(lines, pa.ChunkedArray):
        lines = pa.concat_arrays(lines.chunks) if lines.num_chunks != 1 else lines.chunk(0)
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=4 * lines.offset)
    if len(lines) == 0:
        return memoryview(b"")
    return memoryview(lines.buffers()[2])[int(offsets[0]) : int(offsets[-1])]


def write_lines(path: Path, header: str, lines: pa.Array | None) -> None:
    """Write ``header`` (one line, no newline) then the encoded ``lines``; UTF-8, ``\\n`` endings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(header.encode("utf-8") + b"\n")
        if lines is not None and len(lines):
            fh.write(_line_bytes(lines))


class ChunkedLineWriter:
    """Writes encoded lines to ``part-00000.csv``, ``part-00001.csv``, … with at most ``chunk_rows`` each.

    Lines arrive in batches of any size; full parts are flushed as soon as they fill, so at most one
    part's worth of lines is held in memory.
    """

    def __init__(self, directory: Path, header: str, chunk_rows: int) -> None:
        self.directory = directory
        self.header = header
        self.chunk_rows = chunk_rows
        self._pending: list[pa.Array] = []
        self._pending_rows = 0
        self.parts: list[tuple[Path, int]] = []
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, lines: pa.Array) -> None:
        """Queue a batch of encoded lines, flushing full parts."""
        if len(lines) == 0:
            return
        self._pending.append(lines)
        self._pending_rows += len(lines)
        while self._pending_rows >= self.chunk_rows:
            joined = pa.concat_arrays(self._pending)
            self._write(joined.slice(0, self.chunk_rows))
            rest = joined.slice(self.chunk_rows)
            self._pending = [rest] if len(rest) else []
            self._pending_rows = len(rest)

    def close(self) -> list[tuple[Path, int]]:
        """Flush the remainder (an empty source still gets one header-only part); return (path, rows) per part."""
        if self._pending_rows or not self.parts:
            joined = pa.concat_arrays(self._pending) if self._pending else None
            self._write(joined)
        self._pending, self._pending_rows = [], 0
        return self.parts

    def _write(self, lines: pa.Array | None) -> None:
        path = self.directory / f"part-{len(self.parts):05d}.csv"
        write_lines(path, self.header, lines)
        self.parts.append((path, 0 if lines is None else len(lines)))


@contextlib.contextmanager
def fixed_ogr_date() -> Iterator[None]:
    """Pin OGR's notion of "now" so GeoPackages written twice are byte-identical."""
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_OGR_DATE})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})


def write_gpkg(frame: gpd.GeoDataFrame, path: Path, layer: str) -> None:
    """Write one GeoPackage layer deterministically (fixed timestamp, no prior file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    io_log = logging.getLogger("pyogrio._io")  # it logs "Created N records" at INFO; we log our own summary
    level = io_log.level
    io_log.setLevel(max(level, logging.WARNING))
    try:
        with fixed_ogr_date():
            pyogrio.write_dataframe(frame, path, layer=layer, driver="GPKG")
    finally:
        io_log.setLevel(level)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_geoparquet(frame: gpd.GeoDataFrame, path: Path) -> None:
    """Write a GeoParquet file (WKB geometry, CRS in the ``geo`` metadata) with fixed settings.

    Parquet carries no timestamps, so the same frame gives the same bytes with the same library versions.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    frame.to_parquet(path, index=False, compression="snappy", write_covering_bbox=False)
