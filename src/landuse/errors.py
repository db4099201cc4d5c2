"""Exception types for inputs a user can fix, shared by the layers that read files.

The CLI (:func:`landuse.entrypoints.common.guarded`) prints these as one ``error:`` line and exits 2.
"""

from __future__ import annotations


class CorruptInputError(ValueError):
    """A file that exists but cannot be decoded (truncated, bit-flipped, not the expected format).

    The message names the file, the problem and the fix (rerun the stage that wrote it, or restore the input).
    """
