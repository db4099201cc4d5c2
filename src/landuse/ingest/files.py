"""File-level I/O of the ingest layer: locating input files, checking headers, reading them as strings.

Delimited files are read by Spark with an explicit all-string schema (parsing and casting happen
afterwards as Spark expressions, so a bad value becomes a reject rather than a failed job). Spark
columns are named positionally (``_c0``, ``_c1``, ...) to keep odd header names — spaces, dots,
trailing blanks, BOMs — out of Spark's column resolution; :class:`RawFrame` maps header names to
those internal names and back (the rejects' ``raw`` JSON uses the original names).

A delimited row whose field count differs from the header's is kept by Spark's PERMISSIVE reader
(padded with nulls, or cut to the header's width) with its line in a corrupt-record column
(:data:`LINE`); :meth:`RawFrame.extra_fields` tells the rows with *more* fields than the header
(counted on that line, outside quotes), which the adapters reject as ``extra_fields``.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from landuse.ingest.errors import IngestError

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column, DataFrame, SparkSession

DELIMITED_SUFFIXES = (".csv", ".txt", ".tsv", ".psv", ".dat")
COMPRESSED_SUFFIXES = (".gz", ".bz2")
PARQUET_SUFFIXES = (".parquet", ".geoparquet", ".pq")
VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".fgb", ".gml", ".kml")
LINE = "__line"  # internal column: a malformed delimited row's line as read (null for well-formed rows)
_CORRUPT = "_corrupt_record"  # Spark's default corrupt-record column name (spark.sql.columnNameOfCorruptRecord)
_QUOTED_RE = r'"([^"]|"")*"'  # an RFC 4180 quoted field (separators inside it do not count)


def _logical_suffix(path: Path) -> str:
    """Suffix ignoring a compression suffix (``trips.csv.gz`` -> ``.csv``)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def list_input_files(path: Path, suffixes: Sequence[str] = DELIMITED_SUFFIXES) -> list[Path]:
    """The file itself, or the data files in a directory of parts (sorted; hidden/``_`` files skipped)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise IngestError(f"{path}: file not found")
    if not path.is_dir():
        raise IngestError(f"{path}: not a regular file or directory")
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith((".", "_")) and _logical_suffix(p) in suffixes
    )
    if not files:
        raise IngestError(f"{path}: directory has no input files ending in {', '.join(suffixes)}")
    return files


def _open_text(path: Path, encoding: str) -> io.TextIOBase:
    # errors="replace": the header is read through a buffer holding the next lines too, whose bad
    # bytes are the rows' business (rejected as undecodable_text), not the header's.
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding=encoding, errors="replace", newline="")
    if path.suffix.lower() == ".bz2":
        return bz2.open(path, "rt", encoding=encoding, errors="replace", newline="")
    return open(path, encoding=encoding, errors="replace", newline="")


def read_header(path: Path, sep: str = ",", encoding: str = "utf-8", *, raw: bool = False) -> list[str]:
    """Column names from the first line of a delimited file (BOM and surrounding blanks removed).

    ``raw=True`` keeps the blanks (as Spark sees the header).
    """
    try:
        with _open_text(path, encoding) as handle:
            line = handle.readline()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise IngestError(f"{path}: unreadable ({type(exc).__name__}: {first_line(exc)})") from None
    if not line.strip():
        raise IngestError(f"{path}: empty file (no header line)")
    if "\ufffd" in line:
        raise IngestError(
            f"{path}: unreadable (UnicodeDecodeError: the header line has bytes invalid in encoding {encoding!r}; "
            "set option encoding)"
        )
    names = next(csv.reader([line.lstrip("\ufeff").rstrip("\r\n")], delimiter=sep))
    return names if raw else [name.strip() for name in names]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass(frozen=True)
class RawFrame:
    """Rows of one input as read: a DataFrame of string columns plus the original column names.

    ``df`` has one column per input column, named ``_c<i>``; ``columns[i]`` is its original name.
    """

    df: "DataFrame"
    columns: tuple[str, ...]
    label: str  # the file or directory, for messages
    sep: str | None = None  # delimited input: the field separator (``df`` then carries :data:`LINE`)

    @property
    def line(self) -> "Column | None":
        """A malformed row's line as read (null for well-formed rows); None for non-delimited input."""
        from pyspark.sql import functions as F

        return F.col(LINE) if self.sep is not None else None

    def extra_fields(self) -> "Column | None":
        """Whether a row has more fields than the header (None for non-delimited input).

        Only malformed rows (wrong field count) carry a line; its fields are counted outside quoted
        text, so a quoted separator is not a field boundary.
        """
        from pyspark.sql import functions as F

        if self.sep is None:
            return None
        unquoted = F.regexp_replace(F.col(LINE), _QUOTED_RE, "")
        fields = F.size(F.split(unquoted, "\\Q" + self.sep + "\\E", -1))
        return F.coalesce(F.col(LINE).isNotNull() & (fields > len(self.columns)), F.lit(False))

    def find(self, *candidates: str) -> str | None:
        """Original name of the first candidate present (case- and blank-insensitive), or None."""
        index = {_norm(name): name for name in self.columns}
        for cand in candidates:
            if cand is not None and _norm(cand) in index:
                return index[_norm(cand)]
        return None

    def require(self, name: str, *alternatives: str, what: str = "column") -> str:
        """Original name of ``name`` (or an alternative); :class:`IngestError` naming it when absent."""
        found = self.find(name, *alternatives)
        if found is None:
            alt = f" (or {', '.join(repr(a) for a in alternatives)})" if alternatives else ""
            raise IngestError(
                f"{self.label}: missing required {what} {name!r}{alt} (has: {show_names(self.columns)})"
            )
        return found

    def col(self, name: str) -> "Column":
        """The Spark column holding original column ``name``."""
        from pyspark.sql import functions as F

        return F.col(self.internal(name))

    def internal(self, name: str) -> str:
        """Internal (positional) Spark name of original column ``name``."""
        found = self.find(name)
        if found is None:
            raise IngestError(f"{self.label}: missing column {name!r} (has: {show_names(self.columns)})")
        return f"_c{self.columns.index(found)}"

    def raw_struct(self) -> "Column":
        """All original columns as a struct with their original names (for the rejects' JSON)."""
        from pyspark.sql import functions as F

        return F.struct(*[F.col(f"_c{i}").alias(name) for i, name in enumerate(self.columns)])

    def raw_columns(self) -> list[str]:
        """Internal names of all original columns."""
        return [f"_c{i}" for i in range(len(self.columns))]


def _norm(name: str) -> str:
    return name.strip().lstrip("\ufeff").lower()


def show_names(names: Iterable[str], limit: int = 30) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} columns)" if len(names) > limit else "")


def read_delimited(
    spark: "SparkSession",
    path: Path,
    *,
    sep: str = ",",
    header: bool = True,
    columns: Sequence[str] | None = None,
    encoding: str = "utf-8",
) -> RawFrame:
    """Read a delimited file (or a directory of parts) as all-string columns.

    With ``header=True`` every part must carry the same header (checked here, on the driver, by
    reading one line per part); otherwise ``columns`` names the columns in file order.
    """
    from pyspark.sql.types import StringType, StructField, StructType

    path = Path(path)
    files = list_input_files(path)
    if header:
        names = read_header(files[0], sep, encoding)
        for part in files[1:]:
            other = read_header(part, sep, encoding)
            if [_norm(n) for n in other] != [_norm(n) for n in names]:
                raise IngestError(
                    f"{part}: header differs from {files[0].name} (has: {show_names(other)}; "
                    f"expected: {show_names(names)})"
                )
    else:
        if not columns:
            raise IngestError(f"{path}: header is false but no column names are given (option columns)")
        names = [str(c) for c in columns]
    seen: dict[str, str] = {}
    for name in names:
        if _norm(name) in seen:
            raise IngestError(f"{path}: duplicate column name {name!r} in the header")
        seen[_norm(name)] = name
    # Spark checks the header against the schema's names (and warns on mismatch), so the schema
    # carries the header as written; the columns are renamed positionally right after.
    spark_names = read_header(files[0], sep, encoding, raw=True) if header else names
    if len(spark_names) != len(names):
        spark_names = names
    schema = StructType([StructField(n, StringType(), True) for n in spark_names] + [StructField(_CORRUPT, StringType())])
    # With CSV column pruning Spark tokenizes only the columns a query uses and cannot tell a row's
    # field count, so the corrupt-record column stays null for rows with extra fields: the ingest
    # needs every row's field count checked (a session setting; parsing every column costs little).
    spark.conf.set("spark.sql.csv.parser.columnPruning.enabled", "false")
    df = spark.read.csv(
        [str(f) for f in files],
        schema=schema,
        header=header,
        sep=sep,
        quote='"',
        escape='"',  # RFC 4180: a quote inside a quoted field is doubled
        encoding=encoding,
        mode="PERMISSIVE",  # short rows are padded with nulls, which validation then rejects
        columnNameOfCorruptRecord=_CORRUPT,  # the line of a row whose field count is not the header's
        multiLine=False,
    ).toDF(*[f"_c{i}" for i in range(len(names))], LINE)
    return RawFrame(df=df, columns=tuple(names), label=str(path), sep=sep)


def frame_from_pandas(spark: "SparkSession", pdf: "pd.DataFrame", label: str) -> RawFrame:
    """A :class:`RawFrame` from a pandas table read on the driver (values become strings, NaN null)."""
    import pandas as pd
    from pyspark.sql.types import StringType, StructField, StructType

    names = [str(c) for c in pdf.columns]
    data = pd.DataFrame(
        {
            f"_c{i}": pdf[c].map(lambda v: None if _is_missing(v) else value_text(v)).astype(object)
            for i, c in enumerate(pdf.columns)
        }
    )
    schema = StructType([StructField(f"_c{i}", StringType(), True) for i in range(len(names))])
    df = spark.createDataFrame(data, schema=schema) if len(data) else spark.createDataFrame([], schema)
    return RawFrame(df=df, columns=tuple(names), label=label)


def _is_missing(value: object) -> bool:
    try:
        import pandas as pd

        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):  # arrays and other non-scalars
        return False


def value_text(value: object) -> str:
    # Integral floats (ids read back from DBF/GeoPackage as float) are written without ".0".
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def frame_from_dataframe(df: "DataFrame", label: str) -> RawFrame:
    """A :class:`RawFrame` from any Spark DataFrame (e.g. Parquet), every column cast to string."""
    from pyspark.sql import functions as F

    names = df.columns
    cols = [F.col(f"`{n}`").cast("string").alias(f"_c{i}") for i, n in enumerate(names)]
    return RawFrame(df=df.select(*cols), columns=tuple(names), label=label)


def input_format(path: Path, given: str | None = None) -> str:
    """``delimited``, ``parquet`` or ``vector`` for a file or directory of parts (``given`` overrides)."""
    if given and given != "auto":
        return {"csv": "delimited", "txt": "delimited", "geoparquet": "parquet"}.get(given, given)
    path = Path(path)
    probe = path
    if path.is_dir():
        parts = [p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith((".", "_"))]
        if any(p.suffix.lower() == ".shp" for p in parts):
            return "vector"
        probe = parts[0] if parts else path
    suffix = _logical_suffix(probe)
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in VECTOR_SUFFIXES:
        return "vector"
    return "delimited"
