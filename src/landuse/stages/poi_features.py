"""Stage ``poi-features``: taxonomy-light POI modalities (see :mod:`landuse.features.poi_features`).

Writes one modality table per feature family, each one row per region (``region_id``, ``vector``,
``has_<modality>``): ``poi_count_features`` (modality ``poi_counts``), ``poi_tfidf_features``
(``poi_tfidf``), ``poi_density_features`` (``poi_density``) and, with
``embeddings.poi_features.text``, ``poi_text_features`` (``poi_text``: an offline sentence
embedding of each category's text, pooled per region — comparable across cities whose taxonomies
differ) and, with ``embeddings.poi_features.zeroshot``, ``zeroshot_features`` (``zeroshot``: the cosine
similarity of each region's POI paragraph to each class description — the ``text`` zero-shot
method's scores before the softmax, :func:`landuse.zeroshot.text.zeroshot_features` — a compact,
taxonomy-free POI summary of ``len(labels.classes)`` columns). Counting runs on Spark; only
region × token counts reach the driver.
"""

from __future__ import annotations

import logging

import numpy as np

from landuse.config import Config, ConfigError
from landuse.runner import Stage, StageContext
from landuse.spark.io import read_pandas, read_table, table_path, write_pandas
from landuse.spark.schemas import AREA_M2, REGION_ID, T_POI_REGIONS, T_REGIONS

log = logging.getLogger(__name__)

# modality -> its table
POI_FEATURE_TABLES = {
    "poi_counts": "poi_count_features",
    "poi_tfidf": "poi_tfidf_features",
    "poi_density": "poi_density_features",
    "poi_text": "poi_text_features",
    "zeroshot": "zeroshot_features",
}
# the zeroshot.* settings that change the zeroshot modality (not the llm / image ones)
ZEROSHOT_KEYS = ("zeroshot.language", "zeroshot.templates", "zeroshot.level", "zeroshot.max_categories",
                 "zeroshot.temperature", "zeroshot.text_model", "labels.classes")


def modalities(config: Config) -> list[str]:
    """The modalities this stage writes under ``config``."""
    names = ["poi_counts", "poi_tfidf", "poi_density"]
    cfg = config.embeddings.poi_features
    return names + (["poi_text"] if cfg.text else []) + (["zeroshot"] if cfg.zeroshot else [])


def run(ctx: StageContext) -> None:
    """Counts per level on Spark → shares, TF-IDF, density (and pooled text embeddings)."""
    from landuse.data.tables import modality_table
    from landuse.features.poi_features import count_matrix, density, level_token_counts, shares, tfidf

    config, cfg = ctx.config, ctx.config.embeddings.poi_features
    regions = read_pandas(config, T_REGIONS, "regions", columns=[REGION_ID, AREA_M2]).sort_values(REGION_ID)
    ids = regions[REGION_ID].to_numpy(np.int64)
    poi_regions = read_table(ctx.spark, config, T_POI_REGIONS, "pois")
    levels = sorted(set(cfg.levels) | ({cfg.text_level} if cfg.text else set()))
    # Collected aggregate: one row per (region, token) present, so at most min(POIs, regions × distinct
    # tokens at the level) rows — per region and category, never per POI; the sparse counts come from it.
    counts = {lv: level_token_counts(poi_regions, lv).toPandas() for lv in levels}
    embedders: dict = {}  # model name -> PoiTextEmbedder, loaded at most once per stage run
    matrices = {lv: count_matrix(counts[lv], ids, cfg.max_tokens) for lv in levels}
    has = np.asarray(matrices[levels[0]][0].sum(axis=1)).ravel() > 0
    chosen = sorted(cfg.levels)
    tables = {
        "poi_counts": np.hstack([shares(matrices[lv][0]) for lv in chosen]),
        "poi_tfidf": np.hstack([tfidf(matrices[lv][0]) for lv in chosen]),
        "poi_density": density([matrices[lv][0] for lv in chosen], regions[AREA_M2].to_numpy(float))[0],
    }
    for name, vectors in tables.items():
        write_pandas(modality_table(ids, vectors, has, f"has_{name}"), ctx.out(POI_FEATURE_TABLES[name]))
    dims = {name: int(v.shape[1]) for name, v in tables.items()}
    if cfg.text:
        text = _text_table(counts[cfg.text_level], ids, config, embedders)
        write_pandas(text, ctx.out(POI_FEATURE_TABLES["poi_text"]))
        dims["poi_text"] = len(text["vector"].iloc[0])
    if cfg.zeroshot:
        zeroshot = _zeroshot_table(ctx, ids, embedders)
        write_pandas(zeroshot, ctx.out(POI_FEATURE_TABLES["zeroshot"]))
        dims["zeroshot"] = len(zeroshot["vector"].iloc[0])
    ctx.summary.update(regions=len(ids), regions_with_pois=int(has.sum()), levels=chosen, dims=dims,
                       tokens={str(lv): len(matrices[lv][1]) for lv in levels})
    log.info("poi features: %d regions (%d with POIs), dims %s", len(ids), int(has.sum()), dims)


def _embedder(embedders: dict, model: str):
    """One sentence-embedding model per name for the whole stage (poi_text and zeroshot may share it)."""
    from landuse.features.poi_text import PoiTextEmbedder

    return embedders.setdefault(model, PoiTextEmbedder(model))


def _text_table(counts, ids: np.ndarray, config: Config, embedders: dict):
    """The pooled category-text embeddings (modality poi_text)."""
    from landuse.features.poi_text import (TextEncoderUnavailable, category_texts,
                                           read_category_text, region_text_vectors)

    cfg = config.embeddings.poi_features
    mapping = read_category_text(cfg.category_text) if cfg.category_text is not None else None
    tokens = sorted(counts["token"].astype(str).unique())
    texts = category_texts(tokens, mapping)
    embedder = _embedder(embedders, cfg.text_model)
    try:
        vectors = embedder.embed([texts[t] for t in tokens])
    except TextEncoderUnavailable as exc:
        raise ConfigError(f"embeddings.poi_features.text: {exc} (or set embeddings.poi_features.text: false)") from None
    return region_text_vectors(counts, dict(zip(tokens, vectors)), ids, dim=embedder.dim)


def _zeroshot_table(ctx: StageContext, ids: np.ndarray, embedders: dict):
    """The zero-shot class similarities of every region (modality zeroshot); bad prompt settings or a
    missing text model are one-line ConfigErrors from the zeroshot package."""
    from landuse.zeroshot.text import zeroshot_features

    return zeroshot_features(ctx.config, ctx.spark, ids, _embedder(embedders, ctx.config.zeroshot.text_model))


def outputs(config: Config) -> dict:
    """One table per modality written."""
    return {POI_FEATURE_TABLES[m]: table_path(config, POI_FEATURE_TABLES[m]) for m in modalities(config)}


def inputs(config: Config) -> list:
    """The category-text file, when given."""
    path = config.embeddings.poi_features.category_text
    if path is not None and not path.is_file():
        raise ConfigError(f"embeddings.poi_features.category_text: file not found: {path}")
    return [path] if path is not None else []


STAGE = Stage(
    name="poi-features",
    description="POI category shares / TF-IDF per level, density, pooled category-text embeddings per region",
    run=run,
    outputs=outputs,
    config_keys=("embeddings.poi_features", *ZEROSHOT_KEYS),
    inputs=inputs,
    upstream=("regions", "pois"),
    enabled=lambda config: config.inputs.pois is not None,
)
