"""The thesis's zero-shot prompt as pure functions of a region's POI counts and the class list.

A region becomes a paragraph of its POIs (total, categories largest first, the rest as "and N
more"), framed by an instruction naming the classes and a question::

    [Instruction] There are six land use types: (1) residential, (2) commercial, ... Paragraph: In
    this urban region, there are 128 points of interest, including 12 Chinese restaurant, ...
    Q: What is the primary land use category of this urban region? A:

The wording is data: ``conf/prompts/<language>.yaml`` (``en``, ``zh``) or the user's
``zeroshot.templates`` file, whose keys override those of its language's file. Every template
is checked for its placeholders when loaded (one-line :class:`ConfigError`). A paragraph names at
most ``max_categories`` categories of at most :data:`MAX_NAME_CHARS` characters each, so a prompt's
length is bounded whatever the region holds.

:func:`region_prompts` builds every region's prompt from the ``poi_counts`` table (one row per
region, level and category: driver-sized, never one row per POI).
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from landuse.config import Config, ConfigError
from landuse.zeroshot.base import RegionPrompts

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

MAX_NAME_CHARS = 80  # a category or class name longer than this is cut (bounded prompt length)
ELLIPSIS = "…"
REGION_ID, LEVEL, TOKEN, N_POIS = "region_id", "level", "token", "n_pois"

# template key -> (placeholders it must contain, placeholders it may contain)
_PLACEHOLDERS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "instruction": (frozenset({"class_list"}), frozenset({"n_classes"})),
    "class_item": (frozenset({"name"}), frozenset({"index"})),
    "paragraph": (frozenset({"total", "categories"}), frozenset()),
    "paragraph_one": (frozenset({"categories"}), frozenset({"total"})),
    "zero_pois": (frozenset(), frozenset()),
    "category_item": (frozenset({"count", "category"}), frozenset()),
    "more": (frozenset({"n_more"}), frozenset({"more_pois"})),
    "more_one": (frozenset(), frozenset({"n_more", "more_pois"})),
    "question": (frozenset(), frozenset()),
    "prompt": (frozenset({"instruction", "paragraph", "question"}), frozenset()),
    "class_description": (frozenset({"class"}), frozenset()),
}
_SEPARATORS = ("class_separator", "class_last_separator", "class_pair_separator",
               "separator", "last_separator", "pair_separator")
_OPTIONAL = {"paragraph_one", "more_one", "class_pair_separator", "pair_separator"}


@dataclass(frozen=True)
class PromptTemplate:
    """The wording of one language (see ``conf/prompts/en.yaml`` for what each key is)."""

    language: str
    instruction: str
    class_item: str
    class_separator: str
    class_last_separator: str
    paragraph: str
    zero_pois: str
    category_item: str
    separator: str
    last_separator: str
    more: str
    question: str
    prompt: str
    class_description: str
    paragraph_one: str | None = None
    more_one: str | None = None
    class_pair_separator: str | None = None
    pair_separator: str | None = None
    number_words: tuple[str, ...] = ()
    category_text: bool = True
    class_names: Mapping[str, str] = field(default_factory=dict)
    source: str = ""  # where it was read from (error messages, manifest)


# ------------------------------------------------------------------------------------------
# Templates
# ------------------------------------------------------------------------------------------


def prompts_dir() -> Path:
    """``conf/prompts`` of the source tree (else of the working directory, for an installed package)."""
    import landuse

    beside_source = Path(landuse.__file__).resolve().parents[2] / "conf" / "prompts"
    return beside_source if beside_source.is_dir() else Path.cwd() / "conf" / "prompts"


def placeholders(text: str) -> set[str]:
    """The ``{name}`` fields of a format string (``{{`` / ``}}`` are literal braces)."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise ValueError(f"unbalanced braces ({exc})") from None


def template_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> PromptTemplate:
    """A checked :class:`PromptTemplate` from a mapping; a one-line ConfigError naming the key otherwise."""
    known = {f.name for f in fields(PromptTemplate)} - {"source"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown template key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    missing = [k for k in (*_PLACEHOLDERS, *_SEPARATORS, "language") if k not in _OPTIONAL and data.get(k) is None]
    if missing:
        raise ConfigError(f"{source}: template key {missing[0]!r} is missing")
    for key in (*_PLACEHOLDERS, *_SEPARATORS, "language"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{source}: template key {key!r} must be a string, got {type(value).__name__}")
    for key, (required, allowed) in _PLACEHOLDERS.items():
        text = data.get(key)
        if text is None:
            continue
        try:
            found = placeholders(text)
        except ValueError as exc:
            raise ConfigError(f"{source}: template {key!r}: {exc}") from None
        absent = sorted(required - found)
        if absent:
            raise ConfigError(f"{source}: template {key!r} lacks the placeholder {{{absent[0]}}}: {text!r}")
        extra = sorted(found - required - allowed)
        if extra:
            choices = ", ".join(f"{{{p}}}" for p in sorted(required | allowed)) or "none"
            raise ConfigError(f"{source}: template {key!r} has an unknown placeholder {{{extra[0]}}} "
                              f"(allowed: {choices})")
    names = data.get("class_names") or {}
    if not isinstance(names, Mapping) or not all(isinstance(v, str) and v.strip() for v in names.values()):
        raise ConfigError(f"{source}: class_names must map class keys to non-empty strings")
    words = data.get("number_words") or ()
    if isinstance(words, str) or not all(isinstance(w, str) for w in words):
        raise ConfigError(f"{source}: number_words must be a list of strings")
    flag = data.get("category_text", True)
    if not isinstance(flag, bool):
        raise ConfigError(f"{source}: category_text must be true or false, got {flag!r}")
    values = {k: v for k, v in data.items() if k not in ("class_names", "number_words")}
    return PromptTemplate(**values, class_names={str(k): str(v).strip() for k, v in names.items()},
                          number_words=tuple(words), source=source)


def _read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; one-line ConfigError for a missing or malformed file."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"prompt templates not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: unreadable prompt templates ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: prompt templates must be a YAML mapping of keys to text")
    return data


def load_template(language: str = "en", path: Path | str | None = None) -> PromptTemplate:
    """The templates of ``language`` (``conf/prompts/<language>.yaml``), overridden by the file ``path``.

    The file at ``path`` may set ``language`` itself (then that language's file is its base) and any
    subset of the keys; the merged result is checked as a whole.
    """
    own = _read_yaml(Path(path)) if path is not None else {}
    language = str(own.get("language") or language)
    base_path = prompts_dir() / f"{language}.yaml"
    if not base_path.is_file():
        shipped = sorted(p.stem for p in prompts_dir().glob("*.yaml")) or ["none found"]
        raise ConfigError(f"zeroshot.language: no prompt templates for {language!r} "
                          f"(shipped: {', '.join(shipped)}; or set zeroshot.templates to a file of your own)")
    merged = {**_read_yaml(base_path), **own}
    return template_from_dict(merged, str(path) if path is not None else str(base_path))


def config_template(config: Config) -> PromptTemplate:
    """The template chosen by ``config.zeroshot`` (``templates`` over ``language``)."""
    return load_template(config.zeroshot.language, config.zeroshot.templates)


# ------------------------------------------------------------------------------------------
# Text pieces (pure)
# ------------------------------------------------------------------------------------------


def _cut(name: str, limit: int = MAX_NAME_CHARS) -> str:
    """``name`` with whitespace collapsed, cut to ``limit`` characters (ending in an ellipsis)."""
    name = " ".join(str(name).split())
    return name if len(name) <= limit else name[: limit - 1].rstrip() + ELLIPSIS


def _join(items: Sequence[str], separator: str, last: str, pair: str | None) -> str:
    """``a, b, and c`` / ``a and b`` / ``a`` with the template's separators."""
    if len(items) <= 1:
        return "".join(items)
    if len(items) == 2:
        return items[0] + (pair if pair is not None else last) + items[1]
    return separator.join(items[:-1]) + last + items[-1]


def _fill(text: str, **values: Any) -> str:
    """``text`` with its placeholders filled (``{class}`` works: names are plain keys here)."""
    return text.format_map(values)


def class_name(key: str, template: PromptTemplate) -> str:
    """The readable name of class ``key``: the template's ``class_names`` entry, else the key with spaces."""
    return _cut(template.class_names.get(key) or " ".join(key.replace("_", " ").split()) or key)


def number_word(n: int, template: PromptTemplate) -> str:
    """``n`` as the template's word for it ("six"), else its digits."""
    return template.number_words[n] if 0 <= n < len(template.number_words) else str(n)


def instruction(classes: Sequence[str], template: PromptTemplate) -> str:
    """The instruction naming the classes, numbered (1)..(C) in order."""
    if not classes:
        raise ValueError("instruction needs at least one class")
    items = [_fill(template.class_item, index=i, name=class_name(c, template)) for i, c in enumerate(classes, 1)]
    class_list = _join(items, template.class_separator, template.class_last_separator, template.class_pair_separator)
    return _fill(template.instruction, n_classes=number_word(len(classes), template), class_list=class_list)


def class_texts(classes: Sequence[str], template: PromptTemplate) -> list[str]:
    """One description per class ("This is an area dominated by residential.")."""
    return [_fill(template.class_description, **{"class": class_name(c, template)}) for c in classes]


def paragraph(counts: Mapping[str, int], template: PromptTemplate, max_categories: int,
              total: int | None = None) -> str:
    """The POI paragraph of one region from ``{category name: POI count}``.

    Categories are listed largest first, ties by name; at most ``max_categories`` of them, the others
    summarised by the template's ``more`` ("and 12 more categories"). Zero counts are ignored; a
    region without POIs gets the template's ``zero_pois`` sentence. Names are cut to
    :data:`MAX_NAME_CHARS` characters. ``total``: the region's POI count when some of its POIs have
    no category in ``counts`` (default, and at least, the sum of ``counts``).
    """
    if int(max_categories) < 1:
        raise ValueError(f"max_categories must be >= 1, got {max_categories}")
    items: list[tuple[str, int]] = []
    for name, count in counts.items():
        n = int(count)
        if n != count or n < 0:
            raise ValueError(f"paragraph: POI count of {name!r} must be a non-negative integer, got {count!r}")
        if n > 0:
            items.append((str(name), n))
    if not items:
        return template.zero_pois
    items.sort(key=lambda item: (-item[1], item[0]))
    total = max(sum(n for _, n in items), int(total or 0))
    shown, rest = items[: int(max_categories)], items[int(max_categories):]
    parts = [_fill(template.category_item, count=n, category=_cut(name)) for name, n in shown]
    if rest:
        more_pois = sum(n for _, n in rest)
        text = template.more_one if len(rest) == 1 and template.more_one is not None else template.more
        parts.append(_fill(text, n_more=len(rest), more_pois=more_pois))
    categories = _join(parts, template.separator, template.last_separator, template.pair_separator)
    if total == 1 and template.paragraph_one is not None:
        return _fill(template.paragraph_one, total=total, categories=categories)
    return _fill(template.paragraph, total=total, categories=categories)


def is_zero_pois(text: str, template: PromptTemplate) -> bool:
    """Whether ``text`` is the paragraph of a region without POIs under ``template``."""
    return text == template.zero_pois


def prompt(counts: Mapping[str, int], classes: Sequence[str], template: PromptTemplate, max_categories: int) -> str:
    """The whole prompt of one region: instruction, paragraph, question."""
    return compose(instruction(classes, template), paragraph(counts, template, max_categories), template)


def compose(instruction_text: str, paragraph_text: str, template: PromptTemplate) -> str:
    """Instruction, paragraph and question in the template's ``prompt`` frame."""
    return _fill(template.prompt, instruction=instruction_text, paragraph=paragraph_text, question=template.question)


# ------------------------------------------------------------------------------------------
# Counts per region
# ------------------------------------------------------------------------------------------


def level_counts(poi_counts: pd.DataFrame, level: int) -> pd.DataFrame:
    """(region_id, token, n_pois) at ``level`` from the ``poi_counts`` table (region_id, level, token, n_pois).

    Each region is described at the finest level up to ``level`` at which it has tokens (a source
    without fine categories falls back to coarser ones). ``poi_counts`` counts every level
    separately, so a POI that lacks a fine token while its neighbours have one is counted in the
    total (see :func:`region_totals`) but not named; on the sources here every POI has every
    level (the per-level totals agree).
    """
    missing = [c for c in (REGION_ID, LEVEL, TOKEN, N_POIS) if c not in poi_counts.columns]
    if missing:
        has = ", ".join(map(str, poi_counts.columns))
        raise ValueError(f"poi_counts lacks column(s) {', '.join(missing)} (has: {has})")
    rows = poi_counts[(poi_counts[LEVEL] <= int(level)) & (poi_counts[N_POIS] > 0)]
    if rows.empty:
        return pd.DataFrame({REGION_ID: pd.Series(dtype="int64"), TOKEN: pd.Series(dtype=str),
                             N_POIS: pd.Series(dtype="int64")})
    finest = rows.groupby(REGION_ID)[LEVEL].transform("max")
    chosen = rows[rows[LEVEL] == finest]
    chosen = chosen[[REGION_ID, TOKEN, N_POIS]].astype({REGION_ID: "int64", TOKEN: str, N_POIS: "int64"})
    return chosen.reset_index(drop=True)


def region_totals(poi_counts: pd.DataFrame) -> pd.Series:
    """POIs per region (index region_id): the largest per-level sum (every POI has a coarse token)."""
    if poi_counts.empty:
        return pd.Series(dtype="int64", name=N_POIS)
    sums = poi_counts.groupby([REGION_ID, LEVEL])[N_POIS].sum()
    return sums.groupby(level=0).max().astype("int64")


def counts_by_region(level_table: pd.DataFrame, texts: Mapping[str, str]) -> dict[int, dict[str, int]]:
    """``{region_id: {category text: count}}``; tokens sharing one text are summed."""
    frame = level_table.assign(name=level_table[TOKEN].astype(str).map(lambda t: texts.get(t, t)))
    grouped = frame.groupby([REGION_ID, "name"], sort=False)[N_POIS].sum()
    result: dict[int, dict[str, int]] = {}
    for (rid, name), n in grouped.items():
        result.setdefault(int(rid), {})[str(name)] = int(n)
    return result


def build_prompts(region_ids: np.ndarray, poi_counts: pd.DataFrame, classes: Sequence[str], template: PromptTemplate,
                  level: int, max_categories: int, category_text: Mapping[str, str] | None = None) -> RegionPrompts:
    """Prompts of ``region_ids`` (any order kept) from a ``poi_counts`` frame; regions absent from it have no POIs.

    ``category_text`` maps tokens to readable text (used when the template's ``category_text`` is
    true); other tokens read as :func:`landuse.features.poi_text.category_texts` makes them.
    """
    from landuse.features.poi_text import category_texts

    ids = np.asarray(region_ids, dtype=np.int64).ravel()
    table = level_counts(poi_counts, level)
    totals = region_totals(poi_counts[poi_counts[N_POIS] > 0])
    tokens = sorted(table[TOKEN].astype(str).unique())
    texts = category_texts(tokens, category_text) if template.category_text else {t: t for t in tokens}
    by_region = counts_by_region(table, texts)
    head = instruction(classes, template)
    paragraphs = [paragraph(by_region.get(int(rid), {}), template, max_categories, total=int(totals.get(int(rid), 0)))
                  for rid in ids]
    return RegionPrompts(region_ids=ids, paragraphs=paragraphs,
                         prompts=[compose(head, p, template) for p in paragraphs],
                         classes=list(classes), class_texts=class_texts(classes, template))


def region_prompts(config: Config, source: SparkSession | pd.DataFrame | None = None,
                   region_ids: np.ndarray | None = None) -> RegionPrompts:
    """Every region's prompt under ``config.zeroshot`` from the ``poi_counts`` table (stage ``pois``).

    ``source``: a SparkSession (the table read through Spark, filtered to the levels needed, then
    collected: one row per region, level and category), a ``poi_counts`` DataFrame already in
    memory, or None (the table read with pyarrow). ``region_ids``: default every region of the
    ``regions`` table, ascending (regions without POIs get the zero-POI paragraph).
    """
    from landuse.spark.io import read_pandas, read_table
    from landuse.spark.schemas import T_POI_COUNTS, T_REGIONS

    cfg = config.zeroshot
    template = config_template(config)
    if isinstance(source, pd.DataFrame):
        counts = source
    elif source is not None:
        from pyspark.sql import functions as F

        counts = read_table(source, config, T_POI_COUNTS, "pois").where(F.col(LEVEL) <= cfg.level).toPandas()
    else:
        counts = read_pandas(config, T_POI_COUNTS, "pois")
    if region_ids is None:
        regions = read_pandas(config, T_REGIONS, "regions", columns=[REGION_ID])
        region_ids = np.sort(regions[REGION_ID].to_numpy(np.int64))
    mapping = None
    path = config.embeddings.poi_features.category_text
    if template.category_text and path is not None:
        from landuse.features.poi_text import read_category_text

        if not Path(path).is_file():
            raise ConfigError(f"embeddings.poi_features.category_text: file not found: {path}")
        mapping = read_category_text(path)
    return build_prompts(region_ids, counts, list(config.labels.classes), template, cfg.level, cfg.max_categories,
                         mapping)
