"""Row validation as Spark expressions: parsing, checks, first failing reason, kept/rejected split.

Every parser here is ANSI-safe: a value is cast only after a regular expression has established
that the cast cannot fail, and timestamps are rewritten to ISO text and parsed with cast semantics
(``try_to_timestamp`` without a pattern). That keeps a bad value a *reject* under any
``spark.sql.ansi.enabled`` / ``spark.sql.legacy.timeParserPolicy`` setting, instead of failing the
job (format-pattern parsing raises ``SparkUpgradeException`` on e.g. ``1/2/2015 1:05`` under the
default parser policy).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Sequence

from landuse.ingest.errors import IngestError
from landuse.spark.schemas import RAW, REASON, REJECTS_SCHEMA, SOURCE

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, Observation
    from pyspark.sql.types import StructType

# --- reject reasons (short snake_case; the first failing check wins) ---
MISSING_KEY = "missing_key"
UNKNOWN_STATION = "unknown_station"
UNKNOWN_ZONE = "unknown_zone"
DUPLICATE_KEY = "duplicate_key"
MISSING_ID = "missing_id"
NULL_COORDINATES = "null_coordinates"
UNPARSABLE_COORDINATES = "unparsable_coordinates"
COORDINATES_OUT_OF_RANGE = "coordinates_out_of_range"
ZERO_COORDINATES = "zero_coordinates"  # (0, 0): the usual placeholder for "no fix" (e.g. TLC records)
OUTSIDE_EXTENT = "outside_extent"
MISSING_TIMESTAMP = "missing_timestamp"
UNPARSABLE_TIMESTAMP = "unparsable_timestamp"
NEGATIVE_DURATION = "negative_duration"
INVALID_DURATION = "invalid_duration"
MISSING_COUNT = "missing_count"
INVALID_COUNT = "invalid_count"  # not an integer (e.g. "2.5", "abc") or beyond 64 bits
NEGATIVE_COUNT = "negative_count"
MISSING_CATEGORY = "missing_category"
EXTRA_FIELDS = "extra_fields"  # a delimited row with more fields than the header (its values may be shifted)
UNDECODABLE_TEXT = "undecodable_text"  # a kept text field held bytes invalid in the declared encoding
DATE_OUT_OF_RANGE = "date_out_of_range"  # a trip start outside ingest.date_range (or the derived range)
COUNT_TOO_LARGE = "count_too_large"  # a trip count above ingest.max_count (or beyond 64 bits)
REPLACEMENT_CHAR = "\ufffd"  # what a decoder puts in place of bytes invalid in the declared encoding
LOCATION_PREFIX = "location_"  # rejects of a source's location table (stations, zones)

_NUMBER_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?$"
_INTEGER_RE = r"^[+-]?\d{1,18}(\.0*)?$"
_HUGE_INTEGER_RE = r"^\+?\d{19,}(\.0*)?$"  # a non-negative integer too long for 64 bits


@dataclass(frozen=True)
class LonLatBox:
    """A study extent in WGS84 degrees (inclusive bounds)."""

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    def __post_init__(self) -> None:
        if not (-180 <= self.min_lon <= self.max_lon <= 180 and -90 <= self.min_lat <= self.max_lat <= 90):
            raise IngestError(
                f"extent ({self.min_lon}, {self.min_lat}, {self.max_lon}, {self.max_lat}) is not a valid "
                "lon/lat box (min_lon <= max_lon in [-180, 180], min_lat <= max_lat in [-90, 90])"
            )

    @classmethod
    def from_bounds(cls, bounds: Sequence[float], buffer_deg: float = 0.0) -> "LonLatBox":
        """From ``(min_lon, min_lat, max_lon, max_lat)`` (e.g. ``GeoSeries.total_bounds``), optionally grown."""
        x0, y0, x1, y1 = (float(v) for v in bounds)
        return cls(
            max(-180.0, x0 - buffer_deg), max(-90.0, y0 - buffer_deg),
            min(180.0, x1 + buffer_deg), min(90.0, y1 + buffer_deg),
        )

    def contains(self, lon: "Column", lat: "Column") -> "Column":
        """Spark condition: the point lies in the box."""
        return lon.between(self.min_lon, self.max_lon) & lat.between(self.min_lat, self.max_lat)


# ------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------


NULL_TOKENS = ("", "NA", "N/A", "NULL", "null", "None", "NaN", "nan")


def clean(col: "Column") -> "Column":
    """Trimmed text; empty strings and the usual null markers (``NA``, ``NULL``, ``NaN``, ...) as null."""
    from pyspark.sql import functions as F

    trimmed = F.trim(col)
    return F.when(~trimmed.isin(*NULL_TOKENS), trimmed)


def parse_double(text: "Column") -> "Column":
    """Decimal number text -> double; anything else (including NaN/Infinity text) -> null."""
    from pyspark.sql import functions as F

    return F.when(text.rlike(_NUMBER_RE), text.cast("double"))


def integer_ok(text: "Column") -> "Column":
    """Whether non-null text is an integer (``12``, ``+12``, ``12.0``) that fits in 64 bits."""
    return text.rlike(_INTEGER_RE)


def parse_integer(text: "Column") -> "Column":
    """Integer text (see :func:`integer_ok`) -> long; anything else -> null."""
    from pyspark.sql import functions as F

    # A plain integer (no ".0" tail) is cast as is; the regex rules out anything a cast would reject.
    whole = F.when(text.contains("."), F.regexp_extract(text, r"^([+-]?\d+)", 1)).otherwise(text)
    return F.when(integer_ok(text), whole.cast("long"))


def huge_integer(text: "Column") -> "Column":
    """Whether non-null text is a non-negative integer with more digits than 64 bits hold."""
    return text.rlike(_HUGE_INTEGER_RE)


def undecodable(*texts: "Column") -> "Column":
    """Whether any of ``texts`` holds U+FFFD, the decoder's replacement for bytes invalid in the encoding.

    (A U+FFFD written in the file itself is indistinguishable from one and is treated the same.)
    """
    from pyspark.sql import functions as F

    out = F.lit(False)
    for text in texts:
        out = out | F.coalesce(text.contains(REPLACEMENT_CHAR), F.lit(False))
    return out


def normalize_key(text: "Column") -> "Column":
    """Location/region key text: trimmed, and integral float spellings (``12.0``) written as ``12``."""
    return key_text(clean(text))


def key_text(cleaned: "Column") -> "Column":
    """:func:`normalize_key` of text already cleaned (:func:`clean`)."""
    from pyspark.sql import functions as F

    return F.when(cleaned.contains("."), F.regexp_replace(cleaned, r"^(-?\d+)\.0+$", "$1")).otherwise(cleaned)


_TOKEN_RE = re.compile(r"'[^']*'|([A-Za-z])\1*|.", re.S)
_FIELDS = {"y": "year", "u": "year", "M": "month", "d": "day", "H": "hour", "m": "minute", "s": "second", "S": "fraction"}


def format_to_regex(fmt: str) -> tuple[str, str]:
    """Translate a datetime pattern (``dd/MM/yyyy HH:mm``) to an anchored regex and an ISO replacement.

    Supported letters: ``yyyy``/``uuuu``, ``M``/``MM``, ``d``/``dd``, ``H``/``HH``, ``m``/``mm``,
    ``s``/``ss``, ``S...`` (fraction); quoted literals (``'T'``) and any punctuation. The
    replacement rewrites a match as ``yyyy-M-d H:m:s[.S]`` text, which a timestamp cast accepts.
    """
    parts: list[str] = []
    groups: dict[str, int] = {}
    for match in _TOKEN_RE.finditer(fmt):
        token = match.group(0)
        letter = token[0]
        if token.startswith("'"):
            parts.append(re.escape(token[1:-1]))
        elif letter.isalpha():
            field = _FIELDS.get(letter)
            if field is None or field in groups or (field == "year" and len(token) != 4) or (
                field not in ("year", "fraction") and len(token) > 2
            ):
                raise IngestError(
                    f"timestamp format {fmt!r}: unsupported or repeated pattern {token!r} "
                    "(use yyyy, M/MM, d/dd, H/HH, m/mm, s/ss, S..., quoted literals)"
                )
            groups[field] = len(groups) + 1
            if field == "year":
                parts.append(r"(\d{4})")
            elif field == "fraction":
                parts.append(r"(\d{1,9})")
            else:
                parts.append(r"(\d{2})" if len(token) == 2 else r"(\d{1,2})")
        elif token.isspace():
            parts.append(r"\s+")
        else:
            parts.append(re.escape(token))
    if not {"year", "month", "day"} <= set(groups):
        raise IngestError(f"timestamp format {fmt!r}: needs a year (yyyy), a month (M) and a day (d)")

    def ref(field: str, default: str) -> str:
        return f"${groups[field]}" if field in groups else default

    replacement = (
        f"{ref('year', '')}-{ref('month', '')}-{ref('day', '')} "
        f"{ref('hour', '00')}:{ref('minute', '00')}:{ref('second', '00')}"
    )
    if "fraction" in groups:
        replacement += f".{ref('fraction', '0')}"
    return "^" + "".join(parts) + "$", replacement


def parse_timestamp(text: "Column", formats: Sequence[str | None] = (None,)) -> "Column":
    """Timestamp text -> timestamp (wall-clock time, stored as UTC); null when no format matches.

    ``None`` in ``formats`` means ISO-8601-like text (``2024-09-06 16:30:38.511``, ``2015-07-01``,
    ``2015-07-01T18:07``). Invalid calendar values (31 February, hour 25) give null.
    """
    from pyspark.sql import functions as F

    parsed = []
    for fmt in formats:
        if fmt is None:
            parsed.append(F.try_to_timestamp(text))
            continue
        regex, replacement = format_to_regex(fmt)
        parsed.append(F.when(text.rlike(regex), F.try_to_timestamp(F.regexp_replace(text, regex, replacement))))
    return parsed[0] if len(parsed) == 1 else F.coalesce(*parsed)


# ------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One point's columns for validation: raw texts, parsed numbers, final lon/lat (WGS84)."""

    x_text: "Column"
    y_text: "Column"
    x_num: "Column"
    y_num: "Column"
    lon: "Column"
    lat: "Column"


def coordinate_checks(points: Sequence[Endpoint], extent: LonLatBox | None) -> list[tuple[str, "Column"]]:
    """Checks for one or more points, in order: null, unparsable, out of range, (0, 0), outside extent."""
    from pyspark.sql import functions as F

    def any_of(conds: list["Column"]) -> "Column":
        out = conds[0]
        for cond in conds[1:]:
            out = out | cond
        return F.coalesce(out, F.lit(False))

    checks = [
        (NULL_COORDINATES, any_of([p.x_text.isNull() | p.y_text.isNull() for p in points])),
        (UNPARSABLE_COORDINATES, any_of([p.x_num.isNull() | p.y_num.isNull() for p in points])),
        (
            COORDINATES_OUT_OF_RANGE,
            any_of(
                [
                    p.lon.isNull() | p.lat.isNull() | F.isnan(p.lon) | F.isnan(p.lat)
                    | (F.abs(p.lon) > 180) | (F.abs(p.lat) > 90)
                    for p in points
                ]
            ),
        ),
        (ZERO_COORDINATES, any_of([(p.lon == 0) & (p.lat == 0) for p in points])),
    ]
    if extent is not None:
        checks.append((OUTSIDE_EXTENT, any_of([~extent.contains(p.lon, p.lat) for p in points])))
    return checks


def first_reason(checks: Sequence[tuple["str | Column", "Column"]]) -> "Column":
    """The reason of the first check that holds, else null (a null condition counts as not holding).

    A reason is a string, or a column (e.g. a referenced location's own reason).
    """
    from pyspark.sql import functions as F

    if not checks:
        return F.lit(None).cast("string")
    expr = None
    for reason, cond in checks:
        value = F.lit(reason) if isinstance(reason, str) else reason
        expr = F.when(cond, value) if expr is None else expr.when(cond, value)
    return expr  # type: ignore[return-value]


REASON_COL = "__reason"  # the tagged rows' reason column (null = kept)


@dataclass(frozen=True)
class Split:
    """Rows of one table tagged with their reason: kept rows, rejects and reasons are views of one plan.

    ``tagged`` holds every row read with its first failing reason in :data:`REASON_COL` (null =
    kept). Nothing is persisted: each view is a lazy projection of ``tagged``, so writing the kept
    rows is one pass over the input, and the rejects cost a second pass only when there are any
    (see :meth:`observed`).
    """

    tagged: "DataFrame"
    kept_columns: tuple["Column", ...]
    raw: "Column"  # the original row as a struct (the rejects' JSON)
    source: str
    schema: "StructType | None" = None  # kept rows conformed to it
    line: "Column | None" = None  # a malformed delimited row's line as read (null otherwise), added to its raw JSON

    @property
    def kept(self) -> "DataFrame":
        """The kept rows, projected to the kept columns (conformed to ``schema`` when set)."""
        from pyspark.sql import functions as F

        kept = self.tagged.filter(F.col(REASON_COL).isNull()).select(*self.kept_columns)
        return conform(kept, self.schema) if self.schema is not None else kept

    @property
    def rejects(self) -> "DataFrame":
        """Rejected rows as ``REJECTS_SCHEMA``: source, reason, the raw row as JSON (nulls kept)."""
        from pyspark.sql import functions as F

        raw = F.to_json(self.raw, {"ignoreNullFields": "false"})
        if self.line is not None:
            # The fields past the header are not in the struct: a malformed row keeps its whole line
            # as "_line" (the two JSON objects' texts joined into one object).
            extra = F.to_json(F.struct(self.line.alias("_line")))
            merged = F.concat(F.regexp_replace(raw, r"\}$", ""), F.lit(","), F.regexp_replace(extra, r"^\{", ""))
            raw = F.when(self.line.isNotNull(), merged).otherwise(raw)
        bad = self.tagged.filter(F.col(REASON_COL).isNotNull()).select(
            F.lit(self.source).alias(SOURCE),
            F.col(REASON_COL).alias(REASON),
            raw.alias(RAW),
        )
        return conform(bad, REJECTS_SCHEMA)

    @property
    def reasons(self) -> "DataFrame":
        """One column ``reason``, one row per row read; null = kept."""
        from pyspark.sql import functions as F

        return self.tagged.select(F.col(REASON_COL).alias(REASON))

    def conformed(self, schema: "StructType") -> "Split":
        """The same split with ``kept`` conformed to ``schema``."""
        return replace(self, schema=schema)

    def tally(self) -> tuple[int, dict[str, int]]:
        """(kept, rejected by reason); see :func:`tally_reasons`."""
        return tally_reasons(self.reasons)

    def observed(self) -> "ObservedSplit":
        """Kept rows and rejects that count themselves while the kept rows are written (one pass)."""
        from pyspark.sql import Observation
        from pyspark.sql import functions as F

        counts, written = Observation(f"tagged_{uuid.uuid4().hex}"), Observation(f"kept_{uuid.uuid4().hex}")
        tagged = self.tagged.observe(
            counts,
            F.count(F.lit(1)).alias("rows"),
            F.count(F.when(F.col(REASON_COL).isNotNull(), 1)).alias("rejected"),
        )
        split = replace(self, tagged=tagged)
        kept = split.kept.observe(written, F.count(F.lit(1)).alias("kept"))
        return ObservedSplit(kept, split.rejects, counts, written)


@dataclass(frozen=True)
class ObservedSplit:
    """A split whose counts are collected by the first action that writes ``kept`` (Spark observations).

    :meth:`counts` may be read only after that action ran (an observation blocks until its
    first action has finished).
    """

    kept: "DataFrame"  # rows written; counts itself
    rejects: "DataFrame"  # REJECTS_SCHEMA; its own pass over the input, worth running only when counts() says so
    _tagged: "Observation"
    _written: "Observation"

    def counts(self) -> tuple[int, int, int]:
        """(rows read, rows written as kept, rows tagged with a reason) of the action that wrote ``kept``."""
        tagged, written = observed_metrics(self._tagged), observed_metrics(self._written)
        return int(tagged["rows"]), int(written["kept"]), int(tagged["rejected"])


def observed_metrics(observation: "Observation", timeout_s: float = 120.0) -> dict:
    """The metrics of an observation whose action has run; :class:`IngestError` if none arrive.

    (``Observation.get`` waits without limit, e.g. forever for a plan that was never executed.)
    """
    import threading

    result: dict = {}
    waiter = threading.Thread(target=lambda: result.update(observation.get), daemon=True)
    waiter.start()
    waiter.join(timeout_s)
    if waiter.is_alive():
        raise IngestError(f"row counts of a write were not reported within {timeout_s:.0f} s (Spark observation)")
    return result


def tally_reasons(reasons: "DataFrame") -> tuple[int, dict[str, int]]:
    """(rows kept, rows rejected per reason) from one aggregation over a ``reason`` column."""
    counts = {row[REASON]: int(row["count"]) for row in reasons.groupBy(REASON).count().collect()}
    kept = counts.pop(None, 0)
    return kept, counts


def split_rows(
    df: "DataFrame",
    reason: "Column",
    kept: Sequence["Column"],
    raw: "Column",
    source: str,
    reason_prefix: str = "",
    line: "Column | None" = None,
) -> Split:
    """Tag every row of ``df`` with ``reason`` (null = kept) and split it: see :class:`Split`.

    ``kept`` are the kept rows' columns; ``raw`` is the original row as a struct, written as JSON
    text with nulls kept for rejected rows. The reason is computed once per row as a column of
    the tagged rows; kept rows, rejects and reasons filter on that column. ``line``: see
    :attr:`Split.line`.
    """
    from pyspark.sql import functions as F

    tagged = df.withColumn(
        REASON_COL, F.when(reason.isNotNull(), F.concat(F.lit(reason_prefix), reason)) if reason_prefix else reason
    )
    return Split(tagged, tuple(kept), raw, source, line=line)


def conform(df: "DataFrame", schema: "StructType") -> "DataFrame":
    """Select ``schema``'s columns in order, each cast to its declared type.

    (:func:`landuse.spark.schemas.check_schema` checks names and types; nullability in Spark is
    metadata inferred from expressions, and non-nullable fields are set on every kept row here.)
    """
    from pyspark.sql import functions as F

    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
