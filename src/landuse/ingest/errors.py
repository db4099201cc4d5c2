"""The one exception type of the ingest layer."""

from __future__ import annotations


class IngestError(ValueError):
    """An input that cannot be ingested, described in one line: the file, the row or column, the problem.

    Raised for whole-file problems (unreadable, missing required columns, no or unknown CRS, bad
    options, unknown adapter). Row-level problems never raise: those rows go to the rejects table.
    """
