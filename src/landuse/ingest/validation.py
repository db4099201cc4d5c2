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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from landuse.ingest.errors import IngestError
from landuse.spark.schemas import RAW, REASON, REJECTS_SCHEMA, SOURCE

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame
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
LOCATION_PREFIX = "location_"  # rejects of a source's location table (stations, zones)

_NUMBER_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?$"
_INTEGER_RE = r"^[+-]?\d{1,18}(\.0*)?$"


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

    return F.when(integer_ok(text), F.regexp_extract(text, r"^([+-]?\d+)", 1).cast("long"))


def normalize_key(text: "Column") -> "Column":
    """Location/region key text: trimmed, and integral float spellings (``12.0``) written as ``12``."""
    from pyspark.sql import functions as F

    return F.regexp_replace(clean(text), r"^(-?\d+)\.0+$", "$1")


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


@dataclass(frozen=True)
class Split:
    """Rows of one table split by reason: kept rows, rejects, and the reason of every row read."""

    kept: "DataFrame"
    rejects: "DataFrame"  # REJECTS_SCHEMA
    reasons: "DataFrame"  # one column ``reason``, one row per row read; null = kept

    def conformed(self, schema: "StructType") -> "Split":
        """The same split with ``kept`` conformed to ``schema``."""
        return Split(conform(self.kept, schema), self.rejects, self.reasons)

    def tally(self) -> tuple[int, dict[str, int]]:
        """(kept, rejected by reason); see :func:`tally_reasons`."""
        return tally_reasons(self.reasons)


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
) -> Split:
    """Split rows by ``reason`` into kept rows (projected to ``kept``) and rejects (``REJECTS_SCHEMA``).

    ``raw`` is the original row as a struct; it is written as JSON text with nulls kept.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    # Persisted: kept rows, rejects and the reason tally are three actions over the same parsed
    # and validated rows; without it each re-reads and re-validates the raw files. Callers release
    # it with ``spark.catalog.clearCache()`` (the ingest stage does) or ``unpersist``.
    tagged = df.withColumn(
        "__reason", F.when(reason.isNotNull(), F.concat(F.lit(reason_prefix), reason)) if reason_prefix else reason
    ).persist(StorageLevel.MEMORY_AND_DISK)
    good = tagged.filter(F.col("__reason").isNull()).select(*kept)
    bad = tagged.filter(F.col("__reason").isNotNull()).select(
        F.lit(source).alias(SOURCE),
        F.col("__reason").alias(REASON),
        F.to_json(raw, {"ignoreNullFields": "false"}).alias(RAW),
    )
    return Split(good, conform(bad, REJECTS_SCHEMA), tagged.select(F.col("__reason").alias(REASON)))


def conform(df: "DataFrame", schema: "StructType") -> "DataFrame":
    """Select ``schema``'s columns in order, each cast to its declared type.

    (:func:`landuse.spark.schemas.check_schema` checks names and types; nullability in Spark is
    metadata inferred from expressions, and non-nullable fields are set on every kept row here.)
    """
    from pyspark.sql import functions as F

    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
