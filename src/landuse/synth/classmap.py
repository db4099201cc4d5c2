"""Source land-use code → class tables (``conf/classmaps/*.csv``), loaded and validated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from landuse.constants import LANDUSE_CLASSES

CLASSMAP_COLUMNS: tuple[str, ...] = ("code", "name", "landuse_class")


@dataclass(frozen=True)
class ClassMap:
    """A validated code table: ``codes[i]`` has display name ``names[i]`` and class index ``classes[i]``."""

    path: Path
    codes: tuple[str, ...]
    names: tuple[str, ...]
    classes: tuple[int, ...]

    def codes_of_class(self, class_index: int) -> tuple[str, ...]:
        """Codes mapped to the class at ``class_index`` (in file order)."""
        return tuple(c for c, k in zip(self.codes, self.classes) if k == class_index)

    def class_of(self, code: str) -> int:
        """Class index of ``code``; ``KeyError`` if the code is not in the table."""
        return self.classes[self.codes.index(code)]

    def name_of(self, code: str) -> str:
        """Display name of ``code``."""
        return self.names[self.codes.index(code)]


def load_class_map(path: Path) -> ClassMap:
    """Read a ``code,name,landuse_class`` CSV; ``ValueError`` names the first problem found.

    Codes are read as text so that survey codes keep their leading zeros (``0501``).
    """
    if not path.is_file():
        raise FileNotFoundError(f"class map not found: {path}")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    missing = [c for c in CLASSMAP_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"class map {path} lacks column(s) {', '.join(missing)}")
    frame = frame.apply(lambda col: col.str.strip())
    unknown = sorted(set(frame["landuse_class"]) - set(LANDUSE_CLASSES))
    if unknown:
        raise ValueError(f"class map {path} has unknown class(es) {', '.join(unknown)}")
    duplicated = frame["code"][frame["code"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"class map {path} repeats code(s) {', '.join(duplicated)}")
    if (frame["code"] == "").any():
        raise ValueError(f"class map {path} has an empty code")
    absent = [c for c in LANDUSE_CLASSES if c not in set(frame["landuse_class"])]
    if absent:
        raise ValueError(f"class map {path} has no code for class(es) {', '.join(absent)}")
    index = {name: i for i, name in enumerate(LANDUSE_CLASSES)}
    return ClassMap(
        path=path,
        codes=tuple(frame["code"]),
        names=tuple(frame["name"]),
        classes=tuple(index[c] for c in frame["landuse_class"]),
    )
